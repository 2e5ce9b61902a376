//! Explanations: per-row Shapley values of a fitted [`Pipeline`] in terms of the user's raw
//! columns, with `expected + Σ shap = output` on every row.
//!
//! - Tree engine models: exact TreeSHAP with the saved node covers, by per-leaf tables
//!   ([`fast_tree_shap`]) or Algorithm 2 ([`tree_shap`]) for very deep trees and few rows.
//! - Linear models: exact linear SHAP on the design matrix (imputation, scaling and one-hot
//!   included), the background rows' design means as the expectation.
//! - kNN and naive Bayes: KernelSHAP ([`kernel`]) against background rows, its efficiency
//!   constraint enforced so additivity is exact; exact (every coalition) up to
//!   [`kernel::MAX_EXACT_PLAYERS`] columns, sampled and with a stated standard error past it.
//! - A pipeline of several members (fold bags, ensembles): the weighted sum of the members'.
//!
//! Players are raw columns: engineered features that share a source column (one-hot codes,
//! datetime parts, text hash buckets) are one player, so every value speaks of a user column.
//!
//! The output space: a single boosted or linear classifier is explained in log-odds (binary) or
//! raw margin per class (multiclass); other classifiers, and every pipeline of several members
//! (whose prediction is a mean of probabilities), in probability; regression in raw value.
//! Margin-space members of a probability-space pipeline have their exact margin values rescaled
//! per row by `Δp / Δmargin`, which keeps additivity exact.

mod background;
pub(crate) mod fast_tree_shap;
mod kernel;
mod linear_shap;
#[cfg(test)]
mod tests;
pub(crate) mod tree_shap;

use quarry_featurize::{FeatureMatrix, Predictions, Target, Task};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

pub use background::{BACKGROUND_FILE, BACKGROUND_ROWS, load_background, sample_rows, save_background};
pub use kernel::KernelReport;

use crate::error::{Result, TrainError};
use crate::family::FittedModel;
use crate::gbdt::TreeEnsemble;
use crate::pipeline::Pipeline;
use fast_tree_shap::{FastTree, RowValues};
use tree_shap::{PathElem, ShapTree};

/// The quantity the Shapley values add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputSpace {
    /// Binary: log(p / (1 - p)) of the positive class.
    LogOdds,
    /// Multiclass: the raw score of each class before the softmax.
    Margin,
    /// Class probability.
    Probability,
    /// Regression: the predicted value.
    Value,
}

impl OutputSpace {
    pub fn name(self) -> &'static str {
        match self {
            OutputSpace::LogOdds => "log_odds",
            OutputSpace::Margin => "margin",
            OutputSpace::Probability => "probability",
            OutputSpace::Value => "value",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            OutputSpace::LogOdds => {
                "log-odds of the positive class: sigmoid(output) is the predicted probability"
            }
            OutputSpace::Margin => {
                "raw score per class: softmax over the classes' outputs is the predicted probability"
            }
            OutputSpace::Probability => "predicted probability of the class",
            OutputSpace::Value => "predicted value",
        }
    }
}

/// Shapley values of one pipeline on some rows.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub space: OutputSpace,
    /// How the members were explained (`tree_shap`, `linear_shap`, `kernel_shap`, …).
    pub methods: Vec<String>,
    /// The players: the raw columns the pipeline uses, in the featurizer's order.
    pub columns: Vec<String>,
    /// What each output is: the positive class (binary), every class (multiclass) or `value`.
    pub outputs: Vec<String>,
    /// `E[output]` per output.
    pub expected: Vec<f64>,
    pub n_rows: usize,
    /// `n_rows × outputs × columns`.
    pub phi: Vec<f64>,
    /// `n_rows × outputs`: the explained output on each row.
    pub output: Vec<f64>,
    pub kernel: Option<KernelReport>,
}

/// One output of an [`Explanation`], e.g. the class asked for with `--class`.
#[derive(Debug, Clone)]
pub struct OutputExplanation {
    pub name: String,
    pub expected: f64,
    /// `n_rows × columns`.
    pub phi: Vec<f64>,
    pub output: Vec<f64>,
}

impl Explanation {
    pub fn n_outputs(&self) -> usize {
        self.outputs.len()
    }

    /// Shapley values of `row` for output `out`, one per column.
    pub fn row(&self, row: usize, out: usize) -> &[f64] {
        let m = self.columns.len();
        let start = (row * self.n_outputs() + out) * m;
        &self.phi[start..start + m]
    }

    /// The largest `|expected + Σ shap - output|` over rows and outputs.
    pub fn max_additivity_error(&self) -> f64 {
        let k = self.n_outputs();
        let mut worst: f64 = 0.0;
        for r in 0..self.n_rows {
            for o in 0..k {
                let sum: f64 = self.row(r, o).iter().sum();
                worst = worst.max((self.expected[o] + sum - self.output[r * k + o]).abs());
            }
        }
        worst
    }

    /// Mean |shap| per output, per column.
    pub fn mean_abs(&self) -> Vec<Vec<f64>> {
        let m = self.columns.len();
        let mut out = vec![vec![0.0; m]; self.n_outputs()];
        for r in 0..self.n_rows {
            for (o, acc) in out.iter_mut().enumerate() {
                for (a, v) in acc.iter_mut().zip(self.row(r, o)) {
                    *a += v.abs();
                }
            }
        }
        let n = self.n_rows.max(1) as f64;
        out.iter_mut().flatten().for_each(|v| *v /= n);
        out
    }

    /// Appends another explanation of the same pipeline on more rows.
    pub fn append(&mut self, other: Explanation) {
        self.n_rows += other.n_rows;
        self.phi.extend(other.phi);
        self.output.extend(other.output);
    }

    /// The output for `class`: `None` picks the only output (binary: the positive class, or
    /// regression). For binary, the negative class is the mirror image of the positive one.
    pub fn select(&self, class: Option<&str>, classes: &[String]) -> Result<OutputExplanation> {
        let k = self.n_outputs();
        let pick = |o: usize| OutputExplanation {
            name: self.outputs[o].clone(),
            expected: self.expected[o],
            phi: (0..self.n_rows).flat_map(|r| self.row(r, o).iter().copied()).collect(),
            output: (0..self.n_rows).map(|r| self.output[r * k + o]).collect(),
        };
        let Some(class) = class else {
            if k == 1 {
                return Ok(pick(0));
            }
            return Err(TrainError::Explain(format!(
                "a multiclass model has one explanation per class; pass --class with one of {}",
                classes.join(", ")
            )));
        };
        if self.space == OutputSpace::Value {
            return Err(TrainError::Explain(format!(
                "--class {class:?} given, but this is a regression model"
            )));
        }
        if let Some(o) = self.outputs.iter().position(|c| c == class) {
            return Ok(pick(o));
        }
        if k == 1 && classes.len() == 2 && classes[0] == class {
            let pos = pick(0);
            // log-odds(neg) = -log-odds(pos); p(neg) = 1 - p(pos).
            let (e, out): (f64, Vec<f64>) = match self.space {
                OutputSpace::Probability => {
                    (1.0 - pos.expected, pos.output.iter().map(|v| 1.0 - v).collect())
                }
                _ => (-pos.expected, pos.output.iter().map(|v| -v).collect()),
            };
            return Ok(OutputExplanation {
                name: class.to_string(),
                expected: e,
                phi: pos.phi.iter().map(|v| -v).collect(),
                output: out,
            });
        }
        Err(TrainError::Explain(format!("unknown class {class:?}; the classes are {}", classes.join(", "))))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ExplainOptions {
    pub seed: u64,
    /// Background rows KernelSHAP averages over.
    pub kernel_background: usize,
    /// Coalitions KernelSHAP samples when it cannot enumerate them all.
    pub kernel_coalitions: usize,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions { seed: 0, kernel_background: 40, kernel_coalitions: 1024 }
    }
}

/// The space a pipeline is explained in (see the module docs).
pub fn output_space(p: &Pipeline) -> OutputSpace {
    match p.task {
        Task::Regression => OutputSpace::Value,
        task => {
            let margin = p.members.len() == 1
                && match &p.members[0].model {
                    FittedModel::Trees(m) => !m.averaged(),
                    FittedModel::Linear(_) => true,
                    FittedModel::Knn(_)
                    | FittedModel::NaiveBayes(_)
                    | FittedModel::Mlp(_)
                    | FittedModel::Svm(_) => false,
                };
            match (margin, task) {
                (true, Task::Binary) => OutputSpace::LogOdds,
                (true, _) => OutputSpace::Margin,
                (false, _) => OutputSpace::Probability,
            }
        }
    }
}

/// Contributions of one model in one space.
#[derive(Debug, Clone)]
pub(crate) struct Contributions {
    pub n_outputs: usize,
    pub n_players: usize,
    pub expected: Vec<f64>,
    /// `n_rows × n_outputs × n_players`.
    pub phi: Vec<f64>,
    /// `n_rows × n_outputs`.
    pub output: Vec<f64>,
}

/// The space a member's exact method works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Native {
    Margin,
    /// Random forest / extra trees class scores: the mean of the trees' class frequencies,
    /// clipped and renormalised into probabilities by the model.
    ForestScore,
    Probability,
    Value,
}

/// The player (index into `columns`) of every feature of `x`.
pub(crate) fn players_of(x: &FeatureMatrix, columns: &[String]) -> Result<Vec<u32>> {
    x.columns
        .iter()
        .map(|c| {
            columns.iter().position(|n| *n == c.source).map(|p| p as u32).ok_or_else(|| {
                TrainError::Explain(format!("feature {:?} comes from unknown column {:?}", c.name, c.source))
            })
        })
        .collect()
}

/// Explains `x` (already featurized by `p.featurizer`) against `background` rows (training
/// rows, featurized the same way; used for expectations of linear, kNN and naive Bayes models
/// and for covers of trees saved without them).
pub fn explain(
    p: &Pipeline,
    x: &FeatureMatrix,
    background: &FeatureMatrix,
    opts: &ExplainOptions,
) -> Result<Explanation> {
    let columns: Vec<String> = p.featurizer.used_columns().map(|c| c.name.clone()).collect();
    let player_of = players_of(x, &columns)?;
    if background.columns.len() != x.columns.len() {
        return Err(TrainError::Explain(format!(
            "background rows have {} features but the data has {}",
            background.columns.len(),
            x.columns.len()
        )));
    }
    if background.n_rows == 0 {
        return Err(TrainError::Explain("no background rows".into()));
    }
    let space = output_space(p);
    let outputs: Vec<String> = match p.task {
        Task::Regression => vec!["value".to_string()],
        Task::Binary => vec![p.target.classes.get(1).cloned().unwrap_or_else(|| "1".into())],
        Task::Multiclass => p.target.classes.clone(),
    };
    let k = outputs.len();
    let m = columns.len();
    let total: f64 = p.members.iter().map(|mb| mb.weight).sum();
    if p.members.is_empty() || total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(TrainError::Explain("the pipeline has no weighted members".into()));
    }
    let mut acc = Contributions {
        n_outputs: k,
        n_players: m,
        expected: vec![0.0; k],
        phi: vec![0.0; x.n_rows * k * m],
        output: vec![0.0; x.n_rows * k],
    };
    let mut methods: Vec<String> = Vec::new();
    let mut kernel_report: Option<KernelReport> = None;
    for (i, member) in p.members.iter().enumerate() {
        let w = member.weight / total;
        let member_opts = ExplainOptions { seed: opts.seed.wrapping_add(i as u64), ..*opts };
        let (native, c, method, report) =
            member_contributions(&member.model, p.task, k, x, &player_of, m, background, &member_opts)?;
        let c = match (native, space) {
            (Native::Margin, OutputSpace::Probability) => margin_to_probability(c),
            (Native::ForestScore, _) => rescale(c, &forest_probability),
            _ => c,
        };
        if c.n_outputs != k {
            return Err(TrainError::Explain(format!(
                "a {} member explains {} outputs, the pipeline {k}",
                member.family, c.n_outputs
            )));
        }
        let method = match (native, space) {
            (Native::Margin, OutputSpace::Probability) => {
                format!("{method} (margin rescaled to probability)")
            }
            (Native::ForestScore, _) => format!("{method} (tree mean rescaled to normalised probability)"),
            _ => method.to_string(),
        };
        if !methods.contains(&method) {
            methods.push(method);
        }
        if let Some(r) = report {
            kernel_report = Some(match kernel_report {
                Some(prev) => prev.merge(&r),
                None => r,
            });
        }
        acc.expected.iter_mut().zip(&c.expected).for_each(|(a, v)| *a += w * v);
        acc.phi.par_iter_mut().zip(c.phi.par_iter()).for_each(|(a, v)| *a += w * v);
        acc.output.iter_mut().zip(&c.output).for_each(|(a, v)| *a += w * v);
    }
    Ok(Explanation {
        space,
        methods,
        columns,
        outputs,
        expected: acc.expected,
        n_rows: x.n_rows,
        phi: acc.phi,
        output: acc.output,
        kernel: kernel_report,
    })
}

#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn member_contributions(
    model: &FittedModel,
    task: Task,
    n_outputs: usize,
    x: &FeatureMatrix,
    player_of: &[u32],
    n_players: usize,
    background: &FeatureMatrix,
    opts: &ExplainOptions,
) -> Result<(Native, Contributions, &'static str, Option<KernelReport>)> {
    let value_or = |native| if task == Task::Regression { Native::Value } else { native };
    Ok(match model {
        FittedModel::Trees(m) => {
            let native = value_or(if m.averaged() { Native::ForestScore } else { Native::Margin });
            (native, tree_contributions(m, x, player_of, n_players, Some(background)), "tree_shap", None)
        }
        FittedModel::Linear(m) => (
            value_or(Native::Margin),
            linear_shap::contributions(m, x, player_of, n_players, background),
            "linear_shap",
            None,
        ),
        FittedModel::Knn(_) | FittedModel::NaiveBayes(_) | FittedModel::Mlp(_) | FittedModel::Svm(_) => {
            debug_assert!(uses_kernel_shap(model));
            let f = |rows: &FeatureMatrix| model_output(model, rows);
            let (c, report) = kernel::kernel_shap(&f, n_outputs, x, player_of, n_players, background, opts)?;
            (value_or(Native::Probability), c, "kernel_shap", Some(report))
        }
    })
}

/// Whether `model` is explained by KernelSHAP (a model evaluation per coalition and background
/// row, so its rows cost orders of magnitude more than TreeSHAP's or linear SHAP's).
pub fn uses_kernel_shap(model: &FittedModel) -> bool {
    !matches!(model, FittedModel::Trees(_) | FittedModel::Linear(_))
}

/// A model's prediction in its natural explained space: p(positive) for binary, every class's
/// probability for multiclass, the value for regression.
fn model_output(model: &FittedModel, x: &FeatureMatrix) -> Vec<f64> {
    match model.predict(x) {
        Predictions::Values(v) => v,
        Predictions::Probabilities { n_classes: 2, values } => values.chunks(2).map(|r| r[1]).collect(),
        Predictions::Probabilities { values, .. } => values,
    }
}

/// Rows per parallel TreeSHAP task.
const TREE_CHUNK: usize = 64;
/// Table values built at once: trees are explained in groups whose tables add up to about
/// this many values (16 MiB), so memory stays bounded whatever the ensemble's size.
const GROUP_TABLE_VALUES: usize = 1 << 21;

/// Exact TreeSHAP of a tree ensemble on every row of `x`, in the ensemble's raw space (margin for
/// boosting; the trees' mean, a probability or value, for random forest / extra trees).
///
/// Each tree uses per-leaf tables ([`fast_tree_shap`]) when building them costs less than
/// the rows save, else Algorithm 2 ([`tree_shap`]); both are exact. Rows are split into
/// chunks across threads, and every row adds its trees in tree order, so a row's values do
/// not depend on the thread count.
pub(crate) fn tree_contributions(
    m: &TreeEnsemble,
    x: &FeatureMatrix,
    player_of: &[u32],
    n_players: usize,
    background: Option<&FeatureMatrix>,
) -> Contributions {
    let k = m.n_outputs().max(1);
    let infos = m.feature_infos();
    let trees: Vec<ShapTree> =
        m.trees().par_iter().map(|t| ShapTree::new(t, infos, player_of, background)).collect();
    let scale = if m.averaged() { 1.0 / m.n_rounds().max(1) as f64 } else { 1.0 };
    let mut expected = m.init_score().to_vec();
    expected.resize(k, 0.0);
    for (t, st) in trees.iter().enumerate() {
        expected[t % k] += st.expected;
    }
    expected.iter_mut().for_each(|v| *v *= scale);
    let width = k * n_players;
    let mut phi = vec![0.0; x.n_rows * width];
    let n_features = x.columns.len();
    let n = x.n_rows as f64;
    let mut fast: Vec<Option<FastTree>> = trees
        .par_iter()
        .map(|st| {
            FastTree::new(st, n_features).filter(|ft| {
                let (build, row, alg2) = ft.costs();
                build + n * row < n * alg2
            })
        })
        .collect();
    let mut start = 0;
    while start < trees.len() && width > 0 {
        let mut end = start;
        let mut values = 0;
        while end < trees.len() && (end == start || values < GROUP_TABLE_VALUES) {
            values += fast[end].as_ref().map_or(0, FastTree::table_len);
            end += 1;
        }
        fast[start..end].par_iter_mut().flatten().for_each(FastTree::fill_tables);
        let group = &fast[start..end];
        phi.par_chunks_mut(TREE_CHUNK * width).enumerate().for_each(|(chunk, out)| {
            let r0 = chunk * TREE_CHUNK;
            let rows = out.len() / width;
            let mut rv = RowValues::new();
            rv.load(x, infos, r0..r0 + rows);
            let mut mask: Vec<u32> = Vec::new();
            let mut buf: Vec<PathElem> = Vec::new();
            for (t, ft) in (start..end).zip(group) {
                let o = t % k;
                for (i, row_phi) in out.chunks_mut(width).enumerate() {
                    let (xv, bins) = rv.row(i);
                    let slot = &mut row_phi[o * n_players..(o + 1) * n_players];
                    match ft {
                        Some(ft) => ft.explain_row(xv, bins, slot, &mut mask),
                        None => trees[t].explain_row(xv, infos, slot, &mut buf),
                    }
                }
            }
        });
        fast[start..end].iter_mut().flatten().for_each(FastTree::drop_tables);
        start = end;
    }
    if scale != 1.0 {
        phi.par_iter_mut().for_each(|v| *v *= scale);
    }
    Contributions { n_outputs: k, n_players, expected, phi, output: m.predict_margin(x) }
}

/// TreeSHAP of a bare tree ensemble with one player per feature (benchmarks, tools):
/// `(expected per output, phi as rows × outputs × features)`, in the ensemble's raw space.
pub fn tree_shap_values(m: &TreeEnsemble, x: &FeatureMatrix) -> (Vec<f64>, Vec<f64>) {
    let player_of: Vec<u32> = (0..x.columns.len() as u32).collect();
    let c = tree_contributions(m, x, &player_of, x.columns.len(), None);
    (c.expected, c.phi)
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

fn softmax(v: &[f64]) -> Vec<f64> {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = v.iter().map(|x| (x - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// Probabilities from margins: sigmoid for one output, softmax otherwise.
fn link_probability(margins: &[f64]) -> Vec<f64> {
    if margins.len() == 1 { vec![sigmoid(margins[0])] } else { softmax(margins) }
}

/// The forest's own output transform (`gbdt::objective`): clip to `[PROB_FLOOR, 1]`, renormalise;
/// one output is p(positive) with p(negative) = 1 - p.
fn forest_probability(scores: &[f64]) -> Vec<f64> {
    const PROB_FLOOR: f64 = 1e-7;
    if scores.len() == 1 {
        let p = scores[0].clamp(PROB_FLOOR, 1.0);
        let q = (1.0 - scores[0]).clamp(PROB_FLOOR, 1.0);
        return vec![p / (p + q)];
    }
    let clipped: Vec<f64> = scores.iter().map(|v| v.clamp(PROB_FLOOR, 1.0)).collect();
    let total: f64 = clipped.iter().sum();
    clipped.iter().map(|v| v / total).collect()
}

fn margin_to_probability(c: Contributions) -> Contributions {
    rescale(c, &link_probability)
}

/// Contributions to a transformed output `T(raw)`: per row and output, the raw values are
/// scaled by `ΔT / Δraw`, with `T(E[raw])` as the expectation. Exactly additive; a pure
/// rescaling, so signs and the ranking of columns within a row are kept.
fn rescale(c: Contributions, transform: &dyn Fn(&[f64]) -> Vec<f64>) -> Contributions {
    let k = c.n_outputs;
    let m = c.n_players;
    let n_rows = c.output.len() / k.max(1);
    let base: Vec<f64> = transform(&c.expected);
    let mut phi = c.phi;
    let mut output = vec![0.0; c.output.len()];
    for r in 0..n_rows {
        let margins = &c.output[r * k..(r + 1) * k];
        let p: Vec<f64> = transform(margins);
        // Fallback weights when a class's margin did not move but its probability did.
        let row_abs: Vec<f64> =
            (0..m).map(|j| (0..k).map(|o| phi[(r * k + o) * m + j].abs()).sum::<f64>()).collect();
        let abs_total: f64 = row_abs.iter().sum();
        for o in 0..k {
            let d_margin = margins[o] - c.expected[o];
            let d_p = p[o] - base[o];
            let slot = &mut phi[(r * k + o) * m..(r * k + o + 1) * m];
            if d_margin.abs() > 1e-9 {
                let ratio = d_p / d_margin;
                slot.iter_mut().for_each(|v| *v *= ratio);
            } else if abs_total > 0.0 {
                slot.iter_mut().zip(&row_abs).for_each(|(v, a)| *v = d_p * a / abs_total);
            } else {
                slot.iter_mut().for_each(|v| *v = d_p / m.max(1) as f64);
            }
            output[r * k + o] = p[o];
        }
    }
    Contributions { n_outputs: k, n_players: m, expected: base, phi, output }
}

/// Permutation importance per raw column (the featurizer's used columns, in order): how much
/// the pipeline's metric loss grows when the column's values are shuffled across rows (every
/// feature of the column with the same permutation), averaged over `repeats` shuffles.
/// Returns the baseline score and one importance per column.
pub fn permutation_importance(
    p: &Pipeline,
    x: &FeatureMatrix,
    y: &Target,
    repeats: usize,
    seed: u64,
) -> Result<(f64, Vec<f64>)> {
    let columns: Vec<String> = p.featurizer.used_columns().map(|c| c.name.clone()).collect();
    let player_of = players_of(x, &columns)?;
    let base = p.metric.score(y, &p.predict_features(x)?);
    let base_loss = p.metric.to_loss(base);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0.0; columns.len()];
    for (player, imp) in out.iter_mut().enumerate() {
        let mut total = 0.0;
        for _ in 0..repeats.max(1) {
            let mut perm: Vec<usize> = (0..x.n_rows).collect();
            perm.shuffle(&mut rng);
            let mut xp = x.clone();
            for (c, &pl) in xp.columns.iter_mut().zip(&player_of) {
                if pl as usize == player {
                    c.values = perm.iter().map(|&i| c.values[i]).collect();
                }
            }
            let score = p.metric.score(y, &p.predict_features(&xp)?);
            total += p.metric.to_loss(score) - base_loss;
        }
        *imp = total / repeats.max(1) as f64;
    }
    Ok((base, out))
}
