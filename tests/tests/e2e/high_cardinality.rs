//! High-cardinality categoricals (frequency + out-of-fold target encoding) and TOML column
//! configs, through the real binary.

use std::fmt::Write as _;
use std::path::Path;

use quarry_tests::{predict_csv, quarry, quarry_ok, read_json};

/// 2,000 rows: `shop` has 667 levels seen ~3 times each, `x` is noise, `y` is a seeded coin
/// flip, and `note` is a column the config drops. Nothing predicts `y`.
fn write_noise(path: &Path) {
    let mut s = String::from("note,shop,x,y\n");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..2000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let y = if state >> 33 & 1 == 1 { "yes" } else { "no" };
        let x = (state >> 40) % 1000;
        writeln!(s, "n{},shop_{},{x},{y}", i % 5, (i * 7919) % 667).unwrap();
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn noise_high_cardinality_column_scores_near_chance_and_predicts_unseen_levels() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.csv");
    write_noise(&train);
    let config = dir.path().join("columns.toml");
    std::fs::write(&config, "drop = [\"note\"]\n\n[columns]\nx = \"numeric\"\n").unwrap();
    let run = dir.path().join("run");
    quarry_ok(&[
        "fit",
        "--data",
        train.to_str().unwrap(),
        "--target",
        "y",
        "--max-trials",
        "4",
        "--seed",
        "0",
        "--column-types-file",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);

    // Every trial validates near chance: the target encoding never saw a validation label.
    let board = read_json(&run.join("leaderboard.json"));
    let best = board
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["validation_score"].as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(best.is_finite() && best < 0.6, "best validation AUC {best} on random labels");

    let guard = read_json(&run.join("guardrails.json"));
    let encoded: Vec<&str> = guard["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "target_encoded")
        .map(|f| f["column"].as_str().unwrap())
        .collect();
    assert_eq!(encoded, ["shop"]);
    let record = read_json(&run.join("run.json"));
    let schema = record["schema"].as_array().unwrap();
    let shop = schema.iter().find(|c| c["name"] == "shop").unwrap();
    assert_eq!(shop["transform"]["type"], "high_cardinality");
    let note = schema.iter().find(|c| c["name"] == "note").unwrap();
    assert_eq!(note["transform"]["type"], "dropped");

    // Unseen shops, a missing shop and x, shuffled columns, no `note` or `y`: still predicts.
    let rows = dir.path().join("new.csv");
    std::fs::write(&rows, "x,shop\n5,shop_3\n7,never_seen\n,\n12,shop_666\n").unwrap();
    let preds = dir.path().join("preds.csv");
    let (header, out) = predict_csv(&run, &rows, &preds);
    assert_eq!(header, ["prediction", "proba_no", "proba_yes"]);
    assert_eq!(out.len(), 4);
    for r in &out {
        let p: f64 = r[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{r:?}");
    }
}

#[test]
fn profile_shows_the_encoding_and_toml_errors_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.csv");
    write_noise(&train);
    let out = quarry_ok(&["profile", "--data", train.to_str().unwrap(), "--target", "y"]);
    let shop = out.lines().find(|l| l.starts_with("shop ")).unwrap();
    assert!(shop.contains("667 levels") && shop.contains("target encoding"), "{shop}");
    assert!(out.contains("frequency encoded and target encoded"), "{out}");

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[columns]\nshop = \"colour\"\n").unwrap();
    let run = quarry(&[
        "profile",
        "--data",
        train.to_str().unwrap(),
        "--column-types-file",
        config.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("bad.toml") && err.contains("columns.shop") && err.contains("colour"), "{err}");
}
