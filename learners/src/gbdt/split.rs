//! Best-split search on a node histogram: numeric threshold scans (missing bin tried on both
//! sides), LightGBM-style sorted-category scans for categorical features, and the randomised
//! thresholds of extra-trees.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::binning::BinnedData;
use super::histogram::HistBin;

/// Smoothing added to the hessian when ordering categories by `sum_grad / sum_hess`.
const CAT_SMOOTH: f64 = 10.0;

/// How boosting regularizes many-way categorical splits (LightGBM's defaults and rules):
/// sorted-category scans are the easiest place for boosting to overfit, since each split picks
/// the best of up to 2^k partitions. Forests keep the plain scan (their leaves are means).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CatRules {
    /// Extra L2 on both sides of a sorted-category split, in its gain and its leaf outputs.
    pub cat_l2: f64,
    /// Categories with fewer (hessian-estimated) rows stay out of the scan (they go right).
    pub min_cat_rows: i64,
    /// At most this many categories on the left, scanned from either end of the order.
    pub max_cat_threshold: usize,
    /// Both the right side and each step of the scan must hold this many rows.
    pub min_data_per_group: i64,
    /// Features with at most this many categories try one-category-vs-rest splits instead.
    pub max_cat_to_onehot: usize,
}

impl CatRules {
    pub(crate) const BOOSTING: CatRules = CatRules {
        cat_l2: 10.0,
        min_cat_rows: 10,
        max_cat_threshold: 32,
        min_data_per_group: 100,
        max_cat_to_onehot: 4,
    };
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Stats {
    pub g: f64,
    pub h: f64,
    pub n: u32,
}

impl Stats {
    fn add(self, b: HistBin) -> Stats {
        Stats { g: self.g + b.g, h: self.h + b.h, n: self.n + b.n }
    }

    fn sub(self, o: Stats) -> Stats {
        Stats { g: self.g - o.g, h: self.h - o.h, n: self.n.saturating_sub(o.n) }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SplitConfig {
    pub min_child_samples: usize,
    pub min_child_weight: f64,
    pub lambda: f64,
    pub alpha: f64,
    pub min_split_gain: f64,
    pub extra_trees: bool,
    /// `None`: every category split point of the sorted order is tried, unregularized.
    pub cat: Option<CatRules>,
}

impl SplitConfig {
    /// LightGBM's defaults: 20 rows and 1e-3 hessian per child, no L1/L2, regularized
    /// categorical splits.
    pub(crate) fn lightgbm_defaults() -> SplitConfig {
        SplitConfig {
            min_child_samples: 20,
            min_child_weight: 1e-3,
            lambda: 0.0,
            alpha: 0.0,
            min_split_gain: 0.0,
            extra_trees: false,
            cat: Some(CatRules::BOOSTING),
        }
    }

    fn soft_threshold(&self, g: f64) -> f64 {
        if g > self.alpha {
            g - self.alpha
        } else if g < -self.alpha {
            g + self.alpha
        } else {
            0.0
        }
    }

    #[inline]
    pub(crate) fn leaf_gain(&self, s: Stats) -> f64 {
        self.leaf_gain_l2(s, 0.0)
    }

    /// The leaf gain with `extra_l2` added to the L2 penalty.
    #[inline]
    fn leaf_gain_l2(&self, s: Stats, extra_l2: f64) -> f64 {
        let denom = s.h + self.lambda + extra_l2;
        if denom <= 0.0 {
            return 0.0;
        }
        // Without L1 the soft threshold is the identity (up to the sign of zero, which squaring drops).
        let t = if self.alpha == 0.0 { s.g } else { self.soft_threshold(s.g) };
        t * t / denom
    }

    /// Unscaled leaf output `-T(G) / (H + lambda + extra_l2)`; `extra_l2` is the categorical
    /// L2 of the split that made the leaf, if any.
    pub(crate) fn leaf_output(&self, s: Stats, extra_l2: f64) -> f64 {
        let denom = s.h + self.lambda + extra_l2;
        if denom <= 0.0 {
            return 0.0;
        }
        -self.soft_threshold(s.g) / denom
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SplitKind {
    /// Bins `<= bin` go left; the missing bin goes left iff `default_left`.
    Numeric { bin: usize, default_left: bool },
    /// Bitset over bins: set bits go left.
    Categorical { bits: Vec<u32> },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SplitInfo {
    pub feature: usize,
    pub gain: f64,
    pub kind: SplitKind,
    pub left: Stats,
    pub right: Stats,
    /// Extra L2 for the children's outputs (a regularized categorical split's `cat_l2`).
    pub extra_l2: f64,
}

enum Step {
    Skip,
    Stop,
    Gain(f64),
}

struct Best {
    gain: f64,
    found: Option<SplitInfo>,
    /// Node rows per unit of hessian: a child's row count for `min_child_samples` is its hessian
    /// sum times this, as LightGBM counts it. With unequal hessians (classification) a child of
    /// confidently predicted rows counts as fewer rows than it holds, so boosting stops carving
    /// out leaves for rows it already fits, and the few rows it still gets wrong can make a leaf.
    /// With constant hessians (regression, forests) it is the exact count. The boosting scans
    /// (`numeric`, regularized `categorical`) round each bin's count on its own and add them up
    /// along the scan, as LightGBM's do; the other paths round a side's total (`min_h`).
    cnt_factor: f64,
    min_n: i64,
    /// The least hessian sum whose rounded row count reaches `min_n`, and `min_child_weight`
    /// (one comparison instead of a multiply and a rounding).
    min_h: f64,
}

impl Best {
    fn new(cfg: &SplitConfig, total: Stats) -> Best {
        let cnt_factor = if total.h > 0.0 { f64::from(total.n) / total.h } else { 1.0 };
        Best {
            gain: cfg.min_split_gain.max(0.0),
            found: None,
            cnt_factor,
            min_n: cfg.min_child_samples.max(1) as i64,
            // round(h * f) >= m  <=>  h * f >= m - 0.5 for whole m.
            min_h: ((cfg.min_child_samples.max(1) as f64 - 0.5) / cnt_factor).max(cfg.min_child_weight),
        }
    }

    /// The row count of hessian sum `h`, rounded as LightGBM's `RoundInt`. A truncating cast,
    /// not `floor` (a libm call on baseline x86-64, in the scans' innermost loop); `h >= 0`.
    #[inline]
    fn rounded(&self, h: f64) -> i64 {
        (h * self.cnt_factor + 0.5) as i64
    }

    #[inline]
    fn admissible(&self, s: Stats) -> bool {
        s.n > 0 && s.h >= self.min_h
    }

    /// The gain of splitting off `left`, if both sides are admissible and it beats the best.
    #[inline]
    fn offer(&mut self, cfg: &SplitConfig, parent: f64, total: Stats, left: Stats) -> Option<f64> {
        let right = total.sub(left);
        if !self.admissible(left) || !self.admissible(right) {
            return None;
        }
        let gain = cfg.leaf_gain(left) + cfg.leaf_gain(right) - parent;
        (gain > self.gain).then_some(gain)
    }

    /// One step of a boosting scan that has grown `side` (counted `side_n` rows, bin by bin):
    /// too small so far, the other side now too small for any further step, or a candidate
    /// that beats the best.
    #[inline]
    fn step(&self, cfg: &SplitConfig, parent: f64, total: Stats, side: Stats, side_n: i64) -> Step {
        if side_n < self.min_n || side.h < cfg.min_child_weight {
            return Step::Skip;
        }
        let other = total.sub(side);
        if i64::from(total.n) - side_n < self.min_n || other.h < cfg.min_child_weight {
            return Step::Stop;
        }
        let gain = cfg.leaf_gain(side) + cfg.leaf_gain(other) - parent;
        if gain > self.gain { Step::Gain(gain) } else { Step::Skip }
    }

    fn set(&mut self, feature: usize, gain: f64, kind: SplitKind, total: Stats, left: Stats) {
        self.set_l2(feature, gain, kind, total, left, 0.0);
    }

    fn set_l2(
        &mut self,
        feature: usize,
        gain: f64,
        kind: SplitKind,
        total: Stats,
        left: Stats,
        extra_l2: f64,
    ) {
        self.gain = gain;
        self.found = Some(SplitInfo { feature, gain, kind, left, right: total.sub(left), extra_l2 });
    }
}

/// The best admissible split of a node with sums `total` over `features`, or `None` when no
/// split gains more than `min_split_gain`.
pub(crate) fn best_split(
    data: &BinnedData,
    hist: &[HistBin],
    total: Stats,
    features: &[usize],
    cfg: &SplitConfig,
    rng: &mut ChaCha8Rng,
) -> Option<SplitInfo> {
    let mut search = SplitSearch::new(total, cfg);
    for &f in features {
        search.dense(data, f, &hist[data.offsets[f]..data.offsets[f + 1]], rng);
    }
    search.finish()
}

/// One node's split search, fed one feature at a time: from a dense histogram slice, or from
/// the non-empty bins of a small node (see `grow`'s small-node path). Both feed the same scan
/// the same non-empty bins in the same order, so they find bit-identical splits.
pub(crate) struct SplitSearch<'c> {
    cfg: &'c SplitConfig,
    total: Stats,
    parent: f64,
    best: Best,
    /// A dense slice rebuilt from sparse bins for categorical features.
    cat_scratch: Vec<HistBin>,
}

impl<'c> SplitSearch<'c> {
    pub(crate) fn new(total: Stats, cfg: &'c SplitConfig) -> SplitSearch<'c> {
        SplitSearch {
            cfg,
            total,
            parent: cfg.leaf_gain(total),
            best: Best::new(cfg, total),
            cat_scratch: Vec::new(),
        }
    }

    /// Feature `f` from its histogram slice (missing bin last).
    pub(crate) fn dense(&mut self, data: &BinnedData, f: usize, h: &[HistBin], rng: &mut ChaCha8Rng) {
        let Self { cfg, total, parent, best, .. } = self;
        if data.mappers[f].is_categorical() {
            categorical(f, h, *total, *parent, cfg, rng, best);
        } else {
            let k = h.len() - 1;
            let bins = h[..k].iter().copied().enumerate().filter(|(_, b)| b.n > 0);
            numeric(f, bins, h[k], *total, *parent, cfg, rng, best);
        }
    }

    /// Feature `f` from its non-empty bins in ascending bin order (the missing bin included,
    /// if non-empty).
    pub(crate) fn sparse(
        &mut self,
        data: &BinnedData,
        f: usize,
        bins: &[(usize, HistBin)],
        rng: &mut ChaCha8Rng,
    ) {
        let mapper = &data.mappers[f];
        let Self { cfg, total, parent, best, cat_scratch } = self;
        if mapper.is_categorical() {
            cat_scratch.clear();
            cat_scratch.resize(mapper.n_bins, HistBin::default());
            for &(b, bin) in bins {
                cat_scratch[b] = bin;
            }
            categorical(f, cat_scratch, *total, *parent, cfg, rng, best);
        } else {
            let k = mapper.missing_bin();
            let mis = bins.last().filter(|(b, _)| *b == k).map_or(HistBin::default(), |(_, m)| *m);
            let present = bins.iter().copied().filter(|(b, _)| *b < k);
            numeric(f, present, mis, *total, *parent, cfg, rng, best);
        }
    }

    /// Extra-trees on numeric feature `f` of a small node, straight from its rows (`bins[i]`,
    /// `gh[i]`: row i's bin and gradient pair): one random threshold needs only the range of
    /// bins and one prefix sum, not every bin's sums.
    pub(crate) fn extra_numeric_rows(
        &mut self,
        data: &BinnedData,
        f: usize,
        bins: &[u32],
        gh: &[(f64, f64)],
        rng: &mut ChaCha8Rng,
    ) {
        debug_assert!(self.cfg.extra_trees && !data.mappers[f].is_categorical());
        let k = data.mappers[f].missing_bin() as u32;
        let (mut lo, mut hi) = (u32::MAX, 0u32);
        let mut mis = HistBin::default();
        for (&b, &(g, h)) in bins.iter().zip(gh) {
            if b == k {
                mis.g += g;
                mis.h += h;
                mis.n += 1;
            } else {
                lo = lo.min(b);
                hi = hi.max(b);
            }
        }
        if lo == u32::MAX {
            return;
        }
        let b = if hi > lo {
            rng.random_range(lo as usize..hi as usize) as u32
        } else if mis.n > 0 {
            hi
        } else {
            return;
        };
        let mut prefix = Stats::default();
        for (&at, &(g, h)) in bins.iter().zip(gh) {
            if at <= b {
                prefix = prefix.add(HistBin { g, h, n: 1 });
            }
        }
        let Self { cfg, total, parent, best, .. } = self;
        try_numeric(f, b as usize, prefix, mis, *total, *parent, cfg, best);
    }

    pub(crate) fn finish(self) -> Option<SplitInfo> {
        self.best.found
    }
}

/// Offers the numeric split "bins `<= b` go left", with the missing rows on the side that gains
/// more (or, when the node has none, on the larger side).
#[allow(clippy::too_many_arguments)]
fn try_numeric(
    f: usize,
    b: usize,
    prefix: Stats,
    mis: HistBin,
    total: Stats,
    parent: f64,
    cfg: &SplitConfig,
    best: &mut Best,
) {
    if mis.n == 0 {
        if let Some(gain) = best.offer(cfg, parent, total, prefix) {
            // No missing rows here: unseen missing values follow the larger child.
            let default_left = 2 * prefix.n >= total.n;
            best.set(f, gain, SplitKind::Numeric { bin: b, default_left }, total, prefix);
        }
        return;
    }
    if let Some(gain) = best.offer(cfg, parent, total, prefix) {
        let kind = SplitKind::Numeric { bin: b, default_left: false };
        best.set(f, gain, kind, total, prefix);
    }
    let with_missing = prefix.add(mis);
    if let Some(gain) = best.offer(cfg, parent, total, with_missing) {
        let kind = SplitKind::Numeric { bin: b, default_left: true };
        best.set(f, gain, kind, total, with_missing);
    }
}

/// Threshold scan of one numeric feature over its non-empty bins `bins` (ascending, missing
/// bin excluded); `mis` sums the rows in the missing bin.
#[allow(clippy::too_many_arguments)]
fn numeric(
    f: usize,
    bins: impl DoubleEndedIterator<Item = (usize, HistBin)> + Clone,
    mis: HistBin,
    total: Stats,
    parent: f64,
    cfg: &SplitConfig,
    rng: &mut ChaCha8Rng,
    best: &mut Best,
) {
    if cfg.extra_trees {
        let Some((lo, _)) = bins.clone().next() else {
            return;
        };
        let hi = bins.clone().last().map_or(lo, |(b, _)| b);
        let b = if hi > lo {
            rng.random_range(lo..hi)
        } else if mis.n > 0 {
            hi
        } else {
            return;
        };
        let prefix = bins.take_while(|&(at, _)| at <= b).fold(Stats::default(), |acc, (_, x)| acc.add(x));
        try_numeric(f, b, prefix, mis, total, parent, cfg, best);
        return;
    }
    // LightGBM's scan, so that equal settings grow equal trees: each bin's row count is
    // estimated from its hessian and rounded on its own, and the counts add up along the scan;
    // the other side's count is the node's rows minus that sum. First from the top with the
    // missing rows left, then (only when the node has missing rows) from the bottom with them
    // right; a later candidate must gain strictly more.
    let Some((lowest, _)) = bins.clone().next() else {
        return;
    };
    let mut right = Stats::default();
    let mut right_n = 0;
    for (b, bin) in bins.clone().rev() {
        // The lowest bin stays left (with no missing rows, nothing else would be there).
        if b == lowest {
            break;
        }
        right = right.add(bin);
        right_n += best.rounded(bin.h);
        match best.step(cfg, parent, total, right, right_n) {
            Step::Skip => {}
            Step::Stop => break,
            Step::Gain(gain) => {
                // Empty bins just below `b` go right, as LightGBM's threshold (one below the
                // right side's lowest bin) sends unseen values there.
                let left = total.sub(right);
                let default_left = mis.n > 0 || 2 * left.n >= total.n;
                best.set(f, gain, SplitKind::Numeric { bin: b - 1, default_left }, total, left);
            }
        }
    }
    if mis.n == 0 {
        return;
    }
    let mut left = Stats::default();
    let mut left_n = 0;
    for (b, bin) in bins {
        left = left.add(bin);
        left_n += best.rounded(bin.h);
        match best.step(cfg, parent, total, left, left_n) {
            Step::Skip => {}
            Step::Stop => break,
            Step::Gain(gain) => {
                best.set(f, gain, SplitKind::Numeric { bin: b, default_left: false }, total, left);
            }
        }
    }
}

fn categorical(
    f: usize,
    h: &[HistBin],
    total: Stats,
    parent: f64,
    cfg: &SplitConfig,
    rng: &mut ChaCha8Rng,
    best: &mut Best,
) {
    let bits_of = |prefix: &mut dyn Iterator<Item = usize>| -> Vec<u32> {
        let mut bits = vec![0u32; h.len().div_ceil(32)];
        for b in prefix {
            bits[b / 32] |= 1 << (b % 32);
        }
        bits
    };
    let Some(rules) = cfg.cat.filter(|_| !cfg.extra_trees) else {
        let mut cats: Vec<usize> = (0..h.len()).filter(|&b| h[b].n > 0).collect();
        if cats.len() < 2 {
            return;
        }
        sort_by_ratio(&mut cats, h);
        if cfg.extra_trees {
            let j = rng.random_range(1..cats.len());
            let left = cats[..j].iter().fold(Stats::default(), |acc, &b| acc.add(h[b]));
            if let Some(gain) = best.offer(cfg, parent, total, left) {
                let bits = bits_of(&mut cats[..j].iter().copied());
                best.set(f, gain, SplitKind::Categorical { bits }, total, left);
            }
            return;
        }
        let mut left = Stats::default();
        for j in 1..cats.len() {
            left = left.add(h[cats[j - 1]]);
            if let Some(gain) = best.offer(cfg, parent, total, left) {
                let bits = bits_of(&mut cats[..j].iter().copied());
                best.set(f, gain, SplitKind::Categorical { bits }, total, left);
            }
        }
        return;
    };
    // `h` ends with the missing bin; the value bins decide between one-vs-rest and a scan.
    // Row counts as in `numeric`: each category's count is rounded on its own, and the other
    // side holds the node's rows minus the counts summed on this side.
    if h.len() - 1 <= rules.max_cat_to_onehot {
        for (b, &bin) in h.iter().enumerate() {
            if bin.n == 0 {
                continue;
            }
            let left = Stats::default().add(bin);
            // Not a scan: a category whose rest is too small does not stop the others.
            if let Step::Gain(gain) = best.step(cfg, parent, total, left, best.rounded(bin.h)) {
                let bits = bits_of(&mut std::iter::once(b));
                best.set(f, gain, SplitKind::Categorical { bits }, total, left);
            }
        }
        return;
    }
    let mut cats: Vec<usize> =
        (0..h.len()).filter(|&b| h[b].n > 0 && best.rounded(h[b].h) >= rules.min_cat_rows).collect();
    if cats.len() < 2 {
        return;
    }
    sort_by_ratio(&mut cats, h);
    let max_left = rules.max_cat_threshold.min(cats.len().div_ceil(2)).min(cats.len() - 1);
    let l2 = rules.cat_l2;
    // From the low end of the order, then from the high end: the left side is a run of
    // categories at one end, grown one category at a time.
    for from_top in [false, true] {
        let at = |j: usize| if from_top { cats[cats.len() - 1 - j] } else { cats[j] };
        let mut left = Stats::default();
        let mut left_n = 0;
        let mut group = 0;
        for j in 0..max_left {
            let bin = h[at(j)];
            left = left.add(bin);
            let bin_n = best.rounded(bin.h);
            left_n += bin_n;
            group += bin_n;
            if left_n < best.min_n || left.h < cfg.min_child_weight {
                continue;
            }
            let right_n = i64::from(total.n) - left_n;
            let right = total.sub(left);
            if right_n < best.min_n || right_n < rules.min_data_per_group || right.h < cfg.min_child_weight {
                break;
            }
            if group < rules.min_data_per_group {
                continue;
            }
            group = 0;
            let gain = cfg.leaf_gain_l2(left, l2) + cfg.leaf_gain_l2(right, l2) - parent;
            if gain > best.gain {
                let bits = bits_of(&mut (0..=j).map(at));
                best.set_l2(f, gain, SplitKind::Categorical { bits }, total, left, l2);
            }
        }
    }
}

/// Orders categories by `sum_grad / (sum_hess + smoothing)`: for a fixed number of categories
/// on the left, the best partition is a run of this order (Fisher's grouping).
fn sort_by_ratio(cats: &mut [usize], h: &[HistBin]) {
    let key = |b: usize| h[b].g / (h[b].h + CAT_SMOOTH);
    cats.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn cfg(cat: Option<CatRules>) -> SplitConfig {
        SplitConfig { cat, ..SplitConfig::lightgbm_defaults() }
    }

    /// `rows` rows with gradient `g` and hessian `h` each.
    fn bin(rows: u32, g: f64, h: f64) -> HistBin {
        HistBin { g: g * f64::from(rows), h: h * f64::from(rows), n: rows }
    }

    fn total(h: &[HistBin]) -> Stats {
        h.iter().fold(Stats::default(), |acc, &b| acc.add(b))
    }

    fn search_categorical(h: &[HistBin], cfg: &SplitConfig) -> Option<SplitInfo> {
        let t = total(h);
        let mut best = Best::new(cfg, t);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        categorical(0, h, t, cfg.leaf_gain(t), cfg, &mut rng, &mut best);
        best.found
    }

    #[test]
    fn children_of_confident_rows_count_as_few_rows() {
        // 30 rows the model already fits (hessian 0.001) and 70 it does not: by hessian the
        // left child holds under one row's worth, so no split is admissible for boosting...
        let bins = [(0, bin(30, -0.001, 0.001)), (1, bin(70, 0.5, 0.25))];
        let t = bins.iter().fold(Stats::default(), |acc, &(_, b)| acc.add(b));
        let c = cfg(None);
        let mut best = Best::new(&c, t);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        numeric(0, bins.iter().copied(), HistBin::default(), t, c.leaf_gain(t), &c, &mut rng, &mut best);
        assert!(best.found.is_none());
        // ...while with equal hessians the same rows split.
        let bins = [(0, bin(30, -0.5, 1.0)), (1, bin(70, 0.5, 1.0))];
        let t = bins.iter().fold(Stats::default(), |acc, &(_, b)| acc.add(b));
        let mut best = Best::new(&c, t);
        numeric(0, bins.iter().copied(), HistBin::default(), t, c.leaf_gain(t), &c, &mut rng, &mut best);
        assert_eq!(best.found.map(|s| s.left.n), Some(30));
    }

    #[test]
    fn scan_counts_each_bin_on_its_own_and_splits_below_the_right_side() {
        // Node hessian 108 over 108 rows (one row per unit of hessian). Bin 0 holds 100 rows
        // of hessian 0.9; bins 5..=8 hold 2 rows of hessian 2.25 each (4.5 per bin, rounded
        // to 5 rows). The top four bins count as 5 + 5 + 5 + 5 = 20 rows, enough for
        // `min_child_samples` 20, although their rounded total, 18, is not: LightGBM's scan
        // sums per-bin rounded counts.
        let mut bins = vec![(0, bin(100, 0.18, 0.9))];
        bins.extend((5..=8).map(|b| (b, bin(2, -2.25, 2.25))));
        let t = bins.iter().fold(Stats::default(), |acc, &(_, b)| acc.add(b));
        assert_eq!((t.n, t.h), (108, 108.0));
        let c = cfg(None);
        let mut best = Best::new(&c, t);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        numeric(0, bins.iter().copied(), HistBin::default(), t, c.leaf_gain(t), &c, &mut rng, &mut best);
        let s = best.found.unwrap();
        assert_eq!((s.left.n, s.right.n), (100, 8));
        // Empty bins 1..=4 go right: the threshold is one below the right side's lowest bin.
        assert_eq!(s.kind, SplitKind::Numeric { bin: 4, default_left: true });
        // Three top bins (15 rows) are too few, so that is the only admissible split.
        let three: Vec<_> = bins.iter().copied().filter(|&(b, _)| b != 5).collect();
        let t3 = three.iter().fold(Stats::default(), |acc, &(_, b)| acc.add(b));
        let mut best = Best::new(&c, t3);
        numeric(0, three.iter().copied(), HistBin::default(), t3, c.leaf_gain(t3), &c, &mut rng, &mut best);
        assert!(best.found.is_none());
    }

    #[test]
    fn boosting_regularizes_many_way_categorical_splits() {
        // Six categories of 200 rows with opposite gradients, one rare category of 5 rows with
        // the most extreme gradient, and the missing bin (empty) last.
        let mut h = vec![
            bin(200, -1.0, 1.0),
            bin(200, 1.0, 1.0),
            bin(200, -1.0, 1.0),
            bin(200, 1.0, 1.0),
            bin(5, -3.0, 1.0),
            bin(200, -1.0, 1.0),
            bin(200, 1.0, 1.0),
        ];
        h.push(HistBin::default());
        let boosted = search_categorical(&h, &cfg(Some(CatRules::BOOSTING))).unwrap();
        let SplitKind::Categorical { bits } = &boosted.kind else { panic!("{boosted:?}") };
        let left: Vec<usize> = (0..h.len()).filter(|&b| bits[b / 32] >> (b % 32) & 1 == 1).collect();
        // The rare category is left out of the scan (it goes right with the rest)...
        assert!(!left.contains(&4), "{left:?}");
        assert!(left == [0, 2, 5] || left == [1, 3, 6], "{left:?}");
        // ...and both children's outputs are shrunk by the categorical L2.
        assert_eq!(boosted.extra_l2, CatRules::BOOSTING.cat_l2);
        let plain = search_categorical(&h, &cfg(None)).unwrap();
        assert_eq!(plain.extra_l2, 0.0);
        assert!(plain.gain > boosted.gain);
    }

    #[test]
    fn few_categories_split_one_against_the_rest() {
        let h = [bin(100, -1.0, 1.0), bin(100, -0.9, 1.0), bin(100, 1.0, 1.0), HistBin::default()];
        let s = search_categorical(&h, &cfg(Some(CatRules::BOOSTING))).unwrap();
        // One-vs-rest: the best single category is category 2, without the categorical L2.
        assert_eq!(s.kind, SplitKind::Categorical { bits: vec![0b100] });
        assert_eq!(s.extra_l2, 0.0);
    }
}
