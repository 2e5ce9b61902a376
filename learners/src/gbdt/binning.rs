//! Feature binning: quantile bins for numeric columns, one bin per level for categorical
//! columns, and a dedicated missing bin (always the last bin of a feature).

use quarry_featurize::matrix::{FeatureColumn, FeatureKind, FeatureMatrix};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// At most this many non-missing values are sorted to find quantile edges.
const MAX_BIN_SAMPLE: usize = 200_000;

/// How raw values of one feature map to bins; kept in the model for categorical lookups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub(crate) enum FeatureInfo {
    Numeric,
    /// Codes `0..n_direct` get their own bin; codes `n_direct..n_levels` share an "other" bin;
    /// anything else (NaN, negative, out of range) is missing.
    Categorical {
        n_levels: u32,
        n_direct: u32,
    },
}

impl FeatureInfo {
    /// The bin of a raw categorical value (only meaningful for `Categorical`).
    #[inline]
    pub(crate) fn cat_bin(&self, v: f32) -> usize {
        match *self {
            FeatureInfo::Numeric => 0,
            FeatureInfo::Categorical { n_levels, n_direct } => {
                let missing = n_direct as usize + usize::from(n_levels > n_direct);
                if v.is_nan() || v < 0.0 || v >= n_levels as f32 {
                    return missing;
                }
                let code = v as u32;
                if code < n_direct { code as usize } else { n_direct as usize }
            }
        }
    }
}

/// Binning of one feature.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BinMapper {
    pub info: FeatureInfo,
    /// Numeric only: bin `b < thresholds.len()` holds values `<= thresholds[b]` (and above the
    /// previous threshold); the last value bin holds everything above the last threshold.
    pub thresholds: Vec<f32>,
    /// Total bins including the missing bin (which is `n_bins - 1`).
    pub n_bins: usize,
}

impl BinMapper {
    pub(crate) fn missing_bin(&self) -> usize {
        self.n_bins - 1
    }

    pub(crate) fn is_categorical(&self) -> bool {
        matches!(self.info, FeatureInfo::Categorical { .. })
    }

    #[inline]
    pub(crate) fn bin(&self, v: f32) -> usize {
        match self.info {
            FeatureInfo::Numeric => {
                if v.is_nan() {
                    self.missing_bin()
                } else {
                    self.thresholds.partition_point(|&t| t < v)
                }
            }
            FeatureInfo::Categorical { .. } => self.info.cat_bin(v),
        }
    }

    fn fit(column: &FeatureColumn, max_bin: usize) -> BinMapper {
        match column.kind {
            FeatureKind::Numeric => {
                let thresholds = numeric_thresholds(&column.values, max_bin);
                let n_bins = thresholds.len() + 2;
                BinMapper { info: FeatureInfo::Numeric, thresholds, n_bins }
            }
            FeatureKind::Categorical { n_levels } => {
                let cap = (max_bin.saturating_sub(1)).max(1) as u32;
                let n_direct = n_levels.min(cap);
                let n_value_bins = n_direct as usize + usize::from(n_levels > n_direct);
                BinMapper {
                    info: FeatureInfo::Categorical { n_levels, n_direct },
                    thresholds: Vec::new(),
                    n_bins: n_value_bins + 1,
                }
            }
        }
    }
}

/// Quantile cut points (midpoints between distinct values), at most `max_bin - 1` of them.
fn numeric_thresholds(values: &[f32], max_bin: usize) -> Vec<f32> {
    let present = values.iter().filter(|v| !v.is_nan()).count();
    let stride = present.div_ceil(MAX_BIN_SAMPLE).max(1);
    let mut sample: Vec<f32> = values.iter().filter(|v| !v.is_nan()).step_by(stride).copied().collect();
    if sample.is_empty() {
        return Vec::new();
    }
    sample.sort_unstable_by(f32::total_cmp);
    // Distinct values with counts.
    let mut distinct: Vec<(f32, usize)> = Vec::new();
    for v in sample.iter().copied() {
        match distinct.last_mut() {
            Some((last, count)) if *last == v => *count += 1,
            _ => distinct.push((v, 1)),
        }
    }
    let mid = |a: f32, b: f32| -> f32 {
        let m = ((f64::from(a) + f64::from(b)) / 2.0) as f32;
        // Keep `a <= m < b` so `a` bins left of the cut and `b` right of it.
        if m >= b { a } else { m }
    };
    let max_bin = max_bin.max(2);
    let mut thresholds = Vec::new();
    if distinct.len() <= max_bin {
        for w in distinct.windows(2) {
            thresholds.push(mid(w[0].0, w[1].0));
        }
        return thresholds;
    }
    // Greedy equal-frequency cuts: close a bin once it holds its share of the remaining rows.
    let mut remaining = sample.len();
    let mut bins_left = max_bin;
    let mut in_bin = 0usize;
    for (i, &(v, count)) in distinct.iter().enumerate() {
        in_bin += count;
        remaining -= count;
        let target = (remaining + in_bin) as f64 / bins_left as f64;
        if i + 1 < distinct.len() && in_bin as f64 >= target && bins_left > 1 {
            thresholds.push(mid(v, distinct[i + 1].0));
            in_bin = 0;
            bins_left -= 1;
        }
    }
    thresholds
}

/// Bin codes of one feature for every row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BinColumn {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

impl BinColumn {
    #[inline]
    pub(crate) fn get(&self, row: usize) -> usize {
        match self {
            BinColumn::U8(v) => usize::from(v[row]),
            BinColumn::U16(v) => usize::from(v[row]),
        }
    }
}

/// The training matrix in bin form, column-major, plus the histogram layout.
#[derive(Debug, Clone)]
pub(crate) struct BinnedData {
    pub mappers: Vec<BinMapper>,
    pub columns: Vec<BinColumn>,
    /// `offsets[f]..offsets[f + 1]` is feature `f`'s slice of a histogram.
    pub offsets: Vec<usize>,
}

impl BinnedData {
    pub(crate) fn build(x: &FeatureMatrix, max_bin: usize) -> BinnedData {
        let (mappers, columns): (Vec<BinMapper>, Vec<BinColumn>) = x
            .columns
            .par_iter()
            .map(|col| {
                let mapper = BinMapper::fit(col, max_bin);
                let column = if mapper.n_bins <= 256 {
                    BinColumn::U8(col.values.iter().map(|&v| mapper.bin(v) as u8).collect())
                } else {
                    BinColumn::U16(col.values.iter().map(|&v| mapper.bin(v) as u16).collect())
                };
                (mapper, column)
            })
            .unzip();
        let mut offsets = Vec::with_capacity(mappers.len() + 1);
        offsets.push(0);
        for m in &mappers {
            offsets.push(offsets.last().copied().unwrap_or(0) + m.n_bins);
        }
        BinnedData { mappers, columns, offsets }
    }

    pub(crate) fn total_bins(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }

    pub(crate) fn infos(&self) -> Vec<FeatureInfo> {
        self.mappers.iter().map(|m| m.info.clone()).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn few_distinct_values_get_one_bin_each() {
        let t = numeric_thresholds(&[3.0, 1.0, 2.0, 1.0, f32::NAN, 3.0], 255);
        assert_eq!(t, vec![1.5, 2.5]);
    }

    #[test]
    fn quantile_bins_are_capped_and_balanced() {
        let values: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let t = numeric_thresholds(&values, 16);
        assert_eq!(t.len(), 15);
        let col = FeatureColumn { name: "a".into(), source: "a".into(), kind: FeatureKind::Numeric, values };
        let m = BinMapper::fit(&col, 16);
        let mut counts = vec![0usize; m.n_bins];
        for &v in &col.values {
            counts[m.bin(v)] += 1;
        }
        assert_eq!(counts[m.missing_bin()], 0);
        for &c in &counts[..16] {
            assert!((500..=750).contains(&c), "{counts:?}");
        }
        assert_eq!(m.bin(f32::NAN), 16);
    }

    #[test]
    fn categorical_levels_beyond_cap_share_other_bin() {
        let info = FeatureInfo::Categorical { n_levels: 10, n_direct: 4 };
        assert_eq!(info.cat_bin(2.0), 2);
        assert_eq!(info.cat_bin(7.0), 4);
        assert_eq!(info.cat_bin(f32::NAN), 5);
        assert_eq!(info.cat_bin(12.0), 5);
    }
}
