//! Linear models from linfa (logistic for classes, elastic net for values) behind our own
//! design-matrix preparation, stored as plain coefficients so a bundle needs no linfa types.

use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use linfa_logistic::MultiLogisticRegression;
use ndarray::Array1;
use quarry_featurize::{FeatureMatrix, Predictions, Target, Task};
use serde::{Deserialize, Serialize};

use crate::design::{ColumnPrep, design, design_width, fit_prep};
use crate::error::{Result, TrainError};
use crate::params::ParamReader;

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    pub(crate) prep: Vec<ColumnPrep>,
    /// `n_design × n_outputs`, row-major.
    pub(crate) coef: Vec<f64>,
    pub(crate) intercept: Vec<f64>,
    pub(crate) n_outputs: usize,
    pub(crate) task: Task,
}

/// Rows a linear fit sees at most. A linear model's coefficients settle long before 300k rows,
/// and linfa's solvers cannot be interrupted, so large data is thinned (every k-th row, no RNG).
pub(crate) const MAX_FIT_ROWS: usize = 50_000;

pub fn fit(x: &FeatureMatrix, y: &Target, task: Task, params: &LinearParams) -> Result<LinearModel> {
    params.check()?;
    if x.n_rows > MAX_FIT_ROWS {
        let step = x.n_rows.div_ceil(MAX_FIT_ROWS);
        let rows: Vec<usize> = (0..x.n_rows).step_by(step).collect();
        return fit(&x.select_rows(&rows), &y.select_rows(&rows), task, params);
    }
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
    /// What `predict` relies on, checked after a bundle is read.
    pub(crate) fn check_shape(&self) -> std::result::Result<(), String> {
        let width = design_width(&self.prep);
        if self.n_outputs == 0
            || self.intercept.len() != self.n_outputs
            || self.coef.len() != width.saturating_mul(self.n_outputs)
        {
            return Err(format!(
                "linear: {} coefficients and {} intercepts for {} design columns × {} outputs",
                self.coef.len(),
                self.intercept.len(),
                width,
                self.n_outputs
            ));
        }
        Ok(())
    }

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
