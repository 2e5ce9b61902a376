//! Memory estimates of a fit, made before it starts (issue #12's memory admission): a pure
//! function of the data's shape and the family's parameters, in bytes of heap.
//!
//! The estimates follow what each family allocates (the tree engine's binned matrix,
//! gradients, live leaf histograms and the grown trees; the design matrix of the linear,
//! kNN and naive Bayes models) and are checked against measured heap peaks in
//! `learners/tests/memory_estimate.rs` (within 0.5–2×). They err on the large side: an
//! estimate that is too small lets a trial start that the runtime guard then has to stop.

use quarry_featurize::{FeatureKind, FeatureMatrix, Task};

use crate::family::CheckedSpec;
use crate::gbdt::{TreeMode, TreeParams};

/// Distinct values a numeric column is sampled for (its bin count is at most `max_bin`).
const DISTINCT_SAMPLE: usize = 4096;
/// Rows a kNN model keeps (its training set is subsampled to this).
const KNN_ROWS: usize = crate::knn::MAX_TRAIN_ROWS;
/// Rows a linear fit sees at most.
const LINEAR_ROWS: usize = crate::linear::MAX_FIT_ROWS;
/// Categoricals up to this many levels are one-hot in the design matrix.
const MAX_ONE_HOT: u32 = crate::design::MAX_ONE_HOT;

/// What an estimate reads of the data: sizes, not values.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryShape {
    /// Rows one fit trains on.
    pub rows: usize,
    /// Rows the fit is validated on while it runs (0 when none).
    pub valid_rows: usize,
    /// Distinct values of each numeric feature (from a sample, at most 4096; the bin count
    /// is the smaller of this and `max_bin`).
    pub numeric_levels: Vec<u32>,
    /// Levels of each categorical feature.
    pub categorical_levels: Vec<u32>,
    /// Classes of the target; 0 for regression.
    pub classes: usize,
}

impl MemoryShape {
    /// The shape of a fit on `x` validated on `valid_rows` rows.
    pub fn of(x: &FeatureMatrix, valid_rows: usize, task: Task, classes: usize) -> MemoryShape {
        let mut numeric_levels = Vec::new();
        let mut categorical_levels = Vec::new();
        for c in &x.columns {
            match c.kind {
                FeatureKind::Categorical { n_levels } => categorical_levels.push(n_levels),
                FeatureKind::Numeric => numeric_levels.push(distinct_in_sample(&c.values)),
            }
        }
        let classes = if task.is_classification() { classes.max(2) } else { 0 };
        MemoryShape { rows: x.n_rows, valid_rows, numeric_levels, categorical_levels, classes }
    }

    pub fn features(&self) -> usize {
        self.numeric_levels.len() + self.categorical_levels.len()
    }

    /// The same data with only `rows` training rows.
    pub fn with_rows(&self, rows: usize) -> MemoryShape {
        MemoryShape { rows, ..self.clone() }
    }

    /// Model outputs: one score per class for multiclass, one otherwise.
    fn outputs(&self) -> usize {
        if self.classes > 2 { self.classes } else { 1 }
    }

    /// Histogram bins over all features with `max_bin` (the tree engine adds a missing bin).
    fn total_bins(&self, max_bin: usize) -> usize {
        let cap = max_bin.max(2);
        let numeric: usize = self.numeric_levels.iter().map(|&l| (l as usize).min(cap) + 2).sum();
        let categorical: usize =
            self.categorical_levels.iter().map(|&l| (l as usize).min(cap.saturating_sub(1).max(1)) + 2).sum();
        numeric + categorical
    }

    /// Columns of the design matrix the linear, kNN and naive Bayes models build.
    fn design_width(&self) -> usize {
        self.numeric_levels.len()
            + self
                .categorical_levels
                .iter()
                .map(|&l| if l <= MAX_ONE_HOT { l as usize } else { 1 })
                .sum::<usize>()
    }
}

fn distinct_in_sample(values: &[f32]) -> u32 {
    let stride = values.len().div_ceil(DISTINCT_SAMPLE).max(1);
    let mut sample: Vec<u32> =
        values.iter().step_by(stride).filter(|v| !v.is_nan()).map(|v| v.to_bits()).collect();
    sample.sort_unstable();
    sample.dedup();
    sample.len().max(1) as u32
}

/// Bytes of heap a fit of `spec` on data of `shape` needs at its peak, including the model it
/// returns and the predictions on its validation rows.
pub fn fit_bytes(spec: &CheckedSpec, shape: &MemoryShape) -> u64 {
    let n = shape.rows as u64;
    let nv = shape.valid_rows as u64;
    let m = shape.features() as u64;
    let k = shape.outputs() as u64;
    let w = shape.design_width() as u64;
    let c = shape.classes.max(1) as u64;
    let peak = match spec {
        CheckedSpec::Trees(p) => {
            let bins = shape.total_bins(p.max_bin) as u64;
            let gbdt = p.mode == TreeMode::Gbdt;
            // Binned rows: row-major bytes plus the same bytes column by column; while they
            // are built every column also exists as u16 codes.
            let binned = 4 * n * m;
            // Gradients and hessians per output; boosting also keeps train and validation scores.
            let scores = if gbdt { 8 * n * k + 8 * nv * k } else { 0 };
            let gradients = 16 * n * k + scores;
            // Row lists (sample, its per-output copy, partition spare), gathered (g, h) pairs,
            // labels, and the bootstrap counts of a forest.
            let rows = 4 * n * 3 + 16 * n + 8 * n + if gbdt { 0 } else { 4 * n };
            // One histogram per leaf still waiting for its split. A boosted tree's frontier is
            // about half its leaves; a forest's deep trees stop splitting small leaves, so
            // their frontier grows with the rows, not `num_leaves`. Fitted to measured peaks:
            // it depends on the labels too (noisy labels keep more leaves splittable, up to
            // ~2× this), which no shape-only estimate can see.
            // Nodes under 128 rows take no histogram (grow's small-node path), so a forest's
            // deep trees keep few waiting at once (fitted: 50k rows ~28, 20k ~22). The floor
            // of 40 covers small data with coarse features, where the small-node path is off
            // and small nodes keep their histograms: with 20 the memory e2e test's forests on
            // cars were admitted at 8 MiB and then ran over it.
            let leaves = effective_leaves(p, shape.rows) as u64;
            let live = if gbdt { leaves.div_ceil(2) } else { leaves.min(40 + n / 2500) } + 2;
            let hists = live * bins * HIST_BIN;
            binned + gradients + rows + hists + tree_model_bytes(p, shape)
        }
        CheckedSpec::Knn(_) => {
            let kept = n.min(KNN_ROWS as u64);
            // A subsample's copy, imputation buffers, the f64 design matrix, the kept f32
            // points; predicting builds the validation rows' design and a distance row each.
            let copy = if n > kept { 4 * kept * m + 8 * kept } else { 0 };
            let fit = copy + 16 * n + 8 * kept * w + knn_model_bytes(shape);
            fit + 8 * nv * w + 16 * kept * 4 + 8 * nv * c
        }
        CheckedSpec::Linear(_) => {
            let r = n.min(LINEAR_ROWS as u64);
            let copy = if n > r { 4 * r * m + 8 * r } else { 0 };
            // The design matrix and the solver's own copy of it, plus per-class scores.
            copy + 16 * n + 2 * 8 * r * w + 2 * 8 * r * c + 8 * nv * w + 8 * nv * c
        }
        CheckedSpec::NaiveBayes(_) => {
            // The design matrix and its rows as separate vectors (fit and predict alike).
            let rows = |r: u64| 8 * r * w + (8 * w + 24) * r;
            16 * n + rows(n) + rows(nv) + 8 * nv * c
        }
        CheckedSpec::Mlp(p) => {
            // The design matrix (f64 and the f32 copy burn trains on), one batch's activations
            // and their gradients per layer, and the weights with Adam's two moments.
            let h = p.hidden.max(1) as u64;
            let layers = p.hidden_layers.max(1) as u64;
            let weights = 4 * (w * h + layers * h * h + h * k.max(c)) * 3;
            let acts = 8 * p.batch_size.max(1) as u64 * h * layers * 2;
            // Each epoch's validation pass copies the validation design and holds two
            // layers' f64 activations over all its rows (measured: this is half the peak).
            let validation = 8 * nv * w + 16 * nv * h;
            8 * n * w + 4 * n * w + acts + weights + 8 * nv * w + validation
        }
        CheckedSpec::Svm(_) => {
            // The kernel matrix over the (subsampled) rows dominates: O(n²).
            let r = n.min(crate::svm::MAX_FIT_ROWS as u64);
            8 * r * r + 16 * r * w + 8 * nv * w + 8 * nv * r
        }
    };
    peak + 8 * nv * k.max(c)
}

/// Bytes of the fitted model (what a trial keeps per fold).
pub fn model_bytes(spec: &CheckedSpec, shape: &MemoryShape) -> u64 {
    match spec {
        CheckedSpec::Trees(p) => tree_model_bytes(p, shape),
        CheckedSpec::Knn(_) => knn_model_bytes(shape),
        CheckedSpec::Mlp(p) => {
            let h = p.hidden.max(1) as u64;
            let w = shape.design_width() as u64;
            let c = shape.classes.max(1) as u64;
            4 * (w * h + p.hidden_layers.max(1) as u64 * h * h + h * c) + 16 * w
        }
        CheckedSpec::Svm(_) => {
            let w = shape.design_width() as u64;
            let r = (shape.rows as u64).min(crate::svm::MAX_FIT_ROWS as u64);
            8 * r * (w + shape.classes.max(1) as u64) + 16 * w
        }
        CheckedSpec::Linear(_) | CheckedSpec::NaiveBayes(_) => {
            let w = shape.design_width() as u64;
            let c = shape.classes.max(1) as u64;
            8 * (w + 1) * c * 3 + 64 * shape.features() as u64
        }
    }
}

const HIST_BIN: u64 = std::mem::size_of::<crate::gbdt::HistBinSize>() as u64;
const NODE: u64 = std::mem::size_of::<crate::gbdt::NodeSize>() as u64;

/// Leaves a tree can really grow: `num_leaves`, bounded by depth and by the rows per leaf.
fn effective_leaves(p: &TreeParams, rows: usize) -> usize {
    let by_rows = (rows / p.min_child_samples.max(1)).max(1);
    let by_depth = if p.max_depth > 0 && p.max_depth < 30 { 1usize << p.max_depth } else { usize::MAX };
    p.num_leaves.min(by_rows).min(by_depth).max(1)
}

fn tree_model_bytes(p: &TreeParams, shape: &MemoryShape) -> u64 {
    let trees = (p.n_estimators * shape.outputs()) as u64;
    let nodes = 2 * effective_leaves(p, shape.rows) as u64 - 1;
    // A tree's own vectors and bookkeeping besides its nodes.
    trees * (nodes * NODE + 64)
}

fn knn_model_bytes(shape: &MemoryShape) -> u64 {
    let kept = shape.rows.min(KNN_ROWS) as u64;
    4 * kept * shape.design_width() as u64 + 8 * kept
}

/// What [`downsize`] changed, in words ("num_leaves 4096 → 256").
pub type Changes = Vec<String>;

/// A smaller configuration of `spec` whose [`fit_bytes`] plus `fixed(model)` fits in
/// `budget`, and what was changed; `None` when the family cannot shrink (or not enough).
/// Tree ensembles halve `num_leaves` (down to 8), then `max_bin` (down to 15), then
/// `n_estimators` (down to 10): each trades a little accuracy for memory, never correctness.
pub fn downsize(
    spec: &CheckedSpec,
    shape: &MemoryShape,
    budget: u64,
    fixed: &dyn Fn(&CheckedSpec) -> u64,
) -> Option<(CheckedSpec, Changes)> {
    let fits = |s: &CheckedSpec| fit_bytes(s, shape) + fixed(s) <= budget;
    let CheckedSpec::Trees(original) = spec else { return None };
    let mut p = original.clone();
    let mut changes = Changes::new();
    for (name, floor) in [("num_leaves", 8), ("max_bin", 15), ("n_estimators", 10)] {
        let before = *knob(&mut p, name);
        while !fits(&CheckedSpec::Trees(p.clone())) && *knob(&mut p, name) > floor {
            let v = knob(&mut p, name);
            *v = (*v / 2).max(floor);
        }
        let after = *knob(&mut p, name);
        if after != before {
            changes.push(format!("{name} {before} → {after}"));
        }
        if fits(&CheckedSpec::Trees(p.clone())) {
            return Some((CheckedSpec::Trees(p), changes));
        }
    }
    None
}

fn knob<'a>(p: &'a mut TreeParams, name: &str) -> &'a mut usize {
    match name {
        "num_leaves" => &mut p.num_leaves,
        "max_bin" => &mut p.max_bin,
        _ => &mut p.n_estimators,
    }
}

/// `bytes` for people: "3.1 GiB", "512 MiB", "900 KiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 100.0 || v.fract() < 0.05 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::family::{Family, check_params};
    use crate::params::ParamMap;

    fn shape(rows: usize, numeric: usize, classes: usize) -> MemoryShape {
        MemoryShape {
            rows,
            valid_rows: rows / 4,
            numeric_levels: vec![4096; numeric],
            categorical_levels: Vec::new(),
            classes,
        }
    }

    fn spec(family: Family, pairs: &[(&str, &str)]) -> CheckedSpec {
        let map: ParamMap = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        check_params(family, &map).unwrap()
    }

    #[test]
    fn forests_dominated_by_leaf_histograms_are_downsized_by_leaves_first() {
        let s = shape(100_000, 50, 2);
        let forest = spec(Family::RandomForest, &[("n_estimators", "100")]);
        let before = fit_bytes(&forest, &s);
        // 62 leaves waiting with a histogram of 50 × 258 bins of 24 bytes each.
        assert!(before > 62 * 50 * 258 * 24, "{before}");
        let budget = before * 3 / 4;
        let (small, changes) = downsize(&forest, &s, budget, &|_| 0).unwrap();
        assert!(fit_bytes(&small, &s) <= budget);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].starts_with("num_leaves 4096 → "), "{changes:?}");
        // Families without a size knob are not downsized.
        assert!(downsize(&spec(Family::Knn, &[]), &s, 1, &|_| 0).is_none());
        // Nor is a forest below every floor.
        assert!(downsize(&forest, &s, 1 << 20, &|_| 0).is_none());
    }

    #[test]
    fn estimates_grow_with_rows_features_and_classes() {
        for family in Family::ALL {
            let sp = spec(family, &[]);
            let base = fit_bytes(&sp, &shape(10_000, 10, 2));
            assert!(fit_bytes(&sp, &shape(20_000, 10, 2)) > base, "{family}");
            assert!(fit_bytes(&sp, &shape(10_000, 20, 2)) > base, "{family}");
            assert!(fit_bytes(&sp, &shape(10_000, 10, 5)) >= base, "{family}");
        }
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(3_328_599_654), "3.1 GiB");
        assert_eq!(human_bytes(900 << 10), "900 KiB");
    }
}
