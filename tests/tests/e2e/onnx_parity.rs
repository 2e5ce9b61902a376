//! `model.onnx` in every run folder scores like `quarry predict` in onnxruntime
//! (`scripts/onnx_parity.py`, in the venv `scripts/onnx_venv.sh` creates).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use quarry_tests::{example, quarry_ok, read_json, repo_root};

fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/onnx_venv.sh")).output().unwrap();
        assert!(out.status.success(), "onnx_venv.sh: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Predicts `test` with quarry and with onnxruntime; returns the parity script's JSON.
fn parity(run: &Path, test: &Path) -> serde_json::Value {
    let preds = run.join("quarry_preds.csv");
    quarry_ok(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--out",
        preds.to_str().unwrap(),
    ]);
    let out = Command::new(python())
        .arg(repo_root().join("scripts/onnx_parity.py"))
        .args([run.join("model.onnx"), test.to_path_buf(), preds])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "parity failed for {}: {stdout}\n{}",
        run.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

const DATA: [(&str, &str); 3] =
    [("penguins", "species"), ("credit_data", "Status"), ("cars", "Miles_per_Gallon")];

#[test]
fn every_exported_family_matches_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    for (data, target) in DATA {
        let train = example(&format!("{data}/train.csv"));
        let test = example(&format!("{data}/test.csv"));
        let mut families = vec!["gbdt", "random_forest", "extra_trees", "linear", "knn"];
        if data != "cars" {
            families.push("naive_bayes");
        }
        for family in families {
            let run = dir.path().join(format!("{data}-{family}"));
            // Small models keep the test quick; forests still average many trees.
            let params: &[&str] = match family {
                "random_forest" | "extra_trees" => &["--param", "n_estimators=30"],
                _ => &[],
            };
            let mut args = vec![
                "train",
                "--data",
                train.to_str().unwrap(),
                "--target",
                target,
                "--family",
                family,
                "--seed",
                "5",
                "--out",
                run.to_str().unwrap(),
            ];
            args.extend_from_slice(params);
            quarry_ok(&args);
            let record = read_json(&run.join("run.json"));
            assert_eq!(record["onnx"]["file"], "model.onnx", "{data}/{family}: {}", record["onnx"]);
            let r = parity(&run, &test);
            assert_eq!(r["ok"], true, "{data}/{family}: {r}");
            assert!(r["max_abs_diff"].as_f64().unwrap() <= 1e-9, "{data}/{family}: {r}");
        }
    }
}

#[test]
fn ensemble_winner_and_reexport_match_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    for (data, target) in DATA {
        let run = dir.path().join(data);
        let train = example(&format!("{data}/train.csv"));
        quarry_ok(&[
            "fit",
            "--data",
            train.to_str().unwrap(),
            "--target",
            target,
            "--max-trials",
            "6",
            "--seed",
            "2",
            "--out",
            run.to_str().unwrap(),
        ]);
        let r = parity(&run, &example(&format!("{data}/test.csv")));
        assert_eq!(r["ok"], true, "{data}: {r}");
        // Re-export gives the same bytes.
        let again = dir.path().join(format!("{data}.onnx"));
        quarry_ok(&["export", "--model", run.to_str().unwrap(), "--out", again.to_str().unwrap()]);
        assert!(std::fs::read(&again).unwrap() == std::fs::read(run.join("model.onnx")).unwrap());
    }
}
