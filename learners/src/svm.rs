//! Support vector machines for small data (linfa-svm's SMO solver) on the shared standardised
//! design matrix: C-SVC per class (one-vs-rest) with Platt-scaled probabilities, and
//! epsilon-SVR on the standardised target. The solver needs the whole `n × n` kernel matrix
//! in memory, so fits see at most [`MAX_FIT_ROWS`] rows (a seeded subsample beyond that).
//! Each fitted machine is stored as support vectors and coefficients, so bundles hold no
//! linfa types.

use linfa::composing::Platt;
use linfa::composing::platt_scaling::platt_newton_method;
use linfa::prelude::*;
use linfa_svm::Svm;
use ndarray::{Array1, Array2, ArrayView1};
use quarry_featurize::{FeatureMatrix, Predictions, Target, Task};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::design::{ColumnPrep, design, design_width, fit_prep, predict_rows};
use crate::error::{Result, TrainError};
use crate::params::ParamReader;

/// Rows an SVM fit sees at most: the dense kernel matrix is `n² × 8` bytes (200 MB at 5,000
/// rows) and SMO's time grows between `n²` and `n³`.
pub const MAX_FIT_ROWS: usize = 5_000;

/// Class probabilities are clipped to `[PROB_FLOOR, 1]` before they are normalised.
const PROB_FLOOR: f64 = 1e-9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SvmKernel {
    /// `exp(-gamma · |x - y|²)`
    Rbf,
    /// `x · y`
    Linear,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvmParams {
    pub kernel: SvmKernel,
    /// Penalty on margin violations.
    pub c: f64,
    /// RBF width; 0 means `1 / design columns` (scikit-learn's "scale" on standardised inputs).
    pub gamma: f64,
    /// Regression: errors below this (in target standard deviations) cost nothing.
    pub epsilon: f64,
}

impl Default for SvmParams {
    fn default() -> Self {
        SvmParams { kernel: SvmKernel::Rbf, c: 1.0, gamma: 0.0, epsilon: 0.1 }
    }
}

impl SvmParams {
    pub fn from_map(p: &mut ParamReader<'_>) -> Result<SvmParams> {
        let d = SvmParams::default();
        let kernel = match p.choice("kernel", &["rbf", "linear"])? {
            "linear" => SvmKernel::Linear,
            _ => SvmKernel::Rbf,
        };
        let out = SvmParams {
            kernel,
            c: p.f64("c", d.c)?,
            gamma: p.f64("gamma", d.gamma)?,
            epsilon: p.f64("epsilon", d.epsilon)?,
        };
        out.check()?;
        Ok(out)
    }

    pub fn check(&self) -> Result<()> {
        let bad = |name: &str, message: &str| {
            Err(TrainError::InvalidParam { name: name.into(), message: message.into() })
        };
        if !(self.c > 0.0 && self.c.is_finite()) {
            return bad("c", "must be a finite number > 0");
        }
        if !(self.gamma >= 0.0 && self.gamma.is_finite()) {
            return bad("gamma", "must be a finite number >= 0 (0: 1 / number of design columns)");
        }
        if !(self.epsilon >= 0.0 && self.epsilon.is_finite()) {
            return bad("epsilon", "must be a finite number >= 0");
        }
        Ok(())
    }
}

/// One binary machine: `f(x) = Σ coef_j · K(sv_j, x) - rho`. A linear machine keeps a single
/// "support vector", its weight vector, with coefficient 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub coef: Vec<f64>,
    /// `coef.len() × width`, row-major.
    pub support: Vec<f64>,
    pub rho: f64,
    /// Platt scaling: `p = 1 / (1 + exp(a · f + b))` (classification only).
    pub platt_a: f64,
    pub platt_b: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvmModel {
    pub(crate) prep: Vec<ColumnPrep>,
    pub(crate) width: usize,
    pub(crate) kernel: SvmKernel,
    /// The RBF width actually used (`gamma = 0` resolved).
    pub(crate) gamma: f64,
    /// One machine for binary classes and regression, one per class (vs the rest) otherwise.
    pub(crate) machines: Vec<Machine>,
    pub(crate) task: Task,
    /// 0 for regression.
    pub(crate) n_classes: usize,
    pub(crate) target_mean: f64,
    pub(crate) target_std: f64,
}

fn fit_err(message: impl Into<String>) -> TrainError {
    TrainError::Fit { family: "svm".into(), message: message.into() }
}

pub fn fit(x: &FeatureMatrix, y: &Target, task: Task, params: &SvmParams, seed: u64) -> Result<SvmModel> {
    params.check()?;
    if x.n_rows > MAX_FIT_ROWS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut idx = rand::seq::index::sample(&mut rng, x.n_rows, MAX_FIT_ROWS).into_vec();
        idx.sort_unstable();
        return fit(&x.select_rows(&idx), &y.select_rows(&idx), task, params, seed);
    }
    let prep = fit_prep(x);
    let d = design(&prep, x);
    let width = d.ncols();
    let gamma = if params.gamma > 0.0 { params.gamma } else { 1.0 / width.max(1) as f64 };
    let mut model = SvmModel {
        prep,
        width,
        kernel: params.kernel,
        gamma,
        machines: Vec::new(),
        task,
        n_classes: 0,
        target_mean: 0.0,
        target_std: 1.0,
    };
    match (task, y) {
        (Task::Regression, Target::Values(v)) => {
            if v.iter().any(|t| !t.is_finite()) {
                return Err(TrainError::Data("svm: non-finite target value".into()));
            }
            let n = v.len().max(1) as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n;
            model.target_mean = mean;
            model.target_std = if var > 1e-24 { var.sqrt() } else { 1.0 };
            let t: Array1<f64> = v.iter().map(|t| (t - mean) / model.target_std).collect();
            let svr =
                Svm::<f64, f64>::params().c_svr(params.c, Some(params.epsilon)).eps(1e-3).shrinking(false);
            let svr = match params.kernel {
                SvmKernel::Rbf => svr.gaussian_kernel(1.0 / gamma),
                SvmKernel::Linear => svr.linear_kernel(),
            };
            let fitted = svr.fit(&Dataset::new(d.clone(), t)).map_err(|e| fit_err(e.to_string()))?;
            model.machines.push(machine(&d, &fitted.alpha, fitted.rho, params.kernel));
        }
        (Task::Binary | Task::Multiclass, Target::Classes { classes, codes }) => {
            let k = classes.len();
            if k < 2 || (task == Task::Binary) != (k == 2) {
                return Err(TrainError::Data(format!("svm: a {task:?} task with {k} classes")));
            }
            model.n_classes = k;
            // Binary: one machine for class 1; otherwise one per class against the rest.
            let positives: Vec<u32> = if k == 2 { vec![1] } else { (0..k as u32).collect() };
            for pos in positives {
                let labels: Array1<bool> = codes.iter().map(|&c| c == pos).collect();
                model.machines.push(classifier(&d, &labels, params, gamma, &model)?);
            }
        }
        _ => return Err(TrainError::Data(format!("svm: a {task:?} task needs a matching target"))),
    }
    Ok(model)
}

fn classifier(
    d: &Array2<f64>,
    labels: &Array1<bool>,
    params: &SvmParams,
    gamma: f64,
    model: &SvmModel,
) -> Result<Machine> {
    let n_pos = labels.iter().filter(|l| **l).count();
    if n_pos == 0 || n_pos == labels.len() {
        // One label only (a fold without this class): a constant, near-certain machine.
        let sign = if n_pos == 0 { 1.0 } else { -1.0 };
        return Ok(Machine {
            coef: Vec::new(),
            support: Vec::new(),
            rho: 0.0,
            platt_a: 0.0,
            platt_b: 30.0 * sign,
        });
    }
    let svc = Svm::<f64, bool>::params().pos_neg_weights(params.c, params.c).eps(1e-3).shrinking(false);
    let svc = match params.kernel {
        SvmKernel::Rbf => svc.gaussian_kernel(1.0 / gamma),
        SvmKernel::Linear => svc.linear_kernel(),
    };
    let fitted = svc.fit(&Dataset::new(d.clone(), labels.clone())).map_err(|e| fit_err(e.to_string()))?;
    let mut m = machine(d, &fitted.alpha, fitted.rho, params.kernel);
    // Platt scaling on the training decision values, as linfa (and libsvm without CV) does.
    let f: Array1<f64> = d.outer_iter().map(|row| model.decision(&m, row)).collect();
    let platt = Platt::<f64, ()>::params().check().map_err(|e| fit_err(e.to_string()))?;
    let (a, b) = platt_newton_method(f.view(), labels.view(), &platt).map_err(|e| fit_err(e.to_string()))?;
    m.platt_a = a;
    m.platt_b = b;
    Ok(m)
}

/// The machine from linfa's dual coefficients (already signed by label).
fn machine(d: &Array2<f64>, alpha: &[f64], rho: f64, kernel: SvmKernel) -> Machine {
    match kernel {
        SvmKernel::Linear => {
            let mut w = vec![0.0; d.ncols()];
            for (row, a) in d.outer_iter().zip(alpha) {
                for (wj, xj) in w.iter_mut().zip(row) {
                    *wj += a * xj;
                }
            }
            Machine { coef: vec![1.0], support: w, rho, platt_a: 0.0, platt_b: 0.0 }
        }
        SvmKernel::Rbf => {
            let mut coef = Vec::new();
            let mut support = Vec::new();
            for (row, &a) in d.outer_iter().zip(alpha) {
                if a.abs() > 100.0 * f64::EPSILON {
                    coef.push(a);
                    support.extend(row.iter());
                }
            }
            Machine { coef, support, rho, platt_a: 0.0, platt_b: 0.0 }
        }
    }
}

impl SvmModel {
    /// What `predict` relies on, checked after a bundle is read.
    pub(crate) fn check_shape(&self) -> std::result::Result<(), String> {
        if self.width != design_width(&self.prep) {
            return Err(format!(
                "svm: width {} but the column preparation gives {}",
                self.width,
                design_width(&self.prep)
            ));
        }
        let want = match self.task {
            Task::Regression => (self.n_classes == 0).then_some(1),
            Task::Binary => (self.n_classes == 2).then_some(1),
            Task::Multiclass => (self.n_classes > 2).then_some(self.n_classes),
        };
        if want != Some(self.machines.len()) {
            return Err(format!("svm: {} machines for a {:?} task", self.machines.len(), self.task));
        }
        for m in &self.machines {
            if m.support.len() != m.coef.len().saturating_mul(self.width) {
                return Err(format!("svm: {} support values for {} vectors", m.support.len(), m.coef.len()));
            }
        }
        Ok(())
    }

    pub(crate) fn kernel_value(&self, a: &[f64], b: ArrayView1<'_, f64>) -> f64 {
        match self.kernel {
            SvmKernel::Linear => a.iter().zip(b).map(|(x, y)| x * y).sum(),
            SvmKernel::Rbf => {
                let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                (-self.gamma * d2).exp()
            }
        }
    }

    pub(crate) fn decision(&self, m: &Machine, row: ArrayView1<'_, f64>) -> f64 {
        let sum: f64 = if self.width == 0 {
            0.0
        } else {
            m.support
                .chunks_exact(self.width)
                .zip(&m.coef)
                .map(|(sv, c)| c * self.kernel_value(sv, row))
                .sum()
        };
        sum - m.rho
    }

    pub fn predict(&self, x: &FeatureMatrix) -> Predictions {
        let d = design(&self.prep, x);
        predict_rows(x.n_rows, self.n_classes, || (), |(), i, o| self.predict_row(d.row(i), o))
    }

    fn predict_row(&self, row: ArrayView1<'_, f64>, out: &mut [f64]) {
        let platt = |m: &Machine| 1.0 / (1.0 + (m.platt_a * self.decision(m, row) + m.platt_b).exp());
        match self.task {
            Task::Regression => {
                out[0] = self.decision(&self.machines[0], row) * self.target_std + self.target_mean;
            }
            Task::Binary => {
                let p = platt(&self.machines[0]);
                out[0] = 1.0 - p;
                out[1] = p;
            }
            Task::Multiclass => {
                for (o, m) in out.iter_mut().zip(&self.machines) {
                    *o = platt(m).max(PROB_FLOOR);
                }
                let sum: f64 = out.iter().sum();
                out.iter_mut().for_each(|o| *o /= sum);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::family::{CheckedSpec, Family, FittedModel, check_params};
    use crate::params::ParamMap;
    use quarry_featurize::{FeatureColumn, FeatureKind};

    fn numeric(name: &str, values: Vec<f32>) -> FeatureColumn {
        FeatureColumn { name: name.into(), source: name.into(), kind: FeatureKind::Numeric, values }
    }

    /// A ring (class 0 inside), split by side outside (classes 1 and 2), and a smooth value.
    fn data(n: usize, offset: usize) -> (FeatureMatrix, Vec<f64>, Vec<u32>) {
        let (mut a, mut b, mut value, mut class) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in offset..offset + n {
            let u = ((i as f64 * 0.618_034) % 1.0) * 4.0 - 2.0;
            let v = ((i as f64 * 0.414_214 + 0.3) % 1.0) * 4.0 - 2.0;
            a.push(if i % 13 == 0 { f32::NAN } else { u as f32 });
            b.push(v as f32);
            let r2 = u * u + v * v;
            value.push(r2.sqrt() + 0.5 * v);
            class.push(if r2 < 1.5 {
                0
            } else if u < 0.0 {
                1
            } else {
                2
            });
        }
        (FeatureMatrix { n_rows: n, columns: vec![numeric("a", a), numeric("b", b)] }, value, class)
    }

    fn classes(codes: Vec<u32>, k: usize) -> Target {
        Target::Classes { classes: (0..k).map(|c| format!("c{c}")).collect(), codes }
    }

    fn accuracy(p: &Predictions, codes: &[u32]) -> f64 {
        let Predictions::Probabilities { n_classes, values } = p else { panic!("not probabilities") };
        let right = values
            .chunks(*n_classes)
            .zip(codes)
            .filter(|(row, c)| {
                (0..*n_classes).max_by(|&a, &b| row[a].total_cmp(&row[b])) == Some(**c as usize)
            })
            .count();
        right as f64 / codes.len() as f64
    }

    #[test]
    fn rbf_beats_the_baselines_on_nonlinear_classes_and_values() {
        let (x, value, class) = data(400, 0);
        let (xt, vt, ct) = data(200, 7000);
        let p = SvmParams { c: 10.0, ..SvmParams::default() };
        let m = fit(&x, &classes(class.clone(), 3), Task::Multiclass, &p, 1).unwrap();
        let pred = m.predict(&xt);
        let acc = accuracy(&pred, &ct);
        let majority = (0..3).map(|k| ct.iter().filter(|&&c| c == k).count()).max().unwrap() as f64 / 200.0;
        assert!(acc > 0.9 && acc > majority + 0.3, "accuracy {acc}, majority {majority}");
        let Predictions::Probabilities { values, .. } = &pred else { panic!() };
        assert!(values.chunks(3).all(|r| (r.iter().sum::<f64>() - 1.0).abs() < 1e-12));

        let bin = |c: &[u32]| c.iter().map(|&c| u32::from(c == 0)).collect::<Vec<_>>();
        let m = fit(&x, &classes(bin(&class), 2), Task::Binary, &p, 1).unwrap();
        let acc = accuracy(&m.predict(&xt), &bin(&ct));
        assert!(acc > 0.9, "binary accuracy {acc}");
        // A linear kernel cannot draw a ring: near the majority rate, below the RBF machine.
        let lin = SvmParams { kernel: SvmKernel::Linear, ..p.clone() };
        let m = fit(&x, &classes(bin(&class), 2), Task::Binary, &lin, 1).unwrap();
        assert!(accuracy(&m.predict(&xt), &bin(&ct)) < acc);

        let m = fit(&x, &Target::Values(value.clone()), Task::Regression, &p, 1).unwrap();
        let Predictions::Values(pred) = m.predict(&xt) else { panic!() };
        let mean = value.iter().sum::<f64>() / value.len() as f64;
        let mse = |f: &dyn Fn(usize) -> f64| (0..200).map(|i| (f(i) - vt[i]).powi(2)).sum::<f64>() / 200.0;
        let (model_mse, base_mse) = (mse(&|i| pred[i]), mse(&|_| mean));
        assert!(model_mse < 0.1 * base_mse, "mse {model_mse} vs baseline {base_mse}");
    }

    #[test]
    fn deterministic_round_trips_and_refuses_damage() {
        let (x, _, class) = data(300, 0);
        let y = classes(class, 3);
        let a = fit(&x, &y, Task::Multiclass, &SvmParams::default(), 3).unwrap();
        let b = fit(&x, &y, Task::Multiclass, &SvmParams::default(), 3).unwrap();
        assert_eq!(serde_json::to_vec(&a).unwrap(), serde_json::to_vec(&b).unwrap());
        let model = FittedModel::Svm(a);
        let back: FittedModel = serde_json::from_slice(&serde_json::to_vec(&model).unwrap()).unwrap();
        assert_eq!(back, model);
        assert_eq!(back.predict(&x), model.predict(&x));
        let FittedModel::Svm(mut m) = back else { panic!() };
        m.machines[0].support.pop();
        assert!(m.check_shape().is_err());
        m.machines.pop();
        assert!(m.check_shape().unwrap_err().contains("machines"));
    }

    #[test]
    fn params_are_checked() {
        let params = |pairs: &[(&str, &str)]| -> ParamMap {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let spec = check_params(Family::Svm, &params(&[("kernel", "linear"), ("c", "2")])).unwrap();
        assert_eq!(
            spec,
            CheckedSpec::Svm(SvmParams { kernel: SvmKernel::Linear, c: 2.0, ..SvmParams::default() })
        );
        for bad in [("c", "0"), ("gamma", "-1"), ("kernel", "poly"), ("epsilon", "nan")] {
            let err = check_params(Family::Svm, &params(&[bad])).unwrap_err();
            assert!(matches!(err, TrainError::InvalidParam { .. }), "{bad:?}: {err}");
        }
    }
}
