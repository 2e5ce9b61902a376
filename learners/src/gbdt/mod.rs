//! Histogram tree engine: gradient boosting (LightGBM-style leaf-wise growth), random forest
//! and extra trees over quantile-binned features.
//!
//! - Numeric features are binned by quantiles (up to `max_bin` value bins) plus a missing bin;
//!   splits are `value <= threshold` with a learned default direction for missing values.
//! - Categorical features get one bin per level (levels past `max_bin - 1` share an "other" bin)
//!   and many-vs-many splits: categories are sorted by `sum_grad / (sum_hess + 10)` and every
//!   prefix is scanned; the left set is stored as a bitset (missing is one of the categories).
//! - Random forest / extra trees sample `colsample_bytree` of the features at every node (the
//!   usual `max_features`); gradient boosting samples them once per tree.
//! - Bins of features with at most 256 bins are kept twice: row-major (one byte per feature,
//!   read by histogram passes) and column-major (read when partitioning a node's rows).
//!   Histograms sum every bin over the node's rows in row order whatever the thread count.
//!
//! `bench/gbdt/run.sh` compares fit time and test metrics with LightGBM (figures in
//! `bench/RESULTS.md`); `learners/benches/gbdt.rs` times the hot loops.

#[doc(hidden)]
pub mod bench;
pub(crate) mod binning;
mod grow;
mod histogram;
pub(crate) mod objective;
mod split;
#[cfg(test)]
mod tests;
mod train;
pub(crate) mod tree;

use quarry_featurize::matrix::{FeatureMatrix, Predictions, Target};
use quarry_featurize::metric::Task;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use binning::FeatureInfo;
use objective::Problem;
use tree::Tree;

/// Sizes the memory estimates (`crate::memory`) are computed from.
pub(crate) type HistBinSize = histogram::HistBin;
pub(crate) type NodeSize = tree::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeMode {
    Gbdt,
    RandomForest,
    ExtraTrees,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TreeParams {
    pub mode: TreeMode,
    /// Boosting rounds (GBDT) or trees (random forest / extra trees).
    pub n_estimators: usize,
    /// Shrinkage of each GBDT tree; ignored by random forest / extra trees.
    pub learning_rate: f64,
    pub num_leaves: usize,
    /// `-1` = unlimited.
    pub max_depth: i32,
    pub min_child_samples: usize,
    /// Minimum hessian sum in a leaf.
    pub min_child_weight: f64,
    /// Row fraction per tree; random forest draws a bootstrap of this size (with replacement).
    pub subsample: f64,
    /// Feature fraction: per tree for GBDT, per node for random forest / extra trees.
    pub colsample_bytree: f64,
    pub reg_alpha: f64,
    pub reg_lambda: f64,
    pub max_bin: usize,
    /// `0` = off; otherwise stop after this many rounds without validation improvement.
    pub early_stopping_rounds: usize,
    pub min_split_gain: f64,
}

impl Default for TreeParams {
    fn default() -> Self {
        TreeParams {
            mode: TreeMode::Gbdt,
            n_estimators: 100,
            learning_rate: 0.1,
            num_leaves: 31,
            max_depth: -1,
            min_child_samples: 20,
            min_child_weight: 1e-3,
            subsample: 1.0,
            colsample_bytree: 1.0,
            reg_alpha: 0.0,
            reg_lambda: 0.0,
            max_bin: 255,
            early_stopping_rounds: 0,
            min_split_gain: 0.0,
        }
    }
}

fn invalid(name: &str, message: &str) -> TrainError {
    TrainError::InvalidParam { name: name.to_string(), message: message.to_string() }
}

impl TreeParams {
    pub fn check(&self) -> Result<(), TrainError> {
        if self.n_estimators == 0 {
            return Err(invalid("n_estimators", "must be at least 1"));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(invalid("learning_rate", "must be a finite number > 0"));
        }
        if self.num_leaves < 2 {
            return Err(invalid("num_leaves", "must be at least 2"));
        }
        if self.max_depth == 0 || self.max_depth < -1 {
            return Err(invalid("max_depth", "must be -1 (unlimited) or at least 1"));
        }
        if !(self.min_child_weight.is_finite() && self.min_child_weight >= 0.0) {
            return Err(invalid("min_child_weight", "must be a finite number >= 0"));
        }
        if !(self.subsample > 0.0 && self.subsample <= 1.0) {
            return Err(invalid("subsample", "must be in (0, 1]"));
        }
        if !(self.colsample_bytree > 0.0 && self.colsample_bytree <= 1.0) {
            return Err(invalid("colsample_bytree", "must be in (0, 1]"));
        }
        if !(self.reg_alpha.is_finite() && self.reg_alpha >= 0.0) {
            return Err(invalid("reg_alpha", "must be a finite number >= 0"));
        }
        if !(self.reg_lambda.is_finite() && self.reg_lambda >= 0.0) {
            return Err(invalid("reg_lambda", "must be a finite number >= 0"));
        }
        if !(2..=65_535).contains(&self.max_bin) {
            return Err(invalid("max_bin", "must be in 2..=65535"));
        }
        if !(self.min_split_gain.is_finite() && self.min_split_gain >= 0.0) {
            return Err(invalid("min_split_gain", "must be a finite number >= 0"));
        }
        Ok(())
    }
}

/// A fitted ensemble of trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeEnsemble {
    task: Task,
    params: TreeParams,
    n_classes: usize,
    /// Trees per round.
    n_outputs: usize,
    init_score: Vec<f64>,
    features: Vec<FeatureInfo>,
    /// Round-major: tree `t` adds to output `t % n_outputs`.
    trees: Vec<Tree>,
    best_iteration: usize,
}

/// Rows per parallel prediction chunk.
const PREDICT_CHUNK: usize = 1024;

/// Fits a tree ensemble. `on_round(round, validation_loss)` is called after every round
/// (`round` counts from 0; the loss is NaN without a validation set); returning `false` stops.
pub fn fit(
    x: &FeatureMatrix,
    y: &Target,
    task: Task,
    valid: Option<(&FeatureMatrix, &Target)>,
    params: &TreeParams,
    seed: u64,
    on_round: &mut dyn FnMut(usize, f64) -> bool,
) -> Result<TreeEnsemble, TrainError> {
    params.check()?;
    let averaged = params.mode != TreeMode::Gbdt;
    let problem = Problem::new(task, averaged, y)?;
    let labels = problem.labels(y)?;
    let mut ensemble = TreeEnsemble {
        task,
        params: params.clone(),
        n_classes: problem.n_classes,
        n_outputs: problem.k,
        init_score: problem.init_score(&labels),
        features: Vec::new(),
        trees: Vec::new(),
        best_iteration: 0,
    };
    train::run(&mut ensemble, x, y, valid, params.n_estimators, seed, on_round)?;
    Ok(ensemble)
}

impl TreeEnsemble {
    /// What prediction indexes, checked after a bundle is read (fuzzing `bundle_load` found an
    /// edited output count that panicked); node links are checked while trees are read.
    pub(crate) fn check_shape(&self) -> std::result::Result<(), String> {
        if self.n_outputs == 0 || self.init_score.len() != self.n_outputs {
            return Err(format!(
                "trees: {} initial scores for {} outputs",
                self.init_score.len(),
                self.n_outputs
            ));
        }
        let n = self.features.len();
        for (t, tree) in self.trees.iter().enumerate() {
            if tree.nodes.iter().any(|node| !node.is_leaf() && node.feature as usize >= n) {
                return Err(format!("trees: tree {t} splits on a feature beyond the {n} the model reads"));
            }
        }
        Ok(())
    }

    fn problem(&self) -> Problem {
        Problem {
            task: self.task,
            averaged: self.params.mode != TreeMode::Gbdt,
            n_classes: self.n_classes,
            k: self.n_outputs,
        }
    }

    pub fn task(&self) -> Task {
        self.task
    }

    pub fn params(&self) -> &TreeParams {
        &self.params
    }

    /// Probabilities (binary: 2 columns) for classification, values for regression.
    pub fn predict(&self, x: &FeatureMatrix) -> Predictions {
        let raw = self.predict_raw(x);
        self.problem().transform(&raw, self.rounds())
    }

    /// Raw scores, row-major with `n_outputs` per row: the initial score plus every tree.
    fn predict_raw(&self, x: &FeatureMatrix) -> Vec<f64> {
        let k = self.n_outputs;
        let mut raw = vec![0.0; x.n_rows * k];
        raw.par_chunks_mut(PREDICT_CHUNK * k).enumerate().for_each(|(c, out)| {
            let r0 = c * PREDICT_CHUNK;
            for row in out.chunks_mut(k) {
                row.copy_from_slice(&self.init_score);
            }
            for (t, tree) in self.trees.iter().enumerate() {
                let j = t % k;
                for (i, row) in out.chunks_mut(k).enumerate() {
                    row[j] += tree.predict_row(x, &self.features, r0 + i);
                }
            }
        });
        raw
    }

    /// Round-major trees: tree `t` adds to output `t % n_outputs()`.
    pub(crate) fn trees(&self) -> &[Tree] {
        &self.trees
    }

    pub(crate) fn feature_infos(&self) -> &[FeatureInfo] {
        &self.features
    }

    pub(crate) fn init_score(&self) -> &[f64] {
        &self.init_score
    }

    /// Trees per round: the number of raw outputs.
    pub(crate) fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    /// Random forest / extra trees: the output is the mean of the trees (no link function).
    pub(crate) fn averaged(&self) -> bool {
        self.params.mode != TreeMode::Gbdt
    }

    /// What the trees add up to per output, before any link: `init + Σ trees`, divided by the
    /// number of rounds for averaged models (row-major, `n_outputs` per row).
    pub(crate) fn predict_margin(&self, x: &FeatureMatrix) -> Vec<f64> {
        let mut raw = self.predict_raw(x);
        if self.averaged() {
            let scale = 1.0 / self.rounds().max(1) as f64;
            raw.iter_mut().for_each(|v| *v *= scale);
        }
        raw
    }

    pub(crate) fn n_rounds(&self) -> usize {
        self.rounds()
    }

    /// What the ONNX exporter reads: classes (0 for regression), trees per round, initial
    /// scores, feature binning, the trees, and whether outputs are averaged (forests).
    pub(crate) fn parts(&self) -> (usize, usize, &[f64], &[FeatureInfo], &[Tree], bool) {
        (
            self.n_classes,
            self.n_outputs,
            &self.init_score,
            &self.features,
            &self.trees,
            self.params.mode != TreeMode::Gbdt,
        )
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// Rounds kept (after early stopping, the model is truncated to its best round).
    pub fn best_iteration(&self) -> usize {
        self.best_iteration
    }

    fn rounds(&self) -> usize {
        self.trees.len() / self.n_outputs.max(1)
    }

    /// Total leaves over all trees (a size/complexity measure).
    pub fn n_leaves(&self) -> usize {
        self.trees.iter().map(Tree::n_leaves).sum()
    }

    /// Warm start: `extra_rounds` more rounds on the same data (or more trees for random
    /// forest / extra trees). Round numbers passed to `on_round` continue from the model's.
    pub fn continue_fit(
        &mut self,
        x: &FeatureMatrix,
        y: &Target,
        valid: Option<(&FeatureMatrix, &Target)>,
        extra_rounds: usize,
        seed: u64,
        on_round: &mut dyn FnMut(usize, f64) -> bool,
    ) -> Result<(), TrainError> {
        if extra_rounds == 0 {
            return Ok(());
        }
        let check = Problem::new(self.task, self.params.mode != TreeMode::Gbdt, y)?;
        if check.n_classes != self.n_classes {
            return Err(TrainError::Data(format!(
                "model has {} classes but the target has {}",
                self.n_classes, check.n_classes
            )));
        }
        train::run(self, x, y, valid, extra_rounds, seed, on_round)
    }
}
