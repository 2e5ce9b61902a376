//! The round loop shared by `fit` and `continue_fit`: sampling, gradients, tree growth,
//! incremental train/validation scores and early stopping.

use quarry_featurize::matrix::{FeatureMatrix, Target};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::binning::BinnedData;
use super::grow::{self, GrowParams};
use super::split::{CatRules, SplitConfig};
use super::{TreeEnsemble, TreeMode};
use crate::error::TrainError;

fn check_matrix(x: &FeatureMatrix, y: &Target, what: &str) -> Result<(), TrainError> {
    if x.n_rows == 0 {
        return Err(TrainError::Data(format!("{what} set has no rows")));
    }
    if x.n_rows > u32::MAX as usize {
        return Err(TrainError::Data(format!("{what} set has too many rows")));
    }
    if y.len() != x.n_rows {
        return Err(TrainError::Data(format!("{what} set has {} rows but {} targets", x.n_rows, y.len())));
    }
    if let Some(c) = x.columns.iter().find(|c| c.values.len() != x.n_rows) {
        return Err(TrainError::Data(format!(
            "{what} column {:?} has {} values for {} rows",
            c.name,
            c.values.len(),
            x.n_rows
        )));
    }
    Ok(())
}

/// Adds `extra_rounds` rounds to `ens` (which may have none yet).
pub(crate) fn run(
    ens: &mut TreeEnsemble,
    x: &FeatureMatrix,
    y: &Target,
    valid: Option<(&FeatureMatrix, &Target)>,
    extra_rounds: usize,
    seed: u64,
    on_round: &mut dyn FnMut(usize, f64) -> bool,
) -> Result<(), TrainError> {
    check_matrix(x, y, "training")?;
    if x.n_features() == 0 {
        return Err(TrainError::Data("training set has no features".into()));
    }
    if !ens.trees.is_empty() && ens.features.len() != x.n_features() {
        return Err(TrainError::Data(format!(
            "model has {} features but the data has {}",
            ens.features.len(),
            x.n_features()
        )));
    }
    let problem = ens.problem();
    let labels = problem.labels(y)?;
    let valid = match valid {
        Some((vx, vy)) => {
            check_matrix(vx, vy, "validation")?;
            if vx.n_features() != x.n_features() {
                return Err(TrainError::Data(format!(
                    "validation set has {} features but training has {}",
                    vx.n_features(),
                    x.n_features()
                )));
            }
            Some((vx, problem.labels(vy)?))
        }
        None => None,
    };
    let params = ens.params.clone();
    let data = BinnedData::build(x, params.max_bin);
    ens.features = data.infos();

    let n = x.n_rows;
    let k = ens.n_outputs;
    let gbdt = params.mode == TreeMode::Gbdt;
    // Raw scores: init + every tree so far, summed in tree order (as predict does).
    let mut train_raw = if gbdt { ens.predict_raw(x) } else { Vec::new() };
    let mut valid_raw = valid.as_ref().map(|(vx, _)| ens.predict_raw(vx));
    let mut grad = vec![0.0; n * k];
    let mut hess = vec![0.0; n * k];
    if !gbdt {
        problem.gradients(&labels, &[], &mut grad, &mut hess);
    }

    let split = SplitConfig {
        min_child_samples: params.min_child_samples,
        min_child_weight: params.min_child_weight,
        lambda: params.reg_lambda,
        alpha: params.reg_alpha,
        min_split_gain: params.min_split_gain,
        extra_trees: params.mode == TreeMode::ExtraTrees,
        cat: gbdt.then_some(CatRules::BOOSTING),
    };
    let grow_params = GrowParams {
        num_leaves: params.num_leaves,
        max_depth: params.max_depth,
        split,
        scale: if gbdt { params.learning_rate } else { 1.0 },
        node_colsample: (!gbdt).then_some(params.colsample_bytree),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_features = x.n_features();
    let start_round = ens.rounds();
    let early = params.early_stopping_rounds > 0 && valid.is_some();
    let loss_of = |raw: &[f64], rounds: usize| -> f64 {
        match &valid {
            Some((_, vl)) => problem.loss(raw, rounds, vl),
            None => f64::NAN,
        }
    };
    // A warm start may end up keeping none of its new rounds.
    let (mut best_loss, mut best_round) = match &valid_raw {
        Some(raw) if early && start_round > 0 => (loss_of(raw, start_round), start_round),
        _ => (f64::INFINITY, start_round),
    };
    let mut in_bag = vec![false; if gbdt && params.subsample < 1.0 { n } else { 0 }];
    let mut scratch = grow::Scratch::default();

    for round in start_round..start_round + extra_rounds {
        if gbdt {
            problem.gradients(&labels, &train_raw, &mut grad, &mut hess);
        }
        let sample = sample_rows(n, params.mode, params.subsample, &mut rng);
        if !in_bag.is_empty() {
            in_bag.fill(false);
            for &r in &sample {
                in_bag[r as usize] = true;
            }
        }
        for j in 0..k {
            let features = if gbdt {
                sample_features(n_features, params.colsample_bytree, &mut rng)
            } else {
                (0..n_features).collect()
            };
            let mut rows = sample.clone();
            let (g, h) = (&grad[j * n..(j + 1) * n], &hess[j * n..(j + 1) * n]);
            let grown = grow::grow(&data, g, h, &mut rows, &features, grow_params, &mut rng, &mut scratch);
            if gbdt {
                for &(s, e, value) in &grown.leaves {
                    for &r in &rows[s..e] {
                        train_raw[r as usize * k + j] += value;
                    }
                }
                if !in_bag.is_empty() {
                    for (r, _) in in_bag.iter().enumerate().filter(|(_, b)| !**b) {
                        train_raw[r * k + j] += grown.tree.predict_row(x, &ens.features, r);
                    }
                }
            }
            if let (Some(raw), Some((vx, _))) = (valid_raw.as_mut(), valid.as_ref()) {
                let tree = &grown.tree;
                let infos = &ens.features;
                raw.par_chunks_mut(k).enumerate().for_each(|(r, s)| s[j] += tree.predict_row(vx, infos, r));
            }
            ens.trees.push(grown.tree);
        }
        let done = round + 1;
        ens.best_iteration = done;
        let loss = valid_raw.as_ref().map_or(f64::NAN, |raw| loss_of(raw, done));
        if loss < best_loss {
            best_loss = loss;
            best_round = done;
        }
        tracing::trace!(round, loss, "gbdt round");
        let keep_going = on_round(round, loss);
        if early && done - best_round >= params.early_stopping_rounds {
            break;
        }
        if !keep_going {
            break;
        }
    }
    if early && best_round < ens.rounds() {
        ens.trees.truncate(best_round * k);
        ens.best_iteration = best_round;
    }
    Ok(())
}

/// Rows of one round, sorted: bootstrap for random forest, a Bernoulli sample otherwise.
fn sample_rows(n: usize, mode: TreeMode, fraction: f64, rng: &mut ChaCha8Rng) -> Vec<u32> {
    if mode == TreeMode::RandomForest {
        let m = ((n as f64 * fraction).round() as usize).max(1);
        let mut counts = vec![0u32; n];
        for _ in 0..m {
            counts[rng.random_range(0..n)] += 1;
        }
        let mut rows = Vec::with_capacity(m);
        for (r, &c) in counts.iter().enumerate() {
            for _ in 0..c {
                rows.push(r as u32);
            }
        }
        return rows;
    }
    if fraction >= 1.0 {
        return (0..n as u32).collect();
    }
    let rows: Vec<u32> = (0..n as u32).filter(|_| rng.random::<f64>() < fraction).collect();
    if rows.is_empty() { vec![rng.random_range(0..n as u32)] } else { rows }
}

/// A sorted random subset of `round(fraction * n)` features (at least one).
fn sample_features(n: usize, fraction: f64, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    if fraction >= 1.0 {
        return all;
    }
    let k = ((fraction * n as f64).round() as usize).clamp(1, n);
    for i in 0..k {
        let j = rng.random_range(i..n);
        all.swap(i, j);
    }
    all.truncate(k);
    all.sort_unstable();
    all
}
