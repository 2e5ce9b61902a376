//! The fitted featurizer: raw columns in, [`FeatureMatrix`] out, identically at fit and predict time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::datetime::{civil_from_unix, parse_datetime};
use crate::error::{FeaturizeError, Result};
use crate::infer::{ColumnKind, ColumnProfile, parse_number, profile_column};
use crate::matrix::{FeatureColumn, FeatureKind, FeatureMatrix};
use crate::table::{RawValues, Table};

/// Most frequent levels kept per categorical column; the rest share one "other" code.
/// 254 leaves room for "other" and the missing bin in a `u8` histogram.
const MAX_LEVELS: usize = 254;
/// Levels seen fewer times than this in training are grouped as "other".
const MIN_LEVEL_COUNT: usize = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ColumnTransform {
    Numeric,
    Boolean,
    /// `levels[code]`; codes past the end mean "other" (rare in training, or unseen).
    Categorical {
        levels: Vec<String>,
        has_other: bool,
    },
    Datetime {
        with_time: bool,
    },
    Dropped {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedColumn {
    pub name: String,
    pub kind: ColumnKind,
    /// Training-data counts, kept for the run record and later comparisons.
    pub n_missing: usize,
    pub n_distinct: usize,
    pub transform: ColumnTransform,
}

/// Fitted on training rows only; applied unchanged to validation, test and predict-time rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Featurizer {
    pub columns: Vec<FittedColumn>,
}

const DATE_PARTS: [&str; 6] = ["year", "month", "day", "weekday", "day_of_year", "elapsed_days"];

impl Featurizer {
    /// Fits on every column of `table` except `exclude` (the target).
    pub fn fit(table: &Table, exclude: &[&str]) -> Result<Featurizer> {
        let mut columns = Vec::new();
        for raw in table.columns.iter().filter(|c| !exclude.contains(&c.name.as_str())) {
            let profile = profile_column(raw);
            let transform = fit_column(&raw.values, &profile);
            columns.push(FittedColumn {
                name: raw.name.clone(),
                kind: profile.kind,
                n_missing: profile.n_missing,
                n_distinct: profile.n_distinct,
                transform,
            });
        }
        let f = Featurizer { columns };
        if f.used_columns().next().is_none() {
            let reasons: Vec<String> = f
                .columns
                .iter()
                .filter_map(|c| match &c.transform {
                    ColumnTransform::Dropped { reason } => Some(format!("{} ({reason})", c.name)),
                    _ => None,
                })
                .collect();
            return Err(FeaturizeError::NoFeatures {
                reason: if reasons.is_empty() {
                    "the table has only the target column".to_string()
                } else {
                    format!("every column was dropped: {}", reasons.join(", "))
                },
            });
        }
        Ok(f)
    }

    /// The raw columns a table must have at predict time.
    pub fn used_columns(&self) -> impl Iterator<Item = &FittedColumn> {
        self.columns.iter().filter(|c| !matches!(c.transform, ColumnTransform::Dropped { .. }))
    }

    /// Turns `table` into features. Columns are matched by name, so order and extra columns
    /// do not matter; a used column that is absent is an error naming it.
    pub fn transform(&self, table: &Table) -> Result<FeatureMatrix> {
        let by_name: HashMap<&str, &RawValues> =
            table.columns.iter().map(|c| (c.name.as_str(), &c.values)).collect();
        let n = table.n_rows;
        let mut out = Vec::new();
        for col in self.used_columns() {
            let values = by_name
                .get(col.name.as_str())
                .ok_or_else(|| FeaturizeError::MissingFeature { name: col.name.clone() })?;
            let feature = |suffix: Option<&str>, kind, values| FeatureColumn {
                name: suffix.map_or_else(|| col.name.clone(), |s| format!("{}__{s}", col.name)),
                source: col.name.clone(),
                kind,
                values,
            };
            match &col.transform {
                ColumnTransform::Numeric => {
                    out.push(feature(None, FeatureKind::Numeric, numeric_values(values, n)));
                }
                ColumnTransform::Boolean => {
                    out.push(feature(None, FeatureKind::Numeric, bool_values(values, n)));
                }
                ColumnTransform::Categorical { levels, has_other } => {
                    let index: HashMap<&str, usize> =
                        levels.iter().enumerate().map(|(k, l)| (l.as_str(), k)).collect();
                    let other = if *has_other { levels.len() as f32 } else { f32::NAN };
                    let codes = (0..n)
                        .map(|i| match values.text(i) {
                            None => f32::NAN,
                            Some(s) => index.get(s.as_ref()).map_or(other, |&k| k as f32),
                        })
                        .collect();
                    let n_levels = (levels.len() + usize::from(*has_other)) as u32;
                    out.push(feature(None, FeatureKind::Categorical { n_levels }, codes));
                }
                ColumnTransform::Datetime { with_time } => {
                    let secs = timestamp_values(values, n);
                    let mut parts: Vec<Vec<f32>> = vec![Vec::with_capacity(n); DATE_PARTS.len() + 1];
                    for s in &secs {
                        let Some(s) = *s else {
                            parts.iter_mut().for_each(|p| p.push(f32::NAN));
                            continue;
                        };
                        let c = civil_from_unix(s);
                        let row = [
                            c.year as f32,
                            c.month as f32,
                            c.day as f32,
                            c.weekday as f32,
                            c.day_of_year as f32,
                            (s as f64 / 86_400.0) as f32,
                            (c.hour as f32) + c.minute as f32 / 60.0,
                        ];
                        for (p, v) in parts.iter_mut().zip(row) {
                            p.push(v);
                        }
                    }
                    let hour = parts.pop().unwrap_or_default();
                    for (name, values) in DATE_PARTS.iter().zip(parts) {
                        out.push(feature(Some(name), FeatureKind::Numeric, values));
                    }
                    if *with_time {
                        out.push(feature(Some("hour"), FeatureKind::Numeric, hour));
                    }
                }
                ColumnTransform::Dropped { .. } => {}
            }
        }
        Ok(FeatureMatrix { n_rows: n, columns: out })
    }
}

fn fit_column(values: &RawValues, profile: &ColumnProfile) -> ColumnTransform {
    match profile.kind {
        ColumnKind::Numeric => ColumnTransform::Numeric,
        ColumnKind::Boolean => ColumnTransform::Boolean,
        ColumnKind::Datetime => {
            let with_time = timestamp_values(values, values.len())
                .into_iter()
                .flatten()
                .any(|s| s.rem_euclid(86_400) != 0);
            ColumnTransform::Datetime { with_time }
        }
        ColumnKind::Categorical => {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for i in 0..values.len() {
                if let Some(s) = values.text(i) {
                    *counts.entry(s.into_owned()).or_insert(0) += 1;
                }
            }
            let mut levels: Vec<(String, usize)> = counts.into_iter().collect();
            // Count descending, then name: deterministic whatever the hash order.
            levels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let total = levels.len();
            levels.retain(|(_, c)| *c >= MIN_LEVEL_COUNT);
            levels.truncate(MAX_LEVELS);
            let has_other = levels.len() < total;
            ColumnTransform::Categorical { levels: levels.into_iter().map(|(l, _)| l).collect(), has_other }
        }
        ColumnKind::Text => ColumnTransform::Dropped { reason: "free text".to_string() },
        ColumnKind::IdLike => {
            ColumnTransform::Dropped { reason: "ID-like (nearly every value unique)".to_string() }
        }
        ColumnKind::Constant => ColumnTransform::Dropped { reason: "constant or empty".to_string() },
    }
}

/// Infinities become the largest finite `f32` so models see "very large", not NaN.
fn numeric_values(values: &RawValues, n: usize) -> Vec<f32> {
    let conv = |x: f64| {
        if x.is_nan() { f32::NAN } else { (x as f32).clamp(f32::MIN, f32::MAX) }
    };
    match values {
        RawValues::Number(v) => v.iter().map(|&x| conv(x)).collect::<Vec<f32>>(),
        RawValues::Text(s) => {
            s.iter().map(|v| v.and_then(parse_number).map_or(f32::NAN, conv)).collect::<Vec<f32>>()
        }
        RawValues::Bool(v) => v.iter().map(|b| b.map_or(f32::NAN, |b| f32::from(u8::from(b)))).collect(),
        RawValues::Timestamp(v) => v.iter().map(|t| t.map_or(f32::NAN, |t| t as f32)).collect(),
    }
    .into_iter()
    .take(n)
    .collect()
}

fn bool_values(values: &RawValues, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match values {
            RawValues::Bool(v) => v[i].map_or(f32::NAN, |b| f32::from(u8::from(b))),
            other => match other.text(i).as_deref() {
                Some("true" | "True" | "TRUE" | "1") => 1.0,
                Some("false" | "False" | "FALSE" | "0") => 0.0,
                _ => f32::NAN,
            },
        })
        .collect()
}

fn timestamp_values(values: &RawValues, n: usize) -> Vec<Option<i64>> {
    (0..n)
        .map(|i| match values {
            RawValues::Timestamp(v) => v[i],
            RawValues::Number(v) => (!v[i].is_nan()).then(|| v[i] as i64),
            other => other.text(i).and_then(|s| parse_datetime(&s)),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::table::{RawColumn, StrColumn};

    fn table(cols: &[(&str, &[&str])]) -> Table {
        let n = cols[0].1.len();
        Table {
            n_rows: n,
            columns: cols
                .iter()
                .map(|(name, vals)| {
                    let mut c = StrColumn::new();
                    for v in *vals {
                        c.push(Some(v));
                    }
                    RawColumn { name: name.to_string(), values: RawValues::Text(c) }
                })
                .collect(),
        }
    }

    #[test]
    fn transform_matches_by_name_and_handles_unseen_levels() {
        let train = table(&[
            ("num", &["1", "2", "", "4"]),
            ("cat", &["a", "b", "a", "b"]),
            ("when", &["2020-01-01", "2020-06-01", "2021-01-01", ""]),
            ("y", &["0", "1", "0", "1"]),
        ]);
        let f = Featurizer::fit(&train, &["y"]).unwrap();
        let m = f.transform(&train).unwrap();
        assert_eq!(m.columns[0].values[..2], [1.0, 2.0]);
        assert!(m.columns[0].values[2].is_nan());
        assert_eq!(m.columns[1].values, vec![0.0, 1.0, 0.0, 1.0]);
        let year = m.columns.iter().find(|c| c.name == "when__year").unwrap();
        assert_eq!(year.values[..3], [2020.0, 2020.0, 2021.0]);

        // Shuffled columns, an unseen level, an extra column: still works.
        let test =
            table(&[("extra", &["z"]), ("when", &["2022-02-02"]), ("cat", &["zzz"]), ("num", &["NA"])]);
        let t = f.transform(&test).unwrap();
        assert_eq!(t.n_rows, 1);
        assert!(t.columns[0].values[0].is_nan());
        assert!(t.columns[1].values[0].is_nan(), "unseen level without an other-code is missing");

        let missing = table(&[("cat", &["a"])]);
        let err = f.transform(&missing).unwrap_err().to_string();
        assert!(err.contains("\"num\""), "{err}");
    }
}
