#![allow(clippy::unwrap_used)]

use super::*;
use crate::family::{CheckedSpec, Family, FittedModel, check_params};
use crate::params::ParamMap;
use quarry_featurize::{FeatureColumn, FeatureKind};

fn numeric(name: &str, values: Vec<f32>) -> FeatureColumn {
    FeatureColumn { name: name.into(), source: name.into(), kind: FeatureKind::Numeric, values }
}

/// Two informative numerics (one with missing values) and a categorical; the class is a
/// non-linear function of them (a ring), so a linear model cannot separate it.
fn data(n: usize, offset: usize) -> (FeatureMatrix, Vec<f64>, Vec<u32>) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut c = Vec::new();
    let mut value = Vec::new();
    let mut class = Vec::new();
    for i in offset..offset + n {
        let u = ((i as f64 * 0.618_034) % 1.0) * 4.0 - 2.0;
        let v = ((i as f64 * 0.414_214 + 0.3) % 1.0) * 4.0 - 2.0;
        let level = (i % 3) as f32;
        a.push(if i % 17 == 0 { f32::NAN } else { u as f32 });
        b.push(v as f32);
        c.push(level);
        let r2 = u * u + v * v;
        value.push(r2 + f64::from(level) - 1.0);
        class.push(if r2 < 1.5 {
            0
        } else if f64::from(level) + u < 1.0 {
            1
        } else {
            2
        });
    }
    let x = FeatureMatrix {
        n_rows: n,
        columns: vec![
            numeric("a", a),
            numeric("b", b),
            FeatureColumn {
                name: "c".into(),
                source: "c".into(),
                kind: FeatureKind::Categorical { n_levels: 3 },
                values: c,
            },
        ],
    };
    (x, value, class)
}

fn classes(codes: Vec<u32>, k: usize) -> Target {
    Target::Classes { classes: (0..k).map(|c| format!("c{c}")).collect(), codes }
}

fn small() -> MlpParams {
    MlpParams { hidden: 32, epochs: 60, batch_size: 64, learning_rate: 5e-3, ..MlpParams::default() }
}

fn accuracy(p: &Predictions, codes: &[u32]) -> f64 {
    let Predictions::Probabilities { n_classes, values } = p else { panic!("not probabilities") };
    let right = values
        .chunks(*n_classes)
        .zip(codes)
        .filter(|(row, c)| (0..*n_classes).max_by(|&a, &b| row[a].total_cmp(&row[b])) == Some(**c as usize))
        .count();
    right as f64 / codes.len() as f64
}

#[test]
fn classifies_a_ring_and_fits_a_curve_better_than_the_baselines() {
    let (x, value, class) = data(1200, 0);
    let (xt, vt, ct) = data(400, 5000);
    // Multiclass: the majority class is the trivial baseline.
    let y = classes(class.clone(), 3);
    let m = fit(&x, &y, Task::Multiclass, None, &small(), 7, &mut |_, _| true).unwrap();
    let acc = accuracy(&m.predict(&xt), &ct);
    let majority = (0..3).map(|k| ct.iter().filter(|&&c| c == k).count()).max().unwrap() as f64 / 400.0;
    assert!(acc > majority + 0.25 && acc > 0.85, "accuracy {acc} vs majority {majority}");
    // Binary: ring or not.
    let bin: Vec<u32> = class.iter().map(|&c| u32::from(c == 0)).collect();
    let bin_t: Vec<u32> = ct.iter().map(|&c| u32::from(c == 0)).collect();
    let m = fit(&x, &classes(bin, 2), Task::Binary, None, &small(), 7, &mut |_, _| true).unwrap();
    let p = m.predict(&xt);
    let acc = accuracy(&p, &bin_t);
    assert!(acc > 0.9, "binary accuracy {acc}");
    let Predictions::Probabilities { values, .. } = &p else { panic!() };
    assert!(values.chunks(2).all(|r| (r[0] + r[1] - 1.0).abs() < 1e-12));
    // Regression: the mean is the trivial baseline.
    let m = fit(&x, &Target::Values(value.clone()), Task::Regression, None, &small(), 7, &mut |_, _| true)
        .unwrap();
    let Predictions::Values(pred) = m.predict(&xt) else { panic!() };
    let mean = value.iter().sum::<f64>() / value.len() as f64;
    let mse = |p: &dyn Fn(usize) -> f64| (0..400).map(|i| (p(i) - vt[i]).powi(2)).sum::<f64>() / 400.0;
    let (model_mse, base_mse) = (mse(&|i| pred[i]), mse(&|_| mean));
    assert!(model_mse < 0.2 * base_mse, "mse {model_mse} vs baseline {base_mse}");
}

#[test]
fn same_seed_same_bytes_at_any_thread_count_and_bundles_round_trip() {
    let (x, _, class) = data(500, 0);
    let y = classes(class, 3);
    let p = MlpParams { epochs: 8, ..small() };
    let fit_in = |threads: usize, seed: u64| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| fit(&x, &y, Task::Multiclass, None, &p, seed, &mut |_, _| true).unwrap())
    };
    let one = serde_json::to_vec(&fit_in(1, 3)).unwrap();
    assert_eq!(one, serde_json::to_vec(&fit_in(1, 3)).unwrap());
    assert_eq!(one, serde_json::to_vec(&fit_in(2, 3)).unwrap(), "thread count changed the model");
    assert_ne!(one, serde_json::to_vec(&fit_in(1, 4)).unwrap());
    // Round trip through the bundle's JSON: the same model and the same predictions, bit for bit.
    let model = FittedModel::Mlp(fit_in(1, 3));
    let back: FittedModel = serde_json::from_slice(&serde_json::to_vec(&model).unwrap()).unwrap();
    assert_eq!(back, model);
    back.check_shape().unwrap();
    assert_eq!(back.predict(&x), model.predict(&x));
}

#[test]
fn validation_loss_is_reported_each_epoch_and_stops_early() {
    let (x, value, _) = data(600, 0);
    let (xv, vv, _) = data(200, 9000);
    let (y, yv) = (Target::Values(value), Target::Values(vv));
    let mut seen = Vec::new();
    let p = MlpParams { epochs: 30, patience: 0, ..small() };
    let m = fit(&x, &y, Task::Regression, Some((&xv, &yv)), &p, 1, &mut |epoch, loss| {
        seen.push((epoch, loss));
        epoch < 4
    })
    .unwrap();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(seen.iter().all(|s| s.1.is_finite() && s.1 > 0.0));
    assert!(seen[4].1 < seen[0].1, "validation loss did not fall: {seen:?}");
    // The kept weights are the best epoch's, and their loss is the best one reported.
    let best = seen.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    assert_eq!(loss(&m.predict(&xv), &yv), best);
    assert_eq!(seen[m.best_epoch() - 1].1, best);

    // Patience: a huge learning rate makes validation worse, and training stops.
    let bad = MlpParams { learning_rate: 1.0, epochs: 200, patience: 3, ..small() };
    let mut epochs = 0;
    let _ = fit(&x, &y, Task::Regression, Some((&xv, &yv)), &bad, 1, &mut |_, _| {
        epochs += 1;
        true
    });
    assert!(epochs < 200, "ran all {epochs} epochs");
}

#[test]
fn params_are_checked_by_name() {
    let params = |pairs: &[(&str, &str)]| -> ParamMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let spec = check_params(Family::Mlp, &params(&[("hidden", "16"), ("hidden_layers", "1")])).unwrap();
    assert_eq!(spec, CheckedSpec::Mlp(MlpParams { hidden: 16, hidden_layers: 1, ..MlpParams::default() }));
    for bad in
        [("hidden", "0"), ("dropout", "1"), ("learning_rate", "0"), ("batch_size", "0"), ("epochs", "x")]
    {
        let err = check_params(Family::Mlp, &params(&[bad])).unwrap_err();
        assert!(matches!(err, TrainError::InvalidParam { .. }), "{bad:?}: {err}");
    }
    let err = check_params(Family::Mlp, &params(&[("num_leaves", "3")])).unwrap_err();
    assert!(matches!(err, TrainError::UnknownParam { .. }), "{err}");
}

#[test]
fn a_damaged_model_is_refused_not_a_panic() {
    let (x, _, class) = data(120, 0);
    let p = MlpParams { epochs: 2, ..small() };
    let mut m = fit(&x, &classes(class, 3), Task::Multiclass, None, &p, 1, &mut |_, _| true).unwrap();
    m.check_shape().unwrap();
    m.layers[1].bias.pop();
    assert!(m.check_shape().unwrap_err().contains("layer 1"));
}
