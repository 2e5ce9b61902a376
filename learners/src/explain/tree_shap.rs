//! Exact path-dependent TreeSHAP (Lundberg, Erion & Lee 2018, Algorithm 2): Shapley values of
//! `E[f(x) | x_S]`, the expectation taken over the training rows that reached each node (the
//! saved covers), in `O(leaves · depth²)` per tree and row.
//!
//! Players need not be single features: every feature carries a player id, and features that
//! share one (the parts of a datetime, a text column's hash buckets) act as one player, which
//! gives the exact Shapley value of the raw column rather than a sum of per-part values.

use quarry_featurize::FeatureMatrix;

use crate::gbdt::binning::FeatureInfo;
use crate::gbdt::tree::Tree;

/// No player: the root's path element.
const NO_PLAYER: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PathElem {
    player: u32,
    zero: f64,
    one: f64,
    weight: f64,
}

/// One tree prepared for explaining: node covers as `f64` and each node's player.
pub(crate) struct ShapTree<'a> {
    tree: &'a Tree,
    cover: Vec<f64>,
    player: Vec<u32>,
    max_depth: usize,
    /// `E[f]` over the training rows: leaf values weighted by their cover.
    pub expected: f64,
}

impl<'a> ShapTree<'a> {
    /// `background` fills in covers for trees saved without them (older bundles): each leaf
    /// gets the background rows it receives plus one, so no node has zero weight.
    pub(crate) fn new(
        tree: &'a Tree,
        infos: &[FeatureInfo],
        player_of: &[u32],
        background: Option<&FeatureMatrix>,
    ) -> ShapTree<'a> {
        let n = tree.nodes.len();
        let mut cover: Vec<f64> = tree.nodes.iter().map(|nd| f64::from(nd.cover)).collect();
        if cover[0] <= 0.0 {
            cover = routed_cover(tree, infos, background);
        }
        let player = tree
            .nodes
            .iter()
            .map(|nd| if nd.is_leaf() { NO_PLAYER } else { player_of[nd.feature as usize] })
            .collect();
        let mut depth = vec![0usize; n];
        let mut max_depth = 0;
        for (i, nd) in tree.nodes.iter().enumerate() {
            if !nd.is_leaf() {
                // Children come after their parent (checked when the tree was loaded).
                depth[nd.left as usize] = depth[i] + 1;
                depth[nd.right as usize] = depth[i] + 1;
                max_depth = max_depth.max(depth[i] + 1);
            }
        }
        let mut t = ShapTree { tree, cover, player, max_depth, expected: 0.0 };
        t.expected = t.node_expectation(0);
        t
    }

    fn node_expectation(&self, node: usize) -> f64 {
        let nd = &self.tree.nodes[node];
        if nd.is_leaf() {
            return nd.value;
        }
        let (l, r) = (nd.left as usize, nd.right as usize);
        let (wl, wr) = child_fractions(self.cover[node], self.cover[l], self.cover[r]);
        wl * self.node_expectation(l) + wr * self.node_expectation(r)
    }

    pub(crate) fn tree(&self) -> &'a Tree {
        self.tree
    }

    /// The player split on at internal node `node`.
    pub(crate) fn player(&self, node: usize) -> u32 {
        self.player[node]
    }

    /// Fractions of internal node `node`'s cover that go to its left and right child.
    pub(crate) fn child_fractions(&self, node: usize) -> (f64, f64) {
        let nd = &self.tree.nodes[node];
        child_fractions(self.cover[node], self.cover[nd.left as usize], self.cover[nd.right as usize])
    }

    /// Path buffer length `explain_row` needs.
    pub(crate) fn buffer_len(&self) -> usize {
        (self.max_depth + 2) * (self.max_depth + 3) / 2
    }

    /// Adds this tree's Shapley values for the row whose feature values are `x` to `phi`
    /// (one slot per player). `buf` is scratch space, grown as needed and reused across calls.
    pub(crate) fn explain_row(
        &self,
        x: &[f32],
        infos: &[FeatureInfo],
        phi: &mut [f64],
        buf: &mut Vec<PathElem>,
    ) {
        if buf.len() < self.buffer_len() {
            buf.resize(self.buffer_len(), PathElem::default());
        }
        let ctx = Ctx { t: self, x, infos };
        ctx.recurse(phi, buf, 0, 0, 0, 1.0, 1.0, NO_PLAYER);
    }
}

/// Fractions of a node's weight that go left and right; an empty node splits evenly.
#[inline]
fn child_fractions(parent: f64, left: f64, right: f64) -> (f64, f64) {
    if parent > 0.0 { (left / parent, right / parent) } else { (0.5, 0.5) }
}

fn routed_cover(tree: &Tree, infos: &[FeatureInfo], background: Option<&FeatureMatrix>) -> Vec<f64> {
    let n = tree.nodes.len();
    let mut cover = vec![0.0; n];
    for (i, nd) in tree.nodes.iter().enumerate() {
        if nd.is_leaf() {
            cover[i] = 1.0;
        }
    }
    if let Some(bg) = background {
        for row in 0..bg.n_rows {
            let mut i = 0usize;
            loop {
                let nd = &tree.nodes[i];
                if nd.is_leaf() {
                    cover[i] += 1.0;
                    break;
                }
                let f = nd.feature as usize;
                let v = bg.columns.get(f).map_or(f32::NAN, |c| c.values[row]);
                i = if infos.get(f).is_some_and(|info| tree.goes_left(nd, v, info)) {
                    nd.left
                } else {
                    nd.right
                } as usize;
            }
        }
    }
    for i in (0..n).rev() {
        let nd = &tree.nodes[i];
        if !nd.is_leaf() {
            cover[i] = cover[nd.left as usize] + cover[nd.right as usize];
        }
    }
    cover
}

struct Ctx<'a, 'b> {
    t: &'b ShapTree<'a>,
    x: &'b [f32],
    infos: &'b [FeatureInfo],
}

fn extend(path: &mut [PathElem], depth: usize, zero: f64, one: f64, player: u32) {
    path[depth] = PathElem { player, zero, one, weight: if depth == 0 { 1.0 } else { 0.0 } };
    let d1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / d1;
        path[i].weight = zero * path[i].weight * (depth - i) as f64 / d1;
    }
}

fn unwind(path: &mut [PathElem], depth: usize, index: usize) {
    let PathElem { one, zero, .. } = path[index];
    let d1 = (depth + 1) as f64;
    let mut next = path[depth].weight;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next * d1 / ((i + 1) as f64 * one);
            next = tmp - path[i].weight * zero * (depth - i) as f64 / d1;
        } else {
            path[i].weight = path[i].weight * d1 / (zero * (depth - i) as f64);
        }
    }
    for i in index..depth {
        path[i].player = path[i + 1].player;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

/// Total weight of the path with element `index` removed (without modifying it).
fn unwound_sum(path: &[PathElem], depth: usize, index: usize) -> f64 {
    let PathElem { one, zero, .. } = path[index];
    let d1 = (depth + 1) as f64;
    let mut next = path[depth].weight;
    let mut total = 0.0;
    if one != 0.0 {
        for i in (0..depth).rev() {
            let tmp = next * d1 / ((i + 1) as f64 * one);
            total += tmp;
            next = path[i].weight - tmp * zero * (depth - i) as f64 / d1;
        }
    } else if zero != 0.0 {
        for i in (0..depth).rev() {
            total += path[i].weight * d1 / (zero * (depth - i) as f64);
        }
    }
    total
}

impl Ctx<'_, '_> {
    /// `parent` is where the parent's path starts in `buf`; `depth` this node's unique depth.
    #[allow(clippy::too_many_arguments)]
    fn recurse(
        &self,
        phi: &mut [f64],
        buf: &mut [PathElem],
        parent: usize,
        node: usize,
        depth: usize,
        zero: f64,
        one: f64,
        player: u32,
    ) {
        let start = parent + depth + 1;
        buf.copy_within(parent..parent + depth + 1, start);
        let (_, rest) = buf.split_at_mut(start);
        extend(rest, depth, zero, one, player);
        let nd = &self.t.tree.nodes[node];
        if nd.is_leaf() {
            for i in 1..=depth {
                let w = unwound_sum(rest, depth, i);
                let el = rest[i];
                phi[el.player as usize] += w * (el.one - el.zero) * nd.value;
            }
            return;
        }
        let f = nd.feature as usize;
        let v = self.x.get(f).copied().unwrap_or(f32::NAN);
        let left = self.infos.get(f).is_some_and(|info| self.t.tree.goes_left(nd, v, info));
        let (hot, cold) =
            if left { (nd.left as usize, nd.right as usize) } else { (nd.right as usize, nd.left as usize) };
        let w = self.t.cover[node];
        let (hot_zero, cold_zero) = child_fractions(w, self.t.cover[hot], self.t.cover[cold]);
        let split_player = self.t.player[node];
        let mut in_zero = 1.0;
        let mut in_one = 1.0;
        let mut depth = depth;
        if let Some(k) = (1..=depth).find(|&k| rest[k].player == split_player) {
            in_zero = rest[k].zero;
            in_one = rest[k].one;
            unwind(rest, depth, k);
            depth -= 1;
        }
        self.recurse(phi, buf, start, hot, depth + 1, hot_zero * in_zero, in_one, split_player);
        self.recurse(phi, buf, start, cold, depth + 1, cold_zero * in_zero, 0.0, split_player);
    }
}
