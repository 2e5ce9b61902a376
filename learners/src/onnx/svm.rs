//! SVMs: the shared design preparation, each machine's kernel expansion with standard ops in
//! double precision, then Platt scaling, like `SvmModel::predict`. ai.onnx.ml's
//! `SVMClassifier`/`SVMRegressor` are not used: they output `float` (parity with quarry would
//! be ~1e-7, not ~1e-12) and `SVMClassifier`'s multiclass is libsvm's one-vs-one voting, not
//! the one-vs-rest machines quarry fits.

use quarry_featurize::Task;

use super::builder::{Attr, Graph, attr};
use super::linear::design;
use crate::svm::{Machine, SvmKernel, SvmModel};

pub(crate) fn export(g: &mut Graph, m: &SvmModel, features: &[String]) -> String {
    let x = design(g, &m.prep, features);
    let axes = g.i64s(&[1], &[1]);
    let keep = || vec![attr("keepdims", Attr::Int(1))];
    // ‖x‖² per row, [N,1], shared by every RBF machine.
    let x_sq = {
        let sq = g.op("Mul", &[&x, &x], vec![]);
        g.op("ReduceSum", &[&sq, &axes], keep())
    };
    let zero_col = {
        let z = g.f64s(&[0.0], &[]);
        g.op("Mul", &[&x_sq, &z], vec![])
    };
    let decisions: Vec<String> =
        m.machines.iter().map(|mc| decision(g, m, mc, &x, &x_sq, &zero_col)).collect();
    let platt = |g: &mut Graph, f: &str, mc: &Machine| {
        let a = g.f64s(&[-mc.platt_a], &[]);
        let b = g.f64s(&[-mc.platt_b], &[]);
        let af = g.op("Mul", &[f, &a], vec![]);
        let z = g.op("Add", &[&af, &b], vec![]);
        g.op("Sigmoid", &[&z], vec![])
    };
    match m.task {
        Task::Regression => {
            let s = g.f64s(&[m.target_std], &[]);
            let c = g.f64s(&[m.target_mean], &[]);
            let scaled = g.op("Mul", &[&decisions[0], &s], vec![]);
            g.op("Add", &[&scaled, &c], vec![])
        }
        Task::Binary => {
            let p = platt(g, &decisions[0], &m.machines[0]);
            let one = g.f64s(&[1.0], &[]);
            let q = g.op("Sub", &[&one, &p], vec![]);
            g.op("Concat", &[&q, &p], vec![attr("axis", Attr::Int(1))])
        }
        Task::Multiclass => {
            let ps: Vec<String> = decisions.iter().zip(&m.machines).map(|(f, mc)| platt(g, f, mc)).collect();
            let refs: Vec<&str> = ps.iter().map(String::as_str).collect();
            let p = g.op("Concat", &refs, vec![attr("axis", Attr::Int(1))]);
            let floor = g.f64s(&[1e-9], &[]);
            let p = g.op("Max", &[&p, &floor], vec![]);
            let s = g.op("ReduceSum", &[&p, &axes], keep());
            g.op("Div", &[&p, &s], vec![])
        }
    }
}

/// `Σ coef_j K(sv_j, x) - rho` as `double [N,1]`.
fn decision(g: &mut Graph, m: &SvmModel, mc: &Machine, x: &str, x_sq: &str, zero_col: &str) -> String {
    let rho = g.f64s(&[mc.rho], &[]);
    let n_sv = mc.coef.len();
    if n_sv == 0 || m.width == 0 {
        return g.op("Sub", &[zero_col, &rho], vec![]);
    }
    let width = m.width as i64;
    let coef = g.f64s(&mc.coef, &[n_sv as i64, 1]);
    let sum = match m.kernel {
        SvmKernel::Linear => {
            // One stored vector per linear machine: its weights (coefficient 1).
            let w = g.f64s(&mc.support, &[n_sv as i64, width]);
            let w_t = g.op("Transpose", &[&w], vec![attr("perm", Attr::Ints(vec![1, 0]))]);
            let k = g.op("MatMul", &[x, &w_t], vec![]);
            g.op("MatMul", &[&k, &coef], vec![])
        }
        SvmKernel::Rbf => {
            // ‖x - s‖² = ‖x‖² + ‖s‖² - 2 x·s, floored at 0 against rounding.
            let mut transposed = vec![0.0; mc.support.len()];
            for (j, sv) in mc.support.chunks_exact(m.width).enumerate() {
                for (f, v) in sv.iter().enumerate() {
                    transposed[f * n_sv + j] = *v;
                }
            }
            let s_sq: Vec<f64> =
                mc.support.chunks_exact(m.width).map(|sv| sv.iter().map(|v| v * v).sum()).collect();
            let s_t = g.f64s(&transposed, &[width, n_sv as i64]);
            let s_sq = g.f64s(&s_sq, &[1, n_sv as i64]);
            let xs = g.op("MatMul", &[x, &s_t], vec![]);
            let two = g.f64s(&[-2.0], &[]);
            let xs = g.op("Mul", &[&xs, &two], vec![]);
            let d2 = g.op("Add", &[x_sq, &s_sq], vec![]);
            let d2 = g.op("Add", &[&d2, &xs], vec![]);
            let zero = g.f64s(&[0.0], &[]);
            let d2 = g.op("Max", &[&d2, &zero], vec![]);
            let neg_gamma = g.f64s(&[-m.gamma], &[]);
            let e = g.op("Mul", &[&d2, &neg_gamma], vec![]);
            let k = g.op("Exp", &[&e], vec![]);
            g.op("MatMul", &[&k, &coef], vec![])
        }
    };
    g.op("Sub", &[&sum, &rho], vec![])
}
