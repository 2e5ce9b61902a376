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
    let parent = cfg.leaf_gain(total);
    let mut best = Best { gain: cfg.min_split_gain.max(0.0), found: None };
    for &f in features {
        let h = &hist[data.offsets[f]..data.offsets[f + 1]];
        if data.mappers[f].is_categorical() {
            categorical(f, h, total, parent, cfg, rng, &mut best);
        } else {
            numeric(f, h, total, parent, cfg, rng, &mut best);
        }
    }
    best.found
}

fn numeric(
    f: usize,
    h: &[HistBin],
    total: Stats,
    parent: f64,
    cfg: &SplitConfig,
    rng: &mut ChaCha8Rng,
    best: &mut Best,
) {
    let k = h.len() - 1;
    let mis = h[k];
    let try_at = |best: &mut Best, b: usize, prefix: Stats| {
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
    };
    if cfg.extra_trees {
        let Some(lo) = h[..k].iter().position(|b| b.n > 0) else {
            return;
        };
        let hi = h[..k].iter().rposition(|b| b.n > 0).unwrap_or(lo);
        let b = if hi > lo {
            rng.random_range(lo..hi)
        } else if mis.n > 0 {
            hi
        } else {
            return;
        };
        let prefix = h[..=b].iter().fold(Stats::default(), |acc, &x| acc.add(x));
        try_at(best, b, prefix);
        return;
    }
    // Candidates whose smaller side has too few rows are skipped before any gain is computed
    // (`offer` would reject them); once the right side is too small it only shrinks further.
    let min_n = cfg.min_child_samples.max(1) as u32;
    let mut prefix = Stats::default();
    for (b, &bin) in h[..k].iter().enumerate() {
        if bin.n == 0 {
            continue;
        }
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
