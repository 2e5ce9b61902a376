//! Column kind inference: what each raw column is, and whether it is worth a feature.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::datetime::parse_datetime;
use crate::table::{RawColumn, RawValues};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    Numeric,
    Boolean,
    Categorical,
    Datetime,
    Text,
    /// Near-unique identifiers: no signal that generalises, dropped.
    IdLike,
    /// One value (or none): dropped.
    Constant,
}

impl ColumnKind {
    /// Whether the column becomes features (text does, as TF-IDF buckets).
    pub fn is_feature(self) -> bool {
        !matches!(self, ColumnKind::IdLike | ColumnKind::Constant)
    }

    /// The lowercase name used in overrides, logs and `run.json` (`id` for [`ColumnKind::IdLike`]).
    pub fn name(self) -> &'static str {
        match self {
            ColumnKind::Numeric => "numeric",
            ColumnKind::Boolean => "boolean",
            ColumnKind::Categorical => "categorical",
            ColumnKind::Datetime => "datetime",
            ColumnKind::Text => "text",
            ColumnKind::IdLike => "id",
            ColumnKind::Constant => "constant",
        }
    }
}

/// What inference saw in one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    pub kind: ColumnKind,
    pub n_missing: usize,
    /// Distinct non-missing values, counted up to [`DISTINCT_CAP`].
    pub n_distinct: usize,
}

/// Counting distinct values stops here: past it a column is high-cardinality whatever the count.
pub const DISTINCT_CAP: usize = 100_000;

const BOOL_WORDS: &[&str] = &["true", "false", "True", "False", "TRUE", "FALSE"];

pub fn profile_column(column: &RawColumn) -> ColumnProfile {
    let n = column.values.len();
    let (kind, n_missing, n_distinct) = match &column.values {
        RawValues::Number(v) => {
            let n_missing = v.iter().filter(|x| x.is_nan()).count();
            let distinct = distinct_numbers(v.iter().copied());
            (numeric_kind(v.iter().copied(), n - n_missing, distinct), n_missing, distinct)
        }
        RawValues::Bool(v) => {
            let n_missing = v.iter().filter(|x| x.is_none()).count();
            let distinct = [true, false].iter().filter(|b| v.contains(&Some(**b))).count();
            let kind = if distinct < 2 { ColumnKind::Constant } else { ColumnKind::Boolean };
            (kind, n_missing, distinct)
        }
        RawValues::Timestamp(v) => {
            let n_missing = v.iter().filter(|x| x.is_none()).count();
            let distinct = distinct_numbers(v.iter().flatten().map(|&t| t as f64));
            let kind = if distinct < 2 { ColumnKind::Constant } else { ColumnKind::Datetime };
            (kind, n_missing, distinct)
        }
        RawValues::Text(s) => text_kind(s.iter()),
    };
    ColumnProfile { name: column.name.clone(), kind, n_missing, n_distinct }
}

fn distinct_numbers(values: impl Iterator<Item = f64>) -> usize {
    let mut seen = std::collections::HashSet::new();
    for v in values.filter(|v| !v.is_nan()) {
        seen.insert(v.to_bits());
        if seen.len() >= DISTINCT_CAP {
            break;
        }
    }
    seen.len()
}

fn numeric_kind(values: impl Iterator<Item = f64> + Clone, n_present: usize, distinct: usize) -> ColumnKind {
    if distinct < 2 {
        return ColumnKind::Constant;
    }
    // Row numbers and surrogate keys: integers, all distinct, densely packed.
    if n_present >= 100 && distinct == n_present {
        let present = values.filter(|v| !v.is_nan());
        let (mut lo, mut hi, mut all_int) = (f64::INFINITY, f64::NEG_INFINITY, true);
        for v in present {
            lo = lo.min(v);
            hi = hi.max(v);
            all_int &= v.fract() == 0.0;
        }
        if all_int && hi - lo + 1.0 <= 2.0 * n_present as f64 {
            return ColumnKind::IdLike;
        }
    }
    ColumnKind::Numeric
}

fn text_kind<'a>(values: impl Iterator<Item = Option<&'a str>>) -> (ColumnKind, usize, usize) {
    let mut n_missing = 0;
    let mut n_present = 0usize;
    let (mut all_number, mut all_bool, mut all_date) = (true, true, true);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut total_len = 0usize;
    let mut total_spaces = 0usize;
    let mut numbers = Vec::new();
    for v in values {
        let Some(s) = v else {
            n_missing += 1;
            continue;
        };
        n_present += 1;
        total_len += s.len();
        if all_number {
            match parse_number(s) {
                Some(x) => numbers.push(x),
                None => all_number = false,
            }
        }
        all_bool &= BOOL_WORDS.contains(&s);
        all_date &= parse_datetime(s).is_some();
        if counts.len() < DISTINCT_CAP || counts.contains_key(s) {
            *counts.entry(s).or_insert(0) += 1;
        }
        total_spaces += s.bytes().filter(|&c| c == b' ').count();
    }
    let distinct = counts.len();
    let kind = if distinct < 2 {
        ColumnKind::Constant
    } else if all_number {
        numeric_kind(numbers.iter().copied(), n_present, distinct)
    } else if all_bool {
        ColumnKind::Boolean
    } else if all_date {
        ColumnKind::Datetime
    } else {
        let unique_ratio = distinct as f64 / n_present.max(1) as f64;
        let mean_words = 1.0 + total_spaces as f64 / n_present.max(1) as f64;
        let mean_len = total_len as f64 / n_present.max(1) as f64;
        if mean_words >= 4.0 && mean_len >= 20.0 && unique_ratio > 0.5 {
            ColumnKind::Text
        } else if n_present >= 50 && unique_ratio > 0.95 {
            ColumnKind::IdLike
        } else {
            ColumnKind::Categorical
        }
    };
    (kind, n_missing, distinct)
}

/// Numbers as CSV writes them; `inf`/`nan` spellings are numbers too (NaN then means missing).
pub fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    // Rust's f64 parser accepts "infinity" and "nan" spellings; words like "inf" are fine,
    // but reject hex and other forms by requiring a digit or an inf/nan word.
    let first = t.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.' | b'i' | b'I' | b'n' | b'N')) {
        return None;
    }
    t.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::StrColumn;

    fn text(name: &str, values: &[&str]) -> RawColumn {
        let mut c = StrColumn::new();
        for v in values {
            c.push(Some(v));
        }
        RawColumn { name: name.to_string(), values: RawValues::Text(c) }
    }

    #[test]
    fn infers_basic_kinds() {
        assert_eq!(profile_column(&text("a", &["1", "2.5", "", "3"])).kind, ColumnKind::Numeric);
        assert_eq!(profile_column(&text("b", &["true", "False", "true"])).kind, ColumnKind::Boolean);
        assert_eq!(
            profile_column(&text("c", &["2020-01-01", "2021-05-06T10:00:00Z"])).kind,
            ColumnKind::Datetime
        );
        assert_eq!(profile_column(&text("d", &["x", "y", "x", "NA"])).kind, ColumnKind::Categorical);
        assert_eq!(profile_column(&text("e", &["x", "x", ""])).kind, ColumnKind::Constant);
        let p = profile_column(&text("d", &["x", "y", "x", "NA"]));
        assert_eq!((p.n_missing, p.n_distinct), (1, 2));
    }

    #[test]
    fn sequential_integers_are_ids_but_measurements_are_not() {
        let ids: Vec<String> = (1000..1200).map(|i| i.to_string()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(profile_column(&text("id", &ids)).kind, ColumnKind::IdLike);
        let floats: Vec<String> = (0..200).map(|i| format!("{}.5", i * 7)).collect();
        let floats: Vec<&str> = floats.iter().map(String::as_str).collect();
        assert_eq!(profile_column(&text("x", &floats)).kind, ColumnKind::Numeric);
    }

    #[test]
    fn unique_strings_are_ids_and_sentences_are_text() {
        let ids: Vec<String> = (0..100).map(|i| format!("N{i}X")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(profile_column(&text("tail", &ids)).kind, ColumnKind::IdLike);
        let sentences: Vec<String> =
            (0..60).map(|i| format!("the quick brown fox number {i} jumps")).collect();
        let sentences: Vec<&str> = sentences.iter().map(String::as_str).collect();
        assert_eq!(profile_column(&text("review", &sentences)).kind, ColumnKind::Text);
    }
}
