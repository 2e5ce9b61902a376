//! Best-split search on a node histogram: numeric threshold scans (missing bin tried on both
//! sides), LightGBM-style sorted-category scans for categorical features, and the randomised
//! thresholds of extra-trees.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::binning::BinnedData;
use super::histogram::HistBin;

/// Smoothing added to the hessian when ordering categories by `sum_grad / sum_hess`.
const CAT_SMOOTH: f64 = 10.0;

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
}

impl SplitConfig {
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
        let denom = s.h + self.lambda;
        if denom <= 0.0 {
            return 0.0;
        }
        // Without L1 the soft threshold is the identity (up to the sign of zero, which squaring drops).
        let t = if self.alpha == 0.0 { s.g } else { self.soft_threshold(s.g) };
        t * t / denom
    }

    /// Unscaled leaf output `-T(G) / (H + lambda)`.
    pub(crate) fn leaf_output(&self, s: Stats) -> f64 {
        let denom = s.h + self.lambda;
        if denom <= 0.0 {
            return 0.0;
        }
        -self.soft_threshold(s.g) / denom
    }

    #[inline]
    fn admissible(&self, s: Stats) -> bool {
        s.n as usize >= self.min_child_samples.max(1) && s.h >= self.min_child_weight
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
}

struct Best {
    gain: f64,
    found: Option<SplitInfo>,
}

impl Best {
    #[inline]
    fn offer(&mut self, cfg: &SplitConfig, parent: f64, total: Stats, left: Stats) -> Option<f64> {
        let right = total.sub(left);
        if !cfg.admissible(left) || !cfg.admissible(right) {
            return None;
        }
        let gain = cfg.leaf_gain(left) + cfg.leaf_gain(right) - parent;
        (gain > self.gain).then_some(gain)
    }

    fn set(&mut self, feature: usize, gain: f64, kind: SplitKind, total: Stats, left: Stats) {
        self.gain = gain;
        self.found = Some(SplitInfo { feature, gain, kind, left, right: total.sub(left) });
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
            best: Best { gain: cfg.min_split_gain.max(0.0), found: None },
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
    bins: impl Iterator<Item = (usize, HistBin)> + Clone,
    mis: HistBin,
    total: Stats,
    parent: f64,
    cfg: &SplitConfig,
    rng: &mut ChaCha8Rng,
    best: &mut Best,
) {
    let try_at =
        |best: &mut Best, b: usize, prefix: Stats| try_numeric(f, b, prefix, mis, total, parent, cfg, best);
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
        try_at(best, b, prefix);
        return;
    }
    // Candidates whose smaller side has too few rows are skipped before any gain is computed
    // (`offer` would reject them); once the right side is too small it only shrinks further.
    let min_n = cfg.min_child_samples.max(1) as u32;
    let mut prefix = Stats::default();
    for (b, bin) in bins {
        prefix = prefix.add(bin);
        if total.n.saturating_sub(prefix.n) < min_n {
            break;
        }
        if prefix.n + mis.n < min_n {
            continue;
        }
        try_at(best, b, prefix);
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
    let mut cats: Vec<usize> = (0..h.len()).filter(|&b| h[b].n > 0).collect();
    if cats.len() < 2 {
        return;
    }
    let key = |b: usize| h[b].g / (h[b].h + CAT_SMOOTH);
    cats.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
    let bits_of = |prefix: &[usize]| -> Vec<u32> {
        let mut bits = vec![0u32; h.len().div_ceil(32)];
        for &b in prefix {
            bits[b / 32] |= 1 << (b % 32);
        }
        bits
    };
    if cfg.extra_trees {
        let j = rng.random_range(1..cats.len());
        let left = cats[..j].iter().fold(Stats::default(), |acc, &b| acc.add(h[b]));
        if let Some(gain) = best.offer(cfg, parent, total, left) {
            let bits = bits_of(&cats[..j]);
            best.set(f, gain, SplitKind::Categorical { bits }, total, left);
        }
        return;
    }
    let mut left = Stats::default();
    for j in 1..cats.len() {
        left = left.add(h[cats[j - 1]]);
        if let Some(gain) = best.offer(cfg, parent, total, left) {
            let bits = bits_of(&cats[..j]);
            best.set(f, gain, SplitKind::Categorical { bits }, total, left);
        }
    }
}
