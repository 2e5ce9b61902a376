//! A multilayer perceptron (ReLU hidden layers, dropout, AdamW) trained with burn on the shared
//! standardised design matrix. The fitted weights are stored as plain numbers and predicted in
//! double precision without burn, so a bundle needs no burn types, prediction needs no device,
//! and a loaded model predicts exactly what the trained one did.

mod train;

use ndarray::{Array1, Array2};
use quarry_featurize::{FeatureMatrix, Predictions, Target, Task};
use serde::{Deserialize, Serialize};

use crate::design::{ColumnPrep, design, design_width};
use crate::error::{Result, TrainError};
use crate::params::ParamReader;

pub use train::{device_name, fit};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpParams {
    /// Hidden layers (0 gives a linear/logistic model trained the same way).
    pub hidden_layers: usize,
    /// Units per hidden layer.
    pub hidden: usize,
    /// Share of hidden units dropped in each training batch.
    pub dropout: f64,
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Passes over the training rows at most.
    pub epochs: usize,
    /// Epochs without a better validation loss before training stops (0: never stop early).
    pub patience: usize,
}

impl Default for MlpParams {
    fn default() -> Self {
        MlpParams {
            hidden_layers: 2,
            hidden: 64,
            dropout: 0.1,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            batch_size: 128,
            epochs: 200,
            patience: 10,
        }
    }
}

impl MlpParams {
    pub fn from_map(p: &mut ParamReader<'_>) -> Result<MlpParams> {
        let d = MlpParams::default();
        let out = MlpParams {
            hidden_layers: p.usize("hidden_layers", d.hidden_layers)?,
            hidden: p.usize("hidden", d.hidden)?,
            dropout: p.f64("dropout", d.dropout)?,
            learning_rate: p.f64("learning_rate", d.learning_rate)?,
            weight_decay: p.f64("weight_decay", d.weight_decay)?,
            batch_size: p.usize("batch_size", d.batch_size)?,
            epochs: p.usize("epochs", d.epochs)?,
            patience: p.usize("patience", d.patience)?,
        };
        out.check()?;
        Ok(out)
    }

    pub fn check(&self) -> Result<()> {
        let bad = |name: &str, message: &str| {
            Err(TrainError::InvalidParam { name: name.into(), message: message.into() })
        };
        if self.hidden_layers > 8 {
            return bad("hidden_layers", "must be in 0..=8");
        }
        if self.hidden == 0 || self.hidden > 4096 {
            return bad("hidden", "must be in 1..=4096");
        }
        if !(0.0..0.95).contains(&self.dropout) {
            return bad("dropout", "must be in [0, 0.95)");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate", "must be in (0, 1]");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight_decay", "must be a finite number >= 0");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be >= 1");
        }
        if self.epochs == 0 || self.epochs > 100_000 {
            return bad("epochs", "must be in 1..=100000");
        }
        Ok(())
    }
}

/// One fully connected layer: `out = in · weight + bias`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    pub n_in: usize,
    pub n_out: usize,
    /// `n_in × n_out`, row-major (burn's `Linear` layout), as trained in `f32`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpModel {
    pub(crate) prep: Vec<ColumnPrep>,
    /// Hidden layers (each followed by ReLU) then the output layer.
    pub(crate) layers: Vec<Dense>,
    pub(crate) task: Task,
    /// Classes predicted (0 for regression). Binary tasks have one sigmoid output.
    pub(crate) n_classes: usize,
    /// Regression outputs are `raw * target_std + target_mean`.
    pub(crate) target_mean: f64,
    pub(crate) target_std: f64,
    /// Epochs trained when the kept weights were taken.
    pub(crate) best_epoch: usize,
}

impl MlpModel {
    /// What `predict` relies on, checked after a bundle is read.
    pub(crate) fn check_shape(&self) -> std::result::Result<(), String> {
        let mut width = design_width(&self.prep);
        for (i, l) in self.layers.iter().enumerate() {
            if l.n_in != width || l.weight.len() != l.n_in.saturating_mul(l.n_out) || l.bias.len() != l.n_out
            {
                return Err(format!("mlp: layer {i} does not fit its input width {width}"));
            }
            width = l.n_out;
        }
        let want = match self.task {
            Task::Regression => (self.n_classes == 0).then_some(1),
            Task::Binary => (self.n_classes == 2).then_some(1),
            Task::Multiclass => (self.n_classes >= 2).then_some(self.n_classes),
        };
        if self.layers.is_empty() || want != Some(width) {
            return Err(format!(
                "mlp: {width} outputs for a {:?} task with {} classes",
                self.task, self.n_classes
            ));
        }
        Ok(())
    }

    pub fn best_epoch(&self) -> usize {
        self.best_epoch
    }

    pub fn predict(&self, x: &FeatureMatrix) -> Predictions {
        let d = design(&self.prep, x);
        self.predict_design(d)
    }

    /// The output layer's raw values (logits, or the standardised regression value).
    pub(crate) fn raw(&self, mut h: Array2<f64>) -> Array2<f64> {
        let last = self.layers.len().saturating_sub(1);
        for (i, l) in self.layers.iter().enumerate() {
            let w = Array2::from_shape_fn((l.n_in, l.n_out), |(r, c)| f64::from(l.weight[r * l.n_out + c]));
            let b: Array1<f64> = l.bias.iter().map(|&v| f64::from(v)).collect();
            h = h.dot(&w) + &b;
            if i < last {
                h.mapv_inplace(|v| v.max(0.0));
            }
        }
        h
    }

    pub(crate) fn predict_design(&self, d: Array2<f64>) -> Predictions {
        let raw = self.raw(d);
        match self.task {
            Task::Regression => {
                Predictions::Values(raw.iter().map(|v| v * self.target_std + self.target_mean).collect())
            }
            Task::Binary => {
                let mut values = Vec::with_capacity(raw.len() * 2);
                for &z in raw.iter() {
                    let p = sigmoid(z);
                    values.extend([1.0 - p, p]);
                }
                Predictions::Probabilities { n_classes: 2, values }
            }
            Task::Multiclass => {
                let k = self.n_classes;
                let mut values: Vec<f64> = raw.iter().copied().collect();
                for row in values.chunks_mut(k) {
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let mut sum = 0.0;
                    for v in row.iter_mut() {
                        *v = (*v - max).exp();
                        sum += *v;
                    }
                    row.iter_mut().for_each(|v| *v /= sum);
                }
                Predictions::Probabilities { n_classes: k, values }
            }
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The mean loss the fit minimises, on the original target scale: log loss for classes,
/// squared error for values. Reported per epoch and used for early stopping.
pub(crate) fn loss(pred: &Predictions, y: &Target) -> f64 {
    match (pred, y) {
        (Predictions::Probabilities { n_classes, values }, Target::Classes { codes, .. }) => {
            let total: f64 = codes
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    -values.get(i * n_classes + c as usize).copied().unwrap_or(0.0).max(1e-15).ln()
                })
                .sum();
            total / codes.len().max(1) as f64
        }
        (Predictions::Values(p), Target::Values(v)) => {
            p.iter().zip(v).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / v.len().max(1) as f64
        }
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests;
