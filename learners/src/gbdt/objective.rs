//! Objectives: target checks, initial scores, gradients, output transforms and validation loss.

use quarry_featurize::matrix::{Predictions, Target};
use quarry_featurize::metric::Task;
use rayon::prelude::*;

use crate::error::TrainError;

/// Probabilities of averaged (random forest / extra trees) classifiers are clipped to this.
pub(crate) const PROB_FLOOR: f64 = 1e-7;
const LOG_LOSS_EPS: f64 = 1e-15;
/// Rows per parallel task when computing gradients.
const GRADIENT_CHUNK: usize = 8192;

/// How raw scores (row-major, `k` per row) turn into predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Problem {
    pub task: Task,
    /// Random forest / extra trees: the output is the average of the trees.
    pub averaged: bool,
    /// Classes (0 for regression).
    pub n_classes: usize,
    /// Trees per round: `n_classes` for multiclass, else 1.
    pub k: usize,
}

/// Class codes or values, checked against the task.
pub(crate) enum Labels<'a> {
    Codes(&'a [u32]),
    Values(&'a [f64]),
}

impl Problem {
    pub(crate) fn new(task: Task, averaged: bool, y: &Target) -> Result<Problem, TrainError> {
        let (n_classes, k) = match (task, y) {
            (Task::Binary, Target::Classes { .. }) => (2, 1),
            (Task::Multiclass, Target::Classes { classes, codes }) => {
                let n = classes.len().max(codes.iter().map(|&c| c as usize + 1).max().unwrap_or(0));
                if n < 2 {
                    return Err(TrainError::Data("multiclass target needs at least 2 classes".into()));
                }
                (n, n)
            }
            (Task::Regression, Target::Values(_)) => (0, 1),
            (task, _) => {
                return Err(TrainError::Data(format!("target kind does not match task {task}")));
            }
        };
        Ok(Problem { task, averaged, n_classes, k })
    }

    pub(crate) fn labels<'a>(&self, y: &'a Target) -> Result<Labels<'a>, TrainError> {
        match y {
            Target::Classes { codes, .. } => {
                if let Some(&c) = codes.iter().find(|&&c| c as usize >= self.n_classes) {
                    return Err(TrainError::Data(format!(
                        "class code {c} out of range for {} classes",
                        self.n_classes
                    )));
                }
                Ok(Labels::Codes(codes))
            }
            Target::Values(v) => {
                if v.iter().any(|t| !t.is_finite()) {
                    return Err(TrainError::Data("regression target has non-finite values".into()));
                }
                Ok(Labels::Values(v))
            }
        }
    }

    /// Initial raw score per output.
    pub(crate) fn init_score(&self, labels: &Labels) -> Vec<f64> {
        if self.averaged {
            return vec![0.0; self.k];
        }
        match labels {
            Labels::Values(v) => vec![v.iter().sum::<f64>() / v.len().max(1) as f64],
            Labels::Codes(codes) => {
                let n = codes.len().max(1) as f64;
                let mut counts = vec![0usize; self.n_classes];
                for &c in codes.iter() {
                    counts[c as usize] += 1;
                }
                if self.task == Task::Binary {
                    let p = (counts[1] as f64 / n).clamp(PROB_FLOOR, 1.0 - PROB_FLOOR);
                    vec![(p / (1.0 - p)).ln()]
                } else {
                    counts.iter().map(|&c| (c as f64 / n).max(PROB_FLOOR).ln()).collect()
                }
            }
        }
    }

    /// Gradients and hessians, class-major (`grad[k * n + row]`).
    pub(crate) fn gradients(&self, labels: &Labels, raw: &[f64], grad: &mut [f64], hess: &mut [f64]) {
        let k = self.k;
        match labels {
            Labels::Values(y) => {
                if self.averaged {
                    for (i, &t) in y.iter().enumerate() {
                        grad[i] = -t;
                        hess[i] = 1.0;
                    }
                } else {
                    for (i, &t) in y.iter().enumerate() {
                        grad[i] = raw[i] - t;
                        hess[i] = 1.0;
                    }
                }
            }
            Labels::Codes(codes) => {
                let n = codes.len();
                if self.averaged {
                    // L2 on one-hot indicators: the leaf value is the class frequency.
                    for (i, &c) in codes.iter().enumerate() {
                        for j in 0..k {
                            let target = if k == 1 { c == 1 } else { c as usize == j };
                            grad[j * n + i] = if target { -1.0 } else { 0.0 };
                            hess[j * n + i] = 1.0;
                        }
                    }
                } else if k == 1 {
                    // Row by row (no reduction), so the thread count cannot change the result.
                    grad[..n]
                        .par_iter_mut()
                        .zip(&mut hess[..n])
                        .zip(codes.par_iter().zip(&raw[..n]))
                        .with_min_len(GRADIENT_CHUNK)
                        .for_each(|((g, h), (&c, &r))| {
                            let p = sigmoid(r);
                            *g = p - f64::from(c);
                            *h = (p * (1.0 - p)).max(1e-16);
                        });
                } else {
                    // LightGBM's softmax hessian scale k / (k - 1) (Friedman's multiclass
                    // boosting): smaller leaf steps, less over-confident probabilities.
                    let factor = k as f64 / (k as f64 - 1.0);
                    let mut p = vec![0.0; k];
                    for (i, &c) in codes.iter().enumerate() {
                        softmax(&raw[i * k..(i + 1) * k], &mut p);
                        for (j, &pj) in p.iter().enumerate() {
                            let t = if c as usize == j { 1.0 } else { 0.0 };
                            grad[j * n + i] = pj - t;
                            hess[j * n + i] = (factor * pj * (1.0 - pj)).max(1e-16);
                        }
                    }
                }
            }
        }
    }

    /// Writes one row's prediction (probabilities, or one value) into `out`.
    fn row_output(&self, raw: &[f64], rounds: usize, out: &mut [f64]) {
        let scale = if self.averaged { 1.0 / rounds.max(1) as f64 } else { 1.0 };
        match (self.task, self.averaged) {
            (Task::Regression, _) => out[0] = raw[0] * scale,
            (Task::Binary, false) => {
                let p = sigmoid(raw[0]);
                out[0] = 1.0 - p;
                out[1] = p;
            }
            (Task::Multiclass, false) => softmax(raw, out),
            (Task::Binary, true) => {
                let p = raw[0] * scale;
                out[0] = (1.0 - p).clamp(PROB_FLOOR, 1.0);
                out[1] = p.clamp(PROB_FLOOR, 1.0);
                normalize(out);
            }
            (Task::Multiclass, true) => {
                for (o, &r) in out.iter_mut().zip(raw) {
                    *o = (r * scale).clamp(PROB_FLOOR, 1.0);
                }
                normalize(out);
            }
        }
    }

    fn width(&self) -> usize {
        if self.task == Task::Regression { 1 } else { self.n_classes }
    }

    pub(crate) fn transform(&self, raw: &[f64], rounds: usize) -> Predictions {
        let w = self.width();
        let n = raw.len() / self.k;
        let mut values = vec![0.0; n * w];
        for (out, r) in values.chunks_mut(w).zip(raw.chunks(self.k)) {
            self.row_output(r, rounds, out);
        }
        if self.task == Task::Regression {
            Predictions::Values(values)
        } else {
            Predictions::Probabilities { n_classes: w, values }
        }
    }

    /// Log loss (classification) or mean squared error (regression) of raw scores.
    pub(crate) fn loss(&self, raw: &[f64], rounds: usize, labels: &Labels) -> f64 {
        let w = self.width();
        let mut out = vec![0.0; w];
        let mut total = 0.0;
        let mut n = 0usize;
        for (i, r) in raw.chunks(self.k).enumerate() {
            self.row_output(r, rounds, &mut out);
            total += match labels {
                Labels::Codes(c) => -out[c[i] as usize].clamp(LOG_LOSS_EPS, 1.0).ln(),
                Labels::Values(v) => (out[0] - v[i]).powi(2),
            };
            n += 1;
        }
        total / n.max(1) as f64
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax(raw: &[f64], out: &mut [f64]) {
    let m = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, &r) in out.iter_mut().zip(raw) {
        *o = (r - m).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

fn normalize(out: &mut [f64]) {
    let sum: f64 = out.iter().sum();
    for o in out.iter_mut() {
        *o /= sum;
    }
}
