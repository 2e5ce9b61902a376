//! Forecast accuracy: MASE (the default), sMAPE, RMSE, MAE, and the weighted quantile loss.

use serde::{Deserialize, Serialize};

use crate::error::{FeaturizeError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastMetric {
    Mase,
    Smape,
    Rmse,
    Mae,
}

/// One series' scored stretch: actual values (`NaN` = not scored), forecasts, MASE scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub actual: Vec<f64>,
    pub forecast: Vec<f64>,
    pub mase_scale: Option<f64>,
}

impl ForecastMetric {
    pub fn parse(name: &str) -> Result<ForecastMetric> {
        match name.to_ascii_lowercase().as_str() {
            "mase" => Ok(ForecastMetric::Mase),
            "smape" => Ok(ForecastMetric::Smape),
            "rmse" => Ok(ForecastMetric::Rmse),
            "mae" => Ok(ForecastMetric::Mae),
            _ => Err(FeaturizeError::Forecast(format!(
                "unknown forecast metric {name:?}; choose one of mase, smape, rmse, mae"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ForecastMetric::Mase => "mase",
            ForecastMetric::Smape => "smape",
            ForecastMetric::Rmse => "rmse",
            ForecastMetric::Mae => "mae",
        }
    }

    /// MASE and sMAPE: mean over series of each series' score; RMSE and MAE: over all points.
    /// `NaN` when nothing could be scored.
    pub fn score(self, series: &[Scored]) -> f64 {
        let pairs = |s: &Scored| -> Vec<(f64, f64)> {
            s.actual.iter().zip(&s.forecast).filter(|(a, _)| a.is_finite()).map(|(a, f)| (*a, *f)).collect()
        };
        let mut per_series = Vec::new();
        let (mut sum, mut n) = (0.0, 0usize);
        for s in series {
            let p = pairs(s);
            if p.is_empty() {
                continue;
            }
            let k = p.len() as f64;
            match self {
                ForecastMetric::Mase => {
                    if let Some(scale) = s.mase_scale {
                        per_series.push(p.iter().map(|(a, f)| (a - f).abs()).sum::<f64>() / k / scale);
                    }
                }
                ForecastMetric::Smape => per_series.push(
                    p.iter()
                        .map(|(a, f)| {
                            let d = a.abs() + f.abs();
                            if d == 0.0 { 0.0 } else { 200.0 * (a - f).abs() / d }
                        })
                        .sum::<f64>()
                        / k,
                ),
                ForecastMetric::Rmse => {
                    sum += p.iter().map(|(a, f)| (a - f).powi(2)).sum::<f64>();
                    n += p.len();
                }
                ForecastMetric::Mae => {
                    sum += p.iter().map(|(a, f)| (a - f).abs()).sum::<f64>();
                    n += p.len();
                }
            }
        }
        match self {
            ForecastMetric::Mase | ForecastMetric::Smape if per_series.is_empty() => f64::NAN,
            ForecastMetric::Mase | ForecastMetric::Smape => {
                per_series.iter().sum::<f64>() / per_series.len() as f64
            }
            _ if n == 0 => f64::NAN,
            ForecastMetric::Rmse => (sum / n as f64).sqrt(),
            ForecastMetric::Mae => sum / n as f64,
        }
    }
}

/// The MASE denominator: mean absolute seasonal difference of the history (lag `m` when more
/// than `2m` values are observed, else lag 1), skipping missing values. `None` when it is 0
/// or cannot be computed.
pub fn mase_scale(history: &[f64], m: usize) -> Option<f64> {
    let observed = history.iter().filter(|v| v.is_finite()).count();
    let lag = if m > 1 && observed > 2 * m { m } else { 1 };
    if history.len() <= lag {
        return None;
    }
    let (s, n) = history[lag..]
        .iter()
        .zip(history)
        .map(|(a, b)| (a - b).abs())
        .filter(|d| d.is_finite())
        .fold((0.0, 0usize), |(s, n), d| (s + d, n + 1));
    let scale = s / n.max(1) as f64;
    (n > 0 && scale > 0.0).then_some(scale)
}

/// Weighted quantile loss: mean over levels of `2 Σ pinball / Σ |actual|`.
pub fn weighted_quantile_loss(levels: &[f64], actual: &[f64], quantiles: &[Vec<f64>]) -> f64 {
    let denom: f64 = actual.iter().filter(|a| a.is_finite()).map(|a| a.abs()).sum();
    if levels.is_empty() || denom == 0.0 {
        return f64::NAN;
    }
    let total: f64 = levels
        .iter()
        .zip(quantiles)
        .map(|(q, pred)| {
            2.0 * actual
                .iter()
                .zip(pred)
                .filter(|(a, _)| a.is_finite())
                .map(|(a, p)| if a >= p { q * (a - p) } else { (1.0 - q) * (p - a) })
                .sum::<f64>()
                / denom
        })
        .sum();
    total / levels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mase_matches_hand_computation() {
        // Seasonal lag 2 needs more than 4 observed points: here lag 1 (|2-1|,|4-2|,|3-4| → 4/3).
        let scale = mase_scale(&[1.0, 2.0, 4.0, 3.0], 2);
        assert_eq!(scale, Some(4.0 / 3.0));
        let s = Scored { actual: vec![5.0, f64::NAN], forecast: vec![3.0, 100.0], mase_scale: scale };
        assert!((ForecastMetric::Mase.score(&[s]) - 1.5).abs() < 1e-12);
        let wql = weighted_quantile_loss(&[0.5], &[2.0, 4.0], &[vec![1.0, 5.0]]);
        assert!((wql - 2.0 * (0.5 + 0.5) / 6.0).abs() < 1e-12);
    }
}
