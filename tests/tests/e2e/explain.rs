//! `quarry explain` and the run folder's `explanations.json`: additivity on every row, and the
//! explained output is what `quarry predict` gives, in the stated output space.

use std::path::Path;

use quarry_tests::{example, predict_csv, quarry, quarry_ok, read_csv, read_json};

fn explain(model: &Path, data: &Path, out: &Path, class: Option<&str>) -> (Vec<String>, Vec<Vec<f64>>) {
    let mut args = vec![
        "explain",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(c) = class {
        args.extend(["--class", c]);
    }
    quarry_ok(&args);
    let (header, rows) = read_csv(out);
    let rows = rows.iter().map(|r| r.iter().map(|v| v.parse::<f64>().unwrap()).collect()).collect();
    (header, rows)
}

/// `quarry predict`'s column `name` as numbers.
fn predicted(model: &Path, data: &Path, out: &Path, name: &str) -> Vec<f64> {
    let (header, rows) = predict_csv(model, data, out);
    let j = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no {name} in {header:?}"));
    rows.iter().map(|r| r[j].parse().unwrap()).collect()
}

/// Every row: expected_value + Σ shap = output. Returns the outputs.
fn check_additive(header: &[String], rows: &[Vec<f64>]) -> Vec<f64> {
    let n = header.len();
    assert_eq!(&header[n - 2..], ["expected_value", "output"]);
    rows.iter()
        .map(|r| {
            let sum: f64 = r[..n - 2].iter().sum();
            assert!((r[n - 2] + sum - r[n - 1]).abs() < 1e-6, "row {r:?} is not additive");
            r[n - 1]
        })
        .collect()
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

#[test]
fn explain_binary_gbdt_in_log_odds_matches_predict() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let test = example("credit_data/test.csv");
    quarry_ok(&[
        "train",
        "--data",
        example("credit_data/train.csv").to_str().unwrap(),
        "--target",
        "Status",
        "--family",
        "gbdt",
        "--param",
        "n_estimators=40",
        "--out",
        run.to_str().unwrap(),
    ]);
    let summary = read_json(&run.join("explanations.json"));
    assert_eq!(summary["output_space"], "log_odds", "{summary}");
    assert_eq!(summary["method"], "tree_shap");
    assert!(summary["max_additivity_error"].as_f64().unwrap() < 1e-6);
    let importance = summary["importance"].as_array().unwrap();
    assert_eq!(importance.len(), 13, "one entry per used raw column: {summary}");
    assert!(importance[0]["permutation_importance"].is_number());

    let classes: Vec<String> = read_json(&run.join("run.json"))["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let (header, rows) = explain(&run, &test, &dir.path().join("shap.csv"), None);
    assert_eq!(header.len(), 13 + 2, "{header:?}");
    assert!(header.contains(&"Seniority".to_string()));
    let outputs = check_additive(&header, &rows);
    let proba = predicted(&run, &test, &dir.path().join("pred.csv"), &format!("proba_{}", classes[1]));
    assert_eq!(outputs.len(), proba.len());
    for (o, p) in outputs.iter().zip(&proba) {
        assert!((sigmoid(*o) - p).abs() < 1e-9, "sigmoid({o}) vs predicted {p}");
    }
    // The negative class is the mirror image.
    let (_, neg) = explain(&run, &test, &dir.path().join("neg.csv"), Some(&classes[0]));
    assert!((neg[0][0] + rows[0][0]).abs() < 1e-12 && (neg[0][14] + rows[0][14]).abs() < 1e-12);
}

#[test]
fn explain_fit_bag_in_probability_and_multiclass_needs_a_class() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let test = example("penguins/test.csv");
    quarry_ok(&[
        "fit",
        "--data",
        example("penguins/train.csv").to_str().unwrap(),
        "--target",
        "species",
        "--max-trials",
        "4",
        "--out",
        run.to_str().unwrap(),
    ]);
    let summary = read_json(&run.join("explanations.json"));
    assert_eq!(summary["output_space"], "probability", "{summary}");
    assert_eq!(summary["rows_explained"], 275);
    // Base values in probability space: one per class, a distribution. (Which family wins four
    // trials varies with the engines; a linear winner's base is the softmax of its mean margins,
    // not the class prior, so no class's value is pinned here.)
    let base: Vec<f64> = ["Adelie", "Chinstrap", "Gentoo"]
        .iter()
        .map(|c| summary["expected_value"][c].as_f64().unwrap())
        .collect();
    assert!(base.iter().all(|p| *p > 0.0 && *p < 1.0), "{summary}");
    assert!((base.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{summary}");
    assert!(summary["importance"][0]["mean_abs_shap_per_class"]["Gentoo"].is_number());
    let (header, rows) = explain(&run, &test, &dir.path().join("shap.csv"), Some("Gentoo"));
    assert_eq!(header.len(), 7 + 2, "{header:?}");
    let outputs = check_additive(&header, &rows);
    let proba = predicted(&run, &test, &dir.path().join("pred.csv"), "proba_Gentoo");
    for (o, p) in outputs.iter().zip(&proba) {
        assert!((o - p).abs() < 1e-6, "explained {o} vs predicted {p}");
    }
    let out = quarry(&[
        "explain",
        "--model",
        run.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--out",
        dir.path().join("x.csv").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--class"), "{out:?}");
}

#[test]
fn explain_knn_regression_matches_predict() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let test = example("cars/test.csv");
    quarry_ok(&[
        "train",
        "--data",
        example("cars/train.csv").to_str().unwrap(),
        "--target",
        "Miles_per_Gallon",
        "--family",
        "knn",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_eq!(read_json(&run.join("explanations.json"))["method"], "kernel_shap");
    let (header, rows) = explain(&run, &test, &dir.path().join("shap.csv"), None);
    let outputs = check_additive(&header, &rows);
    let pred = predicted(&run, &test, &dir.path().join("pred.csv"), "prediction");
    for (o, p) in outputs.iter().zip(&pred) {
        assert!((o - p).abs() < 1e-9 * (1.0 + p.abs()), "explained {o} vs predicted {p}");
    }
}
