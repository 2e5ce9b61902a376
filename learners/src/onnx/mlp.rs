//! The MLP: the shared design preparation, then `MatMul` + `Add` per layer with `Relu` between,
//! and `Sigmoid`/`Softmax` (or the target's un-standardisation) at the end, in double precision
//! like `MlpModel::predict`.

use quarry_featurize::Task;

use super::builder::{Attr, Graph, attr};
use super::linear::design;
use crate::mlp::MlpModel;

pub(crate) fn export(g: &mut Graph, m: &MlpModel, features: &[String]) -> String {
    let mut h = design(g, &m.prep, features);
    let last = m.layers.len().saturating_sub(1);
    for (i, l) in m.layers.iter().enumerate() {
        let w: Vec<f64> = l.weight.iter().map(|&v| f64::from(v)).collect();
        let b: Vec<f64> = l.bias.iter().map(|&v| f64::from(v)).collect();
        let w = g.f64s(&w, &[l.n_in as i64, l.n_out as i64]);
        let b = g.f64s(&b, &[1, l.n_out as i64]);
        let xw = g.op("MatMul", &[&h, &w], vec![]);
        h = g.op("Add", &[&xw, &b], vec![]);
        if i < last {
            h = g.op("Relu", &[&h], vec![]);
        }
    }
    match m.task {
        Task::Regression => {
            let s = g.f64s(&[m.target_std], &[]);
            let c = g.f64s(&[m.target_mean], &[]);
            let scaled = g.op("Mul", &[&h, &s], vec![]);
            g.op("Add", &[&scaled, &c], vec![])
        }
        Task::Binary => {
            // [1 - p, p] from the single logit.
            let p = g.op("Sigmoid", &[&h], vec![]);
            let one = g.f64s(&[1.0], &[]);
            let q = g.op("Sub", &[&one, &p], vec![]);
            g.op("Concat", &[&q, &p], vec![attr("axis", Attr::Int(1))])
        }
        Task::Multiclass => g.op("Softmax", &[&h], vec![attr("axis", Attr::Int(1))]),
    }
}
