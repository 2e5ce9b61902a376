//! High-cardinality categoricals: more levels than native categorical codes can hold.
//!
//! Such a column keeps codes for its most frequent levels and adds two encodings of every
//! level: its **frequency** in the training rows (label-free, fitted once on all training
//! rows) and its smoothed **target mean** (one feature per output: the positive-class share for
//! binary, the mean for regression, one share per class for multiclass).
//!
//! The target mean looks at the label, so it must never see the rows it encodes. The fitted
//! [`LevelEncoding`] (every training row) is what predict time uses; training rows get
//! *cross-fitted* values instead, each from the other inner folds ([`TargetEncodings`]), and
//! a validation fold's rows get the encoding fitted on that fold's training rows only
//! ([`TargetEncodings::apply_fold`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{FeaturizeError, Result};
use crate::featurizer::{ColumnTransform, Featurizer};
use crate::matrix::{FeatureColumn, FeatureKind, FeatureMatrix, Target};
use crate::table::{RawValues, Table};

/// Weight of the prior, in rows: a level seen `n` times encodes as
/// `(sum + SMOOTHING · prior) / (n + SMOOTHING)`, so a rare level stays near the prior.
pub const TARGET_SMOOTHING: f64 = 10.0;
/// Inner folds for the out-of-fold (cross-fitted) encodings of training rows.
pub const CROSS_FIT_FOLDS: u64 = 5;
/// Fixed seed of the inner-fold assignment: encodings depend on the data only.
const CROSS_FIT_SEED: u64 = 0x5155_4152_5259_5445;

const MISSING: u32 = u32::MAX;

/// The fitted state of one high-cardinality column. Each part is a plain level → value lookup
/// with a default for unseen levels (what ONNX's `LabelEncoder` holds); a missing cell gives
/// `NaN` in every feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelEncoding {
    /// Every level seen in training, most frequent first (ties by name).
    pub levels: Vec<String>,
    /// `levels[..n_codes]` keep their own categorical code `0..n_codes`; every other level
    /// (and an unseen one) gets code `n_codes` ("other").
    pub n_codes: usize,
    /// Share of training rows holding each level; an unseen level gets 0.
    pub frequency: Vec<f32>,
    /// Per output `k`: the smoothed target mean of `levels[i]` is `target[k][i]`. Empty until
    /// [`Featurizer::fit_target`] has seen the labels.
    #[serde(default)]
    pub target: Vec<Vec<f32>>,
    /// Per output: the training mean, which an unseen level gets.
    #[serde(default)]
    pub prior: Vec<f32>,
}

impl LevelEncoding {
    /// Counts levels (label-free). Levels seen fewer than `min_count` times, or past the
    /// `max_codes` most frequent, share the "other" code; when there are more than `max_codes`
    /// levels, a level needs `high_min_count` rows for a code.
    pub(crate) fn fit(
        values: &RawValues,
        max_codes: usize,
        min_count: usize,
        high_min_count: usize,
    ) -> LevelEncoding {
        let n = values.len();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for i in 0..n {
            if let Some(s) = values.text(i) {
                *counts.entry(s.into_owned()).or_insert(0) += 1;
            }
        }
        let mut levels: Vec<(String, usize)> = counts.into_iter().collect();
        levels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let min_count = if levels.len() > max_codes { high_min_count } else { min_count };
        let n_codes = levels.iter().take_while(|(_, c)| *c >= min_count).count().min(max_codes);
        let frequency = levels.iter().map(|(_, c)| (*c as f64 / n.max(1) as f64) as f32).collect();
        LevelEncoding {
            levels: levels.into_iter().map(|(l, _)| l).collect(),
            n_codes,
            frequency,
            target: Vec::new(),
            prior: Vec::new(),
        }
    }

    /// Per row: the index into `levels`, `levels.len()` for an unseen level, [`MISSING`].
    fn ids(&self, values: &RawValues, n: usize) -> Vec<u32> {
        let index: HashMap<&str, u32> =
            self.levels.iter().enumerate().map(|(k, l)| (l.as_str(), k as u32)).collect();
        let unseen = self.levels.len() as u32;
        (0..n)
            .map(|i| match values.text(i) {
                None => MISSING,
                Some(s) => index.get(s.as_ref()).copied().unwrap_or(unseen),
            })
            .collect()
    }

    /// The column's features: codes (when any level keeps one), frequency, target means.
    pub(crate) fn features(&self, name: &str, values: &RawValues, n: usize, out: &mut Vec<FeatureColumn>) {
        let ids = self.ids(values, n);
        let column = |fname: String, kind, values| FeatureColumn {
            name: fname,
            source: name.to_string(),
            kind,
            values,
        };
        let lookup = |table: &[f32], default: f32| -> Vec<f32> {
            ids.iter()
                .map(|&id| match id {
                    MISSING => f32::NAN,
                    id => table.get(id as usize).copied().unwrap_or(default),
                })
                .collect()
        };
        if self.n_codes > 0 {
            let other = self.n_codes as u32;
            let codes =
                ids.iter().map(|&id| if id == MISSING { f32::NAN } else { id.min(other) as f32 }).collect();
            out.push(column(name.to_string(), FeatureKind::Categorical { n_levels: other + 1 }, codes));
        }
        out.push(column(frequency_feature(name), FeatureKind::Numeric, lookup(&self.frequency, 0.0)));
        let names = target_features(name, self.target.len());
        for ((fname, table), &prior) in names.into_iter().zip(&self.target).zip(&self.prior) {
            out.push(column(fname, FeatureKind::Numeric, lookup(table, prior)));
        }
    }
}

pub(crate) fn frequency_feature(column: &str) -> String {
    format!("{column}__freq")
}

/// `{column}__target` for one output, `{column}__target_{k}` (class code `k`) for several.
pub(crate) fn target_features(column: &str, width: usize) -> Vec<String> {
    match width {
        1 => vec![format!("{column}__target")],
        w => (0..w).map(|k| format!("{column}__target_{k}")).collect(),
    }
}

/// What a level's target mean averages, per row.
enum Outputs<'a> {
    /// Binary: the share of class code 1.
    Positive(&'a [u32]),
    /// Multiclass: the share of each class.
    PerClass(&'a [u32], usize),
    /// Regression: the mean value.
    Mean(&'a [f64]),
}

impl<'a> Outputs<'a> {
    fn of(y: &'a Target) -> Outputs<'a> {
        match y {
            Target::Classes { classes, codes } if classes.len() <= 2 => Outputs::Positive(codes),
            Target::Classes { classes, codes } => Outputs::PerClass(codes, classes.len()),
            Target::Values(v) => Outputs::Mean(v),
        }
    }

    fn width(&self) -> usize {
        match self {
            Outputs::PerClass(_, k) => *k,
            _ => 1,
        }
    }

    fn add(&self, row: usize, acc: &mut [f64]) {
        match self {
            Outputs::Positive(codes) => acc[0] += f64::from(u8::from(codes[row] == 1)),
            Outputs::PerClass(codes, _) => {
                if let Some(slot) = acc.get_mut(codes[row] as usize) {
                    *slot += 1.0;
                }
            }
            Outputs::Mean(v) => acc[0] += v[row],
        }
    }
}

/// Per-level row counts and output sums over some rows; `sum[level * width + k]`.
struct Sums {
    width: usize,
    count: Vec<f64>,
    sum: Vec<f64>,
    total_count: f64,
    total_sum: Vec<f64>,
}

impl Sums {
    fn new(n_levels: usize, width: usize) -> Sums {
        Sums {
            width,
            count: vec![0.0; n_levels],
            sum: vec![0.0; n_levels * width],
            total_count: 0.0,
            total_sum: vec![0.0; width],
        }
    }

    fn clear(&mut self) {
        self.count.fill(0.0);
        self.sum.fill(0.0);
        self.total_count = 0.0;
        self.total_sum.fill(0.0);
    }

    /// Rows with a missing level count towards the prior only.
    fn add(&mut self, ids: &[u32], y: &Outputs<'_>, rows: impl Iterator<Item = usize>) {
        let w = self.width;
        for r in rows {
            self.total_count += 1.0;
            y.add(r, &mut self.total_sum);
            let id = ids[r];
            if let Some(c) = self.count.get_mut(id as usize) {
                *c += 1.0;
                y.add(r, &mut self.sum[id as usize * w..(id as usize + 1) * w]);
            }
        }
    }

    /// The smoothed mean of output `k` for `id`, from these sums minus `minus` (the rows
    /// being encoded, for out-of-fold values). `NaN` for a missing level.
    fn encode(&self, minus: Option<&Sums>, id: u32, k: usize, fallback_prior: f64) -> f32 {
        if id == MISSING {
            return f32::NAN;
        }
        let sub = |a: f64, f: &dyn Fn(&Sums) -> f64| a - minus.map_or(0.0, f);
        let total = sub(self.total_count, &|m| m.total_count);
        let prior =
            if total > 0.0 { sub(self.total_sum[k], &|m| m.total_sum[k]) / total } else { fallback_prior };
        let i = id as usize;
        let (count, sum) = match self.count.get(i) {
            Some(&c) => {
                (sub(c, &|m| m.count[i]), sub(self.sum[i * self.width + k], &|m| m.sum[i * self.width + k]))
            }
            None => (0.0, 0.0),
        };
        ((sum + TARGET_SMOOTHING * prior) / (count + TARGET_SMOOTHING)) as f32
    }

    fn prior(&self, k: usize) -> f64 {
        if self.total_count > 0.0 { self.total_sum[k] / self.total_count } else { 0.0 }
    }
}

/// The inner fold of a training row, from a hash of its index: stable for a row whatever
/// subset of rows is being cross-fitted.
fn inner_fold(row: usize) -> u64 {
    let mut z = (row as u64) ^ CROSS_FIT_SEED;
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % CROSS_FIT_FOLDS
}

/// One target-encoded column of the training rows.
#[derive(Debug, Clone)]
struct EncodedColumn {
    /// Feature names, one per output.
    features: Vec<String>,
    n_levels: usize,
    /// Level index per training row ([`MISSING`] for a missing cell).
    ids: Vec<u32>,
}

impl EncodedColumn {
    /// Out-of-fold values for `rows`, per output: each row's value comes from the rows of
    /// `rows` in other inner folds.
    fn cross_fit(&self, y: &Outputs<'_>, rows: &[usize]) -> Vec<Vec<f32>> {
        let width = y.width();
        let mut all = Sums::new(self.n_levels, width);
        all.add(&self.ids, y, rows.iter().copied());
        let prior: Vec<f64> = (0..width).map(|k| all.prior(k)).collect();
        let mut out = vec![vec![0.0f32; rows.len()]; width];
        let fold_of: Vec<u64> = rows.iter().map(|&r| inner_fold(r)).collect();
        let mut held = Sums::new(self.n_levels, width);
        for f in 0..CROSS_FIT_FOLDS {
            held.clear();
            held.add(&self.ids, y, rows.iter().zip(&fold_of).filter(|(_, g)| **g == f).map(|(r, _)| *r));
            for (j, &r) in rows.iter().enumerate().filter(|(j, _)| fold_of[*j] == f) {
                for (k, col) in out.iter_mut().enumerate() {
                    col[j] = all.encode(Some(&held), self.ids[r], k, prior[k]);
                }
            }
        }
        out
    }

    /// Values for `apply` rows from the encoding fitted on `fit` rows, per output.
    fn fit_apply(&self, y: &Outputs<'_>, fit: &[usize], apply: &[usize]) -> Vec<Vec<f32>> {
        let width = y.width();
        let mut sums = Sums::new(self.n_levels, width);
        sums.add(&self.ids, y, fit.iter().copied());
        (0..width)
            .map(|k| {
                let prior = sums.prior(k);
                apply.iter().map(|&r| sums.encode(None, self.ids[r], k, prior)).collect()
            })
            .collect()
    }
}

/// The level of every training row in every target-encoded column, so that target encodings
/// can be refitted on any subset of the training rows (a validation fold's) without the raw
/// table. Made by [`Featurizer::fit_target`].
#[derive(Debug, Clone, Default)]
pub struct TargetEncodings {
    columns: Vec<EncodedColumn>,
}

impl TargetEncodings {
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The features whose values depend on which rows the encoding was fitted on.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().flat_map(|c| c.features.iter().map(String::as_str))
    }

    /// Replaces the target features of `x` (every training row, as transformed by the fitted
    /// featurizer) by cross-fitted values: no row's value has seen its own label. This is the
    /// matrix a final model trains on.
    pub fn cross_fit_into(&self, x: &mut FeatureMatrix, y: &Target) {
        let rows: Vec<usize> = (0..x.n_rows.min(y.len())).collect();
        let outputs = Outputs::of(y);
        for c in &self.columns {
            replace(x, &c.features, c.cross_fit(&outputs, &rows));
        }
    }

    /// The target features of one validation fold: `x_train` (the fold's `train` rows, in that
    /// order) gets values cross-fitted within `train`, and `x_valid` (the `valid` rows) gets the
    /// encoding fitted on all of `train`. No value depends on a validation row's label.
    pub fn apply_fold(
        &self,
        y: &Target,
        train: &[usize],
        valid: &[usize],
        x_train: &mut FeatureMatrix,
        x_valid: &mut FeatureMatrix,
    ) {
        let outputs = Outputs::of(y);
        for c in &self.columns {
            replace(x_train, &c.features, c.cross_fit(&outputs, train));
            replace(x_valid, &c.features, c.fit_apply(&outputs, train, valid));
        }
    }
}

fn replace(x: &mut FeatureMatrix, names: &[String], values: Vec<Vec<f32>>) {
    for (name, v) in names.iter().zip(values) {
        if let Some(col) = x.columns.iter_mut().find(|c| &c.name == name)
            && col.values.len() == v.len()
        {
            col.values = v;
        }
    }
}

impl Featurizer {
    /// Fits the target means of every high-cardinality column on all rows of `table` — the
    /// training rows, aligned with `y` — which is what predict time uses. Returns the rows'
    /// levels, for the out-of-fold values that training must use instead
    /// ([`TargetEncodings::cross_fit_into`], [`TargetEncodings::apply_fold`]).
    pub fn fit_target(&mut self, table: &Table, y: &Target) -> Result<TargetEncodings> {
        let n = table.n_rows;
        if y.len() != n {
            return Err(FeaturizeError::ColumnLength {
                column: "target".to_string(),
                len: y.len(),
                n_rows: n,
            });
        }
        let outputs = Outputs::of(y);
        let width = outputs.width();
        let all_rows: Vec<usize> = (0..n).collect();
        let mut columns = Vec::new();
        for col in &mut self.columns {
            let ColumnTransform::HighCardinality(enc) = &mut col.transform else { continue };
            let raw = table
                .column(&col.name)
                .ok_or_else(|| FeaturizeError::MissingFeature { name: col.name.clone() })?;
            if raw.values.len() != n {
                return Err(FeaturizeError::ColumnLength {
                    column: col.name.clone(),
                    len: raw.values.len(),
                    n_rows: n,
                });
            }
            let encoded = EncodedColumn {
                features: target_features(&col.name, width),
                n_levels: enc.levels.len(),
                ids: enc.ids(&raw.values, n),
            };
            let mut sums = Sums::new(encoded.n_levels, width);
            sums.add(&encoded.ids, &outputs, all_rows.iter().copied());
            enc.prior = (0..width).map(|k| sums.prior(k) as f32).collect();
            enc.target = (0..width)
                .map(|k| {
                    let prior = sums.prior(k);
                    (0..encoded.n_levels as u32).map(|id| sums.encode(None, id, k, prior)).collect()
                })
                .collect();
            columns.push(encoded);
        }
        Ok(TargetEncodings { columns })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::table::{RawColumn, StrColumn};

    /// `n` rows of 300 levels: row `i` has level `L{i % 300}`, and one row has no level.
    fn shops(n: usize) -> Table {
        let mut c = StrColumn::new();
        for i in 0..n {
            c.push((i != 1).then(|| format!("L{}", i % 300)).as_deref());
        }
        Table { n_rows: n, columns: vec![RawColumn { name: "shop".into(), values: RawValues::Text(c) }] }
    }

    fn level(f: &Featurizer) -> &LevelEncoding {
        match &f.columns[0].transform {
            ColumnTransform::HighCardinality(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn smoothed_means_and_frequencies_for_binary_targets() {
        let t = shops(900);
        let mut f = Featurizer::fit(&t, &[]).unwrap();
        // Each level is seen 3 times (L1 twice: row 1 is missing): too rare for a code.
        assert_eq!((level(&f).levels.len(), level(&f).n_codes), (300, 0));
        let codes: Vec<u32> = (0..900).map(|i| u32::from(i % 600 == 0)).collect();
        let y = Target::Classes { classes: vec!["a".into(), "b".into()], codes };
        let enc = f.fit_target(&t, &y).unwrap();
        let e = level(&f);
        let prior = 2.0 / 900.0;
        assert!((e.prior[0] as f64 - prior).abs() < 1e-7);
        // L0 holds rows 0, 300, 600: labels 1, 0, 1.
        let l0 = e.levels.iter().position(|l| l == "L0").unwrap();
        let want = (2.0 + TARGET_SMOOTHING * prior) / (3.0 + TARGET_SMOOTHING);
        assert!((e.target[0][l0] as f64 - want).abs() < 1e-6);
        assert!((e.frequency[l0] - 3.0 / 900.0).abs() < 1e-7);

        let m = f.transform(&t).unwrap();
        let names: Vec<&str> = m.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["shop__freq", "shop__target"]);
        assert!(m.columns.iter().all(|c| c.values[1].is_nan()), "a missing level is NaN everywhere");
        // Cross-fitted: a row's own label never counts, so row 0 sees L0's other two rows at most.
        let mut x = m.clone();
        enc.cross_fit_into(&mut x, &y);
        let v = x.columns[1].values[0] as f64;
        assert!(v < e.target[0][l0] as f64, "row 0's own positive label leaked: {v}");
    }

    #[test]
    fn regression_and_multiclass_outputs() {
        let t = shops(600);
        let mut f = Featurizer::fit(&t, &[]).unwrap();
        let y = Target::Values((0..600).map(|i| i as f64).collect());
        let enc = f.fit_target(&t, &y).unwrap();
        assert_eq!(enc.feature_names().collect::<Vec<_>>(), ["shop__target"]);
        let e = level(&f);
        // L5: rows 5 and 305 → (310 + 10·prior) / 12.
        let l5 = e.levels.iter().position(|l| l == "L5").unwrap();
        let prior = e.prior[0] as f64;
        assert!((e.target[0][l5] as f64 - (310.0 + TARGET_SMOOTHING * prior) / 12.0).abs() < 1e-3);

        let mut f = Featurizer::fit(&t, &[]).unwrap();
        let classes = vec!["a".into(), "b".into(), "c".into()];
        let y = Target::Classes { classes, codes: (0..600).map(|i| (i % 3) as u32).collect() };
        let enc = f.fit_target(&t, &y).unwrap();
        assert_eq!(
            enc.feature_names().collect::<Vec<_>>(),
            ["shop__target_0", "shop__target_1", "shop__target_2"]
        );
        let m = f.transform(&t).unwrap();
        // Per-class shares of one level sum to 1.
        let sum: f32 = (0..3).map(|k| m.columns[1 + k].values[7]).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
    }

    #[test]
    fn a_target_of_the_wrong_length_is_an_error() {
        let t = shops(400);
        let mut f = Featurizer::fit(&t, &[]).unwrap();
        let e = f.fit_target(&t, &Target::Values(vec![1.0; 3])).unwrap_err().to_string();
        assert!(e.contains("3 values") && e.contains("400 rows"), "{e}");
    }
}
