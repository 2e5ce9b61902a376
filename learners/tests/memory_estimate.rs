//! The memory estimates (`quarry_learners::memory`) against the heap peaks measured by a
//! counting allocator: each must be within 0.5–2× of what the fit really used.
//!
//! The allocator's peak cannot be reset, so the cases run in one test, in increasing size:
//! a case's peak is read as the new maximum minus the heap before it, which is only valid when
//! the case raised the maximum (checked).

#![allow(clippy::unwrap_used)]

use std::alloc::System;

use cap::Cap;
use quarry_featurize::matrix::{FeatureColumn, FeatureKind, FeatureMatrix, Target};
use quarry_featurize::metric::Task;
use quarry_learners::memory::{MemoryShape, fit_bytes};
use quarry_learners::{Family, ParamMap, check_params, fit};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

fn data(rows: usize, features: usize, classes: usize, seed: u64) -> (FeatureMatrix, Target) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let columns: Vec<FeatureColumn> = (0..features)
        .map(|j| FeatureColumn {
            name: format!("f{j}"),
            source: format!("f{j}"),
            kind: FeatureKind::Numeric,
            values: (0..rows).map(|_| rng.random::<f32>()).collect(),
        })
        .collect();
    let codes: Vec<u32> = (0..rows)
        .map(|r| {
            let s: f32 = columns.iter().take(3).map(|c| c.values[r]).sum();
            ((s / 3.0 * classes as f32) as u32).min(classes as u32 - 1)
        })
        .collect();
    let target = Target::Classes { classes: (0..classes).map(|c| c.to_string()).collect(), codes };
    (FeatureMatrix { n_rows: rows, columns }, target)
}

struct Case {
    family: Family,
    params: &'static [(&'static str, &'static str)],
    rows: usize,
    features: usize,
    classes: usize,
}

#[test]
fn estimates_are_within_half_and_twice_the_measured_peak() {
    let cases = [
        Case { family: Family::Linear, params: &[], rows: 4_000, features: 10, classes: 2 },
        Case { family: Family::NaiveBayes, params: &[], rows: 20_000, features: 12, classes: 3 },
        Case { family: Family::Knn, params: &[], rows: 30_000, features: 20, classes: 2 },
        Case { family: Family::Svm, params: &[], rows: 3_000, features: 15, classes: 3 },
        Case { family: Family::Mlp, params: &[("epochs", "3")], rows: 20_000, features: 20, classes: 2 },
        Case {
            family: Family::Gbdt,
            params: &[("n_estimators", "60"), ("num_leaves", "63")],
            rows: 60_000,
            features: 30,
            classes: 2,
        },
        Case {
            family: Family::Gbdt,
            params: &[("n_estimators", "40"), ("num_leaves", "31")],
            rows: 40_000,
            features: 30,
            classes: 5,
        },
        Case {
            family: Family::ExtraTrees,
            params: &[("n_estimators", "5")],
            rows: 30_000,
            features: 30,
            classes: 2,
        },
        Case {
            family: Family::RandomForest,
            params: &[("n_estimators", "5")],
            rows: 80_000,
            features: 40,
            classes: 2,
        },
    ];
    // Smallest estimate (plus data) first, so that each case raises the maximum (checked below).
    let mut order: Vec<(f64, usize)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // Random floats: every sampled value is distinct.
            let shape = MemoryShape {
                rows: c.rows,
                valid_rows: c.rows / 4,
                numeric_levels: vec![c.rows.min(4096) as u32; c.features],
                categorical_levels: Vec::new(),
                classes: c.classes,
            };
            let map: ParamMap = c.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            // The case's own training and validation data are live too: f32 values.
            let data = 5 * c.rows * c.features;
            (fit_bytes(&check_params(c.family, &map).unwrap(), &shape) as f64 + data as f64, i)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut report = Vec::new();
    for &(_, i) in &order {
        let case = &cases[i];
        let (x, y) = data(case.rows, case.features, case.classes, i as u64);
        let valid_rows = case.rows / 4;
        let (vx, vy) = data(valid_rows, case.features, case.classes, 100 + i as u64);
        let map: ParamMap = case.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let spec = check_params(case.family, &map).unwrap();
        let task = if case.classes > 2 { Task::Multiclass } else { Task::Binary };
        let shape = MemoryShape::of(&x, valid_rows, task, case.classes);
        let estimate = fit_bytes(&spec, &shape) as f64;

        let before = ALLOC.allocated();
        let max_before = ALLOC.max_allocated();
        let model = fit(&spec, &x, &y, task, Some((&vx, &vy)), 7, &mut |_, _| true).unwrap();
        // The trial runner predicts the validation rows with the model it just fitted.
        let pred = model.predict(&vx);
        drop(pred);
        let max_after = ALLOC.max_allocated();
        drop(model);
        assert!(
            max_after > max_before,
            "case {i} ({}) did not raise the heap maximum ({max_after} after, {max_before} before, {before} live at the start); a smaller case peaked higher",
            case.family
        );
        let measured = (max_after - before) as f64;
        let ratio = estimate / measured;
        report.push(format!(
            "{} {}x{} classes {}: estimate {:.1} MiB, measured {:.1} MiB, ratio {ratio:.2}",
            case.family,
            case.rows,
            case.features,
            case.classes,
            estimate / 1048576.0,
            measured / 1048576.0
        ));
        eprintln!("{}", report.last().unwrap());
        assert!((0.5..=2.0).contains(&ratio), "{}", report.join("\n"));
    }
}
