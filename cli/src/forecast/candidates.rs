//! The candidate forecasters and their scores on rolling-origin windows.

use super::*;

pub(super) struct Candidate {
    pub(super) spec: ForecasterSpec,
    /// Per window, per series in the window: actual, forecast and MASE scale.
    pub(super) windows: Vec<Vec<(usize, Scored)>>,
    pub(super) score: f64,
    pub(super) fit_seconds: f64,
    pub(super) error: Option<String>,
}

pub(super) fn views(series: &[SeriesData], cutoff: i64) -> Vec<(usize, SeriesView<'_>)> {
    series
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let n = (cutoff - s.start).clamp(0, s.values.len() as i64) as usize;
            let v = &s.values[..n];
            // Covariates stay whole: known ones are read ahead, past-only ones never past `n`.
            (v.iter().any(|x| x.is_finite()))
                .then(|| (i, SeriesView::new(s.start, v).with_covariates(&s.covariates)))
        })
        .collect()
}

pub(super) fn candidates(
    series: &[SeriesData],
    frequency: &Frequency,
    m: usize,
    horizon: usize,
    covariates: &Covariates,
) -> Vec<ForecasterSpec> {
    let positive = series.iter().all(|s| s.values.iter().all(|v| !v.is_finite() || *v > 0.0));
    let mut transforms = vec![Transform::Identity];
    if positive {
        transforms.insert(0, Transform::Log);
    }
    let extra_lags = match frequency.kind {
        FrequencyKind::Fixed { seconds: 86_400 } => vec![364],
        FrequencyKind::Fixed { seconds: 3600 } => vec![168],
        _ => Vec::new(),
    };
    let small = TreeParams {
        n_estimators: 150,
        learning_rate: 0.05,
        num_leaves: 5,
        min_child_samples: 30,
        colsample_bytree: 0.9,
        ..TreeParams::default()
    };
    let mut out = vec![ForecasterSpec::Naive];
    if m > 1 {
        out.push(ForecasterSpec::SeasonalNaive);
    }
    for &t in &transforms {
        out.push(ForecasterSpec::Ets { transform: t });
    }
    for &t in &transforms {
        out.push(ForecasterSpec::Theta { transform: t });
    }
    for &t in &transforms {
        out.push(ForecasterSpec::Arima { transform: t });
    }
    for &t in &transforms {
        out.push(ForecasterSpec::Global {
            transform: t,
            learner: GlobalLearner::Ridge { lambda: 1e-3 },
            extra_lags: extra_lags.clone(),
            covariates: covariates.clone(),
            direct: 0,
            seasonal_anchor: false,
        });
    }
    // Two tree sizes; the validation windows decide between them (and the ensemble may mix).
    let large = TreeParams { n_estimators: 300, num_leaves: 15, min_child_samples: 10, ..small.clone() };
    for params in [&small, &large] {
        for &t in &transforms {
            out.push(ForecasterSpec::Global {
                transform: t,
                learner: GlobalLearner::Trees { params: params.clone() },
                extra_lags: extra_lags.clone(),
                covariates: covariates.clone(),
                direct: 0,
                seasonal_anchor: false,
            });
        }
    }
    // Seasonally anchored variants (year-over-year change; see `LagSpec::seasonal_anchor`).
    if m > 1 {
        let learners = [
            GlobalLearner::Ridge { lambda: 1e-3 },
            GlobalLearner::Trees { params: small.clone() },
            GlobalLearner::Trees { params: large.clone() },
        ];
        for learner in learners {
            for &t in &transforms {
                out.push(ForecasterSpec::Global {
                    transform: t,
                    learner: learner.clone(),
                    extra_lags: extra_lags.clone(),
                    covariates: covariates.clone(),
                    direct: 0,
                    seasonal_anchor: true,
                });
            }
        }
    }
    // Direct models (no error fed back through the lags), on the first transform only: they
    // train on one row per origin and step, so they cost the most and come last.
    if horizon > 1 {
        let t = transforms[0];
        let learners = [
            GlobalLearner::Ridge { lambda: 1e-3 },
            GlobalLearner::Trees { params: small },
            GlobalLearner::Trees { params: large },
        ];
        for learner in learners {
            out.push(ForecasterSpec::Global {
                transform: t,
                learner,
                extra_lags: extra_lags.clone(),
                covariates: covariates.clone(),
                direct: horizon,
                seasonal_anchor: false,
            });
        }
    }
    out
}

/// Fits `spec` before the window's cutoff and forecasts the window.
pub(super) fn evaluate_window(
    spec: &ForecasterSpec,
    series: &[SeriesData],
    freq: &Frequency,
    m: usize,
    w: ForecastWindow,
    seed: u64,
) -> Result<Vec<(usize, Scored)>> {
    let v = views(series, w.cutoff);
    let only: Vec<SeriesView> = v.iter().map(|p| p.1).collect();
    let fitted = fit_forecaster(spec, &only, freq, m, seed)?;
    let steps: Vec<usize> =
        only.iter().map(|s| (w.end - (s.start + s.values.len() as i64)) as usize).collect();
    let forecasts = fitted.forecast(&only, freq, &steps);
    let mut out = Vec::new();
    for ((i, view), f) in v.iter().zip(forecasts) {
        let s = &series[*i];
        let end = s.start + view.values.len() as i64;
        let (mut actual, mut forecast) = (Vec::new(), Vec::new());
        for g in w.cutoff..w.end {
            let k = (g - end) as usize;
            let a = s.values.get((g - s.start) as usize).copied().unwrap_or(f64::NAN);
            actual.push(a);
            forecast.push(f.get(k).copied().unwrap_or(f64::NAN));
        }
        if actual.iter().any(|a| a.is_finite()) {
            out.push((*i, Scored { actual, forecast, mase_scale: mase_scale(view.values, m) }));
        }
    }
    Ok(out)
}

pub(super) fn score_windows(metric: ForecastMetric, windows: &[Vec<(usize, Scored)>]) -> f64 {
    let scores: Vec<f64> = windows
        .iter()
        .map(|w| metric.score(&w.iter().map(|p| p.1.clone()).collect::<Vec<_>>()))
        .filter(|s| s.is_finite())
        .collect();
    if scores.is_empty() { f64::NAN } else { scores.iter().sum::<f64>() / scores.len() as f64 }
}
