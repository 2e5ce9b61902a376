//! Target encodings are fitted inside each validation fold, never on validation rows.
//!
//! A categorical of ~700 levels, each seen ~3 times, with random labels carries no signal. An
//! encoding fitted on all rows, validation rows included, still "predicts" validation rows
//! well: each row's own label is in its level's mean. The runner's per-fold encoding must give
//! a score near chance on the same data, and the leaky setup (built here on purpose) must not,
//! so that this test can fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quarry_featurize::{
    ColumnTransform, Featurizer, Metric, RawColumn, RawValues, StrColumn, Table, Target, TargetEncoder, Task,
};
use quarry_search::{Config, ParamValue, TrialId, TrialSpec, TrialStatus, ValidationPlan};
use quarry_worker::{TrialData, TrialRunner};

const ROWS: usize = 2000;
const LEVELS: usize = 667;

/// A seeded xorshift stream: the labels are random but the same on every run.
fn random_bits(seed: u64, n: usize) -> Vec<bool> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s >> 33 & 1 == 1
        })
        .collect()
}

fn text_column(name: &str, values: impl Iterator<Item = String>) -> RawColumn {
    let mut c = StrColumn::new();
    for v in values {
        c.push(Some(&v));
    }
    RawColumn { name: name.to_string(), values: RawValues::Text(c) }
}

fn noise_table() -> Table {
    let labels = random_bits(42, ROWS);
    Table {
        n_rows: ROWS,
        columns: vec![
            // Levels interleaved so that every fold sees every level about as often.
            text_column("shop", (0..ROWS).map(|i| format!("shop_{}", (i * 7919) % LEVELS))),
            text_column("y", labels.iter().map(|&b| if b { "yes" } else { "no" }.to_string())),
        ],
    }
}

fn gbdt_spec() -> TrialSpec {
    let config: Config = [
        ("learning_rate".to_string(), ParamValue::Float(0.1)),
        ("num_leaves".to_string(), ParamValue::Int(15)),
        ("min_child_samples".to_string(), ParamValue::Int(5)),
    ]
    .into_iter()
    .collect();
    TrialSpec { id: TrialId(1), family: "gbdt".to_string(), config, seed: 7 }
}

/// The pooled out-of-fold AUC of one gbdt trial.
fn validation_auc(data: TrialData) -> f64 {
    let runner = TrialRunner::new(data, 2).unwrap();
    let (outcome, _) = runner.run(&gbdt_spec(), &|| false, &mut |_, _| true);
    assert_eq!(outcome.status, TrialStatus::Completed, "{:?}", outcome.failure_reason);
    outcome.score.unwrap()
}

#[test]
fn per_fold_target_encoding_scores_noise_at_chance_and_a_leaky_one_does_not() {
    let table = noise_table();
    let encoder = TargetEncoder::fit(&table, "y", None).unwrap();
    assert_eq!(encoder.task, Task::Binary);
    let (y, kept) = encoder.encode(&table).unwrap();
    assert_eq!(kept.len(), ROWS);
    let codes = match &y {
        Target::Classes { codes, .. } => codes.clone(),
        Target::Values(_) => unreachable!(),
    };
    let plan = ValidationPlan::choose(ROWS, Some(&codes), 3).unwrap();
    assert_eq!(plan.folds.len(), 5);

    let mut featurizer = Featurizer::fit(&table, &["y"]).unwrap();
    assert!(matches!(featurizer.columns[0].transform, ColumnTransform::HighCardinality(_)));
    let encodings = featurizer.fit_target(&table, &y).unwrap();
    assert_eq!(encodings.feature_names().collect::<Vec<_>>(), ["shop__target"]);

    // Leaky: every row, validation rows included, encoded with the encoding fitted on all rows.
    let leaky_x = featurizer.transform(&table).unwrap();
    let leaky = validation_auc(TrialData {
        x: leaky_x.clone(),
        y: y.clone(),
        task: Task::Binary,
        metric: Metric::RocAuc,
        plan: plan.clone(),
        target_encodings: None,
    });

    // What `quarry fit` does: cross-fitted values for all rows, refitted inside each fold.
    let mut x = leaky_x;
    encodings.cross_fit_into(&mut x, &y);
    let honest = validation_auc(TrialData {
        x,
        y,
        task: Task::Binary,
        metric: Metric::RocAuc,
        plan,
        target_encodings: Some(encodings),
    });
    eprintln!("validation AUC on pure noise: per-fold encoding {honest:.3}, leaky encoding {leaky:.3}");
    assert!(honest < 0.6, "per-fold target encoding leaked: AUC {honest:.3} on random labels");
    assert!(leaky > 0.75, "the leaky setup should look good on random labels, got AUC {leaky:.3}");
}

#[test]
fn fold_encodings_never_read_validation_labels() {
    let table = noise_table();
    let encoder = TargetEncoder::fit(&table, "y", None).unwrap();
    let (y, _) = encoder.encode(&table).unwrap();
    let Target::Classes { classes, codes } = &y else { unreachable!() };
    let mut featurizer = Featurizer::fit(&table, &["y"]).unwrap();
    let encodings = featurizer.fit_target(&table, &y).unwrap();
    let x = featurizer.transform(&table).unwrap();
    let plan = ValidationPlan::choose(ROWS, Some(codes), 3).unwrap();
    let fold = &plan.folds[0];
    let features = |labels: &Target| {
        let mut xt = x.select_rows(&fold.train);
        let mut xv = x.select_rows(&fold.valid);
        encodings.apply_fold(labels, &fold.train, &fold.valid, &mut xt, &mut xv);
        let pick = |m: &quarry_featurize::FeatureMatrix| {
            m.columns.iter().find(|c| c.name == "shop__target").unwrap().values.clone()
        };
        (pick(&xt), pick(&xv))
    };
    // Flip every validation label: no feature of either side may change.
    let mut flipped = codes.clone();
    for &r in &fold.valid {
        flipped[r] = 1 - flipped[r];
    }
    let flipped = Target::Classes { classes: classes.clone(), codes: flipped };
    assert_eq!(features(&y), features(&flipped));
    // Flipping a training label does change them (the check above is not vacuous).
    let mut one = codes.clone();
    one[fold.train[0]] = 1 - one[fold.train[0]];
    let one = Target::Classes { classes: classes.clone(), codes: one };
    assert_ne!(features(&y).1, features(&one).1);
}
