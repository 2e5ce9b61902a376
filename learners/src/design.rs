//! The dense design matrix shared by the models that need real-valued inputs (linear, kNN,
//! naive Bayes, SVM, MLP): numerics median-imputed and standardised, small categoricals one-hot
//! encoded, large ones frequency-encoded. Fitted on training rows, stored in the model, applied
//! unchanged.
//!
//! A missing number is imputed with the median of the training rows that share the row's level
//! of the categorical column that best explains that number, when one does (`GroupMedians`),
//! else with the global median. A global median describes an average row; for a row with most
//! values missing that average is what these models then predict from, confidently (a Gentoo
//! penguin from Biscoe with no measurements became an average, Adelie-looking penguin).

use ndarray::Array2;
use quarry_featurize::{FeatureKind, FeatureMatrix, Predictions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Categoricals with at most this many levels are one-hot encoded; larger ones are
/// frequency-encoded, since one-hot of 254 levels on 300k rows would not fit a dense matrix.
pub(crate) const MAX_ONE_HOT: u32 = 32;

/// How one feature column becomes design-matrix columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub(crate) enum ColumnPrep {
    /// Median-imputed, then standardised.
    Scaled {
        median: f64,
        mean: f64,
        std: f64,
        /// Where present, missing values take their group's median instead of `median`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<GroupMedians>,
    },
    OneHot {
        n_levels: u32,
    },
    /// The level's share of training rows, standardised.
    Frequency {
        freq: Vec<f64>,
        mean: f64,
        std: f64,
    },
}

/// Medians of a numeric column per level of the one-hot categorical column `column`; rows whose
/// level is missing, or whose level had fewer than `MIN_GROUP_ROWS` known values, use the global
/// median (stored in `medians` already, so lookup needs no fallback but the missing level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupMedians {
    pub(crate) column: usize,
    pub(crate) medians: Vec<f64>,
}

impl GroupMedians {
    fn impute(&self, x: &FeatureMatrix, row: usize, median: f64) -> f64 {
        let level = x.columns.get(self.column).map_or(f32::NAN, |c| c.values[row]);
        if level.is_nan() { median } else { self.medians.get(level as usize).copied().unwrap_or(median) }
    }
}

/// Value `v` of row `row` of a `Scaled` column, missing values imputed.
fn filled(v: f32, by: Option<&GroupMedians>, x: &FeatureMatrix, row: usize, median: f64) -> f64 {
    match by {
        _ if v.is_finite() => f64::from(v),
        Some(g) => g.impute(x, row, median),
        None => median,
    }
}

/// A group median needs this many known values; fewer would be noise.
const MIN_GROUP_ROWS: usize = 10;
/// The share of a numeric column's variance a categorical must explain (η², the correlation
/// ratio) before its groups' medians replace the global one.
const MIN_ETA_SQUARED: f64 = 0.1;

/// The one-hot categorical whose levels explain most of `col`'s variance, if any explains
/// `MIN_ETA_SQUARED`, with the medians of `col` per level of it.
fn group_medians(x: &FeatureMatrix, col: &[f32], median: f64) -> Option<GroupMedians> {
    let mut best: Option<(f64, usize)> = None;
    for (k, c) in x.columns.iter().enumerate() {
        let FeatureKind::Categorical { n_levels } = c.kind else { continue };
        if !(2..=MAX_ONE_HOT).contains(&n_levels) {
            continue;
        }
        let n = n_levels as usize;
        let (mut cnt, mut sum) = (vec![0.0f64; n], vec![0.0f64; n]);
        let (mut all_n, mut all_sum, mut all_sq) = (0.0f64, 0.0f64, 0.0f64);
        for (&v, &l) in col.iter().zip(&c.values) {
            if !v.is_finite() || l.is_nan() || l as usize >= n {
                continue;
            }
            let v = f64::from(v);
            cnt[l as usize] += 1.0;
            sum[l as usize] += v;
            all_n += 1.0;
            all_sum += v;
            all_sq += v * v;
        }
        let total = all_sq - all_sum * all_sum / all_n.max(1.0);
        if all_n < MIN_GROUP_ROWS as f64 || total <= 1e-12 * all_sq.abs().max(1e-300) {
            continue;
        }
        let between: f64 =
            cnt.iter().zip(&sum).filter(|(n, _)| **n > 0.0).map(|(n, s)| s * s / n).sum::<f64>()
                - all_sum * all_sum / all_n;
        let eta2 = between / total;
        if eta2 >= MIN_ETA_SQUARED && best.is_none_or(|(b, _)| eta2 > b) {
            best = Some((eta2, k));
        }
    }
    let (_, column) = best?;
    let levels = &x.columns[column].values;
    let n = match x.columns[column].kind {
        FeatureKind::Categorical { n_levels } => n_levels as usize,
        FeatureKind::Numeric => return None,
    };
    let mut groups: Vec<Vec<f64>> = vec![Vec::new(); n];
    for (&v, &l) in col.iter().zip(levels) {
        if v.is_finite() && !l.is_nan() && (l as usize) < n {
            groups[l as usize].push(f64::from(v));
        }
    }
    let medians = groups
        .into_iter()
        .map(|mut g| {
            if g.len() < MIN_GROUP_ROWS {
                return median;
            }
            g.sort_by(f64::total_cmp);
            g[g.len() / 2]
        })
        .collect();
    Some(GroupMedians { column, medians })
}

pub(crate) fn fit_prep(x: &FeatureMatrix) -> Vec<ColumnPrep> {
    x.columns
        .iter()
        .map(|c| match c.kind {
            FeatureKind::Categorical { n_levels } if n_levels <= MAX_ONE_HOT => {
                ColumnPrep::OneHot { n_levels }
            }
            FeatureKind::Categorical { n_levels } => {
                let mut freq = vec![0.0; n_levels as usize];
                for v in c.values.iter().filter(|v| !v.is_nan()) {
                    if let Some(f) = freq.get_mut(*v as usize) {
                        *f += 1.0;
                    }
                }
                freq.iter_mut().for_each(|f| *f /= x.n_rows.max(1) as f64);
                let encoded: Vec<f64> = c.values.iter().map(|v| lookup(&freq, *v)).collect();
                let (mean, std) = mean_std(&encoded);
                ColumnPrep::Frequency { freq, mean, std }
            }
            FeatureKind::Numeric => {
                let mut present: Vec<f64> =
                    c.values.iter().filter(|v| v.is_finite()).map(|&v| f64::from(v)).collect();
                present.sort_by(f64::total_cmp);
                let median = if present.is_empty() { 0.0 } else { present[present.len() / 2] };
                let by = group_medians(x, &c.values, median);
                let imputed: Vec<f64> =
                    c.values.iter().enumerate().map(|(i, &v)| filled(v, by.as_ref(), x, i, median)).collect();
                let (mean, std) = mean_std(&imputed);
                ColumnPrep::Scaled { median, mean, std, by }
            }
        })
        .collect()
}

fn lookup(freq: &[f64], v: f32) -> f64 {
    if v.is_nan() { 0.0 } else { freq.get(v as usize).copied().unwrap_or(0.0) }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    // A constant column scales by 1 so it stays finite (and is then just a zero column).
    (mean, if var > 1e-24 { var.sqrt() } else { 1.0 })
}

/// Columns of the design matrix `prep` builds.
pub(crate) fn design_width(prep: &[ColumnPrep]) -> usize {
    prep.iter()
        .map(|p| match p {
            ColumnPrep::OneHot { n_levels } => *n_levels as usize,
            _ => 1,
        })
        .sum()
}

pub(crate) fn design(prep: &[ColumnPrep], x: &FeatureMatrix) -> Array2<f64> {
    let width = design_width(prep);
    let mut out = Array2::<f64>::zeros((x.n_rows, width));
    let mut j = 0;
    for (p, c) in prep.iter().zip(&x.columns) {
        match p {
            ColumnPrep::Scaled { median, mean, std, by } => {
                for (i, &v) in c.values.iter().enumerate() {
                    out[[i, j]] = (filled(v, by.as_ref(), x, i, *median) - mean) / std;
                }
                j += 1;
            }
            ColumnPrep::Frequency { freq, mean, std } => {
                for (i, &v) in c.values.iter().enumerate() {
                    out[[i, j]] = (lookup(freq, v) - mean) / std;
                }
                j += 1;
            }
            ColumnPrep::OneHot { n_levels } => {
                for (i, &v) in c.values.iter().enumerate() {
                    if !v.is_nan() && (v as u32) < *n_levels {
                        out[[i, j + v as usize]] = 1.0;
                    }
                }
                j += *n_levels as usize;
            }
        }
    }
    out
}

/// Predictions for `n_rows` rows, filled in parallel: `fill(state, row, out)` writes the row's
/// one value (`n_classes == 0`, regression) or its probability per class into `out`. `init`
/// makes per-thread scratch state.
pub(crate) fn predict_rows<S>(
    n_rows: usize,
    n_classes: usize,
    init: impl Fn() -> S + Sync + Send,
    fill: impl Fn(&mut S, usize, &mut [f64]) + Sync + Send,
) -> Predictions {
    let n_out = n_classes.max(1);
    let mut out = vec![0.0; n_rows * n_out];
    out.par_chunks_mut(n_out).enumerate().for_each_init(init, |state, (i, row_out)| fill(state, i, row_out));
    if n_classes == 0 {
        Predictions::Values(out)
    } else {
        Predictions::Probabilities { n_classes, values: out }
    }
}

#[cfg(test)]
mod tests {
    use quarry_featurize::FeatureColumn;

    use super::*;

    fn column(name: &str, kind: FeatureKind, values: Vec<f32>) -> FeatureColumn {
        FeatureColumn { name: name.into(), source: name.into(), kind, values }
    }

    /// 40 rows: island 0 holds small values (≈ 1), island 1 large ones (≈ 10), and an unrelated
    /// categorical whose levels alternate; rows 0 (island 0) and 39 (island 1) miss the number.
    fn islands() -> FeatureMatrix {
        let n = 40;
        let island: Vec<f32> = (0..n).map(|i| if i < 15 { 0.0 } else { 1.0 }).collect();
        let noise: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let mut size: Vec<f32> =
            (0..n).map(|i| if i < 15 { 1.0 + (i % 3) as f32 } else { 10.0 + (i % 5) as f32 }).collect();
        size[n - 1] = f32::NAN;
        size[0] = f32::NAN;
        FeatureMatrix {
            n_rows: n,
            columns: vec![
                column("noise", FeatureKind::Categorical { n_levels: 2 }, noise),
                column("island", FeatureKind::Categorical { n_levels: 2 }, island),
                column("size", FeatureKind::Numeric, size),
            ],
        }
    }

    #[test]
    fn missing_numbers_take_the_median_of_their_group() {
        let x = islands();
        let prep = fit_prep(&x);
        let ColumnPrep::Scaled { median, mean, std, by: Some(by) } = &prep[2] else {
            panic!("size should be imputed by group: {:?}", prep[2]);
        };
        assert_eq!(by.column, 1, "island explains size, the alternating column does not");
        // Island 0's known values are 2,3,1,2,3,1,... (14 rows: rows 1..15), island 1's 10..14.
        assert_eq!(by.medians, vec![2.0, 12.0]);
        assert_eq!(*median, 11.0);
        let d = design(&prep, &x);
        let unscale = |v: f64| v * std + mean;
        // Design columns: noise 0..2, island 2..4, size 4.
        assert!((unscale(d[[0, 4]]) - 2.0).abs() < 1e-9, "row 0 is on island 0");
        assert!((unscale(d[[39, 4]]) - 12.0).abs() < 1e-9, "row 39 is on island 1");

        // A missing island falls back to the global median.
        let mut y = x.clone();
        y.columns[1].values[0] = f32::NAN;
        assert!((unscale(design(&prep, &y)[[0, 4]]) - 11.0).abs() < 1e-9);
    }

    #[test]
    fn groups_that_explain_little_or_are_small_keep_the_global_median() {
        let mut x = islands();
        x.columns.remove(1);
        let prep = fit_prep(&x);
        assert!(matches!(&prep[1], ColumnPrep::Scaled { by: None, .. }), "{:?}", prep[1]);

        // With 8 rows on island 0 its group is too small to trust: it reads the global median.
        let mut x = islands();
        x.columns[1].values = (0..40).map(|i| if i < 8 { 0.0 } else { 1.0 }).collect();
        let ColumnPrep::Scaled { median, by: Some(by), .. } = &fit_prep(&x)[2] else {
            panic!("island still explains size");
        };
        assert_eq!(by.medians[0], *median);
    }

    #[test]
    fn old_models_without_groups_still_load() {
        let old = r#"{"type":"scaled","median":1.5,"mean":2.0,"std":3.0}"#;
        let p: ColumnPrep = serde_json::from_str(old).expect("a bundle-format-2 design column");
        assert_eq!(p, ColumnPrep::Scaled { median: 1.5, mean: 2.0, std: 3.0, by: None });
    }
}
