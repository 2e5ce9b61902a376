//! k-nearest neighbours: squared distances to every stored point, `TopK`, then votes or a
//! weighted mean, like `KnnModel::predict`. Distances are summed one design column at a time
//! in `f32`, the order quarry sums them in, so ties break the same way (lower index first).

use super::builder::{Attr, Graph, attr};
use super::linear::design;
use super::pb::tensor_proto::DataType;
use crate::knn::{KnnModel, KnnWeights, PROB_FLOOR};

pub(crate) fn export(g: &mut Graph, m: &KnnModel, features: &[String]) -> String {
    let n_train = m.targets.len();
    let k = m.params.n_neighbors.min(n_train) as i64;
    let d = design(g, &m.prep, features);
    let q = g.cast(&d, DataType::Float);
    let mut acc: Option<String> = None;
    for j in 0..m.width {
        let col: Vec<f32> = m.points.iter().skip(j).step_by(m.width).copied().collect();
        let p = g.f32s(&col, &[1, n_train as i64]);
        let idx = g.i64s(&[j as i64], &[1]);
        let qj = g.op("Gather", &[&q, &idx], vec![attr("axis", Attr::Int(1))]);
        let diff = g.op("Sub", &[&p, &qj], vec![]);
        let sq = g.op("Mul", &[&diff, &diff], vec![]);
        acc = Some(match acc {
            None => sq,
            Some(a) => g.op("Add", &[&a, &sq], vec![]),
        });
    }
    let d2 = acc.unwrap_or_else(|| {
        // No design columns: every point is at distance 0.
        let zeros = g.f32s(&vec![0.0; n_train], &[1, n_train as i64]);
        let zero = g.f32s(&[0.0], &[]);
        let qz = g.op("ReduceSum", &[&q], vec![attr("keepdims", Attr::Int(1))]);
        let qz = g.op("Mul", &[&qz, &zero], vec![]);
        g.op("Add", &[&zeros, &qz], vec![])
    });
    let kk = g.i64s(&[k], &[1]);
    let (near, idx) = g.op2(
        "TopK",
        &[&d2, &kk],
        vec![attr("axis", Attr::Int(1)), attr("largest", Attr::Int(0)), attr("sorted", Attr::Int(1))],
    );
    // Weights [N,K] in double.
    let w = match m.params.weights {
        KnnWeights::Uniform => {
            let z = g.f32s(&[0.0], &[]);
            let zeros = g.op("Mul", &[&near, &z], vec![]);
            let one = g.f64s(&[1.0], &[]);
            let zeros = g.cast(&zeros, DataType::Double);
            g.op("Add", &[&zeros, &one], vec![])
        }
        KnnWeights::Distance => {
            let z = g.f32s(&[0.0], &[]);
            let is0 = g.op("Equal", &[&near, &z], vec![]);
            let exact_w = g.cast(&is0, DataType::Double);
            let axes = g.i64s(&[1], &[1]);
            let any = g.op("ReduceMax", &[&exact_w, &axes], vec![attr("keepdims", Attr::Int(1))]);
            let half = g.f64s(&[0.5], &[]);
            let any = g.op("Greater", &[&any, &half], vec![]);
            let dd = g.cast(&near, DataType::Double);
            let s = g.op("Sqrt", &[&dd], vec![]);
            let inv = g.op("Reciprocal", &[&s], vec![]);
            g.op("Where", &[&any, &exact_w, &inv], vec![])
        }
    };
    let axes = g.i64s(&[1], &[1]);
    let total = g.op("ReduceSum", &[&w, &axes], vec![attr("keepdims", Attr::Int(1))]);
    let targets = g.f64s(&m.targets, &[n_train as i64]);
    let t = g.op("Gather", &[&targets, &idx], vec![attr("axis", Attr::Int(0))]);
    if m.n_classes == 0 {
        let wt = g.op("Mul", &[&w, &t], vec![]);
        let sum = g.op("ReduceSum", &[&wt, &axes], vec![attr("keepdims", Attr::Int(1))]);
        return g.op("Div", &[&sum, &total], vec![]);
    }
    let c = m.n_classes as i64;
    let classes: Vec<f64> = (0..c).map(|v| v as f64).collect();
    let classes = g.f64s(&classes, &[1, 1, c]);
    let ax2 = g.i64s(&[2], &[1]);
    let t3 = g.op("Unsqueeze", &[&t, &ax2], vec![]);
    let onehot = g.op("Equal", &[&t3, &classes], vec![]);
    let onehot = g.cast(&onehot, DataType::Double);
    let w3 = g.op("Unsqueeze", &[&w, &ax2], vec![]);
    let votes = g.op("Mul", &[&onehot, &w3], vec![]);
    let votes = g.op("ReduceSum", &[&votes, &axes], vec![attr("keepdims", Attr::Int(0))]);
    let p = g.op("Div", &[&votes, &total], vec![]);
    let lo = g.f64s(&[PROB_FLOOR], &[]);
    let hi = g.f64s(&[1.0], &[]);
    let p = g.op("Clip", &[&p, &lo, &hi], vec![]);
    let s = g.op("ReduceSum", &[&p, &axes], vec![attr("keepdims", Attr::Int(1))]);
    g.op("Div", &[&p, &s], vec![])
}
