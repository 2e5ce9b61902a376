//! Forecasters: naive, seasonal naive, per-series ETS (variant by AICc) and global models on
//! lag features. A fitted forecaster keeps only parameters; it forecasts from whatever history
//! it is given (the same history it was fitted on), so a saved bundle stores the history too.

pub mod arima;
pub mod ets;
pub mod global;
pub mod theta;

use quarry_featurize::forecast::{Frequency, LagSpec};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use global::{Covariates, GlobalLearner, GlobalModel};

/// Target transform applied (after dividing by the series scale) before modelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    Identity,
    /// Natural log: multiplicative seasonality and trend become additive. Needs `y > 0`.
    Log,
}

impl Transform {
    pub fn forward(self, y: f64, scale: f64) -> f64 {
        match self {
            Transform::Identity => y / scale,
            Transform::Log if y > 0.0 => (y / scale).ln(),
            Transform::Log => f64::NAN,
        }
    }

    pub fn forward_all(self, values: &[f64], scale: f64) -> Vec<f64> {
        values.iter().map(|v| self.forward(*v, scale)).collect()
    }

    pub fn inverse(self, z: f64, scale: f64) -> f64 {
        match self {
            Transform::Identity => z * scale,
            // Clamped so a runaway recursive forecast cannot overflow to infinity.
            Transform::Log => z.clamp(-50.0, 50.0).exp() * scale,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transform::Identity => "",
            Transform::Log => "_log",
        }
    }
}

/// One series' history as a forecaster sees it.
#[derive(Debug, Clone, Copy)]
pub struct SeriesView<'a> {
    /// Grid index of `values[0]`.
    pub start: i64,
    pub values: &'a [f64],
    /// Mean absolute observed value (1 when that is 0): puts every series on one scale.
    pub scale: f64,
    /// Covariate columns on the grid from `start`; they may reach past the end of `values`
    /// (known future values). Only global models read them, each as its [`Covariates`] says.
    pub covariates: &'a [Vec<f64>],
}

impl<'a> SeriesView<'a> {
    pub fn new(start: i64, values: &'a [f64]) -> SeriesView<'a> {
        let (s, n) =
            values.iter().filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v.abs(), n + 1));
        let scale = if n > 0 && s > 0.0 { s / n as f64 } else { 1.0 };
        SeriesView { start, values, scale, covariates: &[] }
    }

    pub fn with_covariates(self, covariates: &'a [Vec<f64>]) -> SeriesView<'a> {
        SeriesView { covariates, ..self }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
// A handful of specs exist per run (candidates and saved members); boxing the big variant would
// only complicate construction and matching.
#[allow(clippy::large_enum_variant)]
pub enum ForecasterSpec {
    Naive,
    SeasonalNaive,
    Ets {
        transform: Transform,
    },
    /// Per-series seasonal ARIMA, orders by AICc ([`arima::auto_arima`]).
    Arima {
        transform: Transform,
    },
    /// Per-series Theta method ([`theta::fit_theta`]).
    Theta {
        transform: Transform,
    },
    Global {
        transform: Transform,
        learner: GlobalLearner,
        extra_lags: Vec<usize>,
        #[serde(default)]
        covariates: Covariates,
        /// 0: recursive; `H`: direct over `H` steps.
        #[serde(default)]
        direct: usize,
        /// Features and target measured from the value one season back ([`LagSpec::seasonal_anchor`]).
        #[serde(default)]
        seasonal_anchor: bool,
    },
}

impl ForecasterSpec {
    pub fn name(&self) -> String {
        match self {
            ForecasterSpec::Naive => "naive".into(),
            ForecasterSpec::SeasonalNaive => "seasonal_naive".into(),
            ForecasterSpec::Ets { transform } => format!("ets{}", transform.name()),
            ForecasterSpec::Arima { transform } => format!("arima{}", transform.name()),
            ForecasterSpec::Theta { transform } => format!("theta{}", transform.name()),
            ForecasterSpec::Global { transform, learner, covariates, direct, seasonal_anchor, .. } => {
                let cov = if covariates.is_empty() { "" } else { "_cov" };
                let lags = if *seasonal_anchor { "sdiff" } else { "lags" };
                let strategy = if *direct > 0 { "_direct" } else { "" };
                let t = transform.name();
                match learner {
                    GlobalLearner::Ridge { .. } => format!("ridge_{lags}{cov}{strategy}{t}"),
                    GlobalLearner::Trees { params } => {
                        format!("gbdt{}x{}_{lags}{cov}{strategy}{t}", params.num_leaves, params.n_estimators)
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FittedForecaster {
    Naive,
    SeasonalNaive {
        m: usize,
    },
    /// One fit per series; `None` where the series is too short (it falls back to naive).
    Ets {
        transform: Transform,
        fits: Vec<Option<ets::EtsFit>>,
    },
    /// Like `Ets`: one fit per series, `None` falls back to naive.
    Arima {
        transform: Transform,
        fits: Vec<Option<arima::ArimaFit>>,
    },
    /// Like `Ets`: one fit per series, `None` falls back to naive.
    Theta {
        transform: Transform,
        fits: Vec<Option<theta::ThetaFit>>,
    },
    Global {
        model: Box<GlobalModel>,
    },
}

fn last_observed(values: &[f64]) -> f64 {
    values.iter().rev().find(|v| v.is_finite()).copied().unwrap_or(0.0)
}

/// The value `m` steps before each forecast point, walking back whole seasons past gaps.
fn seasonal_naive(values: &[f64], m: usize, steps: usize) -> Vec<f64> {
    let n = values.len();
    let fallback = last_observed(values);
    (1..=steps)
        .map(|h| {
            let mut back = m * ((h - 1) / m + 1);
            while back <= n {
                let v = values[n + h - 1 - back];
                if v.is_finite() {
                    return v;
                }
                back += m;
            }
            fallback
        })
        .collect()
}

/// Per-series forecasts of a local model: `f(series index, transformed history, steps)`, in
/// original units; the last observed value where `f` has no fit or gives a non-finite value.
fn local_forecasts(
    series: &[SeriesView],
    steps: &[usize],
    transform: Transform,
    f: impl Fn(usize, &[f64], usize) -> Option<Vec<f64>> + Sync,
) -> Vec<Vec<f64>> {
    series
        .par_iter()
        .zip(steps)
        .enumerate()
        .map(|(i, (s, &h))| {
            let last = last_observed(s.values);
            let z = transform.forward_all(s.values, s.scale);
            match f(i, &z, h) {
                Some(fc) => fc
                    .into_iter()
                    .map(|v| {
                        let y = transform.inverse(v, s.scale);
                        if y.is_finite() { y } else { last }
                    })
                    .collect(),
                None => vec![last; h],
            }
        })
        .collect()
}

/// One local model per series, on its transformed history (in parallel over series).
fn fit_local<T: Send>(
    series: &[SeriesView],
    transform: Transform,
    f: impl Fn(&[f64]) -> Option<T> + Sync,
) -> Vec<Option<T>> {
    series.par_iter().map(|s| f(&transform.forward_all(s.values, s.scale))).collect()
}

/// Fits `spec` on the series (parallel over series for local models).
pub fn fit(
    spec: &ForecasterSpec,
    series: &[SeriesView],
    freq: &Frequency,
    seasonality: usize,
    seed: u64,
) -> Result<FittedForecaster> {
    Ok(match spec {
        ForecasterSpec::Naive => FittedForecaster::Naive,
        ForecasterSpec::SeasonalNaive => FittedForecaster::SeasonalNaive { m: seasonality.max(1) },
        ForecasterSpec::Ets { transform } => FittedForecaster::Ets {
            transform: *transform,
            fits: fit_local(series, *transform, |z| ets::auto_ets(z, seasonality.max(1))),
        },
        ForecasterSpec::Arima { transform } => FittedForecaster::Arima {
            transform: *transform,
            fits: fit_local(series, *transform, |z| arima::auto_arima(z, seasonality.max(1))),
        },
        ForecasterSpec::Theta { transform } => FittedForecaster::Theta {
            transform: *transform,
            fits: fit_local(series, *transform, |z| theta::fit_theta(z, seasonality.max(1))),
        },
        ForecasterSpec::Global { transform, learner, extra_lags, covariates, direct, seasonal_anchor } => {
            let lag_spec =
                LagSpec { seasonal_anchor: *seasonal_anchor, ..LagSpec::new(seasonality, extra_lags) };
            let model = GlobalModel::fit(
                series,
                freq,
                lag_spec,
                covariates.clone(),
                *direct,
                *transform,
                learner,
                seed,
            )?;
            FittedForecaster::Global { model: Box::new(model) }
        }
    })
}

impl FittedForecaster {
    /// `steps[i]` forecasts after the end of series `i`, in original units.
    pub fn forecast(&self, series: &[SeriesView], freq: &Frequency, steps: &[usize]) -> Vec<Vec<f64>> {
        match self {
            FittedForecaster::Naive => {
                series.iter().zip(steps).map(|(s, &h)| vec![last_observed(s.values); h]).collect()
            }
            FittedForecaster::SeasonalNaive { m } => {
                series.iter().zip(steps).map(|(s, &h)| seasonal_naive(s.values, *m, h)).collect()
            }
            FittedForecaster::Ets { transform, fits } => {
                local_forecasts(series, steps, *transform, |i, z, h| {
                    Some(fits.get(i)?.as_ref()?.forecast(z, h))
                })
            }
            FittedForecaster::Arima { transform, fits } => {
                local_forecasts(series, steps, *transform, |i, z, h| {
                    Some(fits.get(i)?.as_ref()?.forecast(z, h))
                })
            }
            FittedForecaster::Theta { transform, fits } => {
                local_forecasts(series, steps, *transform, |i, z, h| {
                    Some(fits.get(i)?.as_ref()?.forecast(z, h))
                })
            }
            FittedForecaster::Global { model } => model.forecast(series, freq, steps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_repeats_the_last_season_and_skips_gaps() {
        let v = [1.0, 2.0, 3.0, 4.0, f64::NAN, 6.0];
        assert_eq!(seasonal_naive(&v, 3, 4), vec![4.0, 2.0, 6.0, 4.0]);
    }
}
