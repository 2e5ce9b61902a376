//! The Theta method (Assimakopoulos & Nikolopoulos 2000) in Hyndman & Billah's (2003) form:
//! simple exponential smoothing plus a drift of half the series' linear slope, on a seasonally
//! adjusted series. Seasonality is removed by classical decomposition when the autocorrelation
//! at lag `m` is significant (90 % one-sided, Bartlett's variance), multiplicative for positive
//! series and additive otherwise. Simple, and on monthly panels it often beats ETS and ARIMA
//! (txhousing: statsforecast's Theta 0.775 MASE vs AutoETS 0.797, AutoARIMA 0.781).
//! Missing values are linearly interpolated first (leading ones dropped, trailing ones carry the
//! last observation), so the forecast origin stays the end of the history.

use serde::{Deserialize, Serialize};

use super::ets::nelder_mead;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThetaFit {
    /// Seasonal indices by grid position `t % m` of the history (empty: not seasonal).
    pub season: Vec<f64>,
    pub multiplicative: bool,
    pub alpha: f64,
    pub level0: f64,
    /// Half the slope of the least-squares line through the adjusted series.
    pub drift: f64,
}

/// Internal gaps linearly interpolated, trailing ones carry the last value; `None` when nothing
/// is observed. Returns the filled values from the first observation and that observation's index.
fn fill(y: &[f64]) -> Option<(usize, Vec<f64>)> {
    let first = y.iter().position(|v| v.is_finite())?;
    let mut out = y[first..].to_vec();
    let mut prev = 0usize;
    for i in 1..out.len() {
        if !out[i].is_finite() {
            continue;
        }
        if i > prev + 1 {
            let (a, b) = (out[prev], out[i]);
            for (k, v) in out.iter_mut().enumerate().take(i).skip(prev + 1) {
                *v = a + (b - a) * (k - prev) as f64 / (i - prev) as f64;
            }
        }
        prev = i;
    }
    let last = out[prev];
    out.iter_mut().skip(prev + 1).for_each(|v| *v = last);
    Some((first, out))
}

fn acf(y: &[f64], lag: usize) -> f64 {
    let n = y.len();
    let mean = y.iter().sum::<f64>() / n as f64;
    let var: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
    if var <= 0.0 || lag >= n {
        return 0.0;
    }
    (lag..n).map(|t| (y[t] - mean) * (y[t - lag] - mean)).sum::<f64>() / var
}

fn seasonal_test(y: &[f64], m: usize) -> bool {
    let n = y.len();
    if m < 2 || n < 2 * m {
        return false;
    }
    let r: Vec<f64> = (1..=m).map(|k| acf(y, k)).collect();
    let stat = ((1.0 + 2.0 * r[..m - 1].iter().map(|v| v * v).sum::<f64>()) / n as f64).sqrt();
    r[m - 1].abs() / stat > 1.645
}

/// Classical decomposition indices by position `t % m` (normalised to mean 1 or 0), from the
/// ratio (or difference) to a centred moving average of length `m` (2×m for even `m`).
fn seasonal_indices(y: &[f64], m: usize, multiplicative: bool) -> Option<Vec<f64>> {
    let n = y.len();
    let half = m / 2;
    let (mut sums, mut counts) = (vec![0.0; m], vec![0usize; m]);
    for t in half..n.saturating_sub(half) {
        let cma = if m.is_multiple_of(2) {
            (0.5 * y[t - half] + y[t - half + 1..t + half].iter().sum::<f64>() + 0.5 * y[t + half]) / m as f64
        } else {
            y[t - half..=t + half].iter().sum::<f64>() / m as f64
        };
        let d = if multiplicative { y[t] / cma } else { y[t] - cma };
        if d.is_finite() {
            sums[t % m] += d;
            counts[t % m] += 1;
        }
    }
    if counts.contains(&0) {
        return None;
    }
    let mut idx: Vec<f64> = sums.iter().zip(&counts).map(|(s, c)| s / *c as f64).collect();
    let mean = idx.iter().sum::<f64>() / m as f64;
    if multiplicative {
        if mean <= 0.0 || idx.iter().any(|v| *v <= 0.0) {
            return None;
        }
        idx.iter_mut().for_each(|v| *v /= mean);
    } else {
        idx.iter_mut().for_each(|v| *v -= mean);
    }
    Some(idx)
}

impl ThetaFit {
    /// The seasonally adjusted series (positions counted from `offset` in the full history).
    fn adjust(&self, y: &[f64], offset: usize) -> Vec<f64> {
        let m = self.season.len();
        y.iter()
            .enumerate()
            .map(|(t, v)| match (m, self.multiplicative) {
                (0, _) => *v,
                (_, true) => v / self.season[(t + offset) % m],
                (_, false) => v - self.season[(t + offset) % m],
            })
            .collect()
    }

    /// Sum of squared one-step errors of SES and the final level.
    fn ses(alpha: f64, level0: f64, x: &[f64]) -> (f64, f64) {
        let (mut level, mut sse) = (level0, 0.0);
        for v in x {
            let e = v - level;
            sse += e * e;
            level += alpha * e;
        }
        (sse, level)
    }

    /// Point forecasts for the `steps` points after `y`.
    pub fn forecast(&self, y: &[f64], steps: usize) -> Vec<f64> {
        let Some((first, filled)) = fill(y) else {
            return vec![0.0; steps];
        };
        let x = self.adjust(&filled, first);
        let (_, level) = Self::ses(self.alpha, self.level0, &x);
        let n = x.len() as f64;
        let a = self.alpha;
        let start = (1.0 - (1.0 - a).powf(n)) / a;
        let m = self.season.len();
        (0..steps)
            .map(|h| {
                let f = level + self.drift * (h as f64 + start);
                let pos = y.len() + h;
                match (m, self.multiplicative) {
                    (0, _) => f,
                    (_, true) => f * self.season[pos % m],
                    (_, false) => f + self.season[pos % m],
                }
            })
            .collect()
    }
}

/// Fits the Theta method to `y` (season `m`); `None` when fewer than 4 points are observed.
pub fn fit_theta(y: &[f64], m: usize) -> Option<ThetaFit> {
    if y.iter().filter(|v| v.is_finite()).count() < 4 {
        return None;
    }
    let (first, filled) = fill(y)?;
    let multiplicative = filled.iter().all(|v| *v > 0.0);
    let season = if seasonal_test(&filled, m) {
        // Indices by absolute position: rotate so that index `t % m` matches `y`'s grid.
        seasonal_indices(&filled, m, multiplicative)
            .map(|idx| (0..m).map(|p| idx[(p + m - first % m) % m]).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut fit = ThetaFit { season, multiplicative, alpha: 0.5, level0: 0.0, drift: 0.0 };
    let x = fit.adjust(&filled, first);
    let n = x.len() as f64;
    let tm = (n - 1.0) / 2.0;
    let xm = x.iter().sum::<f64>() / n;
    let sxy: f64 = x.iter().enumerate().map(|(t, v)| (t as f64 - tm) * (v - xm)).sum();
    let sxx: f64 = (0..x.len()).map(|t| (t as f64 - tm).powi(2)).sum();
    fit.drift = if sxx > 0.0 { 0.5 * sxy / sxx } else { 0.0 };
    // alpha through a logistic map onto (0.0001, 0.9999); the initial level on the data's scale.
    let spread = x.iter().map(|v| (v - xm).abs()).sum::<f64>() / n + 1e-12;
    let decode = |p: &[f64]| (0.0001 + 0.9998 / (1.0 + (-p[0]).exp()), x[0] + p[1] * spread);
    let objective = |p: &[f64]| {
        let (a, l0) = decode(p);
        let sse = ThetaFit::ses(a, l0, &x).0;
        if sse.is_finite() { sse } else { f64::MAX }
    };
    let best = nelder_mead(&objective, &[0.0, 0.0], 200);
    let (alpha, level0) = decode(&best);
    fit.alpha = alpha;
    fit.level0 = level0;
    Some(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_interpolated_and_trailing_ones_carry_the_last_value() {
        let y = [f64::NAN, 1.0, f64::NAN, 3.0, 4.0, f64::NAN];
        assert_eq!(fill(&y), Some((1, vec![1.0, 2.0, 3.0, 4.0, 4.0])));
    }

    #[test]
    fn follows_a_multiplicative_season_and_a_linear_trend() {
        let season = [1.3, 0.8, 1.0, 0.9];
        let level = |t: usize| 50.0 + 0.5 * t as f64;
        let y: Vec<f64> = (0..60).map(|t| level(t) * season[t % 4]).collect();
        let fit = fit_theta(&y, 4).unwrap_or_else(|| panic!("no fit"));
        assert_eq!(fit.season.len(), 4, "{fit:?}");
        assert!(fit.multiplicative);
        // Drift is half the slope by construction: the forecast is damped toward the level,
        // so allow a few percent.
        for (h, v) in fit.forecast(&y, 8).iter().enumerate() {
            let truth = level(60 + h) * season[(60 + h) % 4];
            assert!((v - truth).abs() / truth < 0.05, "h={h}: {v} vs {truth}");
        }
    }

    #[test]
    fn season_phase_follows_the_grid_when_the_history_starts_with_gaps() {
        let season = [2.0, -1.0, 0.0, -1.0];
        let mut y: Vec<f64> = (0..40).map(|t| season[t % 4] - 5.0).collect();
        y[0] = f64::NAN;
        y[1] = f64::NAN;
        let fit = fit_theta(&y, 4).unwrap_or_else(|| panic!("no fit"));
        assert!(!fit.multiplicative);
        for (h, v) in fit.forecast(&y, 4).iter().enumerate() {
            let truth = season[(40 + h) % 4] - 5.0;
            assert!((v - truth).abs() < 0.05, "h={h}: {v} vs {truth}");
        }
    }

    #[test]
    fn white_noise_is_not_seasonal() {
        let mut state = 7u64;
        let y: Vec<f64> = (0..120)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 33) as f64 / (1u64 << 31) as f64
            })
            .collect();
        assert!(!seasonal_test(&y, 12));
    }
}
