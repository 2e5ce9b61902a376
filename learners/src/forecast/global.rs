//! Global models: one learner over every series' lag features (ridge regression or the tree
//! engine), forecasting recursively: each step's prediction becomes the next step's lag.

use quarry_featurize::forecast::frequency::calendar_parts;
use quarry_featurize::forecast::{Frequency, LagSpec};
use quarry_featurize::matrix::{FeatureColumn, FeatureKind, FeatureMatrix, Target};
use quarry_featurize::metric::Task;
use serde::{Deserialize, Serialize};

use super::{SeriesView, Transform};
use crate::error::{Result, TrainError};
use crate::gbdt::{self, TreeEnsemble, TreeParams};

/// Training rows kept at most (the most recent points of each series).
const MAX_ROWS: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "learner")]
pub enum GlobalLearner {
    Ridge { lambda: f64 },
    Trees { params: TreeParams },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
enum Fitted {
    Ridge { means: Vec<f64>, stds: Vec<f64>, coef: Vec<f64>, intercept: f64 },
    Trees { model: Box<TreeEnsemble> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalModel {
    transform: Transform,
    spec: LagSpec,
    /// Calendar parts and the series code are inputs (trees only).
    calendar: bool,
    n_series: usize,
    feature_names: Vec<String>,
    fitted: Fitted,
}

struct Rows {
    /// Row-major.
    x: Vec<f32>,
    y: Vec<f64>,
    width: usize,
}

impl GlobalModel {
    fn row(
        &self,
        z: &[f64],
        next_time: i64,
        freq: &Frequency,
        code: usize,
        out: &mut Vec<f32>,
    ) -> Option<f64> {
        let anchor = self.spec.row(z, out)?;
        if self.calendar {
            out.extend(calendar_parts(freq, next_time).into_iter().map(|p| p.1));
            out.push(code as f32);
        }
        Some(anchor)
    }

    fn predict_rows(&self, x: &[f32], n: usize) -> Vec<f64> {
        let width = self.feature_names.len();
        match &self.fitted {
            Fitted::Ridge { means, stds, coef, intercept } => x
                .chunks(width)
                .map(|r| {
                    intercept
                        + r.iter()
                            .zip(means.iter().zip(stds))
                            .zip(coef)
                            .map(|((v, (m, s)), c)| if v.is_finite() { (*v as f64 - m) / s * c } else { 0.0 })
                            .sum::<f64>()
                })
                .collect(),
            Fitted::Trees { model } => {
                let matrix = to_matrix(x, n, &self.feature_names, self.calendar, self.n_series);
                match model.predict(&matrix) {
                    quarry_featurize::Predictions::Values(v) => v,
                    quarry_featurize::Predictions::Probabilities { .. } => vec![f64::NAN; n],
                }
            }
        }
    }

    /// Fits on every observed point of every series (features from its past only).
    pub fn fit(
        series: &[SeriesView],
        freq: &Frequency,
        spec: LagSpec,
        transform: Transform,
        learner: &GlobalLearner,
        seed: u64,
    ) -> Result<GlobalModel> {
        let calendar = matches!(learner, GlobalLearner::Trees { .. });
        let mut names = spec.names();
        if calendar {
            names.extend(calendar_parts(freq, 0).into_iter().map(|p| p.0.to_string()));
            names.push("series".to_string());
        }
        let mut model = GlobalModel {
            transform,
            spec,
            calendar,
            n_series: series.len(),
            feature_names: names,
            fitted: Fitted::Ridge { means: Vec::new(), stds: Vec::new(), coef: Vec::new(), intercept: 0.0 },
        };
        let width = model.feature_names.len();
        let per_series = MAX_ROWS / series.len().max(1);
        let mut rows = Rows { x: Vec::new(), y: Vec::new(), width };
        let mut buf = Vec::with_capacity(width);
        for (code, s) in series.iter().enumerate() {
            let z = transform.forward_all(s.values, s.scale);
            let from = z.len().saturating_sub(per_series).max(1);
            for t in from..z.len() {
                if !z[t].is_finite() {
                    continue;
                }
                buf.clear();
                let time = freq.time_at(s.start + t as i64);
                if let Some(anchor) = model.row(&z[..t], time, freq, code, &mut buf) {
                    rows.x.extend_from_slice(&buf);
                    rows.y.push(z[t] - anchor);
                }
            }
        }
        if rows.y.len() < 10 {
            return Err(TrainError::Data(format!(
                "only {} usable training points for the global model (need 10)",
                rows.y.len()
            )));
        }
        model.fitted = match learner {
            GlobalLearner::Ridge { lambda } => fit_ridge(&rows, *lambda)?,
            GlobalLearner::Trees { params } => {
                let n = rows.y.len();
                let matrix = to_matrix(&rows.x, n, &model.feature_names, calendar, series.len());
                let mut params = params.clone();
                params.min_child_samples = params.min_child_samples.min((n / 20).max(3));
                let target = Target::Values(rows.y);
                let fitted =
                    gbdt::fit(&matrix, &target, Task::Regression, None, &params, seed, &mut |_, _| true)?;
                Fitted::Trees { model: Box::new(fitted) }
            }
        };
        Ok(model)
    }

    /// Recursive forecasts: `steps[i]` points after the end of series `i`, in original units.
    pub fn forecast(&self, series: &[SeriesView], freq: &Frequency, steps: &[usize]) -> Vec<Vec<f64>> {
        let mut z: Vec<Vec<f64>> =
            series.iter().map(|s| self.transform.forward_all(s.values, s.scale)).collect();
        let max_steps = steps.iter().copied().max().unwrap_or(0);
        let width = self.feature_names.len();
        let mut buf = Vec::with_capacity(width);
        for k in 0..max_steps {
            let mut x = Vec::new();
            let mut who = Vec::new();
            for (i, s) in series.iter().enumerate() {
                if k >= steps[i] {
                    continue;
                }
                buf.clear();
                let time = freq.time_at(s.start + z[i].len() as i64);
                match self.row(&z[i], time, freq, i, &mut buf) {
                    Some(anchor) => {
                        x.extend_from_slice(&buf);
                        who.push((i, anchor));
                    }
                    None => z[i].push(f64::NAN),
                }
            }
            if who.is_empty() {
                continue;
            }
            let pred = self.predict_rows(&x, who.len());
            for ((i, anchor), p) in who.into_iter().zip(pred) {
                let v = anchor + p;
                z[i].push(if v.is_finite() { v } else { anchor });
            }
        }
        series
            .iter()
            .zip(z)
            .zip(steps)
            .map(|((s, zi), &n)| {
                let tail = &zi[zi.len() - n..];
                let last = s.values.iter().rev().find(|v| v.is_finite()).copied().unwrap_or(0.0);
                tail.iter()
                    .map(|v| if v.is_finite() { self.transform.inverse(*v, s.scale) } else { last })
                    .collect()
            })
            .collect()
    }
}

fn to_matrix(x: &[f32], n: usize, names: &[String], calendar: bool, n_series: usize) -> FeatureMatrix {
    let width = names.len();
    let columns = names
        .iter()
        .enumerate()
        .map(|(j, name)| FeatureColumn {
            name: name.clone(),
            source: name.clone(),
            kind: if calendar && j + 1 == width {
                FeatureKind::Categorical { n_levels: n_series.max(1) as u32 }
            } else {
                FeatureKind::Numeric
            },
            values: (0..n).map(|i| x[i * width + j]).collect(),
        })
        .collect();
    FeatureMatrix { n_rows: n, columns }
}

/// Ridge on standardised features (missing = the mean), solved by Cholesky.
fn fit_ridge(rows: &Rows, lambda: f64) -> Result<Fitted> {
    let (w, n) = (rows.width, rows.y.len());
    let mut means = vec![0.0; w];
    let mut stds = vec![0.0; w];
    let mut counts = vec![0usize; w];
    for r in rows.x.chunks(w) {
        for (j, v) in r.iter().enumerate() {
            if v.is_finite() {
                means[j] += *v as f64;
                counts[j] += 1;
            }
        }
    }
    for j in 0..w {
        means[j] /= counts[j].max(1) as f64;
    }
    for r in rows.x.chunks(w) {
        for (j, v) in r.iter().enumerate() {
            if v.is_finite() {
                stds[j] += (*v as f64 - means[j]).powi(2);
            }
        }
    }
    for j in 0..w {
        stds[j] = (stds[j] / counts[j].max(1) as f64).sqrt();
        if stds[j].is_nan() || stds[j] <= 1e-12 {
            stds[j] = 1.0;
        }
    }
    let y_mean = rows.y.iter().sum::<f64>() / n as f64;
    let mut xtx = vec![0.0; w * w];
    let mut xty = vec![0.0; w];
    let mut z = vec![0.0; w];
    for (r, y) in rows.x.chunks(w).zip(&rows.y) {
        for j in 0..w {
            z[j] = if r[j].is_finite() { (r[j] as f64 - means[j]) / stds[j] } else { 0.0 };
        }
        for a in 0..w {
            xty[a] += z[a] * (y - y_mean);
            for b in 0..=a {
                xtx[a * w + b] += z[a] * z[b];
            }
        }
    }
    for a in 0..w {
        xtx[a * w + a] += lambda * n as f64;
        for b in 0..a {
            xtx[b * w + a] = xtx[a * w + b];
        }
    }
    let coef = cholesky_solve(&mut xtx, &xty, w)
        .ok_or_else(|| TrainError::Fit { family: "ridge".into(), message: "singular system".into() })?;
    Ok(Fitted::Ridge { means, stds, coef, intercept: y_mean })
}

fn cholesky_solve(a: &mut [f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * y[k];
        }
        y[i] = s / a[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= a[k * n + i] * x[k];
        }
        x[i] = s / a[i * n + i];
    }
    Some(x)
}
