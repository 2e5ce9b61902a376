//! Linear models from linfa (logistic for classes, elastic net for values) behind our own
//! design-matrix preparation, stored as plain coefficients so a bundle needs no linfa types.

use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use quarry_featurize::{FeatureKind, FeatureMatrix, Predictions, Target, Task};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::params::ParamReader;

/// Categoricals with at most this many levels are one-hot encoded; larger ones are
/// frequency-encoded, since one-hot of 254 levels on 300k rows would not fit a dense matrix.
const MAX_ONE_HOT: u32 = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearParams {
    /// Regularisation strength (L2 for logistic, total penalty for elastic net).
    pub alpha: f64,
    /// Elastic-net mixing: 0 = ridge, 1 = lasso (regression only).
    pub l1_ratio: f64,
    pub max_iter: u64,
}

impl Default for LinearParams {
    fn default() -> Self {
        LinearParams { alpha: 1e-3, l1_ratio: 0.0, max_iter: 200 }
    }
}

impl LinearParams {
    pub fn from_map(p: &mut ParamReader<'_>) -> Result<LinearParams> {
        let d = LinearParams::default();
        let out = LinearParams {
            alpha: p.f64("alpha", d.alpha)?,
            l1_ratio: p.f64("l1_ratio", d.l1_ratio)?,
            max_iter: p.usize("max_iter", d.max_iter as usize)? as u64,
        };
        out.check()?;
        Ok(out)
    }

    pub fn check(&self) -> Result<()> {
        let bad = |name: &str, message: &str| {
            Err(TrainError::InvalidParam { name: name.into(), message: message.into() })
        };
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return bad("alpha", "must be a finite number >= 0");
        }
        if !(0.0..=1.0).contains(&self.l1_ratio) {
            return bad("l1_ratio", "must be in [0, 1]");
        }
        if self.max_iter == 0 {
            return bad("max_iter", "must be >= 1");
        }
        Ok(())
    }
}

/// How one feature column becomes design-matrix columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
enum ColumnPrep {
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    prep: Vec<ColumnPrep>,
    /// `n_design × n_outputs`, row-major.
    coef: Vec<f64>,
    intercept: Vec<f64>,
    n_outputs: usize,
    task: Task,
}

fn fit_prep(x: &FeatureMatrix) -> Vec<ColumnPrep> {
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

fn design(prep: &[ColumnPrep], x: &FeatureMatrix) -> Array2<f64> {
    let width: usize = prep
        .iter()
        .map(|p| match p {
            ColumnPrep::OneHot { n_levels } => *n_levels as usize,
            _ => 1,
        })
        .sum();
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

pub fn fit(x: &FeatureMatrix, y: &Target, task: Task, params: &LinearParams) -> Result<LinearModel> {
    params.check()?;
    let prep = fit_prep(x);
    let records = design(&prep, x);
    let fit_err = |message: String| TrainError::Fit { family: "linear".into(), message };
    match y {
        Target::Classes { classes, codes } => {
            let targets: Array1<usize> = codes.iter().map(|&c| c as usize).collect();
            let dataset = Dataset::new(records, targets);
            let model = MultiLogisticRegression::default()
                .alpha(params.alpha)
                .max_iterations(params.max_iter)
                .fit(&dataset)
                .map_err(|e| fit_err(e.to_string()))?;
            // linfa maps only the classes it saw, in sorted order; spread them back over all classes
            // so a fold missing a rare class still yields n_classes outputs.
            let n_classes = classes.len();
            let width = dataset.records().ncols();
            let mut coef = vec![0.0; width * n_classes];
            let mut intercept = vec![-1e3; n_classes];
            for (k_fit, &class) in model.classes().iter().enumerate() {
                for f in 0..width {
                    coef[f * n_classes + class] = model.params()[[f, k_fit]];
                }
                intercept[class] = model.intercept()[k_fit];
            }
            Ok(LinearModel { prep, coef, intercept, n_outputs: n_classes, task })
        }
        Target::Values(v) => {
            let targets = Array1::from(v.clone());
            let dataset = Dataset::new(records, targets);
            let model = ElasticNet::params()
                .penalty(params.alpha)
                .l1_ratio(params.l1_ratio)
                .max_iterations(params.max_iter as u32 * 5)
                .fit(&dataset)
                .map_err(|e| fit_err(e.to_string()))?;
            Ok(LinearModel {
                prep,
                coef: model.hyperplane().to_vec(),
                intercept: vec![model.intercept()],
                n_outputs: 1,
                task,
            })
        }
    }
}

impl LinearModel {
    pub fn predict(&self, x: &FeatureMatrix) -> Predictions {
        let d = design(&self.prep, x);
        let k = self.n_outputs;
        let mut raw = vec![0.0; x.n_rows * k];
        for (i, row) in d.rows().into_iter().enumerate() {
            let out = &mut raw[i * k..(i + 1) * k];
            out.copy_from_slice(&self.intercept);
            for (f, v) in row.iter().enumerate() {
                if *v != 0.0 {
                    for (o, c) in out.iter_mut().zip(&self.coef[f * k..(f + 1) * k]) {
                        *o += v * c;
                    }
                }
            }
        }
        if self.task == Task::Regression {
            return Predictions::Values(raw);
        }
        for row in raw.chunks_mut(k) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            row.iter_mut().for_each(|v| *v /= sum);
        }
        Predictions::Probabilities { n_classes: k, values: raw }
    }
}
