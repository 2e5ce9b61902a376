//! Feature binning: quantile bins for numeric columns, one bin per level for categorical
//! columns, and a dedicated missing bin (always the last bin of a feature).

use quarry_featurize::matrix::{FeatureColumn, FeatureKind, FeatureMatrix};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Columns binned by binary search find their quantile edges in a sample of this many values.
const MAX_BIN_SAMPLE: usize = 200_000;
/// Columns with at most this many non-missing values are binned by one sort of all their
/// values (16 bytes of scratch per value), which also gives exact quantile edges over every
/// value (LightGBM's default samples 200,000 rows; its own test RMSE on flights moves by 0.07
/// with the sampling seed); larger ones by binary search per value.
const MAX_SORTED_BINNING: usize = 1 << 23;

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

    #[cfg(test)]
    fn fit(column: &FeatureColumn, max_bin: usize) -> BinMapper {
        Self::fit_and_bin(column, max_bin).0
    }

    /// The mapper of `column` and the bin of each of its values.
    fn fit_and_bin(column: &FeatureColumn, max_bin: usize) -> (BinMapper, Vec<u16>) {
        let values = &column.values;
        match column.kind {
            FeatureKind::Numeric => {
                let present = values.iter().filter(|v| !v.is_nan()).count();
                if present > MAX_SORTED_BINNING {
                    let thresholds = numeric_thresholds(values, max_bin);
                    let mapper =
                        BinMapper { info: FeatureInfo::Numeric, n_bins: thresholds.len() + 2, thresholds };
                    let bins = values.iter().map(|&v| mapper.bin(v) as u16).collect();
                    return (mapper, bins);
                }
                // One radix sort of (value, row) gives the quantiles of every value and each
                // row's bin, by walking the rows in value order.
                let sorted = sorted_keys(values);
                let all: Vec<f32> = sorted.iter().map(|&k| key_value(k)).collect();
                let thresholds = thresholds_of_sorted(&all, max_bin);
                let mapper =
                    BinMapper { info: FeatureInfo::Numeric, n_bins: thresholds.len() + 2, thresholds };
                let mut bins = vec![mapper.missing_bin() as u16; values.len()];
                let mut b = 0usize;
                for &k in &sorted {
                    let v = key_value(k);
                    while b < mapper.thresholds.len() && mapper.thresholds[b] < v {
                        b += 1;
                    }
                    bins[(k & 0xffff_ffff) as usize] = b as u16;
                }
                (mapper, bins)
            }
            FeatureKind::Categorical { n_levels } => {
                let cap = (max_bin.saturating_sub(1)).max(1) as u32;
                let n_direct = n_levels.min(cap);
                let n_value_bins = n_direct as usize + usize::from(n_levels > n_direct);
                let mapper = BinMapper {
                    info: FeatureInfo::Categorical { n_levels, n_direct },
                    thresholds: Vec::new(),
                    n_bins: n_value_bins + 1,
                };
                let bins = values.iter().map(|&v| mapper.info.cat_bin(v) as u16).collect();
                (mapper, bins)
            }
        }
    }
}

/// An order-preserving `u32` image of a non-NaN `f32` (`-0.0` just below `+0.0`).
#[inline]
fn float_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
}

/// The value of a key from [`sorted_keys`].
#[inline]
fn key_value(k: u64) -> f32 {
    let b = (k >> 32) as u32;
    f32::from_bits(if b & 0x8000_0000 != 0 { b & 0x7fff_ffff } else { !b })
}

/// The non-NaN values as `(float_key << 32) | row`, sorted by value (LSD radix sort on the key
/// bytes; stable, so ties stay in row order).
fn sorted_keys(values: &[f32]) -> Vec<u64> {
    let mut keys: Vec<u64> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (u64::from(float_key(v)) << 32) | i as u64)
        .collect();
    radix_sort_high(&mut keys);
    keys
}

/// Sorts by the upper 32 bits, stably, in four byte passes (a pass whose byte is the same
/// for every key is skipped).
fn radix_sort_high(keys: &mut Vec<u64>) {
    let mut buf = vec![0u64; keys.len()];
    for pass in 0..4 {
        let shift = 32 + 8 * pass;
        let mut counts = [0usize; 256];
        for &k in keys.iter() {
            counts[((k >> shift) & 0xff) as usize] += 1;
        }
        if counts.contains(&keys.len()) {
            continue;
        }
        let mut at = 0usize;
        for c in counts.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        for &k in keys.iter() {
            let d = ((k >> shift) & 0xff) as usize;
            buf[counts[d]] = k;
            counts[d] += 1;
        }
        std::mem::swap(keys, &mut buf);
    }
}

/// Rows a bin must hold before it is closed (LightGBM's `min_data_in_bin`).
const MIN_DATA_IN_BIN: usize = 3;

/// Quantile cut points (midpoints between distinct values), at most `max_bin - 1` of them.
fn numeric_thresholds(values: &[f32], max_bin: usize) -> Vec<f32> {
    let present = values.iter().filter(|v| !v.is_nan()).count();
    let stride = present.div_ceil(MAX_BIN_SAMPLE).max(1);
    let sample: Vec<f32> = values.iter().filter(|v| !v.is_nan()).step_by(stride).copied().collect();
    let mut keys: Vec<u64> = sample.iter().map(|&v| u64::from(float_key(v)) << 32).collect();
    radix_sort_high(&mut keys);
    let sample: Vec<f32> = keys.iter().map(|&k| key_value(k)).collect();
    thresholds_of_sorted(&sample, max_bin)
}

/// [`numeric_thresholds`] of an already sorted sample.
///
/// LightGBM's bin construction, so that equal `max_bin` means equal resolution: zero gets a
/// bin of its own (sparse and sign-changing features split exactly at zero), negatives and
/// positives share the other bins in proportion to their rows, and each side is cut greedily
/// into equal-count bins (a value holding a bin's share of rows or more gets its own bin;
/// with few distinct values, each gets a bin once it holds `MIN_DATA_IN_BIN` rows).
fn thresholds_of_sorted(sample: &[f32], max_bin: usize) -> Vec<f32> {
    if sample.is_empty() {
        return Vec::new();
    }
    // Distinct values with counts.
    let mut distinct: Vec<(f32, usize)> = Vec::new();
    for v in sample.iter().copied() {
        match distinct.last_mut() {
            Some((last, count)) if *last == v => *count += 1,
            _ => distinct.push((v, 1)),
        }
    }
    let max_bin = max_bin.max(2);
    let neg_end = distinct.partition_point(|&(v, _)| v < -ZERO_THRESHOLD);
    let pos_start = distinct.partition_point(|&(v, _)| v <= ZERO_THRESHOLD);
    let rows = |d: &[(f32, usize)]| d.iter().map(|&(_, c)| c).sum::<usize>();
    let (neg, pos) = (&distinct[..neg_end], &distinct[pos_start..]);
    let (neg_rows, pos_rows) = (rows(neg), rows(pos));
    let mut thresholds = Vec::new();
    if !neg.is_empty() {
        let share = neg_rows as f64 / (neg_rows + pos_rows) as f64;
        let neg_bins = ((share * (max_bin - 1) as f64) as usize).max(1);
        thresholds = greedy_cuts(neg, neg_bins, neg_rows);
        // The last negative bin ends just below zero.
        thresholds.push(-ZERO_THRESHOLD);
    }
    if !pos.is_empty() {
        let pos_bins = max_bin.saturating_sub(1 + thresholds.len()).max(1);
        thresholds.push(ZERO_THRESHOLD);
        thresholds.extend(greedy_cuts(pos, pos_bins, pos_rows));
    }
    thresholds
}

/// Magnitudes up to this count as zero (LightGBM's `kZeroThreshold`).
const ZERO_THRESHOLD: f32 = 1e-35;

/// Cut points splitting sorted distinct `(value, count)` pairs (`rows` in all) into at most
/// `max_bin` bins of about equal row counts; each cut is the midpoint of its neighbours.
fn greedy_cuts(distinct: &[(f32, usize)], max_bin: usize, rows: usize) -> Vec<f32> {
    let mid = |a: f32, b: f32| -> f32 {
        let m = ((f64::from(a) + f64::from(b)) / 2.0) as f32;
        // Keep `a <= m < b` so `a` bins left of the cut and `b` right of it.
        if m >= b { a } else { m }
    };
    let mut cuts = Vec::new();
    if distinct.len() <= max_bin {
        // A value seen in fewer than MIN_DATA_IN_BIN rows shares the next value's bin: a cut
        // that isolates one or two rows is noise the split search would otherwise chase.
        let mut in_bin = 0usize;
        for w in distinct.windows(2) {
            in_bin += w[0].1;
            if in_bin >= MIN_DATA_IN_BIN {
                cuts.push(mid(w[0].0, w[1].0));
                in_bin = 0;
            }
        }
        return cuts;
    }
    let max_bin = max_bin.min(rows / MIN_DATA_IN_BIN).max(1);
    // Values that alone fill a bin of the even split get their own bin; the other values share
    // the remaining bins evenly, the share re-computed as bins close.
    let even = rows as f64 / max_bin as f64;
    let big: Vec<bool> = distinct.iter().map(|&(_, c)| c as f64 >= even).collect();
    let mut rest_bins = max_bin - big.iter().filter(|&&b| b).count();
    let mut rest_rows =
        rows - distinct.iter().zip(&big).filter(|(_, b)| **b).map(|((_, c), _)| c).sum::<usize>();
    let share = |rest_rows: usize, rest_bins: usize| {
        if rest_bins > 0 { rest_rows as f64 / rest_bins as f64 } else { even }
    };
    let mut target = share(rest_rows, rest_bins);
    let mut in_bin = 0usize;
    for i in 0..distinct.len() - 1 {
        let count = distinct[i].1;
        if !big[i] {
            rest_rows -= count;
        }
        in_bin += count;
        let close =
            big[i] || in_bin as f64 >= target || (big[i + 1] && in_bin as f64 >= (target * 0.5).max(1.0));
        if close {
            cuts.push(mid(distinct[i].0, distinct[i + 1].0));
            if cuts.len() + 1 >= max_bin {
                break;
            }
            in_bin = 0;
            if !big[i] {
                rest_bins = rest_bins.saturating_sub(1);
                target = share(rest_rows, rest_bins);
            }
        }
    }
    cuts
}

/// Branch-free stable partition: every row is written to both sides and only the matching
/// cursor advances.
fn partition_by<T: Copy + Into<usize>>(
    bins: &[T],
    goes_left: &[bool],
    rows: &mut [u32],
    spare: &mut Vec<u32>,
) -> usize {
    spare.clear();
    spare.resize(rows.len() + 1, 0);
    let (mut w, mut s) = (0usize, 0usize);
    for j in 0..rows.len() {
        let r = rows[j];
        let left = goes_left[bins[r as usize].into()];
        rows[w] = r;
        spare[s] = r;
        w += usize::from(left);
        s += usize::from(!left);
    }
    rows[w..].copy_from_slice(&spare[..s]);
    w
}

/// Rows per block of a parallel partition.
const PARTITION_BLOCK: usize = 16_384;

/// [`partition_by`] on fixed-size blocks in parallel, then the blocks' left parts (in block
/// order) followed by their right parts: the same result as the sequential partition.
fn par_partition_by<T: Copy + Into<usize> + Sync>(
    bins: &[T],
    goes_left: &[bool],
    rows: &mut [u32],
    spare: &mut Vec<u32>,
) -> usize {
    let lefts: Vec<usize> = rows
        .par_chunks_mut(PARTITION_BLOCK)
        .map(|block| partition_by(bins, goes_left, block, &mut Vec::new()))
        .collect();
    spare.clear();
    spare.reserve(rows.len());
    for (block, &l) in rows.chunks(PARTITION_BLOCK).zip(&lefts) {
        spare.extend_from_slice(&block[..l]);
    }
    let n_left = spare.len();
    for (block, &l) in rows.chunks(PARTITION_BLOCK).zip(&lefts) {
        spare.extend_from_slice(&block[l..]);
    }
    rows.copy_from_slice(spare);
    n_left
}

/// Where a feature's bin codes live.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Layout {
    /// At most 256 bins: byte `slot` of each row of the row-major `dense` block.
    Dense(usize),
    /// More bins: a column of its own.
    Wide(Vec<u16>),
}

/// The training matrix in bin form, plus the histogram layout.
///
/// Features with at most 256 bins (the usual case) are stored row-major, one byte per feature,
/// so a histogram pass reads each row's bins from one cache line; wider features keep a `u16`
/// column each.
#[derive(Debug, Clone)]
pub(crate) struct BinnedData {
    pub mappers: Vec<BinMapper>,
    pub layout: Vec<Layout>,
    /// Row-major bins of the dense features: row `r` is `dense[r * width..(r + 1) * width]`.
    pub dense: Vec<u8>,
    /// The same bins column by column (`dense_cols[slot][r]`), for partitioning a node's rows.
    pub dense_cols: Vec<Vec<u8>>,
    /// Dense features per row.
    pub width: usize,
    /// `offsets[f]..offsets[f + 1]` is feature `f`'s slice of a histogram.
    pub offsets: Vec<usize>,
}

/// Rows per parallel block when transposing binned columns into the row-major block.
const TRANSPOSE_BLOCK: usize = 4096;

impl BinnedData {
    pub(crate) fn build(x: &FeatureMatrix, max_bin: usize) -> BinnedData {
        let n = x.n_rows;
        let (mappers, columns): (Vec<BinMapper>, Vec<Vec<u16>>) =
            x.columns.par_iter().map(|col| BinMapper::fit_and_bin(col, max_bin)).unzip();
        let mut layout = Vec::with_capacity(mappers.len());
        let mut dense_cols: Vec<Vec<u16>> = Vec::new();
        for (m, col) in mappers.iter().zip(columns) {
            if m.n_bins <= 256 {
                layout.push(Layout::Dense(dense_cols.len()));
                dense_cols.push(col);
            } else {
                layout.push(Layout::Wide(col));
            }
        }
        let width = dense_cols.len();
        let mut dense = vec![0u8; n * width];
        if width > 0 {
            dense.par_chunks_mut(TRANSPOSE_BLOCK * width).enumerate().for_each(|(c, block)| {
                let r0 = c * TRANSPOSE_BLOCK;
                for (i, row) in block.chunks_mut(width).enumerate() {
                    for (b, col) in row.iter_mut().zip(&dense_cols) {
                        *b = col[r0 + i] as u8;
                    }
                }
            });
        }
        let mut offsets = Vec::with_capacity(mappers.len() + 1);
        offsets.push(0);
        for m in &mappers {
            offsets.push(offsets.last().copied().unwrap_or(0) + m.n_bins);
        }
        let dense_cols =
            dense_cols.into_par_iter().map(|c| c.into_iter().map(|b| b as u8).collect()).collect();
        BinnedData { mappers, layout, dense, dense_cols, width, offsets }
    }

    /// Stable partition of `rows` by `goes_left[bin of feature f]`: the left rows first (in
    /// order), then the right ones (in order); returns the number of left rows. `spare` is
    /// scratch space.
    pub(crate) fn partition(
        &self,
        f: usize,
        goes_left: &[bool],
        rows: &mut [u32],
        spare: &mut Vec<u32>,
    ) -> usize {
        if rows.len() >= 2 * PARTITION_BLOCK && rayon::current_num_threads() > 1 {
            return match &self.layout[f] {
                Layout::Dense(slot) => par_partition_by(&self.dense_cols[*slot], goes_left, rows, spare),
                Layout::Wide(col) => par_partition_by(col, goes_left, rows, spare),
            };
        }
        match &self.layout[f] {
            Layout::Dense(slot) => partition_by(&self.dense_cols[*slot], goes_left, rows, spare),
            Layout::Wide(col) => partition_by(col, goes_left, rows, spare),
        }
    }

    /// Bin code of row `r` for feature `f`.
    #[inline]
    pub(crate) fn bin_at(&self, f: usize, r: usize) -> usize {
        match &self.layout[f] {
            Layout::Dense(slot) => usize::from(self.dense_cols[*slot][r]),
            Layout::Wide(col) => usize::from(col[r]),
        }
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
        let t = numeric_thresholds(&[3.0, 1.0, 2.0, 1.0, f32::NAN, 3.0, 2.0, 1.0, 3.0, 2.0], 255);
        // The first bin is zero's (empty here).
        assert_eq!(t, vec![ZERO_THRESHOLD, 1.5, 2.5]);
    }

    #[test]
    fn values_in_fewer_than_three_rows_share_the_next_bin() {
        let t = numeric_thresholds(&[1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0], 255);
        assert_eq!(t, vec![ZERO_THRESHOLD, 1.5, 3.5]);
    }

    #[test]
    fn zero_has_a_bin_of_its_own() {
        let values = [-2.0, -2.0, -2.0, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5];
        let col = FeatureColumn {
            name: "a".into(),
            source: "a".into(),
            kind: FeatureKind::Numeric,
            values: values.to_vec(),
        };
        let m = BinMapper::fit(&col, 255);
        let bins: Vec<usize> = values.iter().map(|&v| m.bin(v)).collect();
        assert_eq!(bins, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        // Unseen values just either side of zero stay out of zero's bin.
        assert_eq!(m.bin(-0.01), 1);
        assert_eq!(m.bin(0.01), 3);
    }

    #[test]
    fn quantile_bins_are_capped_and_balanced() {
        let values: Vec<f32> = (1..=10_000).map(|i| i as f32).collect();
        let t = numeric_thresholds(&values, 16);
        assert_eq!(t.len(), 15);
        let col = FeatureColumn { name: "a".into(), source: "a".into(), kind: FeatureKind::Numeric, values };
        let m = BinMapper::fit(&col, 16);
        let mut counts = vec![0usize; m.n_bins];
        for &v in &col.values {
            counts[m.bin(v)] += 1;
        }
        assert_eq!(counts[m.missing_bin()], 0);
        // Bin 0 is zero's; the positive values share the other 15.
        assert_eq!(counts[0], 0);
        for &c in &counts[1..16] {
            assert!((500..=750).contains(&c), "{counts:?}");
        }
        assert_eq!(m.bin(f32::NAN), 16);
    }

    #[test]
    fn sorted_binning_matches_binary_search() {
        let mut values: Vec<f32> = (0..5_000).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 90.0).collect();
        values[17] = f32::NAN;
        values[18] = -0.0;
        values[19] = 0.0;
        values[20] = f32::INFINITY;
        let col = FeatureColumn { name: "a".into(), source: "a".into(), kind: FeatureKind::Numeric, values };
        for max_bin in [4, 64, 255, 2000] {
            let (m, bins) = BinMapper::fit_and_bin(&col, max_bin);
            assert_eq!(m.thresholds, numeric_thresholds(&col.values, max_bin));
            for (&v, &b) in col.values.iter().zip(&bins) {
                assert_eq!(usize::from(b), m.bin(v), "{v} with max_bin {max_bin}");
            }
        }
    }

    #[test]
    fn parallel_partition_matches_sequential() {
        let n = 100_000;
        let bins: Vec<u8> = (0..n).map(|i| ((i * 31 + i / 7) % 200) as u8).collect();
        let goes_left: Vec<bool> = (0..256).map(|b| b % 3 == 1 || b > 150).collect();
        let rows: Vec<u32> = (0..n as u32).filter(|r| r % 5 != 0).collect();
        let mut seq = rows.clone();
        let n_seq = partition_by(&bins, &goes_left, &mut seq, &mut Vec::new());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let mut par = rows.clone();
        let n_par = pool.install(|| par_partition_by(&bins, &goes_left, &mut par, &mut Vec::new()));
        assert_eq!((n_seq, &seq), (n_par, &par));
        assert!(seq[..n_seq].iter().all(|&r| goes_left[usize::from(bins[r as usize])]));
        assert!(seq[n_seq..].iter().all(|&r| !goes_left[usize::from(bins[r as usize])]));
        assert!(seq[..n_seq].is_sorted() && seq[n_seq..].is_sorted());
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
