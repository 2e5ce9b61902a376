//! A panel of series on a regular grid, built from a long table (one row per series × time).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::frequency::{Frequency, FrequencyKind};
use crate::datetime::parse_datetime;
use crate::error::{FeaturizeError, Result, preview};
use crate::table::Table;

/// One series on the grid: `values[i]` is the target at grid index `start + i`; `NaN` where
/// the file had no row (a gap) or an empty target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesData {
    /// The series id values joined by `|` (empty for a single series).
    pub key: String,
    pub ids: Vec<String>,
    pub start: i64,
    /// Missing values are `null` in JSON (which has no NaN).
    #[serde(with = "nan_as_null")]
    pub values: Vec<f64>,
    /// One vector per covariate column (in [`Panel::covariates`] order), on the same grid as
    /// `values`; `NaN` where unknown.
    #[serde(default, with = "nan_as_null_2d")]
    pub covariates: Vec<Vec<f64>>,
}

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v: Vec<Option<f64>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}

mod nan_as_null_2d {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<f64>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|c| c.iter().map(|x| x.is_finite().then_some(*x)).collect::<Vec<_>>()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
        let v: Vec<Vec<Option<f64>>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|c| c.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect()).collect())
    }
}

impl SeriesData {
    /// Grid index one past the last point.
    pub fn end(&self) -> i64 {
        self.start + self.values.len() as i64
    }

    pub fn n_observed(&self) -> usize {
        self.values.iter().filter(|v| v.is_finite()).count()
    }
}

/// A series' id values and its `(time, target, covariates)` points, as read.
type RawSeries = (Vec<String>, Vec<(i64, f64, Vec<f64>)>);

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub frequency: Frequency,
    /// Sorted by key, so the order of rows in the file never matters.
    pub series: Vec<SeriesData>,
    /// Grid points with no row in the file (filled as missing targets).
    pub n_gaps: usize,
    /// Rows whose target cell was empty.
    pub n_missing_targets: usize,
    /// The covariate columns, in the order of [`SeriesData::covariates`].
    pub covariates: Vec<String>,
}

/// Parses the time column of row `row`.
pub fn parse_time(table: &Table, column: &str, row: usize) -> Result<i64> {
    let col = table.column(column).ok_or_else(|| missing_column(table, column))?;
    if let crate::table::RawValues::Timestamp(v) = &col.values
        && let Some(t) = v[row]
    {
        return Ok(t);
    }
    let text = col.values.text(row);
    let text = text.as_deref().map(str::trim).unwrap_or("");
    parse_datetime(text).ok_or_else(|| {
        FeaturizeError::Forecast(format!(
            "time column {column:?}, row {}: {} is not a date or timestamp (YYYY-MM-DD[ HH:MM[:SS]])",
            row + 1,
            preview(text)
        ))
    })
}

fn missing_column(table: &Table, column: &str) -> FeaturizeError {
    FeaturizeError::Forecast(format!(
        "column {column:?} not found; columns are: {}",
        crate::error::name_list(table.column_names().into_iter())
    ))
}

/// The series key of a row: its id values joined by `|`.
pub fn series_key(table: &Table, id_columns: &[String], row: usize) -> Result<Vec<String>> {
    id_columns
        .iter()
        .map(|c| {
            let col = table.column(c).ok_or_else(|| missing_column(table, c))?;
            Ok(col.values.text(row).map(|s| s.trim().to_string()).unwrap_or_default())
        })
        .collect()
}

/// The number in cell `row` of `column`: `NaN` when empty or a missing marker, an error naming
/// the column and row when it is not a number. `what` names the column's role.
pub fn parse_number(table: &Table, column: &str, row: usize, what: &str) -> Result<f64> {
    let col = table.column(column).ok_or_else(|| missing_column(table, column))?;
    Ok(match col.values.text(row) {
        None => f64::NAN,
        Some(s) if s.trim().is_empty() || crate::table::is_missing_marker(s.trim()) => f64::NAN,
        Some(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
            FeaturizeError::Forecast(format!(
                "{what} column {column:?}, row {}: {} is not a number",
                row + 1,
                preview(&s)
            ))
        })?,
    })
}

/// Groups rows by series, sorts them by time, rejects duplicate timestamps and lays each
/// series (its target and the numeric `covariates` columns) on the grid of `frequency`
/// (detected when `None`).
pub fn build_panel(
    table: &Table,
    time_column: &str,
    target: &str,
    id_columns: &[String],
    covariates: &[String],
    frequency: Option<FrequencyKind>,
) -> Result<Panel> {
    table.column(target).ok_or_else(|| missing_column(table, target))?;
    let mut groups: BTreeMap<String, RawSeries> = BTreeMap::new();
    let mut n_missing_targets = 0;
    for row in 0..table.n_rows {
        let t = parse_time(table, time_column, row)?;
        let ids = series_key(table, id_columns, row)?;
        let y = parse_number(table, target, row, "target")?;
        if y.is_nan() {
            n_missing_targets += 1;
        }
        let cov =
            covariates.iter().map(|c| parse_number(table, c, row, "covariate")).collect::<Result<_>>()?;
        let key = ids.join("|");
        groups.entry(key).or_insert_with(|| (ids, Vec::new())).1.push((t, y, cov));
    }
    let mut sorted: Vec<(String, RawSeries)> = Vec::with_capacity(groups.len());
    for (key, (ids, mut points)) in groups {
        points.sort_by_key(|p| p.0);
        if let Some(w) = points.windows(2).find(|w| w[0].0 == w[1].0) {
            let c = crate::datetime::civil_from_unix(w[0].0);
            return Err(FeaturizeError::DuplicateTimestamp {
                series: if key.is_empty() {
                    "(no --series-id given; pass it if the file holds several series)".into()
                } else {
                    key
                },
                time: if w[0].0 % 86_400 == 0 {
                    format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
                } else {
                    format!(
                        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                        c.year, c.month, c.day, c.hour, c.minute, c.second
                    )
                },
            });
        }
        sorted.push((key, (ids, points)));
    }
    let frequency = match frequency {
        Some(kind) => {
            let first = sorted.iter().filter_map(|s| s.1.1.first().map(|p| p.0)).min().unwrap_or(0);
            Frequency::anchored(kind, first)
        }
        None => {
            let times: Vec<Vec<i64>> = sorted.iter().map(|s| s.1.1.iter().map(|p| p.0).collect()).collect();
            let refs: Vec<&[i64]> = times.iter().map(Vec::as_slice).collect();
            Frequency::detect(&refs)?
        }
    };
    let mut series = Vec::with_capacity(sorted.len());
    let mut n_gaps = 0;
    for (key, (ids, points)) in sorted {
        let mut idx = Vec::with_capacity(points.len());
        for (t, _, _) in &points {
            let i = frequency.index(*t).ok_or_else(|| {
                let c = crate::datetime::civil_from_unix(*t);
                FeaturizeError::Forecast(format!(
                    "series {key:?}: time {:04}-{:02}-{:02} {:02}:{:02} is not on the {} grid; pass --frequency",
                    c.year,
                    c.month,
                    c.day,
                    c.hour,
                    c.minute,
                    frequency.code()
                ))
            })?;
            idx.push(i);
        }
        // Leading missing targets carry no information: the series starts at its first value.
        let Some(first) = points.iter().position(|p| p.1.is_finite()) else {
            return Err(FeaturizeError::Forecast(format!("series {key:?} has no observed target values")));
        };
        let start = idx[first];
        let end = idx[idx.len() - 1] + 1;
        let mut values = vec![f64::NAN; (end - start) as usize];
        let mut cov = vec![vec![f64::NAN; values.len()]; covariates.len()];
        for (i, (_, y, c)) in idx.iter().zip(&points).skip(first) {
            let at = (i - start) as usize;
            values[at] = *y;
            for (out, v) in cov.iter_mut().zip(c) {
                out[at] = *v;
            }
        }
        n_gaps += values.len() - (points.len() - first);
        series.push(SeriesData { key, ids, start, values, covariates: cov });
    }
    Ok(Panel { frequency, series, n_gaps, n_missing_targets, covariates: covariates.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{RawColumn, RawValues, StrColumn};

    fn table(cols: &[(&str, &[&str])]) -> Table {
        let columns = cols
            .iter()
            .map(|(name, vals)| {
                let mut s = StrColumn::new();
                for v in *vals {
                    s.push(if v.is_empty() { None } else { Some(v) });
                }
                RawColumn { name: (*name).to_string(), values: RawValues::Text(s) }
            })
            .collect();
        Table { n_rows: cols[0].1.len(), columns }
    }

    #[test]
    fn gaps_become_missing_targets() {
        let t = table(&[
            ("date", &["2020-01-03", "2020-01-01", "2020-01-06", "2020-01-02"]),
            ("y", &["3", "1", "6", ""]),
        ]);
        let p = build_panel(&t, "date", "y", &[], &[], None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.frequency.code(), "D");
        let v = &p.series[0].values;
        assert_eq!(v.len(), 6);
        assert_eq!(v[0], 1.0);
        assert!(v[1].is_nan(), "empty target stays missing");
        assert_eq!(v[2], 3.0);
        assert!(v[3].is_nan() && v[4].is_nan(), "gap is missing, not interpolated");
        assert_eq!(v[5], 6.0);
        assert_eq!(p.n_gaps, 2);
        assert_eq!(p.n_missing_targets, 1);
    }

    #[test]
    fn duplicate_timestamps_name_series_and_time() {
        let t = table(&[
            ("id", &["a", "b", "b"]),
            ("date", &["2020-01-01", "2020-01-01", "2020-01-01"]),
            ("y", &["1", "2", "3"]),
        ]);
        let err = build_panel(&t, "date", "y", &["id".to_string()], &[], None)
            .map(|_| ())
            .expect_err("duplicates accepted")
            .to_string();
        assert!(err.contains("\"b\"") && err.contains("2020-01-01"), "{err}");
    }

    #[test]
    fn series_order_follows_keys_not_rows() {
        let a = table(&[
            ("id", &["x", "y", "x", "y"]),
            ("date", &["2020-01-01", "2020-01-01", "2020-01-02", "2020-01-02"]),
            ("v", &["1", "5", "2", "6"]),
        ]);
        let b = table(&[
            ("id", &["y", "y", "x", "x"]),
            ("date", &["2020-01-02", "2020-01-01", "2020-01-02", "2020-01-01"]),
            ("v", &["6", "5", "2", "1"]),
        ]);
        let ids = ["id".to_string()];
        let pa = build_panel(&a, "date", "v", &ids, &[], None).unwrap_or_else(|e| panic!("{e}"));
        let pb = build_panel(&b, "date", "v", &ids, &[], None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pa.series, pb.series);
        assert_eq!(pa.series[0].key, "x");
    }
}
