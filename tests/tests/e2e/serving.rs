//! Serving: `quarry serve-model` over the Open Inference Protocol v2, checked with the real
//! Python `tritonclient[http]` (in the venv `scripts/serving_venv.sh` creates) against
//! `quarry predict`; protocol errors; the registry; `quarry drift`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use quarry_tests::cluster::serve_model;
use quarry_tests::{example, predict_csv, quarry, quarry_ok, read_csv, read_json, repo_root, venv_python};
use serde_json::{Value, json};

/// One HTTP/1.1 request; (status, JSON body).
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let payload = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(payload).unwrap_or(Value::Null))
}

fn train(data: &Path, target: &str, out: &Path) {
    quarry_ok(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--target",
        target,
        "--family",
        "gbdt",
        "--param",
        "n_estimators=20",
        "--out",
        out.to_str().unwrap(),
    ]);
}

fn triton(addr: &str, model: &str, data: &Path, out: &Path) -> Value {
    let o = Command::new(venv_python("serving_venv.sh"))
        .arg(repo_root().join("scripts/triton_client.py"))
        .args([addr, model, data.to_str().unwrap(), out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "triton_client.py: {}", String::from_utf8_lossy(&o.stderr));
    read_json(out)
}

#[test]
fn tritonclient_classification_matches_quarry_predict_and_errors_are_protocol_json() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("penguins");
    train(&example("penguins/train.csv"), "species", &run);
    let test = example("penguins/test.csv");
    let (header, rows) = predict_csv(&run, &test, &tmp.path().join("p.csv"));
    let (_server, addr) = serve_model(&["--model", run.to_str().unwrap(), "--name", "penguins"]);
    let got = triton(&addr, "penguins", &test, &tmp.path().join("t.json"));

    let meta = &got["metadata"];
    assert_eq!(meta["name"], "penguins");
    let inputs: Vec<(&str, &str)> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["datatype"].as_str().unwrap()))
        .collect();
    assert!(
        inputs.contains(&("bill_length_mm", "FP64")) && inputs.contains(&("island", "BYTES")),
        "{inputs:?}"
    );
    assert_eq!(got["id"], "e2e");
    let labels = got["outputs"]["label"].as_array().unwrap();
    let probs = got["outputs"]["probabilities"].as_array().unwrap();
    assert_eq!(labels.len(), rows.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(labels[i].as_str().unwrap(), row[0], "row {i}");
        for (k, cell) in row[1..].iter().enumerate() {
            let p = probs[i][k].as_f64().unwrap();
            assert_eq!(p, cell.parse::<f64>().unwrap(), "row {i} {}", header[k + 1]);
        }
    }

    // Protocol errors: JSON {"error"} with a 4xx code, never a crash.
    let a = &addr;
    let infer_body =
        json!({"inputs": [{"name": "island", "shape": [1], "datatype": "BYTES", "data": ["Biscoe"]}]});
    for (method, path, body, status) in [
        ("GET", "/v2/models/nope", None, 404),
        ("GET", "/v2/models/..%2Fetc", None, 404),
        ("GET", "/v2/models/penguins/versions/7", None, 404),
        ("POST", "/v2/models/penguins/versions/7/infer", Some(infer_body.to_string()), 404),
        ("POST", "/v2/models/penguins/infer", Some("{not json".to_string()), 400),
        ("POST", "/v2/models/penguins/infer", Some(r#"{"inputs": 3}"#.to_string()), 400),
        ("POST", "/v2/models/penguins/infer", Some(infer_body.to_string()), 400),
        (
            "POST",
            "/v2/models/penguins/infer",
            Some(
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]})
                    .to_string(),
            ),
            400,
        ),
    ] {
        let (code, v) = http(a, method, path, body.as_deref());
        assert_eq!(code, status, "{method} {path}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: {v}");
    }
    let (code, v) = http(a, "GET", "/v2/health/ready", None);
    assert_eq!((code, v["ready"].as_bool()), (200, Some(true)));
    // The endpoint compares what it scored with the training file named in run.json.
    let (code, drift) = http(a, "GET", "/v2/models/penguins/drift", None);
    assert_eq!(code, 200, "{drift}");
    let cols = drift["columns"].as_array().unwrap();
    let bill = cols.iter().find(|c| c["column"] == "bill_length_mm").unwrap();
    assert_eq!(bill["n_current"].as_u64(), Some(rows.len() as u64));
    assert!(drift["verdict"].is_string());
}

#[test]
fn tritonclient_regression_matches_quarry_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("cars");
    train(&example("cars/train.csv"), "Miles_per_Gallon", &run);
    let test = example("cars/test.csv");
    let (_, rows) = predict_csv(&run, &test, &tmp.path().join("p.csv"));
    let (_server, addr) = serve_model(&["--model", run.to_str().unwrap(), "--name", "cars"]);
    let got = triton(&addr, "cars", &test, &tmp.path().join("t.json"));
    let values = got["outputs"]["prediction"].as_array().unwrap();
    assert_eq!(values.len(), rows.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(values[i].as_f64().unwrap(), row[0].parse::<f64>().unwrap(), "row {i}");
    }
}

#[test]
fn registry_versions_aliases_and_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let train_csv = tmp.path().join("train.csv");
    std::fs::copy(example("penguins/train.csv"), &train_csv).unwrap();
    let t = train_csv.to_str().unwrap();
    assert_eq!(quarry_ok(&["data", "register", t, "--name", "penguins", "--store", s]).trim(), "penguins:1");
    assert_eq!(quarry_ok(&["data", "register", t, "--name", "penguins", "--store", s]).trim(), "penguins:1");
    let shown_data: Value =
        serde_json::from_str(&quarry_ok(&["data", "show", "penguins:1", "--store", s])).unwrap();
    assert_eq!(shown_data["n_rows"].as_u64(), Some(275));
    for bad in ["../x", "a/b", ".."] {
        let out = quarry(&["data", "register", t, "--name", bad, "--store", s]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid name"), "{bad}");
    }

    let run = tmp.path().join("run");
    train(&train_csv, "species", &run);
    let r = run.to_str().unwrap();
    assert_eq!(
        quarry_ok(&["models", "register", r, "--name", "peng", "--tag", "team=ml", "--store", s]).trim(),
        "peng:1"
    );
    assert_eq!(quarry_ok(&["models", "register", r, "--name", "peng", "--store", s]).trim(), "peng:1");
    quarry_ok(&["models", "alias", "peng:1", "production", "--store", s]);
    let shown: Value =
        serde_json::from_str(&quarry_ok(&["models", "show", "peng:production", "--store", s])).unwrap();
    assert_eq!(shown["lineage"]["dataset"], "penguins:1");
    assert_eq!(shown["tags"]["team"], "ml");
    assert_eq!(shown["aliases"], json!(["production"]));
    assert_eq!(quarry(&["models", "show", "peng:9", "--store", s]).status.code(), Some(2));
    let down = tmp.path().join("down");
    quarry_ok(&["models", "download", "peng:production", "--out", down.to_str().unwrap(), "--store", s]);
    assert_eq!(
        std::fs::read(down.join("model/pipeline.json")).unwrap(),
        std::fs::read(run.join("model/pipeline.json")).unwrap()
    );

    // Every registered model over the protocol; versions are registry versions or aliases.
    let test = example("penguins/test.csv");
    let (_, rows) = predict_csv(&run, &test, &tmp.path().join("p.csv"));
    let (_server, addr) = serve_model(&["--registry", s]);
    let first = std::fs::read_to_string(&test).unwrap();
    let mut lines = first.lines();
    let names: Vec<&str> = lines.next().unwrap().split(',').collect();
    let cells: Vec<&str> = lines.next().unwrap().split(',').collect();
    let inputs: Vec<Value> = names
        .iter()
        .zip(&cells)
        .filter(|(n, _)| **n != "species")
        .map(|(n, c)| match c.parse::<f64>() {
            Ok(x) if *n != "island" && *n != "sex" => {
                json!({"name": n, "shape": [1], "datatype": "FP64", "data": [x]})
            }
            _ => json!({"name": n, "shape": [1], "datatype": "BYTES", "data": [c]}),
        })
        .collect();
    let body = json!({"inputs": inputs}).to_string();
    for path in [
        "/v2/models/peng/infer",
        "/v2/models/peng/versions/production/infer",
        "/v2/models/peng/versions/1/infer",
    ] {
        let (code, v) = http(&addr, "POST", path, Some(&body));
        assert_eq!(code, 200, "{path}: {v}");
        assert_eq!(v["outputs"][0]["data"][0].as_str(), Some(rows[0][0].as_str()), "{path}");
        assert_eq!(v["model_version"], "1");
    }
    let (code, v) = http(&addr, "POST", "/v2/models/peng/versions/staging/infer", Some(&body));
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].is_string());
    let (code, v) = http(&addr, "GET", "/v2/models/peng/drift", None);
    assert_eq!(code, 200, "{v}");

    // A job reads a registered dataset by NAME:VERSION; its model's lineage names that version.
    let fitted = tmp.path().join("fitted");
    let f = fitted.to_str().unwrap();
    quarry_ok(&[
        "fit",
        "--data",
        "penguins:1",
        "--store",
        s,
        "--target",
        "species",
        "--max-trials",
        "2",
        "--out",
        f,
    ]);
    let record = read_json(&fitted.join("run.json"));
    assert_eq!(record["dataset"]["content_hash"], shown_data["sha256"], "{record}");
    assert_eq!(quarry_ok(&["models", "register", f, "--name", "peng", "--store", s]).trim(), "peng:2");
    let shown: Value = serde_json::from_str(&quarry_ok(&["models", "show", "peng:2", "--store", s])).unwrap();
    assert_eq!(shown["lineage"]["dataset"], "penguins:1");
    let out =
        quarry(&["fit", "--data", "penguins:7", "--store", s, "--target", "species", "--max-trials", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("penguins:7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of `src` with `column` shifted by `by`.
fn shifted(src: &Path, column: &str, by: f64, out: &Path) {
    let text = std::fs::read_to_string(src).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let k = header.split(',').position(|c| c == column).unwrap();
    let mut w = format!("{header}\n");
    for line in lines {
        let mut cells: Vec<String> = line.split(',').map(str::to_string).collect();
        if let Ok(v) = cells[k].parse::<f64>() {
            cells[k] = (v + by).to_string();
        }
        w.push_str(&cells.join(","));
        w.push('\n');
    }
    std::fs::write(out, w).unwrap();
}

fn std_dev(path: &Path, column: &str) -> f64 {
    let (header, rows) = read_csv(path);
    let k = header.iter().position(|c| c == column).unwrap();
    let v: Vec<f64> = rows.iter().filter_map(|r| r[k].parse().ok()).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

#[test]
fn drift_flags_the_shifted_column_only_and_not_a_random_split() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = example("credit_data/train.csv");
    let current = example("credit_data/test.csv");
    let json_out = tmp.path().join("drift.json");
    let args = |cur: &Path| {
        vec![
            "drift".to_string(),
            "--reference".into(),
            reference.display().to_string(),
            "--current".into(),
            cur.display().to_string(),
            "--target".into(),
            "Status".into(),
            "--json".into(),
            json_out.display().to_string(),
        ]
    };
    let run = |cur: &Path| {
        let a = args(cur);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        quarry_ok(&refs);
        read_json(&json_out)
    };
    let same = run(&current);
    assert_eq!(same["drifted_columns"], json!([]), "{same:#}");
    assert_ne!(same["verdict"], "drift");
    assert!(same["columns"].as_array().unwrap().len() >= 10);

    let moved = tmp.path().join("moved.csv");
    shifted(&current, "Age", std_dev(&reference, "Age"), &moved);
    let report = run(&moved);
    assert_eq!(report["drifted_columns"], json!(["Age"]), "{report:#}");
    assert_eq!(report["verdict"], "drift");
    let age = report["columns"].as_array().unwrap().iter().find(|c| c["column"] == "Age").unwrap();
    assert_eq!(age["test"], "ks");
    assert!(age["psi"].as_f64().unwrap() > 0.25 && age["p_value"].as_f64().unwrap() < 1e-6, "{age}");
}
