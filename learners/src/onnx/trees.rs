//! The tree engine's ensembles as one `ai.onnx.ml` `TreeEnsemble` node (opset 5, double
//! precision, so sums match quarry's `f64` arithmetic) plus the output transform.

use quarry_featurize::Task;

use super::builder::{Attr, Graph, attr, tensor_f64, tensor_u8};
use crate::gbdt::TreeEnsemble;
use crate::gbdt::binning::FeatureInfo;
use crate::gbdt::objective::PROB_FLOOR;
use crate::gbdt::tree::{Node, Tree};

const BRANCH_LEQ: u8 = 0;
const BRANCH_MEMBER: u8 = 6;

#[derive(Default)]
struct Arrays {
    modes: Vec<u8>,
    features: Vec<i64>,
    splits: Vec<f64>,
    true_ids: Vec<i64>,
    true_leaf: Vec<i64>,
    false_ids: Vec<i64>,
    false_leaf: Vec<i64>,
    missing_true: Vec<i64>,
    members: Vec<f64>,
    roots: Vec<i64>,
    leaf_targets: Vec<i64>,
    leaf_weights: Vec<f64>,
}

/// The category codes whose bin is in a node's left set, and whether the missing bin is.
fn left_codes(tree: &Tree, start: u32, words: u32, info: &FeatureInfo) -> (Vec<f64>, bool) {
    let bit = |b: usize| {
        let w = b / 32;
        w < words as usize && (tree.cat_bits[start as usize + w] >> (b % 32)) & 1 == 1
    };
    let FeatureInfo::Categorical { n_levels, .. } = *info else { return (Vec::new(), false) };
    let codes = (0..n_levels).filter(|&c| bit(info.cat_bin(c as f32))).map(f64::from).collect();
    (codes, bit(info.cat_bin(f32::NAN)))
}

fn add_tree(a: &mut Arrays, tree: &Tree, infos: &[FeatureInfo], target: i64) {
    // Quarry node index → ONNX interior-node or leaf index.
    let mut index = vec![0i64; tree.nodes.len()];
    let mut n_interior = a.modes.len() as i64;
    let mut n_leaves = a.leaf_weights.len() as i64;
    for (i, node) in tree.nodes.iter().enumerate() {
        if node.is_leaf() {
            index[i] = n_leaves;
            n_leaves += 1;
            a.leaf_targets.push(target);
            a.leaf_weights.push(node.value);
        } else {
            index[i] = n_interior;
            n_interior += 1;
        }
    }
    let root = &tree.nodes[0];
    if root.is_leaf() {
        // A tree must start at a node: a split whose both sides are the single leaf.
        a.roots.push(a.modes.len() as i64);
        a.modes.push(BRANCH_LEQ);
        a.features.push(0);
        a.splits.push(0.0);
        a.true_ids.push(index[0]);
        a.true_leaf.push(1);
        a.false_ids.push(index[0]);
        a.false_leaf.push(1);
        a.missing_true.push(0);
        return;
    }
    a.roots.push(index[0]);
    for node in tree.nodes.iter().filter(|n| !n.is_leaf()) {
        let (l, r) = (&tree.nodes[node.left as usize], &tree.nodes[node.right as usize]);
        a.features.push(i64::from(node.feature));
        a.true_ids.push(index[node.left as usize]);
        a.true_leaf.push(i64::from(l.is_leaf()));
        a.false_ids.push(index[node.right as usize]);
        a.false_leaf.push(i64::from(r.is_leaf()));
        if node.cat_words == 0 {
            a.modes.push(BRANCH_LEQ);
            a.splits.push(f64::from(node.threshold));
            a.missing_true.push(i64::from(node.default_left));
        } else {
            let info = &infos[node.feature as usize];
            let (codes, missing_left) = left_codes(tree, node.cat_start, node.cat_words, info);
            a.missing_true.push(i64::from(missing_left));
            if codes.is_empty() {
                // Only the missing bin goes left: codes are never negative.
                a.modes.push(BRANCH_LEQ);
                a.splits.push(-1.0);
            } else {
                a.modes.push(BRANCH_MEMBER);
                a.splits.push(f64::NAN);
                if !a.members.is_empty() {
                    a.members.push(f64::NAN);
                }
                a.members.extend(codes);
            }
        }
    }
}

/// `x`: `double [N,F]` features. Returns `double [N,C]` probabilities or `double [N,1]` values.
pub(crate) fn export(g: &mut Graph, m: &TreeEnsemble, task: Task, x: &str) -> String {
    let (n_classes, k, init, infos, trees, averaged) = m.parts();
    let mut a = Arrays::default();
    if !averaged {
        // The initial scores as one-leaf trees summed first: quarry starts each row at its
        // initial score and adds the trees in order, and so (run sequentially) does this.
        for (j, &v) in init.iter().enumerate() {
            let leaf = Tree { nodes: vec![Node::leaf(v)], cat_bits: Vec::new() };
            add_tree(&mut a, &leaf, infos, j as i64);
        }
    }
    for (t, tree) in trees.iter().enumerate() {
        add_tree(&mut a, tree, infos, (t % k.max(1)) as i64);
    }
    let n = |v: &[f64]| [v.len() as i64];
    let mut attrs = vec![
        attr("n_targets", Attr::Int(k as i64)),
        attr("aggregate_function", Attr::Int(1)),
        attr("post_transform", Attr::Int(0)),
        attr("tree_roots", Attr::Ints(a.roots)),
        attr("nodes_modes", Attr::Tensor(Box::new(tensor_u8(&a.modes, &[a.modes.len() as i64])))),
        attr("nodes_featureids", Attr::Ints(a.features)),
        attr("nodes_splits", Attr::Tensor(Box::new(tensor_f64(&a.splits, &n(&a.splits))))),
        attr("nodes_truenodeids", Attr::Ints(a.true_ids)),
        attr("nodes_trueleafs", Attr::Ints(a.true_leaf)),
        attr("nodes_falsenodeids", Attr::Ints(a.false_ids)),
        attr("nodes_falseleafs", Attr::Ints(a.false_leaf)),
        attr("nodes_missing_value_tracks_true", Attr::Ints(a.missing_true)),
        attr("leaf_targetids", Attr::Ints(a.leaf_targets)),
        attr("leaf_weights", Attr::Tensor(Box::new(tensor_f64(&a.leaf_weights, &n(&a.leaf_weights))))),
    ];
    if !a.members.is_empty() {
        attrs.push(attr("membership_values", Attr::Tensor(Box::new(tensor_f64(&a.members, &n(&a.members))))));
    }
    let sum = g.ml("TreeEnsemble", &[x], attrs);
    let rounds = trees.len() / k.max(1);
    let raw = if averaged {
        let scale = g.f64s(&[1.0 / rounds.max(1) as f64], &[]);
        g.op("Mul", &[&sum, &scale], vec![])
    } else {
        sum
    };
    match (task, averaged) {
        (Task::Regression, _) => raw,
        (Task::Binary, false) => {
            let p = g.op("Sigmoid", &[&raw], vec![]);
            let one = g.f64s(&[1.0], &[]);
            let q = g.op("Sub", &[&one, &p], vec![]);
            g.op("Concat", &[&q, &p], vec![attr("axis", Attr::Int(1))])
        }
        (Task::Multiclass, false) => g.op("Softmax", &[&raw], vec![attr("axis", Attr::Int(1))]),
        (Task::Binary, true) => {
            let one = g.f64s(&[1.0], &[]);
            let q = g.op("Sub", &[&one, &raw], vec![]);
            let both = g.op("Concat", &[&q, &raw], vec![attr("axis", Attr::Int(1))]);
            clip_normalize(g, &both)
        }
        (Task::Multiclass, true) => {
            debug_assert_eq!(k, n_classes);
            clip_normalize(g, &raw)
        }
    }
}

/// Forest probabilities: each clipped to `[PROB_FLOOR, 1]`, then divided by the row sum.
fn clip_normalize(g: &mut Graph, p: &str) -> String {
    let lo = g.f64s(&[PROB_FLOOR], &[]);
    let hi = g.f64s(&[1.0], &[]);
    let c = g.op("Clip", &[p, &lo, &hi], vec![]);
    let axes = g.i64s(&[1], &[1]);
    let s = g.op("ReduceSum", &[&c, &axes], vec![attr("keepdims", Attr::Int(1))]);
    g.op("Div", &[&c, &s], vec![])
}
