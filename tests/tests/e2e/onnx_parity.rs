//! `model.onnx` in every run folder scores like `quarry predict` in onnxruntime
//! (`scripts/onnx_parity.py`, in the venv `scripts/onnx_venv.sh` creates).
//!
//! Every family on a binary, a multiclass, a regression and a free-text dataset, plus
//! ensemble winners; all the models go to one parity process (onnxruntime's import dominates
//! a single small check), and tree models are kept small.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use quarry_tests::{example, predict_csv, quarry_ok, read_json, repo_root, venv_python};

/// Predicts each `(run, test)` with quarry, then checks all of them with onnxruntime in one
/// process; returns the parity script's JSON line per run, in order. With `raw`, text inputs
/// get the CSV cells as they are (the graph trims them and maps missing markers).
fn parity(runs: &[(PathBuf, PathBuf)], raw: bool) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(venv_python("onnx_venv.sh"));
    cmd.arg(repo_root().join("scripts/onnx_parity.py"));
    if raw {
        cmd.arg("--raw");
    }
    for (run, test) in runs {
        let preds = run.join(if raw { "quarry_preds_raw.csv" } else { "quarry_preds.csv" });
        predict_csv(run, test, &preds);
        cmd.args([run.join("model.onnx"), test.clone(), preds]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "parity failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), runs.len(), "{stdout}");
    lines
}

/// A free-text dataset: reviews whose words (in any case, some with punctuation attached)
/// decide the label, a numeric column, and missing reviews; (train, test, the test rows as raw
/// cells: padded with spaces inside the quotes, missing as " ", " NA " and "").
fn text_data(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    const WORDS: [&str; 14] = [
        "great", "Great,", "GREAT", "bad", "awful!", "fine", "the", "food", "service", "was", "very", "NOT",
        "really", "ÇA",
    ];
    let mut state: u64 = 7;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    // One pass writes each row twice: as clean cells and as raw cells (the same draws).
    let mut write = |name: &str, rows: usize| {
        let header = "review,price,label\n";
        let (mut csv, mut raw) = (String::from(header), String::from(header));
        for i in 0..rows {
            let n_words = 4 + next(6) as usize;
            let words: Vec<&str> = (0..n_words).map(|_| WORDS[next(WORDS.len() as u64) as usize]).collect();
            let text = words.join(if i % 7 == 0 { "  " } else { " " });
            let good = words.iter().any(|w| w.to_lowercase().starts_with("great"));
            let label = if good != (next(10) == 0) { "good" } else { "poor" };
            let (review, raw_review) = match i % 23 {
                5 => (String::new(), "\" \"".to_string()),
                11 => ("NA".to_string(), "\" NA \"".to_string()),
                _ if i % 3 == 1 => (format!("\"{text} number {i}\""), format!("\"  {text} number {i} \"")),
                _ => (format!("\"{text} number {i}\""), format!("\"{text} number {i}\"")),
            };
            let price = next(1000) as f64 / 10.0;
            writeln!(csv, "{review},{price},{label}").unwrap();
            writeln!(raw, "{raw_review},{price},{label}").unwrap();
        }
        let path = dir.join(name);
        std::fs::write(&path, csv).unwrap();
        let raw_path = dir.join(name.replace(".csv", "_raw.csv"));
        std::fs::write(&raw_path, raw).unwrap();
        (path, raw_path)
    };
    let (train, _) = write("text_train.csv", 240);
    let (test, raw) = write("text_test.csv", 80);
    (train, test, raw)
}

/// A copy of an example CSV (no quoted fields) with raw cells in every column but `target`:
/// values padded with spaces, "NA", " NA " and empty cells, which `quarry predict` reads as the
/// trimmed value or missing.
fn raw_cells(src: &Path, target: &str, out: &Path) {
    let text = std::fs::read_to_string(src).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let t = header.split(',').position(|c| c == target).unwrap();
    let mut csv = format!("{header}\n");
    for (i, line) in lines.enumerate() {
        assert!(!line.contains('"'), "{}: quoted fields", src.display());
        let cells: Vec<String> = line
            .split(',')
            .enumerate()
            .map(|(j, v)| match (j != t, (i + j) % 7) {
                (true, 1 | 4) if !v.is_empty() => format!("  {v} "),
                (true, 2) => "NA".to_string(),
                (true, 3) => " NA ".to_string(),
                (true, 5) => String::new(),
                _ => v.to_string(),
            })
            .collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    std::fs::write(out, csv).unwrap();
}

#[test]
fn every_exported_family_matches_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let (text_train, text_test, text_raw) = text_data(dir.path());
    let data: Vec<(String, PathBuf, PathBuf, PathBuf, &str)> =
        [("penguins", "species"), ("credit_data", "Status"), ("cars", "Miles_per_Gallon")]
            .into_iter()
            .map(|(d, t)| {
                let test = example(&format!("{d}/test.csv"));
                let raw = dir.path().join(format!("{d}_raw.csv"));
                raw_cells(&test, t, &raw);
                (d.to_string(), example(&format!("{d}/train.csv")), test, raw, t)
            })
            .chain([("text".to_string(), text_train, text_test, text_raw, "label")])
            .collect();
    let (mut runs, mut raw_runs) = (Vec::new(), Vec::new());
    for (name, train, test, raw, target) in &data {
        let mut families = vec!["gbdt", "random_forest", "extra_trees", "linear", "knn", "svm", "mlp"];
        if name != "cars" {
            families.push("naive_bayes");
        }
        for family in families {
            let run = dir.path().join(format!("{name}-{family}"));
            // Small tree models keep the test quick; forests still average many trees.
            let params: &[&str] = match family {
                "gbdt" | "random_forest" | "extra_trees" => &["--param", "n_estimators=20"],
                "mlp" => &["--param", "epochs=20", "--param", "hidden=16"],
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
            assert_eq!(record["onnx"]["file"], "model.onnx", "{name}/{family}: {}", record["onnx"]);
            runs.push((run.clone(), test.clone()));
            raw_runs.push((run, raw.clone()));
        }
    }
    let text_run = read_json(&dir.path().join("text-gbdt/model/pipeline.json"));
    let text_transform = &text_run["featurizer"]["columns"][0]["transform"];
    assert_eq!(text_transform["type"], "tf_idf", "{text_transform}");
    assert!(text_transform["terms"].as_array().unwrap().iter().any(|t| t == "great,"), "{text_transform}");
    for (r, (run, _)) in parity(&runs, false).iter().zip(&runs) {
        assert_eq!(r["ok"], true, "{}: {r}", run.display());
        assert!(r["max_abs_diff"].as_f64().unwrap() <= 1e-9, "{}: {r}", run.display());
    }
    // Raw cell text (padding, "NA", empty) fed as is: the graph trims and maps it as the CSV
    // reader does (issue 23, item 15).
    let results = parity(&raw_runs, true);
    let failed: Vec<String> = results
        .iter()
        .zip(&raw_runs)
        .filter(|(r, _)| r["ok"] != true || r["max_abs_diff"].as_f64().is_none_or(|d| d > 1e-9))
        .map(|(r, (run, _))| format!("{}: {r}", run.display()))
        .collect();
    assert!(failed.is_empty(), "raw cells differ from quarry predict:\n{}", failed.join("\n"));
}

#[test]
fn ensemble_winner_and_reexport_match_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    // Binary and regression winners: the ensemble sum is the same code for every task.
    for (data, target) in [("credit_data", "Status"), ("cars", "Miles_per_Gallon")] {
        let run = dir.path().join(data);
        let train = example(&format!("{data}/train.csv"));
        quarry_ok(&[
            "fit",
            "--data",
            train.to_str().unwrap(),
            "--target",
            target,
            "--max-trials",
            "4",
            "--seed",
            "2",
            "--out",
            run.to_str().unwrap(),
        ]);
        // Re-export gives the same bytes.
        let again = dir.path().join(format!("{data}.onnx"));
        quarry_ok(&["export", "--model", run.to_str().unwrap(), "--out", again.to_str().unwrap()]);
        assert!(std::fs::read(&again).unwrap() == std::fs::read(run.join("model.onnx")).unwrap());
        runs.push((run, example(&format!("{data}/test.csv"))));
    }
    for r in parity(&runs, false) {
        assert_eq!(r["ok"], true, "{r}");
    }
}
