//! The dense design matrix shared by the models that need real-valued inputs (linear, kNN,
//! naive Bayes): numerics median-imputed and standardised, small categoricals one-hot encoded,
//! large ones frequency-encoded. Fitted on training rows, stored in the model, applied unchanged.

use ndarray::Array2;
use quarry_featurize::{FeatureKind, FeatureMatrix, Predictions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Categoricals with at most this many levels are one-hot encoded; larger ones are
/// frequency-encoded, since one-hot of 254 levels on 300k rows would not fit a dense matrix.
pub(crate) const MAX_ONE_HOT: u32 = 32;

/// How one feature column becomes design-matrix columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub(crate) enum ColumnPrep {
    /// Median-imputed, then standardised.
    Scaled {
        median: f64,
        mean: f64,
        std: f64,
    },
    OneHot {
        n_levels: u32,
    },
    /// The level's share of training rows, standardised.
    Frequency {
        freq: Vec<f64>,
        mean: f64,
        std: f64,
    },
}

pub(crate) fn fit_prep(x: &FeatureMatrix) -> Vec<ColumnPrep> {
    x.columns
        .iter()
        .map(|c| match c.kind {
            FeatureKind::Categorical { n_levels } if n_levels <= MAX_ONE_HOT => {
                ColumnPrep::OneHot { n_levels }
            }
            FeatureKind::Categorical { n_levels } => {
                let mut freq = vec![0.0; n_levels as usize];
                for v in c.values.iter().filter(|v| !v.is_nan()) {
                    if let Some(f) = freq.get_mut(*v as usize) {
                        *f += 1.0;
                    }
                }
                freq.iter_mut().for_each(|f| *f /= x.n_rows.max(1) as f64);
                let encoded: Vec<f64> = c.values.iter().map(|v| lookup(&freq, *v)).collect();
                let (mean, std) = mean_std(&encoded);
                ColumnPrep::Frequency { freq, mean, std }
            }
            FeatureKind::Numeric => {
                let mut present: Vec<f64> =
                    c.values.iter().filter(|v| v.is_finite()).map(|&v| f64::from(v)).collect();
                present.sort_by(f64::total_cmp);
                let median = if present.is_empty() { 0.0 } else { present[present.len() / 2] };
                let imputed: Vec<f64> =
                    c.values.iter().map(|&v| if v.is_finite() { f64::from(v) } else { median }).collect();
                let (mean, std) = mean_std(&imputed);
                ColumnPrep::Scaled { median, mean, std }
            }
        })
        .collect()
}

fn lookup(freq: &[f64], v: f32) -> f64 {
    if v.is_nan() { 0.0 } else { freq.get(v as usize).copied().unwrap_or(0.0) }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    // A constant column scales by 1 so it stays finite (and is then just a zero column).
    (mean, if var > 1e-24 { var.sqrt() } else { 1.0 })
}

/// Columns of the design matrix `prep` builds.
pub(crate) fn design_width(prep: &[ColumnPrep]) -> usize {
    prep.iter()
        .map(|p| match p {
            ColumnPrep::OneHot { n_levels } => *n_levels as usize,
            _ => 1,
        })
        .sum()
}

pub(crate) fn design(prep: &[ColumnPrep], x: &FeatureMatrix) -> Array2<f64> {
    let width = design_width(prep);
    let mut out = Array2::<f64>::zeros((x.n_rows, width));
    let mut j = 0;
    for (p, c) in prep.iter().zip(&x.columns) {
        match p {
            ColumnPrep::Scaled { median, mean, std } => {
                for (i, &v) in c.values.iter().enumerate() {
                    let v = if v.is_finite() { f64::from(v) } else { *median };
                    out[[i, j]] = (v - mean) / std;
                }
                j += 1;
            }
            ColumnPrep::Frequency { freq, mean, std } => {
                for (i, &v) in c.values.iter().enumerate() {
                    out[[i, j]] = (lookup(freq, v) - mean) / std;
                }
                j += 1;
            }
            ColumnPrep::OneHot { n_levels } => {
                for (i, &v) in c.values.iter().enumerate() {
                    if !v.is_nan() && (v as u32) < *n_levels {
                        out[[i, j + v as usize]] = 1.0;
                    }
                }
                j += *n_levels as usize;
            }
        }
    }
    out
}

/// Predictions for `n_rows` rows, filled in parallel: `fill(state, row, out)` writes the row's
/// one value (`n_classes == 0`, regression) or its probability per class into `out`. `init`
/// makes per-thread scratch state.
pub(crate) fn predict_rows<S>(
    n_rows: usize,
    n_classes: usize,
    init: impl Fn() -> S + Sync + Send,
    fill: impl Fn(&mut S, usize, &mut [f64]) + Sync + Send,
) -> Predictions {
    let n_out = n_classes.max(1);
    let mut out = vec![0.0; n_rows * n_out];
    out.par_chunks_mut(n_out).enumerate().for_each_init(init, |state, (i, row_out)| fill(state, i, row_out));
    if n_classes == 0 {
        Predictions::Values(out)
    } else {
        Predictions::Probabilities { n_classes, values: out }
    }
}
