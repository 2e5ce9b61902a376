//! k-nearest neighbours on the shared standardised design matrix: brute-force search,
//! parallel over query rows, against a seeded subsample of at most [`MAX_TRAIN_ROWS`] rows.

use quarry_featurize::{FeatureMatrix, Predictions, Target, Task};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::design::{ColumnPrep, design, design_width, fit_prep, predict_rows};
use crate::error::{Result, TrainError};
use crate::params::ParamReader;

/// Training rows kept for the neighbour search; larger sets are subsampled (seeded).
pub const MAX_TRAIN_ROWS: usize = 20_000;

/// Class probabilities are clipped to `[PROB_FLOOR, 1]` and renormalised, so none is exactly 0.
pub(crate) const PROB_FLOOR: f64 = 1e-6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnnWeights {
    /// Every neighbour counts the same.
    Uniform,
    /// Neighbours count by inverse distance; exact matches, if any, decide alone.
    Distance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnParams {
    pub n_neighbors: usize,
    pub weights: KnnWeights,
}

impl Default for KnnParams {
    fn default() -> Self {
        KnnParams { n_neighbors: 15, weights: KnnWeights::Uniform }
    }
}

impl KnnParams {
    pub fn from_map(p: &mut ParamReader<'_>) -> Result<KnnParams> {
        let d = KnnParams::default();
        let weights = match p.choice("weights", &["uniform", "distance"])? {
            "distance" => KnnWeights::Distance,
            _ => KnnWeights::Uniform,
        };
        let out = KnnParams { n_neighbors: p.usize("n_neighbors", d.n_neighbors)?, weights };
        out.check()?;
        Ok(out)
    }

    pub fn check(&self) -> Result<()> {
        if self.n_neighbors == 0 {
            return Err(TrainError::InvalidParam {
                name: "n_neighbors".into(),
                message: "must be >= 1".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnModel {
    pub(crate) prep: Vec<ColumnPrep>,
    pub(crate) width: usize,
    /// The kept training rows in design space, `n_train × width`, row-major.
    pub(crate) points: Vec<f32>,
    /// Class codes (as numbers) or regression values, one per kept row.
    pub(crate) targets: Vec<f64>,
    /// Number of classes; 0 for regression.
    pub(crate) n_classes: usize,
    pub(crate) params: KnnParams,
    pub(crate) task: Task,
}

pub fn fit(x: &FeatureMatrix, y: &Target, task: Task, params: &KnnParams, seed: u64) -> Result<KnnModel> {
    params.check()?;
    let subsample = (x.n_rows > MAX_TRAIN_ROWS).then(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut idx = rand::seq::index::sample(&mut rng, x.n_rows, MAX_TRAIN_ROWS).into_vec();
        idx.sort_unstable();
        idx
    });
    let kept = subsample.as_ref().map(|idx| x.select_rows(idx));
    let xs = kept.as_ref().unwrap_or(x);
    let pick = |i: usize| subsample.as_ref().map_or(i, |idx| idx[i]);
    let (targets, n_classes): (Vec<f64>, usize) = match y {
        Target::Classes { classes, codes } => {
            ((0..xs.n_rows).map(|i| f64::from(codes[pick(i)])).collect(), classes.len())
        }
        Target::Values(v) => {
            let t: Vec<f64> = (0..xs.n_rows).map(|i| v[pick(i)]).collect();
            if t.iter().any(|v| !v.is_finite()) {
                return Err(TrainError::Data("knn: non-finite target value".into()));
            }
            (t, 0)
        }
    };
    if task.is_classification() != (n_classes > 0) {
        return Err(TrainError::Data(format!("knn: a {task:?} task needs a matching target")));
    }
    let prep = fit_prep(xs);
    let d = design(&prep, xs);
    let width = d.ncols();
    let points = d.iter().map(|&v| v as f32).collect();
    Ok(KnnModel { prep, width, points, targets, n_classes, params: params.clone(), task })
}

impl KnnModel {
    /// What `predict` relies on, checked after a bundle is read (a damaged or hand-edited
    /// bundle must be an error, not an index out of bounds: found by fuzzing `bundle_load`).
    pub(crate) fn check_shape(&self) -> std::result::Result<(), String> {
        if self.width != design_width(&self.prep) {
            return Err(format!(
                "knn: width {} but the column preparation gives {}",
                self.width,
                design_width(&self.prep)
            ));
        }
        if self.targets.is_empty() || self.points.len() != self.targets.len().saturating_mul(self.width) {
            return Err(format!(
                "knn: {} stored values for {} rows of width {}",
                self.points.len(),
                self.targets.len(),
                self.width
            ));
        }
        if (self.n_classes > 0) != self.task.is_classification() {
            return Err("knn: class count does not match the task".into());
        }
        Ok(())
    }

    fn n_train(&self) -> usize {
        self.targets.len()
    }

    pub fn predict(&self, x: &FeatureMatrix) -> Predictions {
        let d = design(&self.prep, x);
        let queries: Vec<f32> = d.iter().map(|&v| v as f32).collect();
        let k = self.params.n_neighbors.min(self.n_train());
        predict_rows(
            x.n_rows,
            self.n_classes,
            || Vec::with_capacity(self.n_train()),
            |dists, i, row_out| {
                let q = &queries[i * self.width..(i + 1) * self.width];
                self.predict_row(q, k, dists, row_out);
            },
        )
    }

    /// Fills `out` (one value, or a probability per class) for the query `q`.
    fn predict_row(&self, q: &[f32], k: usize, dists: &mut Vec<(f32, u32)>, out: &mut [f64]) {
        dists.clear();
        if self.width == 0 {
            dists.extend((0..self.n_train() as u32).map(|j| (0.0, j)));
        } else {
            dists.extend(self.points.chunks_exact(self.width).enumerate().map(|(j, p)| {
                let d2: f32 = p.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
                (d2, j as u32)
            }));
        }
        // Ties break by training-row order, so results never depend on the thread count.
        let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if k == 0 {
            return;
        }
        if k < dists.len() {
            dists.select_nth_unstable_by(k - 1, cmp);
        }
        let near = &mut dists[..k];
        near.sort_unstable_by(cmp);
        let exact = near.iter().any(|(d2, _)| *d2 == 0.0);
        let weight = |d2: f32| match self.params.weights {
            KnnWeights::Uniform => 1.0,
            KnnWeights::Distance if exact => f64::from(u8::from(d2 == 0.0)),
            KnnWeights::Distance => 1.0 / f64::from(d2).sqrt(),
        };
        let mut total = 0.0;
        if self.n_classes == 0 {
            let mut sum = 0.0;
            for &(d2, j) in near.iter() {
                let w = weight(d2);
                sum += w * self.targets[j as usize];
                total += w;
            }
            out[0] = if total > 0.0 { sum / total } else { 0.0 };
            return;
        }
        for &(d2, j) in near.iter() {
            let w = weight(d2);
            if let Some(o) = out.get_mut(self.targets[j as usize] as usize) {
                *o += w;
                total += w;
            }
        }
        if total <= 0.0 || !total.is_finite() {
            out.iter_mut().for_each(|o| *o = 1.0);
            total = out.len() as f64;
        }
        out.iter_mut().for_each(|o| *o = (*o / total).clamp(PROB_FLOOR, 1.0));
        let sum: f64 = out.iter().sum();
        out.iter_mut().for_each(|o| *o /= sum);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quarry_featurize::{FeatureColumn, FeatureKind};

    fn numeric(name: &str, values: Vec<f32>) -> FeatureColumn {
        FeatureColumn { name: name.into(), source: name.into(), kind: FeatureKind::Numeric, values }
    }

    fn data() -> (FeatureMatrix, Vec<u32>) {
        let a: Vec<f32> = (0..60).map(|i| (i as f32 * 0.37).sin() * 10.0).collect();
        let b: Vec<f32> = (0..60).map(|i| (i as f32 * 1.13).cos() * 3.0 + i as f32 * 0.1).collect();
        let codes = (0..60).map(|i| (i * 7 % 3) as u32).collect();
        (FeatureMatrix { n_rows: 60, columns: vec![numeric("a", a), numeric("b", b)] }, codes)
    }

    #[test]
    fn one_neighbour_reproduces_training_labels() {
        let (x, codes) = data();
        let y = Target::Classes { classes: vec!["a".into(), "b".into(), "c".into()], codes: codes.clone() };
        for weights in [KnnWeights::Uniform, KnnWeights::Distance] {
            let m = fit(&x, &y, Task::Multiclass, &KnnParams { n_neighbors: 1, weights }, 0).unwrap();
            let Predictions::Probabilities { n_classes: 3, values } = m.predict(&x) else { panic!("kind") };
            for (row, &c) in values.chunks(3).zip(&codes) {
                let best = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
                assert_eq!(best as u32, c);
                assert!(row.iter().all(|p| *p >= 1e-7 && *p < 1.0), "{row:?}");
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        // Regression: k = 1 returns each training value.
        let vals: Vec<f64> = (0..60).map(|i| i as f64 * 0.5).collect();
        let m = fit(
            &x,
            &Target::Values(vals.clone()),
            Task::Regression,
            &KnnParams { n_neighbors: 1, weights: KnnWeights::Uniform },
            0,
        )
        .unwrap();
        assert_eq!(m.predict(&x), Predictions::Values(vals));
    }

    #[test]
    fn large_training_sets_are_subsampled_deterministically() {
        let n = MAX_TRAIN_ROWS + 500;
        let x = FeatureMatrix { n_rows: n, columns: vec![numeric("a", (0..n).map(|i| i as f32).collect())] };
        let y = Target::Values((0..n).map(|i| i as f64).collect());
        let p = KnnParams::default();
        let a = fit(&x, &y, Task::Regression, &p, 5).unwrap();
        assert_eq!(a.n_train(), MAX_TRAIN_ROWS);
        assert_eq!(a, fit(&x, &y, Task::Regression, &p, 5).unwrap());
    }
}
