//! Exact path-dependent TreeSHAP with per-leaf tables (the idea of Fast TreeSHAP v2, Yang
//! 2021): the same values as [`super::tree_shap`] (Algorithm 2 of Lundberg et al. 2018), with
//! the combinatorial work moved out of the per-row loop.
//!
//! A leaf's contribution depends on a row only through `S`, the set of the leaf's path
//! players whose every split on the path the row follows. With `D` the path's players (`d`
//! of them), `z_j` the product of player `j`'s cover fractions along the path, `v` the leaf
//! value and `w(k) = k! (d-1-k)! / d!`, the Shapley values of the leaf's term
//! `f(U) = v · [U ⊆ S] · Π_{j ∈ D\U} z_j` are
//!
//! - `i ∉ S`: `φ_i = -v · Q(S) · G(S)`
//! - `i ∈ S`: `φ_i =  v · Q(S) · (1 - z_i) · G(S \ {i})`
//!
//! where `Q(S) = Π_{j ∈ D\S} z_j` and `G(S) = Σ_{U ⊆ S} w(|U|) · Π_{j ∈ S\U} z_j`. `G` is
//! tabulated once per leaf for every `S ⊆ D` (`2^d` values, `O(2^d · d)` work, no division,
//! every term positive); a row then costs one pass over the tree's splits, which gives every
//! leaf's `S` as a bit mask, and `O(d)` per leaf instead of Algorithm 2's `O(d²)`.

use quarry_featurize::FeatureMatrix;

use super::tree_shap::ShapTree;
use crate::gbdt::binning::FeatureInfo;
use crate::gbdt::tree::Tree;

/// Leaves with more distinct path players than this make their tree use Algorithm 2 (the
/// table doubles with every player).
pub(crate) const MAX_TABLE_SLOTS: usize = 12;

/// One split, in node order, so that a node's mask is known before its children's.
#[derive(Debug, Clone, Copy)]
struct Split {
    node: u32,
    left: u32,
    right: u32,
    feature: u32,
    threshold: f32,
    /// The bit of this node's player in the leaf masks below it, set here when the player
    /// first appears on the path (0 when an ancestor already set it).
    set: u32,
    /// The same bit, cleared on the side the row does not take.
    clear: u32,
    cat_start: u32,
    /// 0 for a numeric split.
    cat_words: u32,
    default_left: bool,
}

#[derive(Debug, Clone, Copy)]
struct Leaf {
    node: u32,
    n_slots: u32,
    /// Start of this leaf's players in `slots`.
    slots: u32,
    value: f64,
    /// Start of this leaf's `G` table (`2^n_slots` values) in `table`.
    table: usize,
}

/// One distinct player on a leaf's path.
#[derive(Debug, Clone, Copy)]
struct Slot {
    player: u32,
    z: f64,
    one_minus_z: f64,
}

/// A tree prepared for table TreeSHAP.
#[derive(Debug, Clone)]
pub(crate) struct FastTree {
    splits: Vec<Split>,
    leaves: Vec<Leaf>,
    slots: Vec<Slot>,
    table: Vec<f64>,
    cat_bits: Vec<u32>,
    n_nodes: usize,
    table_len: usize,
}

impl FastTree {
    /// The tree's splits and leaf paths; `None` when a leaf has more than [`MAX_TABLE_SLOTS`]
    /// distinct players on its path, or a split reads a feature past `n_features` (Algorithm 2
    /// treats it as missing). The tables are built by [`FastTree::fill_tables`].
    pub(crate) fn new(st: &ShapTree, n_features: usize) -> Option<FastTree> {
        let tree = st.tree();
        let n = tree.nodes.len();
        let mut by_node: Vec<Option<Split>> = vec![None; n];
        let mut leaf_at: Vec<Option<(u32, u32, f64)>> = vec![None; n];
        let mut slots = Vec::new();
        let mut path: Vec<(u32, f64)> = Vec::with_capacity(MAX_TABLE_SLOTS);
        let mut walk =
            Walk { st, tree, n_features, by_node: &mut by_node, leaf_at: &mut leaf_at, slots: &mut slots };
        if !walk.visit(0, &mut path) {
            return None;
        }
        let splits: Vec<Split> = by_node.into_iter().flatten().collect();
        let mut table_len = 0;
        let leaves: Vec<Leaf> = leaf_at
            .into_iter()
            .enumerate()
            .filter_map(|(node, l)| {
                l.map(|(n_slots, start, value)| {
                    let leaf = Leaf { node: node as u32, n_slots, slots: start, value, table: table_len };
                    table_len += 1usize << n_slots;
                    leaf
                })
            })
            .collect();
        Some(FastTree {
            splits,
            leaves,
            slots,
            table: Vec::new(),
            cat_bits: tree.cat_bits.clone(),
            n_nodes: n,
            table_len,
        })
    }

    /// Values the tables hold once filled.
    pub(crate) fn table_len(&self) -> usize {
        self.table_len
    }

    /// Rough operation counts: `(building the tables, one row with tables, one row with
    /// Algorithm 2)`, to pick the cheaper way for a number of rows.
    pub(crate) fn costs(&self) -> (f64, f64, f64) {
        let mut build = 0.0;
        let mut row = 2.0 * self.splits.len() as f64;
        let mut alg2 = 0.0;
        for l in &self.leaves {
            let d = f64::from(l.n_slots);
            build += (1u64 << l.n_slots) as f64 * (d + 2.0);
            row += 2.0 * d + 2.0;
            alg2 += 3.0 * (d + 1.0) * (d + 1.0);
        }
        // Algorithm 2 also extends the path at every node.
        alg2 += 4.0 * self.n_nodes as f64 * 4.0;
        (build, row, alg2)
    }

    /// Frees the tables (a later [`FastTree::fill_tables`] rebuilds them).
    pub(crate) fn drop_tables(&mut self) {
        self.table = Vec::new();
    }

    /// Builds every leaf's `G` table.
    pub(crate) fn fill_tables(&mut self) {
        let mut table = vec![0.0; self.table_len];
        let mut poly = Vec::new();
        let mut z = Vec::with_capacity(MAX_TABLE_SLOTS);
        for l in &self.leaves {
            let d = l.n_slots as usize;
            z.clear();
            z.extend(self.slots[l.slots as usize..l.slots as usize + d].iter().map(|s| s.z));
            fill_g(&z, &mut poly, &mut table[l.table..l.table + (1 << d)]);
        }
        self.table = table;
    }

    /// Adds this tree's Shapley values for one row to `phi` (one slot per player). `x` holds
    /// the row's values with `+inf` clamped to `f32::MAX` (training bins them together),
    /// `bins` its categorical bins (see [`RowValues`]); `mask` is scratch space.
    pub(crate) fn explain_row(&self, x: &[f32], bins: &[u32], phi: &mut [f64], mask: &mut Vec<u32>) {
        debug_assert_eq!(self.table.len(), self.table_len, "tables not filled");
        if self.leaves.len() < 2 {
            return;
        }
        if mask.len() < self.n_nodes {
            mask.resize(self.n_nodes, 0);
        }
        // Every other node's mask is written by its parent before it is read.
        mask[0] = 0;
        for s in &self.splits {
            let m = mask[s.node as usize] | s.set;
            let f = s.feature as usize;
            let left = if s.cat_words == 0 {
                let v = x[f];
                if v.is_nan() { s.default_left } else { v <= s.threshold }
            } else {
                let b = bins[f] as usize;
                let w = b / 32;
                w < s.cat_words as usize && (self.cat_bits[s.cat_start as usize + w] >> (b % 32)) & 1 == 1
            };
            let (ml, mr) = if left { (m, m & !s.clear) } else { (m & !s.clear, m) };
            mask[s.left as usize] = ml;
            mask[s.right as usize] = mr;
        }
        for l in &self.leaves {
            let s = mask[l.node as usize] as usize;
            let d = l.n_slots as usize;
            let slots = &self.slots[l.slots as usize..l.slots as usize + d];
            let g = &self.table[l.table..l.table + (1 << d)];
            // v · Q(S): the leaf value times the cover fractions of the players the row left.
            let mut q = l.value;
            for (k, sl) in slots.iter().enumerate() {
                if s >> k & 1 == 0 {
                    q *= sl.z;
                }
            }
            let out = -q * g[s];
            for (k, sl) in slots.iter().enumerate() {
                let bit = 1 << k;
                let c = if s & bit != 0 { q * sl.one_minus_z * g[s ^ bit] } else { out };
                phi[sl.player as usize] += c;
            }
        }
    }
}

struct Walk<'a, 'b> {
    st: &'b ShapTree<'a>,
    tree: &'b Tree,
    n_features: usize,
    by_node: &'b mut Vec<Option<Split>>,
    leaf_at: &'b mut Vec<Option<(u32, u32, f64)>>,
    slots: &'b mut Vec<Slot>,
}

impl Walk<'_, '_> {
    /// Records the splits and leaves under `node`; `path` holds the distinct players above it
    /// with their cover-fraction products. `false` when a path has too many players.
    fn visit(&mut self, node: usize, path: &mut Vec<(u32, f64)>) -> bool {
        let nd = &self.tree.nodes[node];
        if nd.is_leaf() {
            let start = self.slots.len() as u32;
            self.slots.extend(path.iter().map(|&(player, z)| Slot { player, z, one_minus_z: 1.0 - z }));
            self.leaf_at[node] = Some((path.len() as u32, start, nd.value));
            return true;
        }
        if nd.feature as usize >= self.n_features {
            return false;
        }
        let player = self.st.player(node);
        let (k, new) = match path.iter().position(|p| p.0 == player) {
            Some(k) => (k, false),
            None => {
                if path.len() == MAX_TABLE_SLOTS {
                    return false;
                }
                path.push((player, 1.0));
                (path.len() - 1, true)
            }
        };
        let bit = 1u32 << k;
        self.by_node[node] = Some(Split {
            node: node as u32,
            left: nd.left,
            right: nd.right,
            feature: nd.feature,
            threshold: nd.threshold,
            set: if new { bit } else { 0 },
            clear: bit,
            cat_start: nd.cat_start,
            cat_words: nd.cat_words,
            default_left: nd.default_left,
        });
        let (fl, fr) = self.st.child_fractions(node);
        let before = path[k].1;
        for (child, frac) in [(nd.left, fl), (nd.right, fr)] {
            path[k].1 = before * frac;
            if !self.visit(child as usize, path) {
                return false;
            }
        }
        path[k].1 = before;
        if new {
            path.pop();
        }
        true
    }
}

/// `out[S] = G(S) = Σ_{U ⊆ S} w(|U|) · e_{|S|-|U|}(z_S)` for every subset `S` of the `d`
/// players (bit `k` = player `k`), `w(k) = k! (d-1-k)! / d!`. `e_m(z_S)`, the elementary
/// symmetric polynomials of the players' fractions, come from `S` without its lowest player:
/// `e_m(z_S) = e_m(z_P) + z_j · e_{m-1}(z_P)`. `G(D)` is never read (no player is outside
/// `D`) and is left 0.
fn fill_g(z: &[f64], poly: &mut Vec<f64>, out: &mut [f64]) {
    let d = z.len();
    let stride = d + 1;
    let mut w = [0.0; MAX_TABLE_SLOTS + 1];
    // w(k) = 1 / (d · C(d-1, k)).
    let mut binom = 1.0;
    for (k, wk) in w.iter_mut().enumerate().take(d) {
        *wk = 1.0 / (d as f64 * binom);
        binom = binom * (d - 1 - k) as f64 / (k + 1) as f64;
    }
    poly.clear();
    poly.resize((1 << d) * stride, 0.0);
    poly[0] = 1.0;
    out[0] = if d > 0 { w[0] } else { 0.0 };
    for (s, g) in out.iter_mut().enumerate().take(1 << d).skip(1) {
        let j = s.trailing_zeros() as usize;
        let p = s & (s - 1);
        let n = s.count_ones() as usize;
        let (head, tail) = poly.split_at_mut(s * stride);
        let prev = &head[p * stride..p * stride + stride];
        let cur = &mut tail[..stride];
        cur[0] = 1.0;
        for m in 1..n {
            cur[m] = prev[m] + z[j] * prev[m - 1];
        }
        cur[n] = z[j] * prev[n - 1];
        if n < d {
            *g = (0..=n).map(|m| w[n - m] * cur[m]).sum();
        }
    }
}

/// A block of rows laid out for the tree walks: row-major values with `+inf` clamped to
/// `f32::MAX`, and the bin of every categorical value (0 for numeric features).
pub(crate) struct RowValues {
    pub n_features: usize,
    pub values: Vec<f32>,
    pub bins: Vec<u32>,
}

impl RowValues {
    pub(crate) fn new() -> RowValues {
        RowValues { n_features: 0, values: Vec::new(), bins: Vec::new() }
    }

    /// Loads rows `rows` of `x`.
    pub(crate) fn load(&mut self, x: &FeatureMatrix, infos: &[FeatureInfo], rows: std::ops::Range<usize>) {
        let nf = x.columns.len();
        self.n_features = nf;
        let n = rows.len();
        self.values.clear();
        self.values.resize(n * nf, f32::NAN);
        self.bins.clear();
        self.bins.resize(n * nf, 0);
        for (f, c) in x.columns.iter().enumerate() {
            let cat = matches!(infos.get(f), Some(FeatureInfo::Categorical { .. }));
            for (i, &v) in c.values[rows.clone()].iter().enumerate() {
                // `min` keeps NaN as NaN only when asked: NaN.min(MAX) is MAX.
                self.values[i * nf + f] = if v.is_nan() { v } else { v.min(f32::MAX) };
                if cat {
                    self.bins[i * nf + f] = infos[f].cat_bin(v) as u32;
                }
            }
        }
    }

    pub(crate) fn row(&self, i: usize) -> (&[f32], &[u32]) {
        let nf = self.n_features;
        (&self.values[i * nf..(i + 1) * nf], &self.bins[i * nf..(i + 1) * nf])
    }
}
