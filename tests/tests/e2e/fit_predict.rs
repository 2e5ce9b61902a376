//! `fit` → run folder → `evaluate` / `predict` on the shipped example datasets.

use std::path::Path;

use quarry_tests::{example, predict, predict_csv, quarry, quarry_ok, read_json};
use sha2::{Digest, Sha256};

fn fit(data: &Path, target: &str, out: &Path, extra: &[&str]) {
    let mut args =
        vec!["fit", "--data", data.to_str().unwrap(), "--target", target, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    quarry_ok(&args);
}

fn evaluate(model: &Path, data: &Path) -> serde_json::Value {
    let out = quarry_ok(&["evaluate", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("evaluate printed non-JSON ({e}): {out}"))
}

#[test]
fn penguins_classification_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let train = example("penguins/train.csv");
    let test = example("penguins/test.csv");
    fit(&train, "species", &run, &["--max-trials", "8", "--seed", "1"]);

    let metrics = evaluate(&run, &test);
    assert_eq!(metrics["task"], "multiclass");
    let acc = metrics["metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "test accuracy {acc} < 0.95");
    let ll = metrics["metrics"]["log_loss"].as_f64().unwrap();
    assert!(ll < 0.3, "test log loss {ll}");

    // The run folder: leaderboard with every trial, a run record naming the data by hash.
    let board = read_json(&run.join("leaderboard.json"));
    let board = board.as_array().unwrap();
    assert_eq!(board.len(), 8);
    for key in
        ["id", "family", "params", "metric", "validation_score", "fit_seconds", "status", "failure_reason"]
    {
        assert!(board[0].get(key).is_some(), "leaderboard entry lacks {key}: {}", board[0]);
    }
    let families: std::collections::BTreeSet<&str> =
        board.iter().map(|e| e["family"].as_str().unwrap()).collect();
    assert!(families.len() >= 3, "searched only {families:?}");
    let record = read_json(&run.join("run.json"));
    let hash: String =
        Sha256::digest(std::fs::read(&train).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(record["dataset"]["content_hash"], hash.as_str());
    assert_eq!(record["task"], "multiclass");
    assert_eq!(record["seed"], 1);
    assert!(
        record["schema"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "island" && c["kind"] == "categorical")
    );

    // Predict: one row per input row, a probability column per class summing to 1.
    let preds = dir.path().join("preds.csv");
    let (header, rows) = predict_csv(&run, &test, &preds);
    assert_eq!(header, ["prediction", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]);
    assert_eq!(rows.len(), 69);
    for r in &rows {
        let sum: f64 = r[1..].iter().map(|p| p.parse::<f64>().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-9, "probabilities sum to {sum}");
        assert!(["Adelie", "Chinstrap", "Gentoo"].contains(&r[0].as_str()));
    }
}

#[test]
fn cars_regression_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    fit(&example("cars/train.csv"), "Miles_per_Gallon", &run, &["--max-trials", "10", "--seed", "3"]);
    let metrics = evaluate(&run.join("model"), &example("cars/test.csv"));
    assert_eq!(metrics["task"], "regression");
    let r2 = metrics["metrics"]["r2"].as_f64().unwrap();
    assert!(r2 >= 0.85, "test r2 {r2} < 0.85");
    let rmse = metrics["metrics"]["rmse"].as_f64().unwrap();
    assert!(rmse < 7.972 / 2.0, "rmse {rmse} not far below the trivial 7.97");

    let preds = dir.path().join("p.csv");
    let test = example("cars/test.csv");
    let (header, rows) = predict_csv(&run, &test, &preds);
    assert_eq!(header, ["prediction"]);
    assert_eq!(rows.len(), 80);
}

#[test]
fn same_seed_and_trial_count_give_the_same_leaderboard() {
    let dir = tempfile::tempdir().unwrap();
    let data = example("credit_data/train.csv");
    let runs: Vec<_> = (0..2).map(|i| dir.path().join(format!("run{i}"))).collect();
    for (i, run) in runs.iter().enumerate() {
        let threads = if i == 0 { "1" } else { "2" };
        fit(&data, "Status", run, &["--max-trials", "30", "--seed", "7", "--threads", threads]);
    }
    let strip = |v: serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| (e["id"].clone(), e["params"].clone(), e["validation_score"].clone()))
            .collect()
    };
    let a = strip(read_json(&runs[0].join("leaderboard.json")));
    let b = strip(read_json(&runs[1].join("leaderboard.json")));
    assert_eq!(a, b, "1 thread and 2 threads disagree");
    assert_eq!(a.len(), 30);
    // The final model (ensemble weights, every tree) is byte-identical too.
    let model = |r: &std::path::PathBuf| std::fs::read(r.join("model/pipeline.json")).unwrap();
    assert!(model(&runs[0]) == model(&runs[1]), "model bundles differ");
}

/// Columns in another order, an extra column, unseen levels and new gaps: still one prediction per row.
#[test]
fn predict_tolerates_reordered_columns_unseen_levels_and_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    fit(&example("penguins/train.csv"), "species", &run, &["--max-trials", "4"]);
    let odd = dir.path().join("odd.csv");
    std::fs::write(
        &odd,
        "extra,sex,body_mass_g,island,year,flipper_length_mm,bill_depth_mm,bill_length_mm\n\
         x,female,3500,Atlantis,2008,190,18.5,39.0\n\
         y,,,,,,,\n\
         z,male,5500,Biscoe,2009,225,15.0,49.0\n",
    )
    .unwrap();
    let preds = dir.path().join("p.csv");
    let (_, rows) = predict_csv(&run, &odd, &preds);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][0], "Adelie", "small-billed, deep-billed bird");
    assert_eq!(rows[2][0], "Gentoo", "heavy, long-flippered bird");

    // A feature column the model needs is missing: a clear error naming it.
    let missing = dir.path().join("missing.csv");
    std::fs::write(&missing, "island,bill_length_mm\nBiscoe,40\n").unwrap();
    let out = predict(&run, &missing, &preds);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bill_depth_mm"), "{err}");
}

#[test]
fn profile_guardrails_and_column_overrides() {
    let credit = example("credit_data/train.csv");
    let out = quarry_ok(&["profile", "--data", credit.to_str().unwrap(), "--target", "Status"]);
    assert!(out.contains("binary task"), "{out}");
    assert!(out.contains("\"Income\": 292 of 3563 values"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let cars = example("cars/train.csv");
    fit(
        &cars,
        "Miles_per_Gallon",
        &run,
        &["--max-trials", "2", "--drop", "Name", "--column-type", "Cylinders=categorical"],
    );
    let record = read_json(&run.join("run.json"));
    let schema = record["schema"].as_array().unwrap();
    let col = |name: &str| schema.iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(col("Name")["transform"]["type"], "dropped");
    assert_eq!(col("Cylinders")["kind"], "categorical");
    let guard = read_json(&run.join("guardrails.json"));
    assert_eq!(guard["n_rows"], 318);
    assert!(guard["findings"].as_array().unwrap().iter().any(|f| f["column"] == "Horsepower"));

    // An override naming a column that is not there: exit 2, naming it.
    let bad = quarry(&[
        "fit",
        "--data",
        cars.to_str().unwrap(),
        "--target",
        "Miles_per_Gallon",
        "--max-trials",
        "1",
        "--column-type",
        "Colour=categorical",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Colour"));
}

/// `quarry train`: every family, fixed parameters, beats the trivial baseline on held-out
/// rows; the same seed gives the same model bytes.
#[test]
fn train_every_family_beats_trivial_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("penguins", "species", "log_loss", 1.0538, false),
        ("cars", "Miles_per_Gallon", "rmse", 7.9717, false),
        ("credit_data", "Status", "roc_auc", 0.5, true),
    ];
    for (data, target, metric, trivial, higher_is_better) in cases {
        // naive_bayes predicts classes only, so it sits out the regression data set.
        let mut families = vec!["gbdt", "random_forest", "extra_trees", "linear", "knn"];
        if data != "cars" {
            families.push("naive_bayes");
        }
        for family in families {
            let run = dir.path().join(format!("{data}-{family}"));
            let train = example(&format!("{data}/train.csv"));
            let test = example(&format!("{data}/test.csv"));
            let args = [
                "train",
                "--data",
                train.to_str().unwrap(),
                "--target",
                target,
                "--family",
                family,
                "--valid",
                test.to_str().unwrap(),
                "--seed",
                "3",
                "--out",
                run.to_str().unwrap(),
            ];
            quarry_ok(&args);
            let record = read_json(&run.join("run.json"));
            let score = record["validation_metrics"][metric].as_f64().unwrap();
            let better = if higher_is_better { score > trivial + 0.2 } else { score < trivial * 0.6 };
            assert!(better, "{family} on {data}: {metric} {score} vs trivial {trivial}");
            if data == "penguins" {
                let again = dir.path().join(format!("{data}-{family}-again"));
                let mut args2 = args;
                args2[12] = again.to_str().unwrap();
                quarry_ok(&args2);
                let bytes = |r: &Path| std::fs::read(r.join("model/pipeline.json")).unwrap();
                assert!(bytes(&run) == bytes(&again), "{family}: same seed, different model bytes");
            }
        }
    }
    let bad = quarry(&[
        "train",
        "--data",
        example("penguins/train.csv").to_str().unwrap(),
        "--target",
        "species",
        "--family",
        "gbdt",
        "--param",
        "nleaves=3",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown parameter \"nleaves\""));

    // naive_bayes on a regression target: a clear error, not a crash.
    let nb = quarry(&[
        "train",
        "--data",
        example("cars/train.csv").to_str().unwrap(),
        "--target",
        "Miles_per_Gallon",
        "--family",
        "naive_bayes",
        "--out",
        dir.path().join("cars-nb").to_str().unwrap(),
    ]);
    assert!(!nb.status.success());
    let err = String::from_utf8_lossy(&nb.stderr);
    assert!(err.contains("naive") && err.contains("regression"), "{err}");
}

#[test]
fn group_column_splits_by_group_and_is_not_a_feature() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    fit(
        &example("cars/train.csv"),
        "Miles_per_Gallon",
        &run,
        &["--max-trials", "3", "--group-column", "Year"],
    );
    let record = read_json(&run.join("run.json"));
    assert_eq!(record["validation_grouped_by"], "Year");
    let year = record["schema"].as_array().unwrap().iter().find(|c| c["name"] == "Year").unwrap().clone();
    assert_eq!(year["transform"]["type"], "dropped");

    // Three islands cannot make five folds: a clear error, exit 2.
    let out = quarry(&[
        "fit",
        "--data",
        example("penguins/train.csv").to_str().unwrap(),
        "--target",
        "species",
        "--max-trials",
        "1",
        "--group-column",
        "island",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3 groups is too few"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
