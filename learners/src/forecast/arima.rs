//! Seasonal ARIMA (p,d,q)(P,D,Q)m on one series, a small auto-ARIMA: the seasonal difference
//! D by seasonal strength and d by a KPSS test (as Hyndman-Khandakar do), then every order with
//! p, q ≤ 2 and at most one seasonal AR or MA term, each fitted by conditional sum of squares
//! (Nelder-Mead), the lowest AICc winning. Coefficients are optimised as partial
//! autocorrelations (tanh of free parameters), so every fit is stationary and invertible.
//! Only the last [`MAX_HISTORY`] points are used; interior gaps are linearly interpolated.

use serde::{Deserialize, Serialize};

use super::ets::nelder_mead;

/// Older history adds fitting time but little to a low-order model's forecasts.
pub const MAX_HISTORY: usize = 240;
/// 5% critical value of the KPSS level-stationarity statistic.
const KPSS_CRITICAL: f64 = 0.463;
/// Seasonal strength above which one seasonal difference is taken (as forecast::nsdiffs).
const SEASONAL_STRENGTH: f64 = 0.64;

/// Nonzero (lag, coefficient) pairs of an expanded lag polynomial.
type Terms = Vec<(usize, f64)>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArimaFit {
    pub order: [usize; 3],
    pub seasonal_order: [usize; 3],
    pub m: usize,
    /// Mean of the differenced series (a drift when one difference is taken); 0 when not fitted.
    pub mean: f64,
    pub ar: Vec<f64>,
    pub ma: Vec<f64>,
    pub sar: Vec<f64>,
    pub sma: Vec<f64>,
    /// Residuals before this index of the differenced series are conditioned on (taken as 0).
    pub start: usize,
    pub aicc: f64,
}

/// The values the model sees: the last `MAX_HISTORY` points from the first observed one,
/// interior gaps linearly interpolated, trailing gaps carried forward. `None` if none observed.
pub fn prepare(y: &[f64]) -> Option<Vec<f64>> {
    let first = y.iter().position(|v| v.is_finite())?;
    let y = &y[first.max(y.len().saturating_sub(MAX_HISTORY))..];
    let first = y.iter().position(|v| v.is_finite())?;
    let mut out: Vec<f64> = y[first..].to_vec();
    let mut last_ok = 0usize;
    for i in 1..out.len() {
        if out[i].is_finite() {
            if i > last_ok + 1 {
                let (a, b) = (out[last_ok], out[i]);
                let span = (i - last_ok) as f64;
                for (k, slot) in out.iter_mut().enumerate().take(i).skip(last_ok + 1) {
                    *slot = a + (b - a) * (k - last_ok) as f64 / span;
                }
            }
            last_ok = i;
        }
    }
    let tail = out[last_ok];
    out.iter_mut().skip(last_ok + 1).for_each(|v| *v = tail);
    Some(out)
}

fn difference(y: &[f64], lag: usize) -> Vec<f64> {
    (lag..y.len()).map(|t| y[t] - y[t - lag]).collect()
}

/// Partial autocorrelations to AR coefficients (Durbin-Levinson): stationary for |r| < 1.
fn pacf_to_ar(r: &[f64]) -> Vec<f64> {
    let mut phi: Vec<f64> = Vec::with_capacity(r.len());
    for (k, &rk) in r.iter().enumerate() {
        let prev = phi.clone();
        for j in 0..k {
            phi[j] = prev[j] - rk * prev[k - 1 - j];
        }
        phi.push(rk);
    }
    phi
}

/// Nonzero (lag, coefficient) terms of `(1 + Σ s·a_i B^i)(1 + Σ s·A_j B^{jm})`, negated back
/// by `s`: with `s = -1` these are the AR terms of φ(B)Φ(B^m), with `s = 1` the MA terms.
fn expand(a: &[f64], seasonal: &[f64], m: usize, s: f64) -> Terms {
    let mut poly = vec![0.0; a.len() + seasonal.len() * m + 1];
    let left: Vec<f64> = std::iter::once(1.0).chain(a.iter().map(|c| s * c)).collect();
    let right: Vec<(usize, f64)> = std::iter::once((0, 1.0))
        .chain(seasonal.iter().enumerate().map(|(j, c)| ((j + 1) * m, s * c)))
        .collect();
    for (i, l) in left.iter().enumerate() {
        for (lag, r) in &right {
            poly[i + lag] += l * r;
        }
    }
    poly.iter().enumerate().skip(1).filter(|(_, c)| **c != 0.0).map(|(lag, c)| (lag, s * c)).collect()
}

impl ArimaFit {
    fn terms(&self) -> (Terms, Terms) {
        (expand(&self.ar, &self.sar, self.m, -1.0), expand(&self.ma, &self.sma, self.m, 1.0))
    }

    fn differenced(&self, y: &[f64]) -> Vec<f64> {
        let mut w = y.to_vec();
        for _ in 0..self.seasonal_order[1] {
            w = difference(&w, self.m);
        }
        for _ in 0..self.order[1] {
            w = difference(&w, 1);
        }
        w
    }

    fn n_params(&self) -> usize {
        self.ar.len() + self.ma.len() + self.sar.len() + self.sma.len() + usize::from(self.mean != 0.0) + 1
    }

    /// Point forecasts for the `steps` points after `y` (the history the fit was made on, or
    /// any longer one). Falls back to the last value when the history is too short.
    pub fn forecast(&self, y: &[f64], steps: usize) -> Vec<f64> {
        let Some(x) = prepare(y) else { return vec![0.0; steps] };
        let last = x[x.len() - 1];
        let mut w = self.differenced(&x);
        if w.len() <= self.start {
            return vec![last; steps];
        }
        let (ar, ma) = self.terms();
        let mut e = residuals(&w, self.mean, &ar, &ma, self.start).1;
        let n = w.len();
        for t in n..n + steps {
            let mut v = self.mean;
            for &(lag, c) in &ar {
                v += c * (w.get(t.wrapping_sub(lag)).copied().unwrap_or(self.mean) - self.mean);
            }
            for &(lag, c) in &ma {
                v += c * e.get(t.wrapping_sub(lag)).copied().unwrap_or(0.0);
            }
            w.push(v);
            e.push(0.0);
        }
        // Undo the differences, innermost (the last taken) first.
        let mut levels: Vec<Vec<f64>> = vec![x.clone()];
        for _ in 0..self.seasonal_order[1] {
            let prev = &levels[levels.len() - 1];
            levels.push(difference(prev, self.m));
        }
        for _ in 0..self.order[1] {
            let prev = &levels[levels.len() - 1];
            levels.push(difference(prev, 1));
        }
        let mut future: Vec<f64> = w[n..].to_vec();
        let lags: Vec<usize> = std::iter::repeat_n(self.m, self.seasonal_order[1])
            .chain(std::iter::repeat_n(1, self.order[1]))
            .collect();
        for (level, lag) in levels.iter().rev().skip(1).zip(lags.iter().rev()) {
            let mut ext = level.clone();
            for f in &future {
                let v = ext[ext.len() - lag] + f;
                ext.push(v);
            }
            future = ext[level.len()..].to_vec();
        }
        future.into_iter().map(|v| if v.is_finite() { v } else { last }).collect()
    }
}

/// One-step residuals of the ARMA terms on `w` (residuals before `start` are 0): the squared
/// sum from `start` and all residuals.
fn residuals(
    w: &[f64],
    mean: f64,
    ar: &[(usize, f64)],
    ma: &[(usize, f64)],
    start: usize,
) -> (f64, Vec<f64>) {
    let mut e = vec![0.0; w.len()];
    let mut sse = 0.0;
    for t in start..w.len() {
        let mut pred = 0.0;
        for &(lag, c) in ar {
            if lag <= t {
                pred += c * (w[t - lag] - mean);
            }
        }
        for &(lag, c) in ma {
            if lag <= t {
                pred += c * e[t - lag];
            }
        }
        e[t] = w[t] - mean - pred;
        sse += e[t] * e[t];
    }
    (sse, e)
}

/// Fits one order by conditional sum of squares on the differenced series `w`.
fn fit_order(
    w: &[f64],
    order: [usize; 3],
    seasonal: [usize; 3],
    m: usize,
    with_mean: bool,
    start: usize,
) -> Option<ArimaFit> {
    let [p, d, q] = order;
    let [sp, sd, sq] = seasonal;
    let mean = if with_mean { w.iter().sum::<f64>() / w.len() as f64 } else { 0.0 };
    let decode = |x: &[f64]| -> ArimaFit {
        let r: Vec<f64> = x.iter().map(|v| 0.98 * v.tanh()).collect();
        let (a, rest) = r.split_at(p);
        let (b, rest) = rest.split_at(q);
        let (sa, sb) = rest.split_at(sp);
        ArimaFit {
            order: [p, d, q],
            seasonal_order: [sp, sd, sq],
            m,
            mean,
            ar: pacf_to_ar(a),
            ma: pacf_to_ar(b).into_iter().map(|c| -c).collect(),
            sar: pacf_to_ar(sa),
            sma: pacf_to_ar(sb).into_iter().map(|c| -c).collect(),
            start,
            aicc: f64::INFINITY,
        }
    };
    let dim = p + q + sp + sq;
    let sse_of = |f: &ArimaFit| {
        let (ar, ma) = f.terms();
        residuals(w, mean, &ar, &ma, start).0
    };
    let best = if dim == 0 {
        Vec::new()
    } else {
        let objective = |x: &[f64]| {
            let s = sse_of(&decode(x));
            if s.is_finite() { s } else { f64::MAX }
        };
        nelder_mead(&objective, &vec![0.0; dim], 80 * dim + 40)
    };
    let mut fit = decode(&best);
    let sse = sse_of(&fit);
    let n = (w.len() - start) as f64;
    let k = fit.n_params() as f64;
    if !sse.is_finite() || n - k - 1.0 <= 0.0 {
        return None;
    }
    let sse = sse.max(1e-12 * n);
    fit.aicc = n * (sse / n).ln() + 2.0 * k + 2.0 * k * (k + 1.0) / (n - k - 1.0);
    Some(fit)
}

/// KPSS level-stationarity statistic with Bartlett weights, lag ⌊3√n/13⌋ (as R's kpss.test short).
pub fn kpss(x: &[f64]) -> f64 {
    let n = x.len();
    if n < 3 {
        return 0.0;
    }
    let mean = x.iter().sum::<f64>() / n as f64;
    let e: Vec<f64> = x.iter().map(|v| v - mean).collect();
    let mut s = 0.0;
    let eta: f64 = e
        .iter()
        .map(|v| {
            s += v;
            s * s
        })
        .sum::<f64>()
        / (n * n) as f64;
    let lags = (3.0 * (n as f64).sqrt() / 13.0).floor() as usize;
    let mut lrv = e.iter().map(|v| v * v).sum::<f64>() / n as f64;
    for l in 1..=lags.min(n - 1) {
        let g: f64 = (l..n).map(|t| e[t] * e[t - l]).sum::<f64>() / n as f64;
        lrv += 2.0 * (1.0 - l as f64 / (lags as f64 + 1.0)) * g;
    }
    if lrv <= 0.0 { 0.0 } else { eta / lrv }
}

/// Strength of the period-`m` seasonality in `[0, 1]`: 1 − var(remainder)/var(season +
/// remainder), on a centred moving-average trend and per-phase means.
pub fn seasonal_strength(x: &[f64], m: usize) -> f64 {
    let n = x.len();
    if m < 2 || n < 2 * m + 1 {
        return 0.0;
    }
    let half = m / 2;
    let detrended: Vec<(usize, f64)> = (half..n - half)
        .filter(|t| m % 2 == 1 || t + half < n)
        .map(|t| {
            let trend = if m % 2 == 1 {
                x[t - half..=t + half].iter().sum::<f64>() / m as f64
            } else {
                let inner: f64 = x[t + 1 - half..t + half].iter().sum();
                (inner + 0.5 * (x[t - half] + x[t + half])) / m as f64
            };
            (t % m, x[t] - trend)
        })
        .collect();
    let mut sums = vec![(0.0, 0usize); m];
    for &(j, v) in &detrended {
        sums[j].0 += v;
        sums[j].1 += 1;
    }
    let season: Vec<f64> = sums.iter().map(|(s, c)| if *c > 0 { s / *c as f64 } else { 0.0 }).collect();
    let var = |v: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = v.collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64
    };
    let rem = var(&mut detrended.iter().map(|&(j, v)| v - season[j]));
    let total = var(&mut detrended.iter().map(|&(_, v)| v));
    if total <= 0.0 { 0.0 } else { (1.0 - rem / total).max(0.0) }
}

/// Differencing orders (d, D) for `x`: D = 1 when the seasonality is strong, then d = 1 when
/// KPSS rejects level stationarity of the (seasonally differenced) series.
fn differencing(x: &[f64], m: usize) -> (usize, usize) {
    let sd = usize::from(m > 1 && x.len() >= 3 * m && seasonal_strength(x, m) > SEASONAL_STRENGTH);
    let w = if sd == 1 { difference(x, m) } else { x.to_vec() };
    let d = usize::from(w.len() > 10 && kpss(&w) > KPSS_CRITICAL);
    (d, sd)
}

/// Fits every order of the grid with `(d, D)` chosen from the data; lowest AICc wins.
/// `None` when the series is too short for any.
pub fn auto_arima(y: &[f64], m: usize) -> Option<ArimaFit> {
    let x = prepare(y)?;
    let (d, sd) = differencing(&x, m);
    let seasonal_terms = m > 1 && x.len() >= 3 * m + 10;
    let w = {
        let mut w = x.clone();
        for _ in 0..sd {
            w = difference(&w, m);
        }
        for _ in 0..d {
            w = difference(&w, 1);
        }
        w
    };
    // One conditioning start for every order, so that their AICc are over the same points.
    let start = 2 + if seasonal_terms { m } else { 0 };
    if w.len() < start + 8 {
        return None;
    }
    let with_mean = d + sd <= 1;
    let seasonal: &[[usize; 2]] = if seasonal_terms { &[[0, 0], [1, 0], [0, 1]] } else { &[[0, 0]] };
    let mut best: Option<ArimaFit> = None;
    for p in 0..=2 {
        for q in 0..=2 {
            for &[sp, sq] in seasonal {
                if let Some(f) = fit_order(&w, [p, d, q], [sp, sd, sq], m, with_mean, start)
                    && best.as_ref().is_none_or(|b| f.aicc < b.aicc)
                {
                    best = Some(f);
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
            })
            .collect()
    }

    #[test]
    fn recovers_ar2_coefficients_and_order() {
        let e = noise(600, 7);
        let mut y = vec![0.0; 600];
        for t in 2..600 {
            y[t] = 0.6 * y[t - 1] - 0.3 * y[t - 2] + e[t];
        }
        let y = &y[100..];
        let w = y.to_vec();
        let fit = fit_order(&w, [2, 0, 0], [0, 0, 0], 1, false, 2).unwrap_or_else(|| panic!("no fit"));
        assert!((fit.ar[0] - 0.6).abs() < 0.08 && (fit.ar[1] + 0.3).abs() < 0.08, "{fit:?}");
        // MAX_HISTORY keeps the last 240 points: still enough to pick the true order.
        let auto = auto_arima(y, 1).unwrap_or_else(|| panic!("no fit"));
        assert_eq!((auto.order, auto.seasonal_order), ([2, 0, 0], [0, 0, 0]), "{auto:?}");
    }

    #[test]
    fn recovers_an_ma1_coefficient() {
        let e = noise(400, 3);
        let y: Vec<f64> = (1..400).map(|t| e[t] + 0.5 * e[t - 1]).collect();
        let fit = fit_order(&y, [0, 0, 1], [0, 0, 0], 1, false, 2).unwrap_or_else(|| panic!("no fit"));
        assert!((fit.ma[0] - 0.5).abs() < 0.1, "{fit:?}");
    }

    #[test]
    fn differences_a_seasonal_random_walk_and_forecasts_its_pattern() {
        let e = noise(200, 11);
        let season = [3.0, -1.0, 0.5, -2.5];
        let mut y = Vec::new();
        let mut level = 10.0;
        for t in 0..200 {
            level += 0.05 * e[t];
            y.push(level + season[t % 4]);
        }
        let fit = auto_arima(&y, 4).unwrap_or_else(|| panic!("no fit"));
        assert_eq!(fit.seasonal_order[1], 1, "{fit:?}");
        let f = fit.forecast(&y, 8);
        for (h, v) in f.iter().enumerate() {
            let truth = level + season[(200 + h) % 4];
            assert!((v - truth).abs() < 0.5, "h={h}: {v} vs {truth}");
        }
    }

    #[test]
    fn kpss_separates_noise_from_a_random_walk() {
        let e = noise(300, 5);
        let walk: Vec<f64> = e
            .iter()
            .scan(0.0, |s, v| {
                *s += v;
                Some(*s)
            })
            .collect();
        assert!(kpss(&e) < KPSS_CRITICAL, "{}", kpss(&e));
        assert!(kpss(&walk) > KPSS_CRITICAL, "{}", kpss(&walk));
    }

    #[test]
    fn gaps_are_interpolated() {
        let y = [f64::NAN, 1.0, f64::NAN, 3.0, 4.0, f64::NAN];
        assert_eq!(prepare(&y), Some(vec![1.0, 2.0, 3.0, 4.0, 4.0]));
    }
}
