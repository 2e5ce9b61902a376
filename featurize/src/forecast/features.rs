//! Lag and rolling-window features of one point of a series, computed from the values strictly
//! before it. Every feature (and the model's target) is measured from an *anchor*, the mean of
//! the last `anchor` observed values, so one global model serves series of any level and trend.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagSpec {
    pub lags: Vec<usize>,
    pub windows: Vec<usize>,
    pub anchor: usize,
    /// Anchor on the value one season back (`anchor` points) instead of the mean of the last
    /// season: the model then learns year-over-year change, and for every step within one
    /// season the anchor is an observation, never a fed-back forecast, so a trend carries on
    /// where a mean-anchored recursive model drifts back to the panel's average growth.
    #[serde(default)]
    pub seasonal_anchor: bool,
}

impl LagSpec {
    /// Lags 1..=max(m, 3) (at most 24), the season `m` and `2m`, plus `extra` lags (e.g. a
    /// year back for daily data); windows of `m` and `3m` points; anchored on the last season.
    pub fn new(seasonality: usize, extra: &[usize]) -> LagSpec {
        let m = seasonality.max(1);
        let mut lags: Vec<usize> = (1..=m.clamp(3, 24)).collect();
        lags.extend([m, m + 1, 2 * m].into_iter().filter(|l| *l > 1));
        lags.extend_from_slice(extra);
        lags.sort_unstable();
        lags.dedup();
        let mut windows = vec![m.max(3), (3 * m).max(6)];
        windows.dedup();
        LagSpec { lags, windows, anchor: m, seasonal_anchor: false }
    }

    pub fn names(&self) -> Vec<String> {
        let mut names = vec!["level".to_string()];
        names.extend(self.lags.iter().map(|l| format!("lag_{l}")));
        for w in &self.windows {
            names.push(format!("rolling_mean_{w}"));
            names.push(format!("rolling_std_{w}"));
        }
        names
    }

    /// The anchor of the next point after `past`: with `seasonal_anchor`, the value `anchor`
    /// points back when it is observed; else the mean of the observed values among the last
    /// `anchor` points, else the last observed value within `4 × anchor` points.
    pub fn anchor_of(&self, past: &[f64]) -> Option<f64> {
        if self.seasonal_anchor && self.anchor > 1 && past.len() >= self.anchor {
            let v = past[past.len() - self.anchor];
            if v.is_finite() {
                return Some(v);
            }
        }
        let recent = &past[past.len().saturating_sub(self.anchor)..];
        let (sum, n) =
            recent.iter().filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        if n > 0 {
            return Some(sum / n as f64);
        }
        past[past.len().saturating_sub(4 * self.anchor)..].iter().rev().find(|v| v.is_finite()).copied()
    }

    /// Features of the point right after `past` (the values strictly before it), appended to
    /// `out` in [`LagSpec::names`] order. Returns the anchor, or `None` (and appends nothing)
    /// when the past holds no recent observation.
    pub fn row(&self, past: &[f64], out: &mut Vec<f32>) -> Option<f64> {
        let anchor = self.anchor_of(past)?;
        out.push(anchor as f32);
        let n = past.len();
        for &l in &self.lags {
            let v = if l <= n { past[n - l] - anchor } else { f64::NAN };
            out.push(v as f32);
        }
        for &w in &self.windows {
            let slice = &past[n.saturating_sub(w)..];
            let (mut s, mut s2, mut k) = (0.0, 0.0, 0usize);
            for v in slice.iter().filter(|v| v.is_finite()) {
                s += v;
                s2 += v * v;
                k += 1;
            }
            if k == 0 {
                out.extend([f32::NAN, f32::NAN]);
            } else {
                let mean = s / k as f64;
                out.push((mean - anchor) as f32);
                out.push((s2 / k as f64 - mean * mean).max(0.0).sqrt() as f32);
            }
        }
        Some(anchor)
    }

    /// Features of point `t` of `values`: only `values[..t]` is read.
    pub fn features_at(&self, values: &[f64], t: usize, out: &mut Vec<f32>) -> Option<f64> {
        self.row(&values[..t.min(values.len())], out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No look-ahead: changing any value at or after `t` must leave the features of `t`
    /// unchanged. A feature that peeks at the point itself or later fails here.
    #[test]
    fn features_never_read_the_present_or_future() {
        let mean_anchored = LagSpec::new(7, &[14]);
        let seasonal = LagSpec { seasonal_anchor: true, ..mean_anchored.clone() };
        let values: Vec<f64> = (0..60).map(|i| (i as f64 * 0.7).sin() * 10.0 + i as f64).collect();
        for (spec, t) in
            [&mean_anchored, &seasonal].into_iter().flat_map(|s| (1..values.len()).map(move |t| (s, t)))
        {
            let mut a = Vec::new();
            let anchor_a = spec.features_at(&values, t, &mut a);
            let mut future_changed = values.clone();
            for v in &mut future_changed[t..] {
                *v = *v * 3.0 + 100.0;
            }
            let mut b = Vec::new();
            let anchor_b = spec.features_at(&future_changed, t, &mut b);
            assert_eq!(anchor_a, anchor_b, "anchor at {t}");
            let same = a.iter().zip(&b).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()));
            assert!(same && a.len() == b.len(), "features at {t} changed with the future");
        }
    }

    #[test]
    fn lag_values_are_relative_to_the_anchor() {
        let spec = LagSpec { lags: vec![1, 2], windows: vec![2], anchor: 2, seasonal_anchor: false };
        let mut out = Vec::new();
        let anchor = spec.row(&[1.0, 3.0, 5.0], &mut out);
        assert_eq!(anchor, Some(4.0));
        assert_eq!(out, vec![4.0, 1.0, -1.0, 0.0, 1.0]);
        assert_eq!(spec.names().len(), out.len());
        // Missing values stay missing; an all-missing past has no anchor.
        let mut out = Vec::new();
        assert_eq!(spec.row(&[f64::NAN, f64::NAN], &mut out), None);
        assert!(out.is_empty());
    }

    #[test]
    fn a_seasonal_anchor_is_the_value_one_season_back_else_the_mean() {
        let spec = LagSpec { lags: vec![1], windows: vec![3], anchor: 3, seasonal_anchor: true };
        assert_eq!(spec.anchor_of(&[1.0, 2.0, 4.0, 8.0]), Some(2.0));
        // Missing a season back: the mean of the last season's observations.
        assert_eq!(spec.anchor_of(&[1.0, f64::NAN, 4.0, 8.0]), Some(6.0));
        // Shorter than a season: the mean too.
        assert_eq!(spec.anchor_of(&[4.0, 8.0]), Some(6.0));
    }
}
