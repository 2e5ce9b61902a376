//! Damaged bundles (found by fuzzing `bundle_load`, scripts/fuzz.sh) are load errors, never a
//! panic at prediction time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use quarry_learners::Pipeline;
use serde_json::Value;

fn bundle(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/bundles").join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn load(v: &Value) -> Result<Pipeline, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.json"), serde_json::to_vec(v).unwrap()).unwrap();
    Pipeline::load(dir.path()).map_err(|e| e.to_string())
}

#[test]
fn intact_bundles_load() {
    for name in ["knn.json", "linear.json", "gbdt.json", "naive_bayes.json"] {
        load(&bundle(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn knn_with_fewer_targets_than_stored_rows_is_an_error() {
    // The fuzzer's case: more stored points than targets made prediction index past the end.
    let mut v = bundle("knn.json");
    let targets = v["members"][0]["model"]["targets"].as_array_mut().unwrap();
    targets.truncate(200);
    let err = load(&v).unwrap_err();
    assert!(err.contains("knn: 2750 stored values for 200 rows of width 10"), "{err}");

    let mut v = bundle("knn.json");
    v["members"][0]["model"]["width"] = 11.into();
    assert!(load(&v).unwrap_err().contains("knn: width 11"));
}

#[test]
fn linear_with_missing_coefficients_is_an_error() {
    let mut v = bundle("linear.json");
    v["members"][0]["model"]["coef"].as_array_mut().unwrap().pop();
    assert!(load(&v).unwrap_err().contains("linear:"));
}

#[test]
fn trees_with_more_outputs_than_initial_scores_are_an_error() {
    // The fuzzer's second case: a regression booster whose output count was edited to 3.
    let mut v = bundle("gbdt_regression.json");
    v["members"][0]["model"]["n_outputs"] = 3.into();
    assert!(load(&v).unwrap_err().contains("trees: 1 initial scores for 3 outputs"));
}

#[test]
fn naive_bayes_with_categorical_tables_too_short_is_an_error() {
    // The fuzzer's case (scripts/fuzz.sh bundle_load, 2026-11-28): the one-hot blocks promised
    // more levels than `cat_log_prob` holds, and prediction indexed past its end.
    let mut v = bundle("naive_bayes.json");
    v["members"][0]["model"]["cat_log_prob"].as_array_mut().unwrap().pop();
    let err = load(&v).unwrap_err();
    assert!(err.contains("categorical log-probabilities"), "{err}");

    let mut v = bundle("naive_bayes.json");
    let blocks = v["members"][0]["model"]["blocks"].as_array_mut().unwrap();
    blocks[0][1] = (blocks[0][1].as_u64().unwrap() + 1).into();
    assert!(load(&v).unwrap_err().contains("naive_bayes: "));

    let mut v = bundle("naive_bayes.json");
    v["members"][0]["model"]["means"].as_array_mut().unwrap().pop();
    assert!(load(&v).unwrap_err().contains("means"));
}
