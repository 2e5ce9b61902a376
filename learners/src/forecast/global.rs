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
/// The same for direct models, which have one row per origin and step.
const MAX_DIRECT_ROWS: usize = 60_000;

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

/// Which covariate columns (indices into [`SeriesView::covariates`]) a global model reads, and
/// how. A known covariate's value at the forecast point itself is a feature (its future values
/// are given at predict time); a past-only covariate is read `past_lag` points back (the
/// horizon), so every step of a forecast sees only values observed before its origin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Covariates {
    pub names: Vec<String>,
    pub known: Vec<usize>,
    pub past: Vec<usize>,
    pub past_lag: usize,
}

impl Covariates {
    pub fn is_empty(&self) -> bool {
        self.known.is_empty() && self.past.is_empty()
    }

    fn feature_names(&self) -> Vec<String> {
        let name = |i: &usize| self.names.get(*i).cloned().unwrap_or_else(|| format!("covariate_{i}"));
        let mut out: Vec<String> = self.known.iter().map(|i| format!("known_{}", name(i))).collect();
        out.extend(self.past.iter().map(|i| format!("past_{}_lag{}", name(i), self.past_lag)));
        out
    }

    /// Features of grid point `t` (from the series start) of a series whose observed history
    /// has `history_len` points: past-only values strictly before the history's end.
    fn row(&self, cov: &[Vec<f64>], t: usize, history_len: usize, out: &mut Vec<f32>) {
        let at = |c: usize, i: usize| cov.get(c).and_then(|v| v.get(i)).copied().unwrap_or(f64::NAN);
        for &c in &self.known {
            out.push(at(c, t) as f32);
        }
        for &c in &self.past {
            let v = match t.checked_sub(self.past_lag.max(1)) {
                Some(i) if i < history_len => at(c, i),
                _ => f64::NAN,
            };
            out.push(v as f32);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalModel {
    transform: Transform,
    spec: LagSpec,
    #[serde(default)]
    covariates: Covariates,
    /// 0: recursive (one step, predictions fed back as lags). `H > 0`: direct, one model for
    /// steps 1..=H from the forecast origin, the step being a feature.
    #[serde(default)]
    direct: usize,
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

/// Where a feature row's point sits: its series, grid offset and the observed history length.
struct Point<'a> {
    code: usize,
    time: i64,
    t: usize,
    history_len: usize,
    covariates: &'a [Vec<f64>],
    /// Steps from the forecast origin (direct models only).
    step: usize,
}

impl GlobalModel {
    /// Features of the point after `z` (its past, in model units). The series code is the
    /// last feature (the tree engine reads it as categorical).
    fn row(&self, z: &[f64], p: &Point, freq: &Frequency, out: &mut Vec<f32>) -> Option<f64> {
        let anchor = self.spec.row(z, out)?;
        self.covariates.row(p.covariates, p.t, p.history_len, out);
        if self.direct > 0 {
            out.push(p.step as f32);
            // The target point's own seasonal lag (the seasonal naive forecast of this step):
            // fixed lags from the origin sit at a different phase of the season for each step.
            let m = self.spec.anchor.max(1);
            let back = m * ((p.step.max(1) - 1) / m + 1);
            let v = p.t.checked_sub(back).and_then(|i| z.get(i)).map_or(f64::NAN, |v| v - anchor);
            out.push(v as f32);
        }
        if self.calendar {
            out.extend(calendar_parts(freq, p.time).into_iter().map(|p| p.1));
            out.push(p.code as f32);
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
    /// `direct`: 0 for a recursive model, else the horizon of a direct one.
    #[allow(clippy::too_many_arguments)]
    pub fn fit(
        series: &[SeriesView],
        freq: &Frequency,
        spec: LagSpec,
        covariates: Covariates,
        direct: usize,
        transform: Transform,
        learner: &GlobalLearner,
        seed: u64,
    ) -> Result<GlobalModel> {
        let calendar = matches!(learner, GlobalLearner::Trees { .. });
        let mut names = spec.names();
        names.extend(covariates.feature_names());
        if direct > 0 {
            names.push("step".to_string());
            names.push("seasonal_lag_of_step".to_string());
        }
        if calendar {
            names.extend(calendar_parts(freq, 0).into_iter().map(|p| p.0.to_string()));
            names.push("series".to_string());
        }
        let mut model = GlobalModel {
            transform,
            spec,
            covariates,
            direct,
            calendar,
            n_series: series.len(),
            feature_names: names,
            fitted: Fitted::Ridge { means: Vec::new(), stds: Vec::new(), coef: Vec::new(), intercept: 0.0 },
        };
        let width = model.feature_names.len();
        let steps = direct.max(1);
        let cap = if direct > 0 { MAX_DIRECT_ROWS } else { MAX_ROWS };
        let per_series = cap / (series.len() * steps).max(1);
        let mut rows = Rows { x: Vec::new(), y: Vec::new(), width };
        let mut buf = Vec::with_capacity(width);
        for (code, s) in series.iter().enumerate() {
            let z = transform.forward_all(s.values, s.scale);
            // Origins: the point a forecast starts from (its past is z[..origin]).
            let from = z.len().saturating_sub(per_series).max(1);
            for origin in from..z.len() {
                for step in 1..=steps {
                    let t = origin + step - 1;
                    if t >= z.len() || !z[t].is_finite() {
                        continue;
                    }
                    buf.clear();
                    let point = Point {
                        code,
                        time: freq.time_at(s.start + t as i64),
                        t,
                        history_len: z.len(),
                        covariates: s.covariates,
                        step,
                    };
                    if let Some(anchor) = model.row(&z[..origin], &point, freq, &mut buf) {
                        rows.x.extend_from_slice(&buf);
                        rows.y.push(z[t] - anchor);
                    }
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

    /// Forecasts `steps[i]` points after the end of series `i`, in original units.
    pub fn forecast(&self, series: &[SeriesView], freq: &Frequency, steps: &[usize]) -> Vec<Vec<f64>> {
        if self.direct > 0 {
            return self.forecast_direct(series, freq, steps);
        }
        self.forecast_recursive(series, freq, steps)
    }

    pub fn is_direct(&self) -> bool {
        self.direct > 0
    }

    /// Every step from the same origin; past the fitted horizon the last step's model answers.
    fn forecast_direct(&self, series: &[SeriesView], freq: &Frequency, steps: &[usize]) -> Vec<Vec<f64>> {
        let mut x = Vec::new();
        let mut who = Vec::new();
        let mut buf = Vec::with_capacity(self.feature_names.len());
        let mut out: Vec<Vec<f64>> = Vec::with_capacity(series.len());
        for (i, s) in series.iter().enumerate() {
            let z = self.transform.forward_all(s.values, s.scale);
            let last = s.values.iter().rev().find(|v| v.is_finite()).copied().unwrap_or(0.0);
            out.push(vec![last; steps[i]]);
            for k in 0..steps[i] {
                buf.clear();
                let t = z.len() + k;
                let point = Point {
                    code: i,
                    time: freq.time_at(s.start + t as i64),
                    t,
                    history_len: z.len(),
                    covariates: s.covariates,
                    step: (k + 1).min(self.direct),
                };
                if let Some(anchor) = self.row(&z, &point, freq, &mut buf) {
                    x.extend_from_slice(&buf);
                    who.push((i, k, anchor));
                }
            }
        }
        if who.is_empty() {
            return out;
        }
        let pred = self.predict_rows(&x, who.len());
        for ((i, k, anchor), p) in who.into_iter().zip(pred) {
            let v = anchor + p;
            if v.is_finite() {
                out[i][k] = self.transform.inverse(v, series[i].scale);
            }
        }
        out
    }

    /// Recursive forecasts: each prediction becomes the next step's lag.
    fn forecast_recursive(&self, series: &[SeriesView], freq: &Frequency, steps: &[usize]) -> Vec<Vec<f64>> {
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
                let point = Point {
                    code: i,
                    time: freq.time_at(s.start + z[i].len() as i64),
                    t: z[i].len(),
                    history_len: s.values.len(),
                    covariates: s.covariates,
                    step: 1,
                };
                match self.row(&z[i], &point, freq, &mut buf) {
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

/// The fitted one-step learner, for ONNX export.
pub(crate) enum OneStep<'a> {
    Ridge { means: &'a [f64], stds: &'a [f64], coef: &'a [f64], intercept: f64 },
    Trees(&'a TreeEnsemble),
}

impl GlobalModel {
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    pub fn transform(&self) -> Transform {
        self.transform
    }

    pub(crate) fn one_step(&self) -> OneStep<'_> {
        match &self.fitted {
            Fitted::Ridge { means, stds, coef, intercept } => {
                OneStep::Ridge { means, stds, coef, intercept: *intercept }
            }
            Fitted::Trees { model } => OneStep::Trees(model),
        }
    }

    /// The feature row of the point right after each series' history (`None` when the series
    /// has no recent observation), in [`GlobalModel::feature_names`] order and model units.
    pub fn next_features(&self, series: &[SeriesView], freq: &Frequency) -> Vec<Option<Vec<f32>>> {
        series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let z = self.transform.forward_all(s.values, s.scale);
                let point = Point {
                    code: i,
                    time: freq.time_at(s.start + z.len() as i64),
                    t: z.len(),
                    history_len: z.len(),
                    covariates: s.covariates,
                    step: 1,
                };
                let mut out = Vec::with_capacity(self.feature_names.len());
                self.row(&z, &point, freq, &mut out).map(|_| out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_featurize::forecast::FrequencyKind;

    fn daily() -> Frequency {
        Frequency::anchored(FrequencyKind::Fixed { seconds: 86_400 }, 0)
    }

    /// Two series whose target jumps by 30 whenever a random "promo" flag is on.
    fn promo_panel(n: usize) -> (Vec<Vec<f64>>, Vec<Vec<Vec<f64>>>) {
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        let (mut values, mut covs) = (Vec::new(), Vec::new());
        for level in [100.0, 200.0] {
            let promo: Vec<f64> = (0..n).map(|_| f64::from(next() < 0.3)).collect();
            let y: Vec<f64> =
                (0..n).map(|t| level + 10.0 * ((t % 7) as f64) + 30.0 * promo[t] + next()).collect();
            values.push(y);
            covs.push(vec![promo]);
        }
        (values, covs)
    }

    fn mae_last(
        values: &[Vec<f64>],
        covs: &[Vec<Vec<f64>>],
        cov: &Covariates,
        h: usize,
        learner: &GlobalLearner,
    ) -> f64 {
        let views: Vec<SeriesView> = values
            .iter()
            .zip(covs)
            .map(|(v, c)| SeriesView::new(0, &v[..v.len() - h]).with_covariates(c))
            .collect();
        let freq = daily();
        let model = GlobalModel::fit(
            &views,
            &freq,
            LagSpec::new(7, &[]),
            cov.clone(),
            0,
            Transform::Identity,
            learner,
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = model.forecast(&views, &freq, &vec![h; views.len()]);
        let mut err = 0.0;
        for (v, fi) in values.iter().zip(&f) {
            for (a, p) in v[v.len() - h..].iter().zip(fi) {
                err += (a - p).abs();
            }
        }
        err / (h * values.len()) as f64
    }

    #[test]
    fn a_known_covariate_that_drives_the_target_lowers_the_error() {
        let (values, covs) = promo_panel(300);
        let known = Covariates { names: vec!["promo".into()], known: vec![0], past: vec![], past_lag: 14 };
        for learner in [
            GlobalLearner::Ridge { lambda: 1e-3 },
            GlobalLearner::Trees {
                params: TreeParams { n_estimators: 100, num_leaves: 7, ..TreeParams::default() },
            },
        ] {
            let without = mae_last(&values, &covs, &Covariates::default(), 14, &learner);
            let with = mae_last(&values, &covs, &known, 14, &learner);
            assert!(with < 0.5 * without, "{learner:?}: with {with} vs without {without}");
            assert!(with < 10.0, "{learner:?}: {with}");
        }
    }

    /// No look-ahead through covariates: a past-only covariate's values after the history's
    /// end (and a known one's beyond the forecast points) never change a forecast.
    #[test]
    fn past_only_covariates_never_read_the_future() {
        let (values, covs) = promo_panel(120);
        let h = 10;
        let cov = Covariates { names: vec!["promo".into()], known: vec![], past: vec![0], past_lag: h };
        let learner = GlobalLearner::Ridge { lambda: 1e-3 };
        let freq = daily();
        let forecast = |covs: &[Vec<Vec<f64>>]| {
            let views: Vec<SeriesView> = values
                .iter()
                .zip(covs)
                .map(|(v, c)| SeriesView::new(0, &v[..v.len() - h]).with_covariates(c))
                .collect();
            let model = GlobalModel::fit(
                &views,
                &freq,
                LagSpec::new(7, &[]),
                cov.clone(),
                0,
                Transform::Identity,
                &learner,
                1,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            // Forecasting past the horizon would need values after the history: they read as missing.
            model.forecast(&views, &freq, &vec![2 * h; views.len()])
        };
        let base = forecast(&covs);
        let mut changed = covs.clone();
        for series in &mut changed {
            let n = series[0].len();
            for v in &mut series[0][n - h..] {
                *v = 1000.0;
            }
        }
        assert_eq!(base, forecast(&changed), "a past-only covariate leaked future values");

        let mut row = Vec::new();
        cov.row(&covs[0], 50, 45, &mut row);
        assert_eq!(row, vec![covs[0][0][40] as f32], "read {h} points back");
        row.clear();
        cov.row(&covs[0], 56, 45, &mut row);
        assert!(row[0].is_nan(), "index 46 is after the history: must be missing");
    }
}
