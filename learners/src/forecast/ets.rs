//! Exponential smoothing with additive errors (Holt-Winters state space): level, optional
//! additive or damped trend, optional additive season. Smoothing parameters minimise the
//! one-step squared error (Nelder-Mead); the variant with the lowest AICc wins. Missing
//! targets do not update the states (the one-step forecast stands in for them).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    None,
    Additive,
    Damped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtsFit {
    pub trend: Trend,
    /// Season length; 1 = no season.
    pub m: usize,
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub phi: f64,
    pub aicc: f64,
}

struct States {
    level: f64,
    trend: f64,
    season: Vec<f64>,
}

fn nanmean(v: &[f64]) -> Option<f64> {
    let (s, n) = v.iter().filter(|x| x.is_finite()).fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

fn initial_states(y: &[f64], trend: Trend, m: usize) -> Option<States> {
    if m > 1 {
        let first = nanmean(&y[..m])?;
        let second = nanmean(&y[m..2 * m]).unwrap_or(first);
        let slope = if trend == Trend::None { 0.0 } else { (second - first) / m as f64 };
        let mut season: Vec<f64> = (0..m)
            .map(|j| {
                let base = first + slope * (j as f64 - (m as f64 - 1.0) / 2.0);
                if y[j].is_finite() { y[j] - base } else { 0.0 }
            })
            .collect();
        let mean = season.iter().sum::<f64>() / m as f64;
        season.iter_mut().for_each(|s| *s -= mean);
        // The level before the first point, so that level + season reproduces the first season.
        let level = first - slope * (m as f64 + 1.0) / 2.0;
        Some(States { level, trend: slope, season })
    } else {
        let k = (y.len() / 2).clamp(1, 4);
        let first = nanmean(&y[..k])?;
        let slope = match (trend, nanmean(&y[k..(2 * k).min(y.len())])) {
            (Trend::None, _) | (_, None) => 0.0,
            (_, Some(next)) => (next - first) / k as f64,
        };
        Some(States { level: first - slope * (k as f64 + 1.0) / 2.0, trend: slope, season: vec![0.0] })
    }
}

impl EtsFit {
    fn n_params(&self) -> usize {
        let smoothing = 1
            + usize::from(self.trend != Trend::None)
            + usize::from(self.m > 1)
            + usize::from(self.trend == Trend::Damped);
        let states = 1 + usize::from(self.trend != Trend::None) + (self.m - 1);
        smoothing + states
    }

    /// Runs the filter over `y`; returns the squared-error sum, the observed count and the
    /// final states.
    fn filter(&self, y: &[f64]) -> Option<(f64, usize, States)> {
        let mut st = initial_states(y, self.trend, self.m)?;
        let phi = match self.trend {
            Trend::None => 0.0,
            Trend::Additive => 1.0,
            Trend::Damped => self.phi,
        };
        let (mut sse, mut n) = (0.0, 0usize);
        for (t, &obs) in y.iter().enumerate() {
            let j = t % self.m;
            let s = st.season[j];
            let fit = st.level + phi * st.trend + s;
            let e = if obs.is_finite() {
                n += 1;
                let e = obs - fit;
                sse += e * e;
                e
            } else {
                0.0
            };
            st.level = st.level + phi * st.trend + self.alpha * e;
            st.trend = phi * st.trend + self.beta * e;
            st.season[j] = s + self.gamma * e;
        }
        sse.is_finite().then_some((sse, n, st))
    }

    /// Point forecasts for the `steps` points after `y`.
    pub fn forecast(&self, y: &[f64], steps: usize) -> Vec<f64> {
        let Some((_, _, st)) = self.filter(y) else {
            let last = y.iter().rev().find(|v| v.is_finite()).copied().unwrap_or(0.0);
            return vec![last; steps];
        };
        let phi = match self.trend {
            Trend::None => 0.0,
            Trend::Additive => 1.0,
            Trend::Damped => self.phi,
        };
        let n = y.len();
        let mut damp = 0.0;
        let mut p = 1.0;
        (1..=steps)
            .map(|h| {
                p *= phi;
                damp += p;
                st.level + damp * st.trend + st.season[(n + h - 1) % self.m]
            })
            .collect()
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// Fits one variant: smoothing parameters by Nelder-Mead on the one-step squared error.
fn fit_variant(y: &[f64], trend: Trend, m: usize) -> Option<EtsFit> {
    let decode = |x: &[f64]| -> EtsFit {
        let alpha = 0.0001 + 0.9998 * sigmoid(x[0]);
        let mut i = 1;
        let mut next = || {
            let v = x.get(i).copied().unwrap_or(0.0);
            i += 1;
            v
        };
        let beta = if trend == Trend::None { 0.0 } else { alpha * sigmoid(next()) };
        let gamma = if m > 1 { (1.0 - alpha) * sigmoid(next()) } else { 0.0 };
        let phi = if trend == Trend::Damped { 0.8 + 0.18 * sigmoid(next()) } else { 1.0 };
        EtsFit { trend, m, alpha, beta, gamma, phi, aicc: f64::INFINITY }
    };
    let mut x0 = vec![logit(0.3)];
    if trend != Trend::None {
        x0.push(logit(0.1 / 0.3));
    }
    if m > 1 {
        x0.push(logit(0.1 / 0.7));
    }
    if trend == Trend::Damped {
        x0.push(logit(0.9));
    }
    let objective = |x: &[f64]| decode(x).filter(y).map_or(f64::MAX, |r| r.0);
    let best = nelder_mead(&objective, &x0, 60 * x0.len() + 60);
    let mut fit = decode(&best);
    let (sse, n, _) = fit.filter(y)?;
    let k = fit.n_params() as f64;
    let n_f = n as f64;
    if n_f - k - 1.0 <= 0.0 {
        return None;
    }
    let sse = sse.max(1e-12 * n_f);
    fit.aicc = n_f * (sse / n_f).ln() + 2.0 * k + 2.0 * k * (k + 1.0) / (n_f - k - 1.0);
    Some(fit)
}

/// Tries no/additive/damped trend, with and without the season `m` (when there are at least
/// two full seasons), and keeps the lowest AICc. `None` when the series is too short for any.
pub fn auto_ets(y: &[f64], m: usize) -> Option<EtsFit> {
    let n_obs = y.iter().filter(|v| v.is_finite()).count();
    let mut seasons = vec![1];
    if m > 1 && y.len() >= 2 * m + 2 && n_obs >= 2 * m {
        seasons.push(m);
    }
    let mut best: Option<EtsFit> = None;
    for &season in &seasons {
        for trend in [Trend::None, Trend::Additive, Trend::Damped] {
            if let Some(f) = fit_variant(y, trend, season)
                && best.as_ref().is_none_or(|b| f.aicc < b.aicc)
            {
                best = Some(f);
            }
        }
    }
    best
}

/// Minimises `f` from `x0` (standard reflection/expansion/contraction/shrink coefficients).
pub(crate) fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], max_evals: usize) -> Vec<f64> {
    let d = x0.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(d + 1);
    simplex.push((x0.to_vec(), f(x0)));
    for i in 0..d {
        let mut x = x0.to_vec();
        x[i] += 1.0;
        let v = f(&x);
        simplex.push((x, v));
    }
    let mut evals = d + 1;
    while evals < max_evals {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if (simplex[d].1 - simplex[0].1).abs() <= 1e-10 * (simplex[0].1.abs() + 1e-12) {
            break;
        }
        let centroid: Vec<f64> =
            (0..d).map(|j| simplex[..d].iter().map(|p| p.0[j]).sum::<f64>() / d as f64).collect();
        let point = |t: f64| -> Vec<f64> {
            centroid.iter().zip(&simplex[d].0).map(|(c, w)| c + t * (w - c)).collect()
        };
        let reflected = point(-1.0);
        let fr = f(&reflected);
        evals += 1;
        if fr < simplex[0].1 {
            let expanded = point(-2.0);
            let fe = f(&expanded);
            evals += 1;
            simplex[d] = if fe < fr { (expanded, fe) } else { (reflected, fr) };
        } else if fr < simplex[d - 1].1 {
            simplex[d] = (reflected, fr);
        } else {
            let contracted = if fr < simplex[d].1 { point(-0.5) } else { point(0.5) };
            let fc = f(&contracted);
            evals += 1;
            if fc < fr.min(simplex[d].1) {
                simplex[d] = (contracted, fc);
            } else {
                let best = simplex[0].0.clone();
                for p in simplex.iter_mut().skip(1) {
                    p.0 = best.iter().zip(&p.0).map(|(b, x)| b + 0.5 * (x - b)).collect();
                    p.1 = f(&p.0);
                    evals += 1;
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_seasonal_pattern_and_trend() {
        let season = [5.0, -3.0, 0.0, -2.0];
        let y: Vec<f64> = (0..40).map(|t| 10.0 + 0.5 * t as f64 + season[t % 4]).collect();
        let fit = auto_ets(&y, 4).unwrap_or_else(|| panic!("no fit"));
        assert_eq!(fit.m, 4, "{fit:?}");
        let f = fit.forecast(&y, 4);
        for (h, v) in f.iter().enumerate() {
            let t = 40 + h;
            let truth = 10.0 + 0.5 * t as f64 + season[t % 4];
            assert!((v - truth).abs() < 0.5, "h={h}: {v} vs {truth}");
        }
    }

    #[test]
    fn missing_values_do_not_update_states() {
        let mut y: Vec<f64> = vec![3.0; 20];
        y[10] = f64::NAN;
        let fit = auto_ets(&y, 1).unwrap_or_else(|| panic!("no fit"));
        let f = fit.forecast(&y, 3);
        assert!(f.iter().all(|v| (v - 3.0).abs() < 1e-6), "{f:?}");
    }
}
