#![allow(clippy::unwrap_used)]

use super::*;
use quarry_featurize::matrix::{FeatureColumn, FeatureKind};
use quarry_featurize::metric::roc_auc;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn numeric_matrix(n: usize, p: usize, rng: &mut ChaCha8Rng) -> FeatureMatrix {
    let columns = (0..p)
        .map(|j| FeatureColumn {
            name: format!("x{j}"),
            source: format!("x{j}"),
            kind: FeatureKind::Numeric,
            values: (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        })
        .collect();
    FeatureMatrix { n_rows: n, columns }
}

fn col(x: &FeatureMatrix, j: usize, i: usize) -> f64 {
    f64::from(x.columns[j].values[i])
}

fn classes(codes: Vec<u32>, n_classes: usize) -> Target {
    Target::Classes { classes: (0..n_classes).map(|c| format!("c{c}")).collect(), codes }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Logistic ground truth on 10 features (5 informative, with an interaction).
fn binary_data(n: usize, seed: u64) -> (FeatureMatrix, Target) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = numeric_matrix(n, 10, &mut rng);
    let codes = (0..n)
        .map(|i| {
            let z = 2.5 * col(&x, 0, i) - 2.0 * col(&x, 1, i)
                + 3.0 * col(&x, 2, i) * col(&x, 3, i)
                + 1.5 * (3.0 * col(&x, 4, i)).sin();
            u32::from(rng.random::<f64>() < sigmoid(1.5 * z))
        })
        .collect();
    (x, classes(codes, 2))
}

fn regression_data(n: usize, seed: u64) -> (FeatureMatrix, Target) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = numeric_matrix(n, 6, &mut rng);
    let y = (0..n)
        .map(|i| {
            (3.0 * col(&x, 0, i)).sin() + 2.0 * col(&x, 1, i).powi(2) + col(&x, 2, i)
                - col(&x, 0, i) * col(&x, 3, i)
                + 0.1 * (rng.random::<f64>() - 0.5)
        })
        .collect();
    (x, Target::Values(y))
}

fn multiclass_data(n: usize, seed: u64) -> (FeatureMatrix, Target) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = numeric_matrix(n, 5, &mut rng);
    let codes = (0..n)
        .map(|i| {
            let s = [col(&x, 0, i), col(&x, 1, i), -col(&x, 0, i) - col(&x, 1, i)];
            let noisy: Vec<f64> = s.iter().map(|v| v + 0.2 * rng.random::<f64>()).collect();
            (0..3).max_by(|&a, &b| noisy[a].total_cmp(&noisy[b])).unwrap() as u32
        })
        .collect();
    (x, classes(codes, 3))
}

fn split(x: &FeatureMatrix, y: &Target, n_train: usize) -> (FeatureMatrix, Target, FeatureMatrix, Target) {
    let train: Vec<usize> = (0..n_train).collect();
    let test: Vec<usize> = (n_train..x.n_rows).collect();
    (x.select_rows(&train), y.select_rows(&train), x.select_rows(&test), y.select_rows(&test))
}

fn codes(y: &Target) -> &[u32] {
    match y {
        Target::Classes { codes, .. } => codes,
        Target::Values(_) => panic!("not classes"),
    }
}

fn values(y: &Target) -> &[f64] {
    match y {
        Target::Values(v) => v,
        Target::Classes { .. } => panic!("not values"),
    }
}

fn auc(model: &TreeEnsemble, x: &FeatureMatrix, y: &Target) -> f64 {
    let Predictions::Probabilities { n_classes, values } = model.predict(x) else {
        panic!("expected probabilities")
    };
    assert_eq!(n_classes, 2);
    for row in values.chunks(2) {
        assert!((row[0] + row[1] - 1.0).abs() < 1e-9);
    }
    let p1: Vec<f64> = values.chunks(2).map(|r| r[1]).collect();
    roc_auc(codes(y), &p1)
}

fn accuracy(model: &TreeEnsemble, x: &FeatureMatrix, y: &Target) -> f64 {
    let pred = model.predict(x).class_codes().unwrap();
    let truth = codes(y);
    pred.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
}

fn r2(model: &TreeEnsemble, x: &FeatureMatrix, y: &Target) -> f64 {
    let Predictions::Values(pred) = model.predict(x) else { panic!("expected values") };
    let truth = values(y);
    let mean = truth.iter().sum::<f64>() / truth.len() as f64;
    let ss_res: f64 = pred.iter().zip(truth).map(|(p, t)| (p - t).powi(2)).sum();
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    1.0 - ss_res / ss_tot
}

fn no_callback() -> impl FnMut(usize, f64) -> bool {
    |_, _| true
}

fn fit_simple(x: &FeatureMatrix, y: &Target, task: Task, params: &TreeParams) -> TreeEnsemble {
    fit(x, y, task, None, params, 42, &mut no_callback()).unwrap()
}

fn forest(mode: TreeMode) -> TreeParams {
    TreeParams {
        mode,
        n_estimators: 50,
        num_leaves: 256,
        min_child_samples: 2,
        colsample_bytree: 0.6,
        ..TreeParams::default()
    }
}

#[test]
fn gbdt_binary_auc_on_holdout() {
    let (x, y) = binary_data(6_000, 1);
    let (tx, ty, vx, vy) = split(&x, &y, 5_000);
    let model = fit_simple(&tx, &ty, Task::Binary, &TreeParams::default());
    assert_eq!(model.n_trees(), 100);
    assert_eq!(model.best_iteration(), 100);
    let a = auc(&model, &vx, &vy);
    assert!(a >= 0.85, "holdout AUC {a}");
}

#[test]
fn gbdt_multiclass_accuracy_well_above_chance() {
    let (x, y) = multiclass_data(4_000, 2);
    let (tx, ty, vx, vy) = split(&x, &y, 3_000);
    let params = TreeParams { n_estimators: 60, ..TreeParams::default() };
    let model = fit_simple(&tx, &ty, Task::Multiclass, &params);
    assert_eq!(model.n_trees(), 180);
    let acc = accuracy(&model, &vx, &vy);
    assert!(acc >= 0.8, "accuracy {acc}");
}

#[test]
fn gbdt_regression_r2_on_smooth_function() {
    let (x, y) = regression_data(5_000, 3);
    let (tx, ty, vx, vy) = split(&x, &y, 4_000);
    let params = TreeParams { n_estimators: 200, ..TreeParams::default() };
    let model = fit_simple(&tx, &ty, Task::Regression, &params);
    let score = r2(&model, &vx, &vy);
    assert!(score >= 0.9, "R2 {score}");
}

#[test]
fn gbdt_random_forest_and_extra_trees_beat_baseline() {
    let (x, y) = binary_data(6_000, 4);
    let (tx, ty, vx, vy) = split(&x, &y, 5_000);
    let (rx, ry) = regression_data(5_000, 5);
    let (rtx, rty, rvx, rvy) = split(&rx, &ry, 4_000);
    let (mx, my) = multiclass_data(4_000, 6);
    let (mtx, mty, mvx, mvy) = split(&mx, &my, 3_000);
    for mode in [TreeMode::RandomForest, TreeMode::ExtraTrees] {
        let params = forest(mode);
        let model = fit_simple(&tx, &ty, Task::Binary, &params);
        assert_eq!(model.n_trees(), 50);
        let a = auc(&model, &vx, &vy);
        assert!(a >= 0.8, "{mode:?} AUC {a}");
        let model = fit_simple(&rtx, &rty, Task::Regression, &params);
        let score = r2(&model, &rvx, &rvy);
        assert!(score >= 0.75, "{mode:?} R2 {score}");
        let model = fit_simple(&mtx, &mty, Task::Multiclass, &params);
        let acc = accuracy(&model, &mvx, &mvy);
        assert!(acc >= 0.75, "{mode:?} accuracy {acc}");
        let Predictions::Probabilities { values, .. } = model.predict(&mvx) else { panic!() };
        assert!(values.iter().all(|&p| (1e-8..=1.0).contains(&p)));
    }
}

#[test]
fn gbdt_uses_missingness_as_signal() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 6_000;
    let mut x = numeric_matrix(n, 3, &mut rng);
    let codes: Vec<u32> = (0..n).map(|_| u32::from(rng.random::<bool>())).collect();
    for (i, &c) in codes.iter().enumerate() {
        let p_missing = if c == 1 { 0.8 } else { 0.1 };
        if rng.random::<f64>() < p_missing {
            x.columns[1].values[i] = f32::NAN;
        }
    }
    let y = classes(codes, 2);
    let (tx, ty, vx, vy) = split(&x, &y, 5_000);
    let params = TreeParams { n_estimators: 30, ..TreeParams::default() };
    let model = fit_simple(&tx, &ty, Task::Binary, &params);
    // Bayes AUC is 0.5 * (1 + 0.8 - 0.1) = 0.85.
    let a = auc(&model, &vx, &vy);
    assert!(a >= 0.8, "AUC {a}");
}

#[test]
fn gbdt_learns_categorical_level_sets() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let n = 5_000;
    let mut x = numeric_matrix(n, 2, &mut rng);
    let positive = [1u32, 4, 5, 9, 11, 12, 16, 19];
    let levels: Vec<u32> = (0..n).map(|_| rng.random_range(0..20)).collect();
    x.columns.push(FeatureColumn {
        name: "cat".into(),
        source: "cat".into(),
        kind: FeatureKind::Categorical { n_levels: 20 },
        values: levels.iter().map(|&l| l as f32).collect(),
    });
    let codes: Vec<u32> = levels
        .iter()
        .map(|l| {
            let c = u32::from(positive.contains(l));
            if rng.random::<f64>() < 0.05 { 1 - c } else { c }
        })
        .collect();
    let y = classes(codes, 2);
    let (tx, ty, vx, vy) = split(&x, &y, 4_000);
    // A single stump can only get this right with a many-vs-many categorical split.
    let stump = TreeParams { n_estimators: 1, num_leaves: 2, learning_rate: 1.0, ..TreeParams::default() };
    let model = fit_simple(&tx, &ty, Task::Binary, &stump);
    let acc = accuracy(&model, &vx, &vy);
    assert!(acc >= 0.9, "stump accuracy {acc}");
    let model = fit_simple(&tx, &ty, Task::Binary, &TreeParams::default());
    let acc = accuracy(&model, &vx, &vy);
    assert!(acc >= 0.9, "accuracy {acc}");
}

#[test]
fn gbdt_same_seed_same_model_across_thread_counts() {
    let (x, y) = binary_data(3_000, 10);
    let mut x = x;
    for i in (0..x.n_rows).step_by(7) {
        x.columns[0].values[i] = f32::NAN;
    }
    let params = TreeParams {
        n_estimators: 30,
        subsample: 0.7,
        colsample_bytree: 0.6,
        reg_alpha: 0.1,
        reg_lambda: 1.0,
        ..TreeParams::default()
    };
    let run = |threads: usize, mode: TreeMode| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let p = TreeParams { mode, ..params.clone() };
            let model = fit_simple(&x, &y, Task::Binary, &p);
            (serde_json::to_string(&model).unwrap(), model.predict(&x))
        })
    };
    for mode in [TreeMode::Gbdt, TreeMode::RandomForest, TreeMode::ExtraTrees] {
        let (json1, pred1) = run(1, mode);
        let (json1b, _) = run(1, mode);
        let (json2, pred2) = run(2, mode);
        assert_eq!(json1, json1b, "{mode:?}");
        assert_eq!(json1, json2, "{mode:?}");
        assert_eq!(pred1, pred2, "{mode:?}");
    }
    // A different seed gives a different (subsampled) model.
    let other = fit(&x, &y, Task::Binary, None, &params, 43, &mut no_callback()).unwrap();
    let base = fit_simple(&x, &y, Task::Binary, &params);
    assert_ne!(other, base);
    // Serialisation round-trips to the same predictions (serde_json's default float parser
    // may be off by one ulp, hence the tolerance).
    let back: TreeEnsemble = serde_json::from_str(&serde_json::to_string(&base).unwrap()).unwrap();
    let (Predictions::Probabilities { values: a, .. }, Predictions::Probabilities { values: b, .. }) =
        (back.predict(&x), base.predict(&x))
    else {
        panic!("expected probabilities")
    };
    let max_diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    assert!(max_diff < 1e-12, "max diff {max_diff}");
}

#[test]
fn gbdt_early_stopping_truncates_to_best_round() {
    // Pure noise: validation loss stops improving quickly.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = 300;
    let x = numeric_matrix(n, 5, &mut rng);
    let y2 = classes((0..n).map(|_| rng.random_range(0..2)).collect(), 2);
    let y3 = classes((0..n).map(|_| rng.random_range(0..3)).collect(), 3);
    let params = TreeParams {
        n_estimators: 200,
        learning_rate: 0.3,
        min_child_samples: 5,
        early_stopping_rounds: 5,
        ..TreeParams::default()
    };
    for (y, task, k) in [(&y2, Task::Binary, 1), (&y3, Task::Multiclass, 3)] {
        let (tx, ty, vx, vy) = split(&x, y, 200);
        let mut losses = Vec::new();
        let mut cb = |round: usize, loss: f64| {
            assert_eq!(round, losses.len());
            losses.push(loss);
            true
        };
        let model = fit(&tx, &ty, task, Some((&vx, &vy)), &params, 1, &mut cb).unwrap();
        let best = model.best_iteration();
        assert!((1..200).contains(&best), "best {best}");
        assert_eq!(model.n_trees(), best * k);
        assert_eq!(losses.len(), best + 5);
        // The kept round has the lowest validation loss seen.
        let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(losses[best - 1], min);
    }
}

#[test]
fn gbdt_callback_false_stops() {
    let (x, y) = regression_data(500, 12);
    let mut calls = 0;
    let mut cb = |_: usize, loss: f64| {
        assert!(loss.is_nan());
        calls += 1;
        calls < 3
    };
    let model = fit(&x, &y, Task::Regression, None, &TreeParams::default(), 0, &mut cb).unwrap();
    assert_eq!(calls, 3);
    assert_eq!(model.n_trees(), 3);
    assert_eq!(model.best_iteration(), 3);
}

#[test]
fn gbdt_continue_fit_matches_single_fit() {
    for (task, (x, y)) in [
        (Task::Binary, binary_data(1_500, 13)),
        (Task::Multiclass, multiclass_data(1_500, 14)),
        (Task::Regression, regression_data(1_500, 15)),
    ] {
        // Missing values and a categorical column: warm start re-scores the training rows by
        // traversing raw values, which must agree exactly with the binned partition of `fit`.
        let mut x = x;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for v in x.columns[0].values.iter_mut() {
            if rng.random::<f64>() < 0.2 {
                *v = f32::NAN;
            }
        }
        let cat: Vec<f32> = (0..x.n_rows)
            .map(|i| {
                if i % 11 == 0 { f32::NAN } else { ((x.columns[1].values[i] + 1.0) * 6.0).floor().min(11.0) }
            })
            .collect();
        x.columns[1] = FeatureColumn {
            name: "cat".into(),
            source: "cat".into(),
            kind: FeatureKind::Categorical { n_levels: 12 },
            values: cat,
        };
        let (tx, ty, vx, vy) = split(&x, &y, 1_000);
        let p20 = TreeParams { n_estimators: 20, ..TreeParams::default() };
        let p50 = TreeParams { n_estimators: 50, ..TreeParams::default() };
        let mut warm = fit(&tx, &ty, task, Some((&vx, &vy)), &p20, 5, &mut no_callback()).unwrap();
        let mut rounds = Vec::new();
        let mut cb = |r: usize, _: f64| {
            rounds.push(r);
            true
        };
        warm.continue_fit(&tx, &ty, Some((&vx, &vy)), 30, 5, &mut cb).unwrap();
        assert_eq!(rounds, (20..50).collect::<Vec<_>>());
        let full = fit_simple(&tx, &ty, task, &p50);
        assert_eq!(warm.n_trees(), full.n_trees());
        assert_eq!(warm.best_iteration(), 50);
        let (a, b) = match (warm.predict(&vx), full.predict(&vx)) {
            (Predictions::Probabilities { values: a, .. }, Predictions::Probabilities { values: b, .. }) => {
                (a, b)
            }
            (Predictions::Values(a), Predictions::Values(b)) => (a, b),
            _ => panic!("prediction kinds differ"),
        };
        let max_diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        assert!(max_diff <= 1e-9, "{task:?} max diff {max_diff}");
    }
}

#[test]
fn gbdt_depth_and_leaf_limits_hold() {
    let (x, y) = regression_data(2_000, 16);
    let params = TreeParams { n_estimators: 5, num_leaves: 8, max_depth: 2, ..TreeParams::default() };
    let model = fit_simple(&x, &y, Task::Regression, &params);
    for tree in &model.trees {
        assert!(tree.n_leaves() <= 4);
        assert!(tree.n_leaves() >= 2);
    }
    let params = TreeParams { n_estimators: 5, num_leaves: 7, ..TreeParams::default() };
    let model = fit_simple(&x, &y, Task::Regression, &params);
    for tree in &model.trees {
        assert_eq!(tree.n_leaves(), 7);
    }
}

#[test]
fn gbdt_rejects_bad_params_and_data() {
    let bad = [
        TreeParams { learning_rate: 0.0, ..TreeParams::default() },
        TreeParams { num_leaves: 1, ..TreeParams::default() },
        TreeParams { subsample: 0.0, ..TreeParams::default() },
        TreeParams { colsample_bytree: 1.5, ..TreeParams::default() },
        TreeParams { max_bin: 1, ..TreeParams::default() },
        TreeParams { max_depth: 0, ..TreeParams::default() },
    ];
    for p in &bad {
        assert!(matches!(p.check(), Err(TrainError::InvalidParam { .. })), "{p:?}");
    }
    assert!(TreeParams::default().check().is_ok());
    let (x, y) = regression_data(100, 17);
    let err = fit(&x, &y, Task::Binary, None, &TreeParams::default(), 0, &mut no_callback());
    assert!(matches!(err, Err(TrainError::Data(_))));
    let short = Target::Values(vec![1.0; 10]);
    let err = fit(&x, &short, Task::Regression, None, &TreeParams::default(), 0, &mut no_callback());
    assert!(matches!(err, Err(TrainError::Data(_))));
    let parsed: TreeParams = serde_json::from_str(r#"{"mode":"extra_trees","num_leaves":7}"#).unwrap();
    assert_eq!(parsed.mode, TreeMode::ExtraTrees);
    assert_eq!(parsed.num_leaves, 7);
    assert_eq!(parsed.n_estimators, 100);
}

/// `cargo test --release -p quarry-learners gbdt_speed -- --ignored --nocapture`
#[test]
#[ignore]
fn gbdt_speed() {
    let (x, y) = {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let n = 200_000;
        let x = numeric_matrix(n, 30, &mut rng);
        let codes = (0..n)
            .map(|i| {
                let z = 2.0 * col(&x, 0, i) - col(&x, 1, i)
                    + 2.0 * col(&x, 2, i) * col(&x, 3, i)
                    + (3.0 * col(&x, 4, i)).sin()
                    + 0.5 * col(&x, 5, i);
                u32::from(rng.random::<f64>() < sigmoid(2.0 * z))
            })
            .collect();
        (x, classes(codes, 2))
    };
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let start = std::time::Instant::now();
            let model = fit_simple(&x, &y, Task::Binary, &TreeParams::default());
            let fit_s = start.elapsed().as_secs_f64();
            let start = std::time::Instant::now();
            let a = auc(&model, &x, &y);
            let pred_s = start.elapsed().as_secs_f64();
            println!(
                "gbdt_speed: 200000x30 binary, 100 rounds, 31 leaves, {threads} thread(s): fit {fit_s:.2}s, predict {pred_s:.2}s, train AUC {a:.4}"
            );
        });
    }
}
