//! Typed search spaces per model family.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(v) => write!(f, "{v}"),
            // Rust prints the shortest string that parses back to the same f64.
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Str(v) => f.write_str(v),
        }
    }
}

/// One hyperparameter's configuration: name → value.
pub type Config = BTreeMap<String, ParamValue>;

#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    Uniform { low: f64, high: f64 },
    LogUniform { low: f64, high: f64 },
    Int { low: i64, high: i64 },
    LogInt { low: i64, high: i64 },
    Categorical(Vec<ParamValue>),
}

impl Domain {
    pub fn sample(&self, rng: &mut impl Rng) -> ParamValue {
        match self {
            Domain::Uniform { low, high } => ParamValue::Float(rng.random_range(*low..=*high)),
            Domain::LogUniform { low, high } => {
                ParamValue::Float(rng.random_range(low.ln()..=high.ln()).exp())
            }
            Domain::Int { low, high } => ParamValue::Int(rng.random_range(*low..=*high)),
            Domain::LogInt { low, high } => {
                let v = rng.random_range((*low as f64).ln()..=((*high as f64) + 0.999).ln()).exp();
                ParamValue::Int((v.floor() as i64).clamp(*low, *high))
            }
            Domain::Categorical(choices) => choices[rng.random_range(0..choices.len())].clone(),
        }
    }

    pub fn contains(&self, value: &ParamValue) -> bool {
        match (self, value) {
            (Domain::Uniform { low, high } | Domain::LogUniform { low, high }, ParamValue::Float(v)) => {
                (*low..=*high).contains(v)
            }
            (Domain::Int { low, high } | Domain::LogInt { low, high }, ParamValue::Int(v)) => {
                (*low..=*high).contains(v)
            }
            (Domain::Categorical(choices), v) => choices.contains(v),
            _ => false,
        }
    }

    /// A value near `center`: a step of relative size `radius` in the domain's own scale.
    pub fn perturb(&self, center: &ParamValue, radius: f64, rng: &mut impl Rng) -> ParamValue {
        let step = rng.random_range(-radius..=radius);
        match (self, center) {
            (Domain::Uniform { low, high }, ParamValue::Float(c)) => {
                ParamValue::Float((c + step * (high - low)).clamp(*low, *high))
            }
            (Domain::LogUniform { low, high }, ParamValue::Float(c)) => {
                let span = high.ln() - low.ln();
                ParamValue::Float((c.ln() + step * span).exp().clamp(*low, *high))
            }
            (Domain::Int { low, high }, ParamValue::Int(c)) => {
                let v = *c as f64 + step * (high - low) as f64;
                ParamValue::Int((v.round() as i64).clamp(*low, *high))
            }
            (Domain::LogInt { low, high }, ParamValue::Int(c)) => {
                let span = (*high as f64).ln() - (*low as f64).ln();
                let v = ((*c as f64).max(1.0).ln() + step * span).exp();
                ParamValue::Int((v.round() as i64).clamp(*low, *high))
            }
            (Domain::Categorical(choices), c) => {
                if rng.random_bool(radius.clamp(0.0, 1.0)) {
                    choices[rng.random_range(0..choices.len())].clone()
                } else {
                    c.clone()
                }
            }
            _ => self.sample(rng),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Space {
    pub params: Vec<(String, Domain)>,
}

impl Space {
    /// Whether `config` sets exactly this space's parameters, each inside its domain.
    pub fn contains(&self, config: &Config) -> bool {
        config.len() == self.params.len()
            && self.params.iter().all(|(n, d)| config.get(n).is_some_and(|v| d.contains(v)))
    }

    pub fn sample(&self, rng: &mut impl Rng) -> Config {
        self.params.iter().map(|(n, d)| (n.clone(), d.sample(rng))).collect()
    }

    pub fn perturb(&self, center: &Config, radius: f64, rng: &mut impl Rng) -> Config {
        self.params
            .iter()
            .map(|(n, d)| {
                let v = match center.get(n) {
                    Some(c) => d.perturb(c, radius, rng),
                    None => d.sample(rng),
                };
                (n.clone(), v)
            })
            .collect()
    }
}

/// What the search knows about the data: enough to size spaces, nothing more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataShape {
    pub n_rows: usize,
    pub n_features: usize,
    pub n_classes: usize,
}

fn f(v: f64) -> ParamValue {
    ParamValue::Float(v)
}
fn i(v: i64) -> ParamValue {
    ParamValue::Int(v)
}

/// Rows each forest tree sees at most: a deep tree on 300k rows takes seconds, and a trial
/// can only be stopped between trees, so large data is subsampled per tree (as
/// scikit-learn's `max_samples`).
const FOREST_MAX_ROWS_PER_TREE: usize = 20_000;
/// Past this many rows a brute-force neighbour search costs more than any budget allows,
/// and it cannot be interrupted.
const KNN_MAX_ROWS: usize = 20_000;

/// SVMs only for small data: the solver holds the dense `n × n` kernel matrix, its time grows
/// between `n²` and `n³` (6.5 s per fit on 3,500 rows, ×5 folds), and it cannot be interrupted.
const SVM_MAX_ROWS: usize = 2_000;

fn forest_subsample(shape: DataShape) -> f64 {
    (FOREST_MAX_ROWS_PER_TREE as f64 / shape.n_rows.max(1) as f64).min(1.0)
}

/// The space of a family (by its registry name); `None` for a family search does not know
/// or that does not suit data of this size.
pub fn space_for(family: &str, shape: DataShape) -> Option<Space> {
    if (family == "knn" && shape.n_rows > KNN_MAX_ROWS) || (family == "svm" && shape.n_rows > SVM_MAX_ROWS) {
        return None;
    }
    let max_leaves = ((shape.n_rows / 4).clamp(4, 512)) as i64;
    let max_child = ((shape.n_rows / 10).clamp(2, 200)) as i64;
    let params: Vec<(&str, Domain)> = match family {
        "gbdt" => vec![
            ("learning_rate", Domain::LogUniform { low: 0.01, high: 0.3 }),
            ("num_leaves", Domain::LogInt { low: 4, high: max_leaves }),
            ("min_child_samples", Domain::LogInt { low: 2, high: max_child }),
            ("subsample", Domain::Uniform { low: 0.5, high: 1.0 }),
            ("colsample_bytree", Domain::Uniform { low: 0.3, high: 1.0 }),
            ("reg_alpha", Domain::LogUniform { low: 1e-4, high: 10.0 }),
            ("reg_lambda", Domain::LogUniform { low: 1e-4, high: 10.0 }),
        ],
        "random_forest" | "extra_trees" => vec![
            ("n_estimators", Domain::LogInt { low: 50, high: 300 }),
            ("colsample_bytree", Domain::Uniform { low: 0.2, high: 1.0 }),
            ("min_child_samples", Domain::LogInt { low: 1, high: 20 }),
            ("subsample", Domain::Categorical(vec![f(forest_subsample(shape))])),
        ],
        "linear" => vec![("alpha", Domain::LogUniform { low: 1e-5, high: 10.0 })],
        "knn" => vec![
            ("n_neighbors", Domain::LogInt { low: 1, high: 50 }),
            (
                "weights",
                Domain::Categorical(vec![
                    ParamValue::Str("uniform".into()),
                    ParamValue::Str("distance".into()),
                ]),
            ),
        ],
        "naive_bayes" => vec![("var_smoothing", Domain::LogUniform { low: 1e-12, high: 1e-3 })],
        "mlp" => vec![
            ("hidden_layers", Domain::Int { low: 1, high: 3 }),
            ("hidden", Domain::LogInt { low: 16, high: 256 }),
            ("dropout", Domain::Uniform { low: 0.0, high: 0.4 }),
            ("learning_rate", Domain::LogUniform { low: 3e-4, high: 1e-2 }),
            ("weight_decay", Domain::LogUniform { low: 1e-6, high: 1e-2 }),
            ("batch_size", Domain::Categorical(vec![i(64), i(128), i(256)])),
            // Early stopping ends most fits sooner; the cap bounds a trial's cost.
            ("epochs", Domain::Categorical(vec![i(50)])),
        ],
        "svm" => vec![
            (
                "kernel",
                Domain::Categorical(vec![ParamValue::Str("rbf".into()), ParamValue::Str("linear".into())]),
            ),
            ("c", Domain::LogUniform { low: 0.03, high: 100.0 }),
            ("gamma", Domain::LogUniform { low: 1e-3, high: 1.0 }),
        ],
        _ => return None,
    };
    Some(Space { params: params.into_iter().map(|(n, d)| (n.to_string(), d)).collect() })
}

/// Configs known to do well, tried before any sampling (a zero-shot portfolio), sized to the data.
pub fn portfolio(family: &str, shape: DataShape) -> Vec<Config> {
    let cfg = |pairs: &[(&str, ParamValue)]| -> Config {
        pairs.iter().map(|(n, v)| (n.to_string(), v.clone())).collect()
    };
    let small = shape.n_rows < 2_000;
    match family {
        "gbdt" => {
            let mut out = vec![cfg(&[
                ("learning_rate", f(0.1)),
                ("num_leaves", i(if small { 8 } else { 31 })),
                ("min_child_samples", i(if small { 5 } else { 20 })),
                ("subsample", f(1.0)),
                ("colsample_bytree", f(1.0)),
                ("reg_alpha", f(1e-4)),
                ("reg_lambda", f(1.0)),
            ])];
            out.push(cfg(&[
                ("learning_rate", f(0.05)),
                ("num_leaves", i(if small { 16 } else { 63 })),
                ("min_child_samples", i(if small { 3 } else { 10 })),
                ("subsample", f(0.8)),
                ("colsample_bytree", f(0.6)),
                ("reg_alpha", f(1e-3)),
                ("reg_lambda", f(3.0)),
            ]));
            out
        }
        "random_forest" | "extra_trees" => vec![cfg(&[
            ("n_estimators", i(if shape.n_rows > 50_000 { 60 } else { 150 })),
            ("colsample_bytree", f(0.6)),
            ("min_child_samples", i(if shape.n_rows > 50_000 { 5 } else { 1 })),
            ("subsample", f(forest_subsample(shape))),
        ])],
        "linear" => vec![cfg(&[("alpha", f(1e-3))])],
        "knn" => vec![cfg(&[("n_neighbors", i(15)), ("weights", ParamValue::Str("distance".into()))])],
        "naive_bayes" => vec![cfg(&[("var_smoothing", f(1e-9))])],
        // No portfolio seat for the MLP: many epochs per trial make it the most expensive
        // family to try first, so tiny budgets (which run only the portfolio) never start it;
        // later it is sampled like any challenger.
        "mlp" => Vec::new(),
        "svm" if small => vec![cfg(&[
            ("kernel", ParamValue::Str("rbf".into())),
            ("c", f(1.0)),
            ("gamma", f((1.0 / shape.n_features.max(1) as f64).clamp(1e-3, 1.0))),
        ])],
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn shape() -> DataShape {
        DataShape { n_rows: 1000, n_features: 10, n_classes: 2 }
    }

    #[test]
    fn samples_stay_in_domain() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let space = space_for("gbdt", shape()).unwrap();
        for _ in 0..500 {
            let c = space.sample(&mut rng);
            let c2 = space.perturb(&c, 0.3, &mut rng);
            for cfg in [c, c2] {
                let ParamValue::Float(lr) = cfg["learning_rate"] else { panic!("lr kind") };
                assert!((0.01..=0.3).contains(&lr), "{lr}");
                let ParamValue::Int(l) = cfg["num_leaves"] else { panic!("leaves kind") };
                assert!((4..=250).contains(&l), "{l}");
            }
        }
    }

    #[test]
    fn portfolio_configs_lie_in_the_space() {
        for fam in ["gbdt", "random_forest", "extra_trees", "linear", "knn", "naive_bayes", "mlp", "svm"] {
            let space = space_for(fam, shape()).unwrap();
            for cfg in portfolio(fam, shape()) {
                for (name, _) in &space.params {
                    assert!(cfg.contains_key(name), "{fam} portfolio lacks {name}");
                }
                assert!(space.contains(&cfg), "{fam} portfolio config {cfg:?} lies outside its space");
            }
        }
    }

    #[test]
    fn svm_only_for_small_data_and_mlp_never_in_the_portfolio() {
        let big = DataShape { n_rows: 2_001, ..shape() };
        assert!(space_for("svm", shape()).is_some());
        assert!(space_for("svm", big).is_none());
        assert!(space_for("mlp", big).is_some());
        assert!(portfolio("mlp", shape()).is_empty());
        assert_eq!(portfolio("svm", shape()).len(), 1);
    }

    #[test]
    fn same_seed_same_samples() {
        let space = space_for("gbdt", shape()).unwrap();
        let a = space.sample(&mut ChaCha8Rng::seed_from_u64(9));
        let b = space.sample(&mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
    }
}
