//! A fitted tree as a flat node array, and its traversal on raw `f32` values.

use quarry_featurize::matrix::FeatureMatrix;
use serde::{Deserialize, Serialize};

use super::binning::FeatureInfo;

/// One node. A node is a leaf when `left == 0` (the root is never anyone's child).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub feature: u32,
    /// Numeric split: `value <= threshold` goes left (NaN follows `default_left`).
    pub threshold: f32,
    pub left: u32,
    pub right: u32,
    pub default_left: bool,
    /// Categorical split: bins whose bit is set in `cat_bits[cat_start..cat_start + cat_words]`
    /// go left (the missing bin is one of the bins). `cat_words == 0` means a numeric split.
    pub cat_start: u32,
    pub cat_words: u32,
    /// Leaf output (already scaled by the learning rate).
    pub value: f64,
    /// Training rows that reached this node (bootstrap duplicates counted): the node weights
    /// TreeSHAP's conditional expectations use. 0 in bundles saved before covers were kept.
    pub cover: u32,
}

impl Node {
    pub(crate) fn leaf(value: f64) -> Node {
        Node {
            feature: 0,
            threshold: 0.0,
            left: 0,
            right: 0,
            default_left: false,
            cat_start: 0,
            cat_words: 0,
            value,
            cover: 0,
        }
    }

    #[inline]
    pub(crate) fn is_leaf(&self) -> bool {
        self.left == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "TreeRepr", try_from = "TreeRepr")]
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    pub cat_bits: Vec<u32>,
}

/// The saved form of a tree: one array per node field. Field names written once per tree
/// instead of once per node make bundles about four times smaller.
#[derive(Serialize, Deserialize)]
struct TreeRepr {
    feature: Vec<u32>,
    threshold: Vec<f32>,
    left: Vec<u32>,
    right: Vec<u32>,
    default_left: Vec<u8>,
    cat_start: Vec<u32>,
    cat_words: Vec<u32>,
    value: Vec<f64>,
    cat_bits: Vec<u32>,
    /// Absent in bundles written before covers were saved (then every cover reads 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cover: Vec<u32>,
}

impl From<Tree> for TreeRepr {
    fn from(t: Tree) -> Self {
        let n = &t.nodes;
        TreeRepr {
            feature: n.iter().map(|x| x.feature).collect(),
            threshold: n.iter().map(|x| x.threshold).collect(),
            left: n.iter().map(|x| x.left).collect(),
            right: n.iter().map(|x| x.right).collect(),
            default_left: n.iter().map(|x| u8::from(x.default_left)).collect(),
            cat_start: n.iter().map(|x| x.cat_start).collect(),
            cat_words: n.iter().map(|x| x.cat_words).collect(),
            value: n.iter().map(|x| x.value).collect(),
            cat_bits: t.cat_bits,
            cover: if n.iter().all(|x| x.cover == 0) {
                Vec::new()
            } else {
                n.iter().map(|x| x.cover).collect()
            },
        }
    }
}

impl TryFrom<TreeRepr> for Tree {
    type Error = String;

    /// Checks what traversal relies on, so a damaged bundle is an error, not a panic.
    fn try_from(r: TreeRepr) -> Result<Self, Self::Error> {
        let len = r.value.len();
        let lens = [
            r.feature.len(),
            r.threshold.len(),
            r.left.len(),
            r.right.len(),
            r.default_left.len(),
            r.cat_start.len(),
            r.cat_words.len(),
        ];
        if len == 0 || lens.iter().any(|&l| l != len) || !(r.cover.is_empty() || r.cover.len() == len) {
            return Err(format!("tree arrays have different lengths ({lens:?} vs {len} values)"));
        }
        let mut nodes = Vec::with_capacity(len);
        for i in 0..len {
            let node = Node {
                feature: r.feature[i],
                threshold: r.threshold[i],
                left: r.left[i],
                right: r.right[i],
                default_left: r.default_left[i] != 0,
                cat_start: r.cat_start[i],
                cat_words: r.cat_words[i],
                value: r.value[i],
                cover: r.cover.get(i).copied().unwrap_or(0),
            };
            // Children always come after their parent, so traversal cannot loop.
            let child_ok = |c: u32| (c as usize) > i && (c as usize) < len;
            let children_ok = child_ok(node.left) && child_ok(node.right);
            if !node.is_leaf() && !children_ok {
                return Err(format!("node {i} points outside the tree"));
            }
            if (node.cat_start as usize + node.cat_words as usize) > r.cat_bits.len() {
                return Err(format!("node {i} points outside the category bitset"));
            }
            nodes.push(node);
        }
        Ok(Tree { nodes, cat_bits: r.cat_bits })
    }
}

impl Tree {
    /// Output for row `row` of `x`.
    #[inline]
    pub(crate) fn predict_row(&self, x: &FeatureMatrix, infos: &[FeatureInfo], row: usize) -> f64 {
        let mut i = 0usize;
        loop {
            let node = &self.nodes[i];
            if node.is_leaf() {
                return node.value;
            }
            let f = node.feature as usize;
            let v = x.columns[f].values[row];
            let go_left = if node.cat_words == 0 {
                if v.is_nan() {
                    node.default_left
                } else {
                    // +inf shares the top value bin with f32::MAX in training.
                    v.min(f32::MAX) <= node.threshold
                }
            } else {
                let b = infos[f].cat_bin(v);
                let w = b / 32;
                w < node.cat_words as usize
                    && (self.cat_bits[node.cat_start as usize + w] >> (b % 32)) & 1 == 1
            };
            i = if go_left { node.left } else { node.right } as usize;
        }
    }

    /// Whether a row with value `v` of the node's feature goes to the left child (the same
    /// routing as [`Tree::predict_row`], missing values and categories included).
    #[inline]
    pub(crate) fn goes_left(&self, node: &Node, v: f32, info: &FeatureInfo) -> bool {
        if node.cat_words == 0 {
            if v.is_nan() { node.default_left } else { v.min(f32::MAX) <= node.threshold }
        } else {
            let b = info.cat_bin(v);
            let w = b / 32;
            w < node.cat_words as usize && (self.cat_bits[node.cat_start as usize + w] >> (b % 32)) & 1 == 1
        }
    }

    pub(crate) fn n_leaves(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_leaf()).count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod repr_tests {
    use super::*;

    fn stump() -> Tree {
        let mut root = Node::leaf(0.0);
        root.left = 1;
        root.right = 2;
        root.threshold = 0.5;
        Tree { nodes: vec![root, Node::leaf(-1.0), Node::leaf(1.0)], cat_bits: Vec::new() }
    }

    #[test]
    fn saved_form_round_trips() {
        let t = stump();
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.starts_with("{\"feature\":[0,0,0]"), "{json}");
        assert_eq!(serde_json::from_str::<Tree>(&json).unwrap(), t);
    }

    #[test]
    fn damaged_trees_are_rejected() {
        let mut r = TreeRepr::from(stump());
        r.left[0] = 7;
        let err = serde_json::from_str::<Tree>(&serde_json::to_string(&r).unwrap()).unwrap_err();
        assert!(err.to_string().contains("outside the tree"), "{err}");
        let mut r = TreeRepr::from(stump());
        r.value.pop();
        assert!(serde_json::from_str::<Tree>(&serde_json::to_string(&r).unwrap()).is_err());
        // A child pointing back at its parent would loop forever in traversal.
        let mut r = TreeRepr::from(stump());
        r.left[1] = 1;
        r.right[1] = 2;
        assert!(serde_json::from_str::<Tree>(&serde_json::to_string(&r).unwrap()).is_err());
    }
}
