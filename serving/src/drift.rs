//! Drift between a reference sample (training data) and current data, per column: PSI and the
//! two-sample Kolmogorov–Smirnov test for numeric columns, PSI and the chi-square test of
//! homogeneity for categorical ones; plus the running summaries an endpoint keeps of the rows
//! it scores.
//!
//! The KS p-value uses the asymptotic Kolmogorov distribution (a three-line series, written here
//! because statrs has no KS distribution); the chi-square p-value comes from statrs.

use std::collections::BTreeMap;

use quarry_featurize::infer::parse_number;
use quarry_featurize::{ColumnKind, RawValues, Table, profile_column};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Reference samples keep at most this many numeric values per column (KS on 5,000 values is
/// precise to about 0.02 in D, far below the drift threshold).
pub const REFERENCE_SAMPLE: usize = 5_000;
/// Categorical summaries fold levels past this many into one bucket, bounding memory.
const MAX_LEVELS: usize = 10_000;
const OTHER: &str = "\u{0}other";
const MISSING: &str = "\u{0}missing";
const PSI_BINS: usize = 10;
/// Proportions are floored here so an empty bin does not make PSI infinite.
const PSI_EPS: f64 = 1e-4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ColumnSample {
    Numeric { values: Vec<f64>, n_missing: u64, n_rows: u64 },
    Categorical { counts: BTreeMap<String, u64>, n_rows: u64 },
}

impl ColumnSample {
    fn n_rows(&self) -> u64 {
        match self {
            ColumnSample::Numeric { n_rows, .. } | ColumnSample::Categorical { n_rows, .. } => *n_rows,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceColumn {
    pub name: String,
    pub sample: ColumnSample,
}

/// Per-column samples of one dataset (a reference, or the current data).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reference {
    pub columns: Vec<ReferenceColumn>,
}

/// Whether a column kind is compared as numbers, as levels, or not at all.
fn compared_as(kind: ColumnKind) -> Option<bool> {
    match kind {
        ColumnKind::Numeric => Some(true),
        ColumnKind::Boolean | ColumnKind::Categorical => Some(false),
        _ => None,
    }
}

impl Reference {
    /// Samples every numeric, boolean and categorical column of `table` except `exclude`;
    /// `kinds` (e.g. a model's fitted columns) overrides inference and limits the columns.
    pub fn from_table(
        table: &Table,
        kinds: Option<&[(String, ColumnKind)]>,
        exclude: &[&str],
        seed: u64,
    ) -> Reference {
        let mut columns = Vec::new();
        for col in table.columns.iter().filter(|c| !exclude.contains(&c.name.as_str())) {
            let kind = match kinds {
                Some(k) => match k.iter().find(|(n, _)| *n == col.name) {
                    Some((_, kind)) => *kind,
                    None => continue,
                },
                None => profile_column(col).kind,
            };
            let Some(numeric) = compared_as(kind) else { continue };
            let mut summary = Summary::new(numeric);
            summary.add(&col.values);
            let sample = summary.finish(REFERENCE_SAMPLE, seed);
            columns.push(ReferenceColumn { name: col.name.clone(), sample });
        }
        Reference { columns }
    }

    /// Samples the same columns, compared the same way, as `like` (missing columns are skipped).
    pub fn like(like: &Reference, table: &Table, seed: u64) -> Reference {
        let kinds: Vec<(String, ColumnKind)> = like
            .columns
            .iter()
            .map(|c| {
                let kind = match c.sample {
                    ColumnSample::Numeric { .. } => ColumnKind::Numeric,
                    ColumnSample::Categorical { .. } => ColumnKind::Categorical,
                };
                (c.name.clone(), kind)
            })
            .collect();
        Reference::from_table(table, Some(&kinds), &[], seed)
    }
}

/// A running summary of one column: a reservoir of numeric values or level counts.
#[derive(Debug, Clone)]
pub struct Summary {
    numeric: bool,
    values: Vec<f64>,
    seen: u64,
    n_missing: u64,
    n_rows: u64,
    counts: BTreeMap<String, u64>,
}

impl Summary {
    pub fn new(numeric: bool) -> Summary {
        Summary { numeric, values: Vec::new(), seen: 0, n_missing: 0, n_rows: 0, counts: BTreeMap::new() }
    }

    /// Adds every value; numeric values are all kept here ([`Summary::finish`] samples them, and
    /// [`Monitor`] keeps a reservoir).
    fn add(&mut self, values: &RawValues) {
        for row in 0..values.len() {
            self.n_rows += 1;
            let text = values.text(row);
            if self.numeric {
                match text.as_deref().and_then(parse_number).filter(|v| !v.is_nan()) {
                    Some(v) => {
                        self.seen += 1;
                        self.values.push(v);
                    }
                    None => self.n_missing += 1,
                }
            } else {
                let key = text.map_or(MISSING.to_string(), |t| t.into_owned());
                self.count(key);
            }
        }
    }

    fn count(&mut self, key: String) {
        if !self.counts.contains_key(&key) && self.counts.len() >= MAX_LEVELS {
            *self.counts.entry(OTHER.to_string()).or_default() += 1;
        } else {
            *self.counts.entry(key).or_default() += 1;
        }
    }

    fn finish(self, max: usize, seed: u64) -> ColumnSample {
        if !self.numeric {
            return ColumnSample::Categorical { counts: self.counts, n_rows: self.n_rows };
        }
        let values = if self.values.len() > max {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut idx = sample(&mut rng, self.values.len(), max).into_vec();
            idx.sort_unstable();
            idx.into_iter().map(|i| self.values[i]).collect()
        } else {
            self.values
        };
        ColumnSample::Numeric { values, n_missing: self.n_missing, n_rows: self.n_rows }
    }
}

/// What an endpoint keeps of the rows it scores: per compared column, a uniform reservoir of
/// numeric values (Algorithm R, seeded) or level counts.
#[derive(Debug)]
pub struct Monitor {
    columns: Vec<(String, Summary)>,
    capacity: usize,
    rng: ChaCha8Rng,
}

impl Monitor {
    pub fn new(reference: &Reference, capacity: usize, seed: u64) -> Monitor {
        let columns = reference
            .columns
            .iter()
            .map(|c| (c.name.clone(), Summary::new(matches!(c.sample, ColumnSample::Numeric { .. }))))
            .collect();
        Monitor { columns, capacity, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    pub fn observe(&mut self, table: &Table) {
        use rand::Rng;
        for (name, s) in &mut self.columns {
            let Some(col) = table.column(name) else { continue };
            for row in 0..col.values.len() {
                s.n_rows += 1;
                let text = col.values.text(row);
                if !s.numeric {
                    let key = text.map_or(MISSING.to_string(), |t| t.into_owned());
                    s.count(key);
                    continue;
                }
                let Some(v) = text.as_deref().and_then(parse_number).filter(|v| !v.is_nan()) else {
                    s.n_missing += 1;
                    continue;
                };
                s.seen += 1;
                if s.values.len() < self.capacity {
                    s.values.push(v);
                } else {
                    let j = self.rng.random_range(0..s.seen);
                    if let Some(slot) = usize::try_from(j).ok().and_then(|j| s.values.get_mut(j)) {
                        *slot = v;
                    }
                }
            }
        }
    }

    pub fn snapshot(&self) -> Reference {
        let columns = self
            .columns
            .iter()
            .map(|(name, s)| ReferenceColumn { name: name.clone(), sample: s.clone().finish(usize::MAX, 0) })
            .collect();
        Reference { columns }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// PSI at or above this is a warning (0.1 is the usual "moderate shift").
    pub psi_warn: f64,
    /// PSI at or above this is drift (0.25 is the usual "significant shift").
    pub psi_drift: f64,
    /// A test p-value below this, with an effect at least `min_effect`, is drift too.
    pub p_value: f64,
    /// KS statistic D or Cramér's V: keeps huge samples from flagging negligible shifts.
    pub min_effect: f64,
    /// Fewer current rows than this: no verdict for the column.
    pub min_rows: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { psi_warn: 0.1, psi_drift: 0.25, p_value: 0.001, min_effect: 0.1, min_rows: 30 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    pub column: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    pub n_reference: u64,
    pub n_current: u64,
    pub psi: f64,
    /// `ks` or `chi_square`.
    pub test: String,
    pub statistic: f64,
    pub p_value: f64,
    /// KS D, or Cramér's V for chi-square.
    pub effect: f64,
    /// `ok`, `warn`, `drift` or `insufficient_data`.
    pub verdict: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// `drift` if any column drifted, else `warn` if any warned, else `ok`.
    pub verdict: String,
    pub drifted_columns: Vec<String>,
    pub thresholds: Thresholds,
    pub columns: Vec<ColumnDrift>,
}

/// Compares every reference column that `current` also has.
pub fn compare(reference: &Reference, current: &Reference, t: &Thresholds) -> DriftReport {
    let mut columns = Vec::new();
    for r in &reference.columns {
        let Some(c) = current.columns.iter().find(|c| c.name == r.name) else { continue };
        let d = match (&r.sample, &c.sample) {
            (
                ColumnSample::Numeric { values: a, n_missing: ma, .. },
                ColumnSample::Numeric { values: b, n_missing: mb, .. },
            ) => {
                let psi = numeric_psi(a, *ma, b, *mb);
                let (stat, p) = ks_test(a, b);
                (String::from("numeric"), psi, String::from("ks"), stat, p, stat)
            }
            (ColumnSample::Categorical { counts: a, .. }, ColumnSample::Categorical { counts: b, .. }) => {
                let psi = psi(&aligned(a, b));
                let (stat, p, v) = chi_square(&aligned(a, b));
                (String::from("categorical"), psi, String::from("chi_square"), stat, p, v)
            }
            _ => continue,
        };
        let (kind, psi, test, statistic, p_value, effect) = d;
        let n_current = c.sample.n_rows();
        let verdict = if n_current < t.min_rows {
            "insufficient_data"
        } else if psi >= t.psi_drift || (p_value < t.p_value && effect >= t.min_effect) {
            "drift"
        } else if psi >= t.psi_warn {
            "warn"
        } else {
            "ok"
        };
        columns.push(ColumnDrift {
            column: r.name.clone(),
            kind,
            n_reference: r.sample.n_rows(),
            n_current,
            psi,
            test,
            statistic,
            p_value,
            effect,
            verdict: verdict.to_string(),
        });
    }
    let drifted_columns: Vec<String> =
        columns.iter().filter(|c| c.verdict == "drift").map(|c| c.column.clone()).collect();
    let verdict = if !drifted_columns.is_empty() {
        "drift"
    } else if columns.iter().any(|c| c.verdict == "warn") {
        "warn"
    } else {
        "ok"
    };
    DriftReport { verdict: verdict.to_string(), drifted_columns, thresholds: *t, columns }
}

/// Pairs of counts (reference, current) over the union of levels.
fn aligned(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> Vec<(f64, f64)> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| (a.get(k).copied().unwrap_or(0) as f64, b.get(k).copied().unwrap_or(0) as f64))
        .collect()
}

/// Population stability index over paired bin counts.
pub fn psi(bins: &[(f64, f64)]) -> f64 {
    let (ta, tb) = bins.iter().fold((0.0, 0.0), |(x, y), (a, b)| (x + a, y + b));
    if ta == 0.0 || tb == 0.0 {
        return 0.0;
    }
    bins.iter()
        .map(|(a, b)| {
            let (pa, pb) = ((a / ta).max(PSI_EPS), (b / tb).max(PSI_EPS));
            (pb - pa) * (pb / pa).ln()
        })
        .sum()
}

/// PSI on the reference's decile bins (plus a missing-value bin).
fn numeric_psi(a: &[f64], missing_a: u64, b: &[f64], missing_b: u64) -> f64 {
    let mut sorted = a.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> =
        (1..PSI_BINS).filter_map(|i| sorted.get((i * sorted.len()) / PSI_BINS).copied()).collect();
    edges.dedup();
    let bin = |v: f64| edges.partition_point(|e| *e < v);
    let mut counts = vec![(0.0, 0.0); edges.len() + 2];
    for &v in a {
        counts[bin(v)].0 += 1.0;
    }
    for &v in b {
        counts[bin(v)].1 += 1.0;
    }
    let last = counts.len() - 1;
    counts[last] = (missing_a as f64, missing_b as f64);
    psi(&counts)
}

/// Two-sample Kolmogorov–Smirnov: (D, asymptotic p-value).
pub fn ks_test(a: &[f64], b: &[f64]) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (0.0, 1.0);
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let en = (n * m / (n + m)).sqrt();
    (d, kolmogorov_q((en + 0.12 + 0.11 / en) * d))
}

/// P(K > λ) for the Kolmogorov distribution (Numerical Recipes' `probks`).
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for j in 1..=100 {
        let term = sign * 2.0 * (-2.0 * (j as f64).powi(2) * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-12 {
            return sum.clamp(0.0, 1.0);
        }
        sign = -sign;
    }
    1.0
}

/// Chi-square test of homogeneity on a 2×k table: (statistic, p-value, Cramér's V).
pub fn chi_square(bins: &[(f64, f64)]) -> (f64, f64, f64) {
    let bins: Vec<(f64, f64)> = bins.iter().copied().filter(|(a, b)| a + b > 0.0).collect();
    let (ta, tb) = bins.iter().fold((0.0, 0.0), |(x, y), (a, b)| (x + a, y + b));
    let total = ta + tb;
    if bins.len() < 2 || ta == 0.0 || tb == 0.0 {
        return (0.0, 1.0, 0.0);
    }
    let stat: f64 = bins
        .iter()
        .map(|(a, b)| {
            let col = a + b;
            let (ea, eb) = (col * ta / total, col * tb / total);
            (a - ea).powi(2) / ea + (b - eb).powi(2) / eb
        })
        .sum();
    let df = (bins.len() - 1) as f64;
    let p = ChiSquared::new(df).map(|d| 1.0 - d.cdf(stat)).unwrap_or(1.0);
    (stat, p, (stat / total).sqrt())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn normal(n: usize, shift: f64, seed: u64) -> Vec<f64> {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Box–Muller: enough for a test.
        (0..n)
            .map(|_| {
                let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                shift + (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
            })
            .collect()
    }

    #[test]
    fn ks_matches_known_values() {
        // Disjoint samples: D = 1.
        let (d, p) = ks_test(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert_eq!(d, 1.0);
        assert!(p < 0.1, "{p}");
        // A one-sd shift on 2,000 vs 2,000 normal values: D ≈ 2Φ(0.5) − 1 = 0.383.
        let (d, p) = ks_test(&normal(2000, 0.0, 1), &normal(2000, 1.0, 2));
        assert!((d - 0.383).abs() < 0.04, "{d}");
        assert!(p < 1e-10);
        let (d, p) = ks_test(&normal(2000, 0.0, 3), &normal(2000, 0.0, 4));
        assert!(d < 0.05 && p > 0.01, "{d} {p}");
    }

    #[test]
    fn kolmogorov_tail_is_the_textbook_value() {
        // The 5 % critical value of the Kolmogorov distribution is 1.358.
        assert!((kolmogorov_q(1.358) - 0.05).abs() < 1e-3);
    }

    #[test]
    fn chi_square_matches_a_hand_computation() {
        // 2×2 table [[10, 20], [20, 10]]: chi2 = 6.667, df 1, p = 0.00982.
        let (stat, p, v) = chi_square(&[(10.0, 20.0), (20.0, 10.0)]);
        assert!((stat - 20.0 / 3.0).abs() < 1e-9);
        assert!((p - 0.00982).abs() < 1e-4, "{p}");
        assert!((v - (stat / 60.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn psi_is_zero_for_equal_and_large_for_shifted() {
        assert_eq!(psi(&[(10.0, 20.0), (30.0, 60.0)]), 0.0);
        let a = normal(3000, 0.0, 5);
        assert!(numeric_psi(&a, 0, &normal(3000, 1.0, 6), 0) > 0.5);
        assert!(numeric_psi(&a, 0, &normal(3000, 0.0, 7), 0) < 0.05);
    }

    #[test]
    fn monitor_reservoir_stays_bounded_and_compares() {
        let mut col = quarry_featurize::StrColumn::new();
        for v in normal(5000, 0.0, 8) {
            col.push(Some(&v.to_string()));
        }
        let table = Table {
            n_rows: 5000,
            columns: vec![quarry_featurize::RawColumn { name: "x".into(), values: RawValues::Text(col) }],
        };
        let reference = Reference::from_table(&table, None, &[], 1);
        let mut m = Monitor::new(&reference, 1000, 2);
        m.observe(&table);
        let snap = m.snapshot();
        match &snap.columns[0].sample {
            ColumnSample::Numeric { values, n_rows, .. } => {
                assert_eq!(values.len(), 1000);
                assert_eq!(*n_rows, 5000);
            }
            other => panic!("{other:?}"),
        }
        let report = compare(&reference, &snap, &Thresholds::default());
        assert_eq!(report.verdict, "ok", "{report:?}");
    }
}
