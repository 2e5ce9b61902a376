//! Data checks reported to the user (`guardrails.json`, and a few terminal lines): what was
//! missing, what was dropped or grouped and why, class balance, duplicates, and whether there
//! is enough data to trust a score.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::featurizer::{ColumnTransform, Featurizer};
use crate::infer::ColumnKind;
use crate::matrix::Target;
use crate::table::{RawValues, Table};
use crate::target::TargetEncoder;
use crate::text::fnv1a64;

/// Below this minority-class share a classification target is flagged as imbalanced.
pub const IMBALANCE_SHARE: f64 = 0.10;
/// Fewer usable rows than this is flagged.
pub const MIN_ROWS: usize = 50;
/// Fewer rows than this in some class is flagged.
pub const MIN_ROWS_PER_CLASS: usize = 10;
/// Columns missing more than this share of values get a warning rather than info.
const HIGH_MISSING_SHARE: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// A feature column has missing cells.
    MissingValues,
    /// A user-forced kind could not read some cells.
    UnparsedValues,
    /// A categorical column has more levels than are kept.
    HighCardinality,
    /// A column was not used (ID-like, constant, wordless text, dropped by the user).
    DroppedColumn,
    /// A categorical with too many levels for codes was frequency and target encoded.
    TargetEncoded,
    /// A free-text column became TF-IDF buckets.
    TextColumn,
    /// Rows whose target is missing (or not finite) were left out.
    MissingTarget,
    /// The smallest class is a small share of the rows.
    ClassImbalance,
    /// Identical rows (all columns, target included).
    DuplicateRows,
    /// Too few rows overall or in some class for a reliable score.
    TooFewRows,
    /// One feature alone predicts the target almost perfectly: perhaps derived from it.
    LeakageSuspect,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub check: Check,
    pub severity: Severity,
    pub column: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guardrails {
    /// Rows in the table as loaded.
    pub n_rows: usize,
    /// Rows with a usable target.
    pub n_rows_used: usize,
    pub n_duplicate_rows: usize,
    /// Share of the smallest class among used rows (classification only).
    pub minority_share: Option<f64>,
    pub findings: Vec<Finding>,
}

impl Guardrails {
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Warning)
    }

    /// One line per warning, then a count of the info findings: for the terminal.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.warnings().map(|f| format!("warning: {}", f.message)).collect();
        let n_info = self.findings.len() - lines.len();
        if n_info > 0 {
            lines
                .push(format!("{n_info} more note{} in guardrails.json", if n_info == 1 { "" } else { "s" }));
        }
        lines
    }
}

/// Runs every check. `table` is the training table as loaded — before rows with a missing
/// target are dropped — so that those rows can be counted; `featurizer` is the one fitted on it.
pub fn guardrails(table: &Table, target: &TargetEncoder, featurizer: &Featurizer) -> Guardrails {
    let mut findings = Vec::new();
    let n = table.n_rows;
    let pct = |k: usize, of: usize| 100.0 * k as f64 / of.max(1) as f64;
    let mut push = |check, severity, column: Option<&str>, message: String| {
        findings.push(Finding { check, severity, column: column.map(str::to_string), message });
    };

    let encoded = target.encode(table).ok();
    let n_used = encoded.as_ref().map_or(n, |(_, kept)| kept.len());
    if n_used < n {
        let k = n - n_used;
        push(
            Check::MissingTarget,
            if pct(k, n) > 20.0 { Severity::Warning } else { Severity::Info },
            Some(&target.name),
            format!(
                "target {:?}: {k} of {n} rows ({:.1}%) have a missing or non-finite value and were left out",
                target.name,
                pct(k, n)
            ),
        );
    }

    for col in &featurizer.columns {
        let name = Some(col.name.as_str());
        match &col.transform {
            ColumnTransform::Dropped { reason } => push(
                Check::DroppedColumn,
                if col.overridden { Severity::Info } else { Severity::Warning },
                name,
                format!("column {:?} was not used: {reason}", col.name),
            ),
            ColumnTransform::Categorical { levels, has_other: true } => push(
                Check::HighCardinality,
                Severity::Info,
                name,
                format!(
                    "column {:?}: {}{} distinct values; the {} most frequent are kept and the rest share one \"other\" level",
                    col.name,
                    col.n_distinct,
                    if col.n_distinct >= crate::infer::DISTINCT_CAP { "+" } else { "" },
                    levels.len()
                ),
            ),
            ColumnTransform::HighCardinality(enc) => push(
                Check::TargetEncoded,
                Severity::Info,
                name,
                format!(
                    "column {:?}: {}{} distinct values, too many for one code each; {}every level is frequency encoded and target encoded (smoothed mean of the target per level, fitted out-of-fold)",
                    col.name,
                    col.n_distinct,
                    if col.n_distinct >= crate::infer::DISTINCT_CAP { "+" } else { "" },
                    if enc.n_codes > 0 {
                        format!("the {} most frequent keep their own code, and ", enc.n_codes)
                    } else {
                        String::new()
                    }
                ),
            ),
            ColumnTransform::TfIdf { idf, .. } => push(
                Check::TextColumn,
                Severity::Info,
                name,
                format!(
                    "column {:?} is free text: encoded as TF-IDF of its {} most frequent words and word pairs",
                    col.name,
                    idf.len()
                ),
            ),
            _ => {}
        }
        let used = !matches!(col.transform, ColumnTransform::Dropped { .. });
        // Counted over the rows the models see (target present), from the table itself.
        let n_missing = match (table.column(&col.name), &encoded) {
            (Some(raw), Some((_, kept))) => {
                kept.iter().filter(|&&i| i < raw.values.len() && raw.values.is_missing(i)).count()
            }
            _ => col.n_missing,
        };
        if used && n_missing > 0 {
            let share = n_missing as f64 / n_used.max(1) as f64;
            let handling = match col.kind {
                ColumnKind::Categorical => "kept as a missing code",
                ColumnKind::Text => "treated as an empty text",
                ColumnKind::Datetime => "left missing in every date part",
                _ => "left missing (NaN) for the models to route",
            };
            push(
                Check::MissingValues,
                if share > HIGH_MISSING_SHARE { Severity::Warning } else { Severity::Info },
                name,
                format!(
                    "column {:?}: {n_missing} of {n_used} values ({:.1}%) missing; {handling}",
                    col.name,
                    100.0 * share
                ),
            );
        }
        if col.n_unparsed > 0 {
            push(
                Check::UnparsedValues,
                Severity::Warning,
                name,
                format!(
                    "column {:?} was forced to {}, but {} values could not be read as that and count as missing",
                    col.name,
                    col.kind.name(),
                    col.n_unparsed
                ),
            );
        }
    }

    let mut minority_share = None;
    if let Some((Target::Classes { classes, codes }, _)) = &encoded {
        let mut counts = vec![0usize; classes.len()];
        for &c in codes {
            if let Some(slot) = counts.get_mut(c as usize) {
                *slot += 1;
            }
        }
        if let Some((k, &min)) = counts.iter().enumerate().min_by_key(|(_, c)| **c) {
            let share = min as f64 / codes.len().max(1) as f64;
            minority_share = Some(share);
            let label = classes.get(k).map_or("?", String::as_str);
            if share < IMBALANCE_SHARE {
                push(
                    Check::ClassImbalance,
                    Severity::Warning,
                    Some(&target.name),
                    format!(
                        "target {:?} is imbalanced: the smallest class {label:?} is {:.1}% of rows ({min} of {})",
                        target.name,
                        100.0 * share,
                        codes.len()
                    ),
                );
            }
            if min < MIN_ROWS_PER_CLASS {
                push(
                    Check::TooFewRows,
                    Severity::Warning,
                    Some(&target.name),
                    format!(
                        "class {label:?} of target {:?} has only {min} rows (fewer than {MIN_ROWS_PER_CLASS}); its scores will be noisy",
                        target.name
                    ),
                );
            }
        }
    }
    if n_used < MIN_ROWS {
        push(
            Check::TooFewRows,
            Severity::Warning,
            None,
            format!("only {n_used} usable rows (fewer than {MIN_ROWS}); validation scores will be noisy"),
        );
    }

    if let Some((y, kept)) = &encoded {
        for (column, message) in leakage_suspects(table, target, featurizer, y, kept) {
            push(Check::LeakageSuspect, Severity::Warning, Some(&column), message);
        }
    }

    let n_duplicate_rows = count_duplicate_rows(table);
    if n_duplicate_rows > 0 {
        push(
            Check::DuplicateRows,
            if pct(n_duplicate_rows, n) > 5.0 { Severity::Warning } else { Severity::Info },
            None,
            format!(
                "{n_duplicate_rows} of {n} rows ({:.1}%) repeat an earlier row exactly; cross-validation scores may be optimistic",
                pct(n_duplicate_rows, n)
            ),
        );
    }

    Guardrails { n_rows: n, n_rows_used: n_used, n_duplicate_rows, minority_share, findings }
}

/// Leakage checks need this many rows with a target; below it, perfect fits are chance.
const LEAKAGE_MIN_ROWS: usize = 20;
/// A feature whose value bins classify this share of rows correctly (or whose correlation with
/// a regression target is at least this) is suspect.
const LEAKAGE_SCORE: f64 = 0.99;
/// Numeric features are cut into this many equal-count bins for the classification check.
const LEAKAGE_BINS: usize = 32;

/// `(source column, message)` for every feature that alone predicts the target almost
/// perfectly. Classification: the share of rows that the majority class of their value bin
/// gets right (bins: categorical codes or 32 quantile bins; missing is its own bin), flagged
/// at ≥ 99 % when the majority class alone is under 90 % and bins are few relative to rows.
/// Regression: |Pearson r| ≥ 0.99. Text (TF-IDF) columns are skipped.
fn leakage_suspects(
    table: &Table,
    target: &TargetEncoder,
    featurizer: &Featurizer,
    y: &Target,
    kept: &[usize],
) -> Vec<(String, String)> {
    let n = kept.len();
    if n < LEAKAGE_MIN_ROWS || kept.iter().any(|&i| i >= table.n_rows) {
        return Vec::new();
    }
    let mut out = Vec::new();
    // One raw column at a time: a second full feature matrix would double the peak memory
    // of a run on a large file.
    let candidates = featurizer
        .columns
        .iter()
        .filter(|c| !matches!(c.transform, ColumnTransform::TfIdf { .. } | ColumnTransform::Dropped { .. }));
    for raw in candidates {
        let mut raw = raw.clone();
        // A target encoding fitted on these very rows has seen each row's label: it would be
        // a suspect by construction. Its codes and frequencies are label-free.
        if let ColumnTransform::HighCardinality(enc) = &mut raw.transform {
            enc.target.clear();
            enc.prior.clear();
        }
        let single = Featurizer { columns: vec![raw] };
        let Ok(x) = single.transform(table) else { continue };
        for col in &x.columns {
            let v: Vec<f32> = kept.iter().map(|&i| col.values[i]).collect();
            let suspect = match y {
                Target::Classes { classes, codes } => bin_purity(&v, codes, classes.len())
                    .map(|p| format!("its value bins classify {:.1}% of rows", 100.0 * p)),
                Target::Values(t) => {
                    correlation(&v, t).map(|r| format!("its correlation with the target is {r:.3}"))
                }
            };
            if let Some(how) = suspect {
                out.push((
                    col.source.clone(),
                    format!(
                        "column {:?} alone predicts target {:?} almost perfectly ({how}); check that it is not derived from the target",
                        col.source, target.name
                    ),
                ));
                break;
            }
        }
    }
    out
}

fn bin_purity(v: &[f32], codes: &[u32], n_classes: usize) -> Option<f64> {
    let n = v.len().min(codes.len());
    if n == 0 || n_classes < 2 {
        return None;
    }
    let mut sorted: Vec<f32> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    sorted.sort_by(f32::total_cmp);
    sorted.dedup();
    // Bin edges: every distinct value when there are few, else equal-count quantile cuts.
    let edges: Vec<f32> = if sorted.len() <= LEAKAGE_BINS {
        sorted
    } else {
        (1..=LEAKAGE_BINS).map(|k| sorted[(k * sorted.len() / LEAKAGE_BINS).saturating_sub(1)]).collect()
    };
    let n_bins = edges.len() + 1;
    if n_bins * 5 > n {
        return None;
    }
    let mut counts = vec![0usize; n_bins * n_classes];
    let mut totals = vec![0usize; n_classes];
    for (x, &c) in v.iter().zip(codes) {
        let c = c as usize;
        if c >= n_classes {
            return None;
        }
        let bin = if x.is_nan() {
            edges.len()
        } else {
            edges.partition_point(|e| e < x).min(edges.len().saturating_sub(1))
        };
        counts[bin * n_classes + c] += 1;
        totals[c] += 1;
    }
    let majority = totals.iter().copied().max().unwrap_or(0) as f64 / n as f64;
    let correct: usize = counts.chunks(n_classes).map(|b| b.iter().copied().max().unwrap_or(0)).sum();
    let purity = correct as f64 / n as f64;
    (purity >= LEAKAGE_SCORE && majority < 0.9).then_some(purity)
}

fn correlation(v: &[f32], t: &[f64]) -> Option<f64> {
    let pairs: Vec<(f64, f64)> = v
        .iter()
        .zip(t)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (f64::from(*x), *y))
        .collect();
    if pairs.len() < LEAKAGE_MIN_ROWS {
        return None;
    }
    let m = pairs.len() as f64;
    let (mx, my) = pairs.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x / m, b + y / m));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in &pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    let r = sxy / (sxx.sqrt() * syy.sqrt());
    (r.abs() >= LEAKAGE_SCORE).then_some(r)
}

/// Rows equal, in every column, to an earlier row. Rows are compared by a 64-bit FNV-1a
/// fingerprint of their cells (length-prefixed, so cell boundaries count); a false match
/// needs a hash collision, about n²/2⁶⁵ — negligible for any table that fits in memory.
pub fn count_duplicate_rows(table: &Table) -> usize {
    let mut seen: HashSet<u64> = HashSet::with_capacity(table.n_rows);
    let mut dups = 0;
    let mut buf: Vec<u8> = Vec::new();
    for i in 0..table.n_rows {
        buf.clear();
        for col in &table.columns {
            if i >= col.values.len() {
                buf.push(2);
                continue;
            }
            match &col.values {
                RawValues::Number(v) => {
                    buf.push(1);
                    buf.extend_from_slice(&v[i].to_bits().to_le_bytes());
                }
                other => match other.text(i) {
                    None => buf.push(0),
                    Some(s) => {
                        buf.push(1);
                        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
                        buf.extend_from_slice(s.as_bytes());
                    }
                },
            }
        }
        if !seen.insert(fnv1a64(&buf)) {
            dups += 1;
        }
    }
    dups
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::table::{RawColumn, StrColumn};

    fn table(cols: &[(&str, Vec<String>)]) -> Table {
        Table {
            n_rows: cols[0].1.len(),
            columns: cols
                .iter()
                .map(|(name, vals)| {
                    let mut c = StrColumn::new();
                    for v in vals {
                        c.push(Some(v));
                    }
                    RawColumn { name: name.to_string(), values: RawValues::Text(c) }
                })
                .collect(),
        }
    }

    fn run(t: &Table) -> Guardrails {
        let enc = TargetEncoder::fit(t, "y", None).unwrap();
        let (_, kept) = enc.encode(t).unwrap();
        let f = Featurizer::fit(&t.select_rows(&kept), &["y"]).unwrap();
        guardrails(t, &enc, &f)
    }

    fn find(g: &Guardrails, check: Check) -> Vec<&Finding> {
        g.findings.iter().filter(|f| f.check == check).collect()
    }

    #[test]
    fn flags_imbalance_missing_target_duplicates_and_small_data() {
        // 40 rows: 3 positives, every 10th target missing, x repeats so rows repeat.
        let n = 40;
        let y: Vec<String> =
            (0..n).map(|i| if i % 10 == 9 { String::new() } else { u8::from(i < 3).to_string() }).collect();
        let x: Vec<String> = (0..n).map(|i| (i % 4).to_string()).collect();
        let id: Vec<String> = (0..n).map(|i| format!("row{i}")).collect();
        let missing: Vec<String> =
            (0..n).map(|i| if i % 2 == 1 { String::new() } else { (i % 3).to_string() }).collect();
        let g = run(&table(&[("x", x), ("id", id), ("m", missing), ("y", y)]));
        assert_eq!((g.n_rows, g.n_rows_used), (40, 36));
        let share = g.minority_share.unwrap();
        assert!((share - 3.0 / 36.0).abs() < 1e-9, "{share}");

        let imbalance = find(&g, Check::ClassImbalance);
        assert_eq!(imbalance.len(), 1);
        assert_eq!(imbalance[0].severity, Severity::Warning);
        assert!(imbalance[0].message.contains("\"1\""), "{}", imbalance[0].message);
        assert_eq!(find(&g, Check::MissingTarget)[0].column.as_deref(), Some("y"));
        assert!(find(&g, Check::MissingTarget)[0].message.contains("4 of 40"));
        assert_eq!(find(&g, Check::TooFewRows).len(), 2, "fewer than 50 rows and a class under 10");
        let m = find(&g, Check::MissingValues);
        assert!(
            m.iter().any(|f| f.column.as_deref() == Some("m") && f.message.contains("16 of 36")),
            "{m:?}"
        );
        assert_eq!(g.n_duplicate_rows, 0, "the id column makes every row distinct");

        let summary = g.summary_lines();
        assert!(summary.iter().any(|l| l.starts_with("warning: target \"y\" is imbalanced")), "{summary:?}");
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["findings"][0]["severity"], "info");
    }

    #[test]
    fn counts_duplicates_and_reports_dropped_and_grouped_columns() {
        let n = 120;
        let x: Vec<String> = (0..n).map(|i| (i % 5).to_string()).collect();
        let y: Vec<String> = (0..n).map(|i| (i % 2).to_string()).collect();
        let constant: Vec<String> = (0..n).map(|_| "k".to_string()).collect();
        // 300 distinct levels would be ID-like on 120 rows; 60 levels twice each then 1 of each.
        let cat: Vec<String> = (0..n).map(|i| format!("L{}", if i < 100 { i % 50 } else { i })).collect();
        let g = run(&table(&[("x", x), ("c", constant), ("cat", cat), ("y", y)]));
        // Rows repeat with period lcm(5, 2, 50) = 50 over the first 100 rows.
        assert_eq!(g.n_duplicate_rows, 50);
        assert!(find(&g, Check::DuplicateRows)[0].message.starts_with("50 of 120 rows"));
        let dropped = find(&g, Check::DroppedColumn);
        assert_eq!(dropped.len(), 1);
        assert!(dropped[0].message.contains("\"c\"") && dropped[0].message.contains("constant"));
        let grouped = find(&g, Check::HighCardinality);
        assert_eq!(grouped.len(), 1);
        assert!(grouped[0].message.contains("70 distinct"), "{}", grouped[0].message);
        assert!(g.minority_share.is_some() && find(&g, Check::ClassImbalance).is_empty());
    }

    #[test]
    fn flags_a_feature_that_gives_the_target_away() {
        let n = 200;
        let y: Vec<String> = (0..n).map(|i| ((i * 7) % 3).to_string()).collect();
        let leak: Vec<String> = y.iter().map(|c| format!("{c}.5")).collect();
        let noise: Vec<String> = (0..n).map(|i| ((i * 13) % 17).to_string()).collect();
        let g = run(&table(&[("leak", leak), ("noise", noise), ("y", y.clone())]));
        let suspects = find(&g, Check::LeakageSuspect);
        assert_eq!(suspects.len(), 1, "{suspects:?}");
        assert_eq!(suspects[0].column.as_deref(), Some("leak"));

        let yr: Vec<String> = (0..n).map(|i| format!("{}", i as f64 * 0.37 + ((i * 7) % 5) as f64)).collect();
        let twice: Vec<String> =
            (0..n).map(|i| format!("{}", 2.0 * (i as f64 * 0.37 + ((i * 7) % 5) as f64))).collect();
        let noise: Vec<String> = (0..n).map(|i| ((i * 13) % 17).to_string()).collect();
        let g = run(&table(&[("twice", twice), ("noise", noise), ("y", yr)]));
        let suspects = find(&g, Check::LeakageSuspect);
        assert_eq!(suspects.iter().map(|f| f.column.as_deref()).collect::<Vec<_>>(), [Some("twice")]);
    }

    #[test]
    fn duplicate_fingerprints_respect_cell_boundaries() {
        let t = table(&[("a", vec!["ab".into(), "a".into()]), ("b", vec!["c".into(), "bc".into()])]);
        assert_eq!(count_duplicate_rows(&t), 0);
    }
}
