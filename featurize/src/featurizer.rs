//! The fitted featurizer: raw columns in, [`FeatureMatrix`] out, identically at fit and predict time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::datetime::{civil_from_unix, parse_datetime};
use crate::encoding::LevelEncoding;
use crate::error::{FeaturizeError, Result, name_list};
use crate::infer::{ColumnKind, parse_number, profile_column};
use crate::matrix::{FeatureColumn, FeatureKind, FeatureMatrix};
use crate::overrides::ColumnOverrides;
use crate::table::{RawValues, Table};
use crate::text::{fit_vocabulary, transform_tfidf, transform_vocabulary};

/// Most frequent levels kept per categorical column; the rest share one "other" code.
/// 254 leaves room for "other" and the missing bin in a `u8` histogram.
pub const MAX_LEVELS: usize = 254;
/// Levels seen fewer times than this in training are grouped as "other".
const MIN_LEVEL_COUNT: usize = 2;
/// In a high-cardinality column, only levels seen this often keep their own code: a rarer
/// level cannot fill a leaf, and codes for thousands of 3-row levels only let trees memorise
/// noise (the frequency and target encodings carry what rare levels have to say).
const HIGH_CARDINALITY_MIN_CODE_COUNT: usize = 20;

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
    /// Word uni/bigram TF-IDF ([`crate::text`]): one feature per vocabulary term.
    TfIdf {
        /// The vocabulary (words, then word pairs written `"a b"`); feature `k` is
        /// `{name}__tfidf_{k}`. Empty in bundles saved before vocabularies, which use `buckets`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        terms: Vec<String>,
        /// Older bundles only: kept hash buckets, ascending; feature `k` is
        /// `{name}__tfidf_{buckets[k]}`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        buckets: Vec<u32>,
        /// IDF weight of each kept bucket, fitted on training rows.
        idf: Vec<f32>,
    },
    /// More distinct levels than [`MAX_LEVELS`]: codes for the most frequent, plus frequency
    /// and target-mean encodings of every level ([`crate::encoding`]).
    HighCardinality(LevelEncoding),
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
    /// Training cells that were present but could not be read as a kind the user forced
    /// (e.g. "abc" in a column overridden to numeric); they are treated as missing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub n_unparsed: usize,
    /// Whether `kind` (or the drop) came from [`ColumnOverrides`] rather than inference.
    #[serde(default, skip_serializing_if = "is_false")]
    pub overridden: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Fitted on training rows only; applied unchanged to validation, test and predict-time rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Featurizer {
    pub columns: Vec<FittedColumn>,
}

const DATE_PARTS: [&str; 6] = ["year", "month", "day", "weekday", "day_of_year", "elapsed_days"];

impl Featurizer {
    /// Fits on every column of `table` except `exclude` (the target), with inferred kinds.
    pub fn fit(table: &Table, exclude: &[&str]) -> Result<Featurizer> {
        Featurizer::fit_with(table, exclude, &ColumnOverrides::default())
    }

    /// Fits like [`Featurizer::fit`], but with the user's forced kinds and dropped columns.
    /// An override naming a column that is not in `table`, or naming an excluded (target)
    /// column, is an error naming it.
    pub fn fit_with(table: &Table, exclude: &[&str], overrides: &ColumnOverrides) -> Result<Featurizer> {
        for name in overrides.names() {
            if exclude.contains(&name) {
                return Err(FeaturizeError::BadOverride {
                    arg: name.to_string(),
                    message: format!("column {name:?} is the target; only feature columns can be overridden"),
                });
            }
            if table.column(name).is_none() {
                return Err(FeaturizeError::UnknownOverrideColumn {
                    name: name.to_string(),
                    available: name_list(table.column_names().into_iter()),
                });
            }
        }
        let mut columns = Vec::new();
        for raw in table.columns.iter().filter(|c| !exclude.contains(&c.name.as_str())) {
            let profile = profile_column(raw);
            let forced = overrides.kinds.get(&raw.name).copied();
            let dropped = overrides.drop.contains(&raw.name);
            let kind = forced.unwrap_or(profile.kind);
            let transform = if dropped {
                ColumnTransform::Dropped { reason: "dropped by the user".to_string() }
            } else {
                fit_column(&raw.values, kind, forced.is_some())
            };
            let n_unparsed = if forced.is_some() && !dropped { count_unparsed(&raw.values, kind) } else { 0 };
            columns.push(FittedColumn {
                name: raw.name.clone(),
                kind,
                n_missing: profile.n_missing,
                n_distinct: profile.n_distinct,
                transform,
                n_unparsed,
                overridden: forced.is_some() || dropped,
            });
        }
        let f = Featurizer { columns };
        if f.used_columns().next().is_none() {
            let reasons: Vec<String> = f
                .columns
                .iter()
                .filter_map(|c| match &c.transform {
                    ColumnTransform::Dropped { reason } => Some(format!("{:?} ({reason})", c.name)),
                    _ => None,
                })
                .collect();
            let shown = reasons.len().min(10);
            let more = if reasons.len() > shown {
                format!(", … ({} more)", reasons.len() - shown)
            } else {
                String::new()
            };
            return Err(FeaturizeError::NoFeatures {
                reason: if reasons.is_empty() {
                    format!("the table has only the target column ({})", name_list(exclude.iter().copied()))
                } else {
                    format!("every column was dropped: {}{more}", reasons[..shown].join(", "))
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
            column_features(col, values, n, &mut out)?;
        }
        Ok(FeatureMatrix { n_rows: n, columns: out })
    }

    /// [`Featurizer::transform`] that consumes the table and frees each raw column as soon as
    /// its features exist, so raw text and features never both sit in memory whole.
    pub fn transform_owned(&self, table: Table) -> Result<FeatureMatrix> {
        let n = table.n_rows;
        let mut by_name: HashMap<String, RawValues> =
            table.columns.into_iter().map(|c| (c.name, c.values)).collect();
        let mut out = Vec::new();
        for col in self.used_columns() {
            let values = by_name
                .remove(col.name.as_str())
                .ok_or_else(|| FeaturizeError::MissingFeature { name: col.name.clone() })?;
            column_features(col, &values, n, &mut out)?;
        }
        Ok(FeatureMatrix { n_rows: n, columns: out })
    }
}

fn column_features(
    col: &FittedColumn,
    values: &RawValues,
    n: usize,
    out: &mut Vec<FeatureColumn>,
) -> Result<()> {
    if values.len() != n {
        return Err(FeaturizeError::ColumnLength { column: col.name.clone(), len: values.len(), n_rows: n });
    }
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
        ColumnTransform::TfIdf { terms, buckets, idf } if terms.is_empty() => {
            let cols = transform_tfidf(values, n, buckets, idf);
            for (b, values) in buckets.iter().zip(cols) {
                out.push(feature(Some(&format!("tfidf_{b}")), FeatureKind::Numeric, values));
            }
        }
        ColumnTransform::TfIdf { terms, idf, .. } => {
            let cols = transform_vocabulary(values, n, terms, idf);
            for (k, values) in cols.into_iter().enumerate() {
                out.push(feature(Some(&format!("tfidf_{k}")), FeatureKind::Numeric, values));
            }
        }
        ColumnTransform::HighCardinality(enc) => enc.features(&col.name, values, n, out),
        ColumnTransform::Dropped { .. } => {}
    }
    Ok(())
}

fn fit_column(values: &RawValues, kind: ColumnKind, forced: bool) -> ColumnTransform {
    match kind {
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
            let mut enc =
                LevelEncoding::fit(values, MAX_LEVELS, MIN_LEVEL_COUNT, HIGH_CARDINALITY_MIN_CODE_COUNT);
            if enc.levels.len() > MAX_LEVELS {
                return ColumnTransform::HighCardinality(enc);
            }
            let has_other = enc.n_codes < enc.levels.len();
            enc.levels.truncate(enc.n_codes);
            ColumnTransform::Categorical { levels: enc.levels, has_other }
        }
        ColumnKind::Text => {
            let (terms, idf) = fit_vocabulary(values);
            if terms.is_empty() {
                ColumnTransform::Dropped { reason: "free text without any words".to_string() }
            } else {
                ColumnTransform::TfIdf { terms, buckets: Vec::new(), idf }
            }
        }
        ColumnKind::IdLike if forced => {
            ColumnTransform::Dropped { reason: "marked as an ID by the user".to_string() }
        }
        ColumnKind::IdLike => {
            ColumnTransform::Dropped { reason: "ID-like (nearly every value unique)".to_string() }
        }
        ColumnKind::Constant => ColumnTransform::Dropped { reason: "constant or empty".to_string() },
    }
}

/// Present cells that a forced `kind` cannot read (they become missing).
fn count_unparsed(values: &RawValues, kind: ColumnKind) -> usize {
    let n = values.len();
    match kind {
        ColumnKind::Numeric => {
            let parsed = numeric_values(values, n);
            (0..n).filter(|&i| !values.is_missing(i) && parsed[i].is_nan()).count()
        }
        ColumnKind::Boolean => {
            let parsed = bool_values(values, n);
            (0..n).filter(|&i| !values.is_missing(i) && parsed[i].is_nan()).count()
        }
        ColumnKind::Datetime => {
            let parsed = timestamp_values(values, n);
            (0..n).filter(|&i| !values.is_missing(i) && parsed[i].is_none()).count()
        }
        ColumnKind::Categorical | ColumnKind::Text | ColumnKind::IdLike | ColumnKind::Constant => 0,
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

    fn small_train() -> Table {
        table(&[
            ("num", &["1", "2", "", "4"]),
            ("cat", &["a", "b", "a", "b"]),
            ("when", &["2020-01-01", "2020-06-01", "2021-01-01", ""]),
            ("y", &["0", "1", "0", "1"]),
        ])
    }

    #[test]
    fn transform_matches_by_name_and_handles_unseen_levels() {
        let train = small_train();
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

    fn overrides(args: &[&str]) -> ColumnOverrides {
        ColumnOverrides::from_args(args.iter().copied()).unwrap()
    }

    #[test]
    fn overrides_force_kinds_and_drop_columns() {
        let train = table(&[
            ("zip", &["10115", "20095", "10115", "80331"]),
            ("score", &["1", "abc", "3", ""]),
            ("note", &["a b", "c", "a", "b"]),
            ("y", &["0", "1", "0", "1"]),
        ]);
        let inferred = Featurizer::fit(&train, &["y"]).unwrap();
        assert_eq!(inferred.columns[0].kind, ColumnKind::Numeric);
        assert_eq!(inferred.columns[1].kind, ColumnKind::Categorical);

        let o = overrides(&["zip=categorical", "score=numeric", "note=ignore"]);
        let f = Featurizer::fit_with(&train, &["y"], &o).unwrap();
        let zip = &f.columns[0];
        assert_eq!((zip.kind, zip.overridden), (ColumnKind::Categorical, true));
        assert!(
            matches!(&zip.transform, ColumnTransform::Categorical { levels, .. } if levels == &["10115"])
        );
        let score = &f.columns[1];
        assert_eq!((score.kind, score.n_missing, score.n_unparsed), (ColumnKind::Numeric, 1, 1));
        assert!(matches!(f.columns[2].transform, ColumnTransform::Dropped { .. }));
        assert_eq!(f.used_columns().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["zip", "score"]);

        let m = f.transform(&train).unwrap();
        let score_values = &m.columns[1].values;
        assert_eq!(score_values[0], 1.0);
        assert!(score_values[1].is_nan() && score_values[3].is_nan());
        assert_eq!(score_values[2], 3.0);
        // The note column is no longer needed at predict time.
        let predict = table(&[("zip", &["10115"]), ("score", &["2"])]);
        assert_eq!(f.transform(&predict).unwrap().n_rows, 1);
    }

    #[test]
    fn overrides_of_unknown_or_target_columns_are_errors() {
        let train = table(&[("a", &["1", "2", "3"]), ("y", &["0", "1", "0"])]);
        let e = Featurizer::fit_with(&train, &["y"], &overrides(&["nope=numeric"])).unwrap_err().to_string();
        assert!(e.contains("\"nope\"") && e.contains("\"a\""), "{e}");
        let e = Featurizer::fit_with(&train, &["y"], &overrides(&["y=categorical"])).unwrap_err().to_string();
        assert!(e.contains("\"y\"") && e.contains("target"), "{e}");
        let e = Featurizer::fit_with(&train, &["y"], &overrides(&["a=ignore"])).unwrap_err().to_string();
        assert!(e.contains("dropped by the user"), "{e}");
    }

    #[test]
    fn forced_boolean_and_datetime_count_unreadable_cells() {
        let train = table(&[
            ("flag", &["yes", "1", "0", "true"]),
            ("when", &["2020-01-01", "soon", "2020-01-03", "NA"]),
            ("y", &["0", "1", "0", "1"]),
        ]);
        let f = Featurizer::fit_with(&train, &["y"], &overrides(&["flag=boolean", "when=datetime"])).unwrap();
        assert_eq!((f.columns[0].kind, f.columns[0].n_unparsed), (ColumnKind::Boolean, 1));
        assert_eq!(
            (f.columns[1].kind, f.columns[1].n_unparsed, f.columns[1].n_missing),
            (ColumnKind::Datetime, 1, 1)
        );
        let m = f.transform(&train).unwrap();
        assert_eq!(m.columns[0].values[1..], [1.0, 0.0, 1.0]);
        assert!(m.columns[0].values[0].is_nan());
    }

    #[test]
    fn text_columns_become_tfidf_terms_that_transform_identically() {
        let sentences: Vec<String> = (0..80)
            .map(|i| format!("the {} brown fox number {i} jumps over the lazy dog", ["quick", "slow"][i % 2]))
            .collect();
        let sentences: Vec<&str> = sentences.iter().map(String::as_str).collect();
        let ys: Vec<&str> = (0..80).map(|i| ["0", "1"][i % 2]).collect();
        let train = table(&[("review", &sentences), ("y", &ys)]);
        let f = Featurizer::fit(&train, &["y"]).unwrap();
        assert_eq!(f.columns[0].kind, ColumnKind::Text);
        let ColumnTransform::TfIdf { terms, buckets, idf } = &f.columns[0].transform else {
            panic!("{:?}", f.columns[0].transform)
        };
        assert!(buckets.is_empty(), "new fits use a vocabulary");
        assert_eq!(terms.len(), idf.len());
        assert!(terms.len() <= crate::text::MAX_TFIDF_FEATURES);
        let m = f.transform(&train).unwrap();
        assert_eq!(m.n_features(), terms.len());
        assert!(m.columns.iter().all(|c| c.name.starts_with("review__tfidf_") && c.source == "review"));
        // Row 5 alone gives the same features as row 5 of the whole table: row independence.
        let one = f.transform(&train.select_rows(&[5])).unwrap();
        for (a, b) in m.columns.iter().zip(&one.columns) {
            assert_eq!(a.values[5], b.values[0]);
        }
        // The quick/slow word separates the classes: some term differs between rows 0 and 1.
        assert!(m.columns.iter().any(|c| c.values[0] != c.values[1]));
    }

    #[test]
    fn transform_owned_matches_transform() {
        let train = small_train();
        let f = Featurizer::fit(&train, &["y"]).unwrap();
        let by_ref = f.transform(&train).unwrap();
        let owned = f.transform_owned(train).unwrap();
        assert_eq!(format!("{by_ref:?}"), format!("{owned:?}"));
    }
}
