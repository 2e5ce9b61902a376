//! Linear models: the shared design preparation (`crate::design`) then `MatMul`, in double
//! precision like `LinearModel::predict`.

use quarry_featurize::Task;

use super::builder::{Attr, Graph, attr};
use super::pb::tensor_proto::DataType;
use crate::design::ColumnPrep;
use crate::linear::LinearModel;

/// The design matrix (`double [N,D]`) from the `float [N,1]` feature columns.
pub(crate) fn design(g: &mut Graph, prep: &[ColumnPrep], features: &[String]) -> String {
    let cols = design_columns(g, prep, features);
    let refs: Vec<&str> = cols.iter().map(String::as_str).collect();
    g.op("Concat", &refs, vec![attr("axis", Attr::Int(1))])
}

/// Each feature's block of design columns (`double [N,1]`, or `[N,L]` for one-hot).
pub(crate) fn design_columns(g: &mut Graph, prep: &[ColumnPrep], features: &[String]) -> Vec<String> {
    let mut cols = Vec::new();
    for (p, f) in prep.iter().zip(features) {
        match p {
            ColumnPrep::Scaled { median, mean, std, by } => {
                let v = g.cast(f, DataType::Double);
                let nan = g.op("IsNaN", &[&v], vec![]);
                let med = match by.as_ref().and_then(|b| features.get(b.column).map(|c| (b, c))) {
                    // The row's group median: its level indexes the medians, a missing level
                    // reads the global median appended after them.
                    Some((b, level)) => {
                        let mut table = b.medians.clone();
                        table.push(*median);
                        let t = g.f64s(&table, &[table.len() as i64]);
                        let missing = g.op("IsNaN", &[level], vec![]);
                        let last = g.f32s(&[b.medians.len() as f32], &[]);
                        let code = g.op("Where", &[&missing, &last, level], vec![]);
                        let idx = g.cast(&code, DataType::Int64);
                        g.op("Gather", &[&t, &idx], vec![attr("axis", Attr::Int(0))])
                    }
                    None => g.f64s(&[*median], &[]),
                };
                let v = g.op("Where", &[&nan, &med, &v], vec![]);
                cols.push(standardise(g, &v, *mean, *std));
            }
            ColumnPrep::Frequency { freq, mean, std } => {
                // Missing codes read the appended 0.0 (codes are never out of range).
                let mut table = freq.clone();
                table.push(0.0);
                let t = g.f64s(&table, &[table.len() as i64]);
                let nan = g.op("IsNaN", &[f], vec![]);
                let last = g.f32s(&[freq.len() as f32], &[]);
                let code = g.op("Where", &[&nan, &last, f], vec![]);
                let idx = g.cast(&code, DataType::Int64);
                // 1-D data gathered with `[N,1]` indices is `[N,1]`.
                let v = g.op("Gather", &[&t, &idx], vec![attr("axis", Attr::Int(0))]);
                cols.push(standardise(g, &v, *mean, *std));
            }
            ColumnPrep::OneHot { n_levels } => {
                let levels: Vec<f32> = (0..*n_levels).map(|l| l as f32).collect();
                let l = g.f32s(&levels, &[1, i64::from(*n_levels)]);
                let eq = g.op("Equal", &[f, &l], vec![]);
                cols.push(g.cast(&eq, DataType::Double));
            }
        }
    }
    cols
}

fn standardise(g: &mut Graph, v: &str, mean: f64, std: f64) -> String {
    let m = g.f64s(&[mean], &[]);
    let s = g.f64s(&[std], &[]);
    let c = g.op("Sub", &[v, &m], vec![]);
    g.op("Div", &[&c, &s], vec![])
}

pub(crate) fn export(g: &mut Graph, m: &LinearModel, features: &[String]) -> String {
    let d = design(g, &m.prep, features);
    let k = m.n_outputs as i64;
    let width = m.coef.len() as i64 / k.max(1);
    let w = g.f64s(&m.coef, &[width, k]);
    let b = g.f64s(&m.intercept, &[1, k]);
    let xw = g.op("MatMul", &[&d, &w], vec![]);
    let raw = g.op("Add", &[&xw, &b], vec![]);
    if m.task == Task::Regression { raw } else { g.op("Softmax", &[&raw], vec![attr("axis", Attr::Int(1))]) }
}
