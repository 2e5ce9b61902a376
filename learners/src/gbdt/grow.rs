//! Leaf-wise (best-first) growth of one tree on binned data.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::binning::BinnedData;
use super::histogram::{self, HistBin};
use super::split::{self, SplitConfig, SplitInfo, SplitKind, Stats};
use super::tree::{Node, Tree};

#[derive(Debug, Clone, Copy)]
pub(crate) struct GrowParams {
    pub num_leaves: usize,
    /// `<= 0` means unlimited.
    pub max_depth: i32,
    pub split: SplitConfig,
    /// Multiplies every leaf output (the learning rate).
    pub scale: f64,
    /// Fraction of the tree's features tried at each node (random forest style); `None` = all.
    pub node_colsample: Option<f64>,
}

/// A grown tree, plus the row ranges (into the reordered `rows`) of its leaves and their outputs.
pub(crate) struct GrownTree {
    pub tree: Tree,
    pub leaves: Vec<(usize, usize, f64)>,
}

struct Leaf {
    node: usize,
    start: usize,
    end: usize,
    depth: usize,
    stats: Stats,
    /// The categorical L2 of the split that made this leaf (its output is shrunk by it).
    extra_l2: f64,
    hist: Option<Vec<HistBin>>,
    split: Option<SplitInfo>,
}

struct Grower<'a> {
    data: &'a BinnedData,
    grad: &'a [f64],
    hess: &'a [f64],
    features: &'a [usize],
    params: GrowParams,
    /// Every hessian is exactly 1 (histogram counts can be read off the hessian sums).
    unit_hess: bool,
    /// Nodes with fewer rows take the small-node path ([`SMALL_NODE_ROWS`]).
    small_node_rows: usize,
    scratch: &'a mut Scratch,
}

/// Buffers reused across nodes and trees: histograms, gathered gradients, partition space.
#[derive(Default)]
pub(crate) struct Scratch {
    hists: Vec<Vec<HistBin>>,
    gh: Vec<(f64, f64)>,
    right: Vec<u32>,
    /// Small-node path: (bin, position in the node) pairs, then the node's non-empty bins.
    keyed: Vec<(u32, u32)>,
    sparse: Vec<(usize, HistBin)>,
    bins: Vec<u32>,
}

/// Below this many rows a node gets no histogram: its split is searched over each feature's
/// non-empty bins, found by sorting the node's bin codes. Deep forest trees are mostly such
/// nodes, where clearing, subtracting and scanning full 256-bin histograms cost far more than
/// the rows themselves. It only pays while most bins are empty: the bound is also half the
/// features' mean bin count, so coarse features (digits' 17 pixel levels) keep histograms,
/// which made 10-class boosting on digits 1.8× slower when the bound was 128 rows alone.
const SMALL_NODE_ROWS: usize = 128;

/// The small-node bound for these features: `SMALL_NODE_ROWS`, or half their mean bin count
/// when that is lower.
fn small_node_rows(data: &BinnedData, features: &[usize]) -> usize {
    if features.is_empty() {
        return 0;
    }
    let bins: usize = features.iter().map(|&f| data.mappers[f].n_bins).sum();
    SMALL_NODE_ROWS.min(bins / features.len() / 2)
}

impl Grower<'_> {
    fn can_split(&self, leaf: &Leaf) -> bool {
        let depth_ok = self.params.max_depth <= 0 || (leaf.depth as i32) < self.params.max_depth;
        depth_ok && leaf.stats.n as usize >= 2 * self.params.split.min_child_samples.max(1)
    }

    fn histogram(&mut self, rows: &[u32]) -> Vec<HistBin> {
        let scratch = &mut *self.scratch;
        scratch.gh.clear();
        scratch.gh.extend(rows.iter().map(|&r| (self.grad[r as usize], self.hess[r as usize])));
        let mut hist = scratch.hists.pop().unwrap_or_default();
        histogram::build_into(self.data, self.features, rows, &scratch.gh, self.unit_hess, &mut hist);
        hist
    }

    fn recycle(&mut self, hist: Option<Vec<HistBin>>) {
        if let Some(h) = hist {
            self.scratch.hists.push(h);
        }
    }

    /// Does this leaf's split search use a histogram (rather than the small-node path)?
    fn wants_hist(&self, leaf: &Leaf) -> bool {
        self.can_split(leaf) && leaf.end - leaf.start >= self.small_node_rows
    }

    /// The features searched at this node: all the tree's, or a random share of them (random
    /// forest style), sorted ascending.
    fn node_features(&self, rng: &mut ChaCha8Rng) -> Option<Vec<usize>> {
        match self.params.node_colsample {
            Some(frac) if frac < 1.0 && self.features.len() > 1 => {
                let m = self.features.len();
                let k = ((frac * m as f64).round() as usize).clamp(1, m);
                let mut pool = self.features.to_vec();
                for i in 0..k {
                    let j = rng.random_range(i..m);
                    pool.swap(i, j);
                }
                pool.truncate(k);
                pool.sort_unstable();
                Some(pool)
            }
            _ => None,
        }
    }

    /// The leaf's best split: from its histogram when it has one, else from its rows.
    fn find(&mut self, leaf: &Leaf, rows: &[u32], rng: &mut ChaCha8Rng) -> Option<SplitInfo> {
        let pool = self.node_features(rng);
        let features = pool.as_deref().unwrap_or(self.features);
        if let Some(hist) = leaf.hist.as_ref() {
            return split::best_split(self.data, hist, leaf.stats, features, &self.params.split, rng);
        }
        let rows = &rows[leaf.start..leaf.end];
        let mut search = split::SplitSearch::new(leaf.stats, &self.params.split);
        let Scratch { keyed, sparse, bins, gh, .. } = &mut *self.scratch;
        let extra = self.params.split.extra_trees;
        if extra {
            gh.clear();
            gh.extend(rows.iter().map(|&r| (self.grad[r as usize], self.hess[r as usize])));
        }
        for &f in features {
            if extra && !self.data.mappers[f].is_categorical() {
                bins.clear();
                bins.extend(rows.iter().map(|&r| self.data.bin_at(f, r as usize) as u32));
                search.extra_numeric_rows(self.data, f, bins, gh, rng);
                continue;
            }
            keyed.clear();
            keyed.extend(
                rows.iter().enumerate().map(|(i, &r)| (self.data.bin_at(f, r as usize) as u32, i as u32)),
            );
            // Bin, then position: each bin sums its rows in row order, as a histogram does.
            keyed.sort_unstable();
            sparse.clear();
            for &(b, i) in keyed.iter() {
                let r = rows[i as usize] as usize;
                let (g, h) = (self.grad[r], self.hess[r]);
                match sparse.last_mut() {
                    Some((last, cell)) if *last == b as usize => {
                        cell.g += g;
                        cell.h += h;
                        cell.n += 1;
                    }
                    _ => sparse.push((b as usize, HistBin { g, h, n: 1 })),
                }
            }
            search.sparse(self.data, f, sparse, rng);
        }
        search.finish()
    }

    /// For every bin of the split feature: does a row in it go left?
    fn left_table(&self, info: &SplitInfo) -> Vec<bool> {
        let mapper = &self.data.mappers[info.feature];
        (0..mapper.n_bins)
            .map(|b| match &info.kind {
                SplitKind::Numeric { bin, default_left } => {
                    if b == mapper.missing_bin() {
                        *default_left
                    } else {
                        b <= *bin
                    }
                }
                SplitKind::Categorical { bits } => (bits[b / 32] >> (b % 32)) & 1 == 1,
            })
            .collect()
    }
}

/// A leaf waiting to be split: the heap pops the highest gain, then the lowest leaf index.
struct Candidate {
    gain: f64,
    index: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.gain.total_cmp(&other.gain).then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// Grows one tree on the rows `rows` (reordered in place so each leaf's rows are contiguous),
/// considering only `features` (sorted ascending).
#[allow(clippy::too_many_arguments)]
pub(crate) fn grow(
    data: &BinnedData,
    grad: &[f64],
    hess: &[f64],
    rows: &mut [u32],
    features: &[usize],
    params: GrowParams,
    rng: &mut ChaCha8Rng,
    scratch: &mut Scratch,
) -> GrownTree {
    let unit_hess = hess.iter().all(|&h| h == 1.0);
    let small_node_rows = small_node_rows(data, features);
    let mut grower = Grower { data, grad, hess, features, params, unit_hess, small_node_rows, scratch };
    let mut nodes = vec![Node { cover: rows.len() as u32, ..Node::leaf(0.0) }];
    let mut cat_bits: Vec<u32> = Vec::new();
    let mut stats = Stats::default();
    for &r in rows.iter() {
        stats.g += grad[r as usize];
        stats.h += hess[r as usize];
    }
    stats.n = rows.len() as u32;
    let mut root =
        Leaf { node: 0, start: 0, end: rows.len(), depth: 0, stats, extra_l2: 0.0, hist: None, split: None };
    if grower.can_split(&root) && params.num_leaves > 1 {
        if grower.wants_hist(&root) {
            root.hist = Some(grower.histogram(rows));
        }
        root.split = grower.find(&root, rows, rng);
    }
    // Splittable leaves by gain. A linear scan per split made deep forest trees (thousands of
    // leaves) quadratic; ties go to the lowest leaf index, as that scan did.
    let mut ready = BinaryHeap::new();
    if let Some(s) = &root.split {
        ready.push(Candidate { gain: s.gain, index: 0 });
    }
    let mut leaves = vec![root];
    while leaves.len() < params.num_leaves {
        let Some(Candidate { index: i, .. }) = ready.pop() else { break };
        let leaf = &mut leaves[i];
        let Some(info) = leaf.split.take() else { break };
        let parent_hist = leaf.hist.take();
        let (start, end, depth, node_idx) = (leaf.start, leaf.end, leaf.depth, leaf.node);

        // Stable in-place partition of this leaf's rows.
        let table = grower.left_table(&info);
        let w =
            start + data.partition(info.feature, &table, &mut rows[start..end], &mut grower.scratch.right);

        let li = nodes.len();
        nodes.push(Node { cover: info.left.n, ..Node::leaf(0.0) });
        nodes.push(Node { cover: info.right.n, ..Node::leaf(0.0) });
        let node = &mut nodes[node_idx];
        node.feature = info.feature as u32;
        node.left = li as u32;
        node.right = li as u32 + 1;
        match &info.kind {
            SplitKind::Numeric { bin, default_left } => {
                let mapper = &data.mappers[info.feature];
                node.threshold = mapper.thresholds.get(*bin).copied().unwrap_or(f32::MAX);
                node.default_left = *default_left;
            }
            SplitKind::Categorical { bits } => {
                node.cat_start = cat_bits.len() as u32;
                node.cat_words = bits.len() as u32;
                let mb = data.mappers[info.feature].missing_bin();
                node.default_left = (bits[mb / 32] >> (mb % 32)) & 1 == 1;
                cat_bits.extend_from_slice(bits);
            }
        }

        let mut left = Leaf {
            node: li,
            start,
            end: w,
            depth: depth + 1,
            stats: info.left,
            extra_l2: info.extra_l2,
            hist: None,
            split: None,
        };
        let mut right = Leaf {
            node: li + 1,
            start: w,
            end,
            depth: depth + 1,
            stats: info.right,
            extra_l2: info.extra_l2,
            hist: None,
            split: None,
        };
        let (need_l, need_r) = (grower.wants_hist(&left), grower.wants_hist(&right));
        if need_l || need_r {
            let left_smaller = w - start <= end - w;
            let (small, large, need_small, need_large) = if left_smaller {
                (&mut left, &mut right, need_l, need_r)
            } else {
                (&mut right, &mut left, need_r, need_l)
            };
            // The smaller child's histogram is built even when only the larger one needs
            // one: the subtraction makes the larger one's nearly free.
            let small_hist = grower.histogram(&rows[small.start..small.end]);
            if need_large {
                if let Some(mut ph) = parent_hist {
                    histogram::subtract_in_place(&mut ph, &small_hist);
                    large.hist = Some(ph);
                } else {
                    large.hist = Some(grower.histogram(&rows[large.start..large.end]));
                }
            } else {
                grower.recycle(parent_hist);
            }
            if need_small {
                small.hist = Some(small_hist);
            } else {
                grower.recycle(Some(small_hist));
            }
        } else {
            grower.recycle(parent_hist);
        }
        for leaf in [&mut left, &mut right] {
            if grower.can_split(leaf) {
                leaf.split = grower.find(leaf, rows, rng);
            }
            if leaf.split.is_none() {
                grower.recycle(leaf.hist.take());
            }
        }
        if let Some(sp) = &left.split {
            ready.push(Candidate { gain: sp.gain, index: i });
        }
        if let Some(sp) = &right.split {
            ready.push(Candidate { gain: sp.gain, index: leaves.len() });
        }
        leaves[i] = left;
        leaves.push(right);
    }

    let mut out = Vec::with_capacity(leaves.len());
    for leaf in &mut leaves {
        grower.recycle(leaf.hist.take());
        let value = params.split.leaf_output(leaf.stats, leaf.extra_l2) * params.scale;
        nodes[leaf.node].value = value;
        out.push((leaf.start, leaf.end, value));
    }
    GrownTree { tree: Tree { nodes, cat_bits }, leaves: out }
}
