//! Naive Bayes: Gaussian log-likelihoods of the scaled design columns plus categorical
//! log-probabilities of the one-hot blocks, then a softmax, in double precision like
//! `NaiveBayesModel::predict`.

use super::builder::{Attr, Graph, attr};
use super::linear::design_columns;
use super::pb::tensor_proto::DataType;
use crate::design::ColumnPrep;
use crate::naive_bayes::NaiveBayesModel;

pub(crate) fn export(g: &mut Graph, m: &NaiveBayesModel, features: &[String]) -> String {
    let k = m.class_count.len();
    let total: f64 = m.class_count.iter().sum();
    let n_g = m.gaussian.len();
    let cols = design_columns(g, &m.prep, features);
    // Per class: log prior − ½ Σ ln(2π var); a class without rows is impossible.
    let base: Vec<f64> = (0..k)
        .map(|c| {
            let n = m.class_count[c];
            if n > 0.0 {
                let logdet: f64 = m.vars[c * n_g..(c + 1) * n_g]
                    .iter()
                    .map(|v| (2.0 * std::f64::consts::PI * v).ln())
                    .sum();
                (n / total).ln() - 0.5 * logdet
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let mut logit = g.f64s(&base, &[1, k as i64]);
    if n_g > 0 {
        let gcols: Vec<&str> = m
            .prep
            .iter()
            .zip(&cols)
            .filter(|(p, _)| !matches!(p, ColumnPrep::OneHot { .. }))
            .map(|(_, c)| c.as_str())
            .collect();
        let xg = g.op("Concat", &gcols, vec![attr("axis", Attr::Int(1))]);
        let axes = g.i64s(&[1], &[1]);
        let xg = g.op("Unsqueeze", &[&xg, &axes], vec![]);
        let means = g.f64s(&m.means, &[1, k as i64, n_g as i64]);
        let vars = g.f64s(&m.vars, &[1, k as i64, n_g as i64]);
        let d = g.op("Sub", &[&xg, &means], vec![]);
        let sq = g.op("Mul", &[&d, &d], vec![]);
        let z = g.op("Div", &[&sq, &vars], vec![]);
        let axes2 = g.i64s(&[2], &[1]);
        let q = g.op("ReduceSum", &[&z, &axes2], vec![attr("keepdims", Attr::Int(0))]);
        let half = g.f64s(&[0.5], &[]);
        let hq = g.op("Mul", &[&q, &half], vec![]);
        logit = g.op("Sub", &[&logit, &hq], vec![]);
    }
    let cat_width: usize = m.blocks.iter().map(|(_, n)| n + 1).sum();
    let mut block = 0;
    let mut off = 0;
    for (p, f) in m.prep.iter().zip(features) {
        let ColumnPrep::OneHot { n_levels } = p else { continue };
        let n = *n_levels as usize;
        debug_assert_eq!(m.blocks.get(block).map(|b| b.1), Some(n));
        // table[level][class]; level n is missing (a NaN code).
        let mut table = vec![0.0; (n + 1) * k];
        for c in 0..k {
            for l in 0..=n {
                table[l * k + c] = m.cat_log_prob[c * cat_width + off + l];
            }
        }
        let t = g.f64s(&table, &[(n + 1) as i64, k as i64]);
        let nan = g.op("IsNaN", &[f], vec![]);
        let missing = g.f32s(&[n as f32], &[]);
        let code = g.op("Where", &[&nan, &missing, f], vec![]);
        let idx = g.cast(&code, DataType::Int64);
        let rows = g.op("Gather", &[&t, &idx], vec![attr("axis", Attr::Int(0))]);
        let axes = g.i64s(&[1], &[1]);
        let rows = g.op("Squeeze", &[&rows, &axes], vec![]);
        logit = g.op("Add", &[&logit, &rows], vec![]);
        off += n + 1;
        block += 1;
    }
    g.op("Softmax", &[&logit], vec![attr("axis", Attr::Int(1))])
}
