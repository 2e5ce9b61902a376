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
        }
    }

    #[inline]
    pub(crate) fn is_leaf(&self) -> bool {
        self.left == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    pub cat_bits: Vec<u32>,
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

    pub(crate) fn n_leaves(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_leaf()).count()
    }
}
