//! `fit --task forecast` → run folder → `predict` on the shipped forecasting examples.

use std::path::Path;
use std::process::Command;

use quarry_tests::{example, predict_csv, quarry, quarry_ok, read_csv, read_json, venv_python};

/// `model.onnx` (the one-step global model) gives, in onnxruntime, quarry's own one-step
/// forecasts for the feature rows in `onnx_check.json`; run.json names what was not exported.
fn onnx_matches_quarry(run: &Path, record: &serde_json::Value) {
    let onnx = &record["onnx"];
    assert_eq!(onnx["exported"], true, "{onnx}");
    let model = onnx["model"].as_str().unwrap();
    assert!(model.starts_with("gbdt") || model.starts_with("ridge"), "{model}");
    let members: Vec<&str> = record["final_model"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["family"].as_str().unwrap())
        .collect();
    for m in members.iter().filter(|m| m.starts_with("ets") || m.contains("naive")) {
        assert!(onnx["not_exported"].as_array().unwrap().iter().any(|n| n == m), "{m} not listed: {onnx}");
        assert!(onnx["reason"].as_str().unwrap().contains("local models"));
    }
    let python = venv_python("onnx_venv.sh");
    let script = r#"
import json, sys, numpy as np, onnxruntime as ort
run = sys.argv[1]
rows = json.load(open(run + "/onnx_check.json"))
s = ort.InferenceSession(run + "/model.onnx")
meta = s.get_modelmeta().custom_metadata_map
x = np.array([[np.nan if v is None else v for v in r["features"]] for r in rows], dtype=np.float32)
assert x.shape[1] == len(json.loads(meta["inputs"])["features"]), meta["inputs"]
got = s.run(["variable"], {"features": x, "scale": np.array([[r["scale"]] for r in rows])})[0][:, 0]
want = np.array([r["expected"] for r in rows])
err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))
print(json.dumps({"rows": len(rows), "max_rel_err": err, "strategy": meta["strategy"]}))
assert err < 1e-6, err
"#;
    let out = Command::new(python).args(["-c", script, run.to_str().unwrap()]).output().unwrap();
    assert!(
        out.status.success(),
        "onnx check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tiny LCG so the generated data is the same on every machine.
fn lcg(state: &mut u64) -> f64 {
    *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (*state >> 33) as f64 / (1u64 << 31) as f64
}

/// Two daily stores whose sales jump by 40 on promotion days, plus a short third store.
/// Returns (train CSV, future CSV with promo and the true sales).
fn promo_data() -> (String, String) {
    let mut rng = 11u64;
    let (mut train, mut future) =
        (String::from("store,date,promo,sales\n"), String::from("store,date,promo,sales\n"));
    for (store, level, n) in [("a", 100.0, 220), ("b", 250.0, 220), ("tiny", 80.0, 20)] {
        for t in 0..n + 14 {
            let promo = u8::from(lcg(&mut rng) < 0.3);
            let day = 1 + t; // 2021-01-01 + t days
            let date = format!("{}", day);
            let y = level + 8.0 * ((t % 7) as f64) + 40.0 * f64::from(promo) + 3.0 * lcg(&mut rng);
            let line = format!("{store},{date},{promo},{y:.2}\n");
            if t < n { train.push_str(&line) } else { future.push_str(&line) }
        }
    }
    (train, future)
}

fn fit_forecast(data: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "fit",
        "--task",
        "forecast",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--budget",
        "60s",
    ];
    args.extend_from_slice(extra);
    quarry_ok(&args);
}

fn column(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

#[test]
fn airpassengers_beats_seasonal_naive() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let train = example("airpassengers/train.csv");
    fit_forecast(&train, &run, &["--target", "passengers", "--time-column", "month", "--horizon", "12"]);
    for f in ["leaderboard.json", "run.json", "guardrails.json", "model/forecast.json"] {
        assert!(run.join(f).exists(), "run folder lacks {f}");
    }
    let record = read_json(&run.join("run.json"));
    assert_eq!(record["frequency"], "MS");
    assert_eq!(record["seasonality"], 12);
    assert!(record["validation"]["windows"].as_array().unwrap().len() >= 2);
    onnx_matches_quarry(&run, &record);

    let out = dir.path().join("forecast.csv");
    quarry_ok(&["predict", "--model", run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let (header, rows) = read_csv(&out);
    assert_eq!(header, ["month", "prediction", "q10", "q50", "q90"]);
    assert_eq!(rows.len(), 12);
    assert_eq!(rows[0][0], "1960-01-01");

    // Test MASE against the held-out year; seasonal naive scores 1.5709 on it.
    let (_, test) = read_csv(&example("airpassengers/test.csv"));
    let (_, hist) = read_csv(&train);
    let y: Vec<f64> = hist.iter().map(|r| r[1].parse().unwrap()).collect();
    let scale = y[12..].iter().zip(&y).map(|(a, b)| (a - b).abs()).sum::<f64>() / (y.len() - 12) as f64;
    let mut abs_err = 0.0;
    for (r, t) in rows.iter().zip(&test) {
        assert_eq!(r[0], t[0]);
        let p: f64 = r[1].parse().unwrap();
        let (q10, q50, q90): (f64, f64, f64) =
            (r[2].parse().unwrap(), r[3].parse().unwrap(), r[4].parse().unwrap());
        assert!(q10 <= q50 && q50 <= q90 && q10 < q90, "quantiles out of order: {r:?}");
        abs_err += (p - t[1].parse::<f64>().unwrap()).abs();
    }
    let mase = abs_err / 12.0 / scale;
    assert!(mase < 1.5709, "test MASE {mase} is no better than seasonal naive");
}

#[test]
fn multi_series_row_order_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let train = example("sales_synthetic/train.csv");
    let text = std::fs::read_to_string(&train).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let header = lines.remove(0);
    lines.reverse();
    let shuffled = dir.path().join("shuffled.csv");
    std::fs::write(&shuffled, format!("{header}\n{}\n", lines.join("\n"))).unwrap();

    let args = ["--target", "sales", "--time-column", "month", "--horizon", "6", "--series-id", "store"];
    let test = example("sales_synthetic/test.csv");
    let mut outputs = Vec::new();
    for (name, data) in [("a", &train), ("b", &shuffled)] {
        let run = dir.path().join(name);
        fit_forecast(data, &run, &args);
        let out = dir.path().join(format!("{name}.csv"));
        predict_csv(&run, &test, &out);
        outputs.push(std::fs::read_to_string(&out).unwrap());
        let guard = read_json(&run.join("guardrails.json"));
        assert_eq!(guard["n_series"], 3);
        assert_eq!(guard["gaps_filled_as_missing"], 2, "two missing months of store north");
        assert_eq!(guard["missing_targets"], 1);
    }
    assert_eq!(outputs[0], outputs[1], "forecasts depend on the row order");
    let (header, rows) = read_csv(&dir.path().join("a.csv"));
    assert_eq!(header[..3], ["store", "month", "prediction"]);
    assert_eq!(rows.len(), 18);
    // Forecasts are on the scale of each store, in the test file's row order.
    let (_, truth) = read_csv(&test);
    let p = column(&header, "prediction");
    for (r, t) in rows.iter().zip(&truth) {
        assert_eq!(r[..2], t[..2]);
        let (pred, actual): (f64, f64) = (r[p].parse().unwrap(), t[2].parse().unwrap());
        assert!((pred - actual).abs() / actual < 0.35, "{r:?} vs {t:?}");
    }
}

#[test]
fn forecast_input_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, "id,date,y\na,2020-01-01,1\nb,2020-01-01,2\nb,2020-01-01,3\n").unwrap();
    let out = quarry(&[
        "fit",
        "--task",
        "forecast",
        "--data",
        dup.to_str().unwrap(),
        "--target",
        "y",
        "--time-column",
        "date",
        "--horizon",
        "2",
        "--series-id",
        "id",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("series \"b\"") && err.contains("2020-01-01"), "{err}");

    let run = dir.path().join("air");
    fit_forecast(
        &example("airpassengers/train.csv"),
        &run,
        &["--target", "passengers", "--time-column", "month", "--horizon", "12"],
    );
    let past = dir.path().join("past.csv");
    std::fs::write(&past, "month\n1955-01-01\n").unwrap();
    let out = quarry(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--data",
        past.to_str().unwrap(),
        "--out",
        dir.path().join("p.csv").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not after the end of the training data"));
}

/// Converts day numbers in the generated CSVs to ISO dates (2021-01-01 = day 1).
fn with_dates(csv: &str) -> String {
    let mut out = String::new();
    for (i, line) in csv.lines().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        if i == 0 {
            out.push_str(line);
        } else {
            let day: i64 = f[1].parse().unwrap();
            // Days since 1970-01-01 of 2021-01-01 is 18628.
            let (y, m, d) = civil(18_627 + day);
            out.push_str(&format!("{},{y:04}-{m:02}-{d:02},{},{}", f[0], f[2], f[3]));
        }
        out.push('\n');
    }
    out
}

/// Howard Hinnant's days-to-civil.
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn known_covariate_lowers_validation_error_and_drives_forecasts() {
    let dir = tempfile::tempdir().unwrap();
    let (train, future) = promo_data();
    let (train_p, future_p) = (dir.path().join("train.csv"), dir.path().join("future.csv"));
    std::fs::write(&train_p, with_dates(&train)).unwrap();
    std::fs::write(&future_p, with_dates(&future)).unwrap();
    let base = ["--target", "sales", "--time-column", "date", "--series-id", "store", "--horizon", "14"];
    let with = dir.path().join("with");
    let without = dir.path().join("without");
    fit_forecast(&train_p, &with, &[&base[..], &["--known-covariate", "promo"]].concat());
    fit_forecast(&train_p, &without, &[&base[..], &["--drop", "promo"]].concat());
    let score =
        |run: &Path| read_json(&run.join("run.json"))["final_model"]["validation_score"].as_f64().unwrap();
    let (a, b) = (score(&with), score(&without));
    assert!(a < 0.7 * b, "validation MASE with the promo covariate {a} vs without {b}");
    let guard = read_json(&with.join("guardrails.json"));
    assert_eq!(guard["known_covariates"], serde_json::json!(["promo"]));
    assert_eq!(guard["short_series"], serde_json::json!(["tiny"]), "{guard}");
    let guard = read_json(&without.join("guardrails.json"));
    assert_eq!(guard["ignored_columns"], serde_json::json!(["promo"]));

    // Forecasts follow the future promo flags; the short series is forecast too.
    let out = dir.path().join("f.csv");
    let (header, rows) = predict_csv(&with, &future_p, &out);
    let (_, truth) = read_csv(&future_p);
    let p = column(&header, "prediction");
    assert_eq!(rows.len(), truth.len());
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let mut abs_err = 0.0;
    for (r, t) in rows.iter().zip(&truth) {
        assert_eq!(r[..2], t[..2]);
        let pred: f64 = r[p].parse().unwrap();
        abs_err += (pred - t[3].parse::<f64>().unwrap()).abs();
        if t[0] != "tiny" {
            if t[2] == "1" { on.push(pred) } else { off.push(pred) }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(mean(&on) - mean(&off) > 20.0, "promo days {} vs other days {}", mean(&on), mean(&off));
    assert!(abs_err / (rows.len() as f64) < 15.0, "mean absolute error {}", abs_err / rows.len() as f64);

    // The known covariate's future values are required.
    let bare = dir.path().join("bare.csv");
    std::fs::write(&bare, "store,date\na,2021-08-09\n").unwrap();
    let res = quarry(&[
        "predict",
        "--model",
        with.to_str().unwrap(),
        "--data",
        bare.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(res.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("\"promo\""),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}
