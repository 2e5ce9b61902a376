//! Naive Bayes on the shared standardised design matrix (classification only): Gaussian
//! likelihoods for numeric (and frequency-encoded) columns, Laplace-smoothed categorical
//! likelihoods for one-hot encoded categoricals.

use quarry_featurize::{FeatureMatrix, Predictions, Target, Task};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::design::{ColumnPrep, design, design_width, fit_prep};
use crate::error::{Result, TrainError};
use crate::params::ParamReader;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NaiveBayesParams {
    /// Share of the largest feature variance added to every variance (scikit-learn's name).
    pub var_smoothing: f64,
}

impl Default for NaiveBayesParams {
    fn default() -> Self {
        NaiveBayesParams { var_smoothing: 1e-9 }
    }
}

impl NaiveBayesParams {
    pub fn from_map(p: &mut ParamReader<'_>) -> Result<NaiveBayesParams> {
        let out = NaiveBayesParams { var_smoothing: p.f64("var_smoothing", Self::default().var_smoothing)? };
        out.check()?;
        Ok(out)
    }

    pub fn check(&self) -> Result<()> {
        if !(self.var_smoothing >= 0.0 && self.var_smoothing.is_finite()) {
            return Err(TrainError::InvalidParam {
                name: "var_smoothing".into(),
                message: "must be a finite number >= 0".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NaiveBayesModel {
    pub(crate) prep: Vec<ColumnPrep>,
    /// Training rows per class; a class with none gets probability 0.
    pub(crate) class_count: Vec<f64>,
    /// Design columns modelled as Gaussians (standardised numerics, frequency codes).
    pub(crate) gaussian: Vec<usize>,
    /// `n_classes × gaussian.len()`, row-major.
    pub(crate) means: Vec<f64>,
    /// `n_classes × gaussian.len()`, row-major, smoothing included.
    pub(crate) vars: Vec<f64>,
    /// One-hot blocks `(first design column, n_levels)`, modelled as categoricals: a Gaussian
    /// on a 0/1 column that is constant within a class has a near-zero variance whose density
    /// swamps every other feature.
    pub(crate) blocks: Vec<(usize, usize)>,
    /// Per class, per block, `n_levels + 1` log-probabilities (the last: missing or unseen),
    /// Laplace-smoothed; class-major.
    pub(crate) cat_log_prob: Vec<f64>,
}

/// Laplace smoothing for the categorical blocks.
const CAT_ALPHA: f64 = 1.0;

fn layout(prep: &[ColumnPrep]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let (mut gaussian, mut blocks, mut j) = (Vec::new(), Vec::new(), 0);
    for p in prep {
        match p {
            ColumnPrep::OneHot { n_levels } => {
                blocks.push((j, *n_levels as usize));
                j += *n_levels as usize;
            }
            _ => {
                gaussian.push(j);
                j += 1;
            }
        }
    }
    (gaussian, blocks)
}

/// The level a one-hot block holds in `row`, or `n_levels` when none is set.
fn level(row: &[f64], (start, n_levels): (usize, usize)) -> usize {
    (0..n_levels).find(|l| row.get(start + l).is_some_and(|v| *v != 0.0)).unwrap_or(n_levels)
}

pub fn fit(x: &FeatureMatrix, y: &Target, task: Task, params: &NaiveBayesParams) -> Result<NaiveBayesModel> {
    params.check()?;
    let (n_classes, codes) = match y {
        Target::Classes { classes, codes } if task.is_classification() => (classes.len(), codes),
        _ => {
            return Err(TrainError::Fit {
                family: "naive_bayes".into(),
                message: "naive Bayes predicts classes only; this is a regression task".into(),
            });
        }
    };
    let prep = fit_prep(x);
    let d = design(&prep, x);
    let rows: Vec<Vec<f64>> = d.rows().into_iter().map(|r| r.to_vec()).collect();
    let (gaussian, blocks) = layout(&prep);
    let g = gaussian.len();
    let cat_width: usize = blocks.iter().map(|(_, n)| n + 1).sum();
    let mut class_count = vec![0.0_f64; n_classes];
    let mut means = vec![0.0_f64; n_classes * g];
    let mut vars = vec![0.0_f64; n_classes * g];
    let mut cat_counts = vec![0.0_f64; n_classes * cat_width];
    for (row, &c) in rows.iter().zip(codes) {
        let c = c as usize;
        let Some(count) = class_count.get_mut(c) else {
            return Err(TrainError::Data(format!("class code {c} out of range")));
        };
        *count += 1.0;
        for (m, &j) in means[c * g..(c + 1) * g].iter_mut().zip(&gaussian) {
            *m += row[j];
        }
        let mut off = c * cat_width;
        for &b in &blocks {
            cat_counts[off + level(row, b)] += 1.0;
            off += b.1 + 1;
        }
    }
    for (c, &n) in class_count.iter().enumerate() {
        means[c * g..(c + 1) * g].iter_mut().for_each(|m| *m /= n.max(1.0));
    }
    for (row, &c) in rows.iter().zip(codes) {
        let c = c as usize;
        for ((s, &j), m) in vars[c * g..(c + 1) * g].iter_mut().zip(&gaussian).zip(&means[c * g..]) {
            *s += (row[j] - m) * (row[j] - m);
        }
    }
    // Like scikit-learn: epsilon is var_smoothing times the largest (Gaussian) feature variance.
    let n = x.n_rows.max(1) as f64;
    let max_var = gaussian
        .iter()
        .map(|&j| {
            let mean = rows.iter().map(|r| r[j]).sum::<f64>() / n;
            rows.iter().map(|r| (r[j] - mean) * (r[j] - mean)).sum::<f64>() / n
        })
        .fold(0.0, f64::max);
    let eps = params.var_smoothing * max_var;
    for (c, &cnt) in class_count.iter().enumerate() {
        for s in &mut vars[c * g..(c + 1) * g] {
            *s = (*s / cnt.max(1.0) + eps).max(1e-300);
        }
    }
    let mut cat_log_prob = cat_counts;
    for (c, &cnt) in class_count.iter().enumerate() {
        let mut off = c * cat_width;
        for &(_, n_levels) in &blocks {
            let slot = &mut cat_log_prob[off..off + n_levels + 1];
            let total = cnt + CAT_ALPHA * (n_levels + 1) as f64;
            slot.iter_mut().for_each(|v| *v = ((*v + CAT_ALPHA) / total).ln());
            off += n_levels + 1;
        }
    }
    Ok(NaiveBayesModel { prep, class_count, gaussian, means, vars, blocks, cat_log_prob })
}

impl NaiveBayesModel {
    /// What `predict` indexes, checked after a bundle is read (a damaged bundle found by
    /// fuzzing `bundle_load` indexed past `cat_log_prob`).
    pub(crate) fn check_shape(&self) -> std::result::Result<(), String> {
        let width = design_width(&self.prep);
        let k = self.class_count.len();
        let g = self.gaussian.len();
        let cells = k.checked_mul(g);
        if k == 0 || cells != Some(self.means.len()) || cells != Some(self.vars.len()) {
            return Err(format!(
                "naive_bayes: {} means and {} variances for {k} classes × {g} Gaussian columns",
                self.means.len(),
                self.vars.len()
            ));
        }
        if let Some(j) = self.gaussian.iter().find(|&&j| j >= width) {
            return Err(format!("naive_bayes: Gaussian column {j} outside the {width} design columns"));
        }
        let mut cat_width = 0usize;
        for &(start, n_levels) in &self.blocks {
            if start.checked_add(n_levels).is_none_or(|end| end > width) {
                return Err(format!(
                    "naive_bayes: block of {n_levels} levels at column {start} outside the {width} design columns"
                ));
            }
            cat_width = cat_width.checked_add(n_levels + 1).ok_or("naive_bayes: too many levels")?;
        }
        if k.checked_mul(cat_width) != Some(self.cat_log_prob.len()) {
            return Err(format!(
                "naive_bayes: {} categorical log-probabilities for {k} classes × {cat_width} levels",
                self.cat_log_prob.len()
            ));
        }
        Ok(())
    }

    pub fn predict(&self, x: &FeatureMatrix) -> Predictions {
        let d = design(&self.prep, x);
        let k = self.class_count.len();
        let total: f64 = self.class_count.iter().sum();
        let g = self.gaussian.len();
        let cat_width: usize = self.blocks.iter().map(|(_, n)| n + 1).sum();
        // Per class: log prior − ½ Σ ln(2π var), the part that does not depend on the row.
        let base: Vec<Option<f64>> = (0..k)
            .map(|c| {
                let n = self.class_count[c];
                (n > 0.0).then(|| {
                    let logdet: f64 = self.vars[c * g..(c + 1) * g]
                        .iter()
                        .map(|v| (2.0 * std::f64::consts::PI * v).ln())
                        .sum();
                    (n / total).ln() - 0.5 * logdet
                })
            })
            .collect();
        let rows: Vec<Vec<f64>> = d.rows().into_iter().map(|r| r.to_vec()).collect();
        let mut values = vec![0.0; x.n_rows * k];
        values.par_chunks_mut(k.max(1)).zip(rows.par_iter()).for_each(|(out, row)| {
            for (c, o) in out.iter_mut().enumerate() {
                *o = match base[c] {
                    None => f64::NEG_INFINITY,
                    Some(b) => {
                        let m = &self.means[c * g..(c + 1) * g];
                        let v = &self.vars[c * g..(c + 1) * g];
                        let q: f64 = self
                            .gaussian
                            .iter()
                            .zip(m)
                            .zip(v)
                            .map(|((&j, m), v)| (row[j] - m) * (row[j] - m) / v)
                            .sum();
                        let mut off = c * cat_width;
                        let mut cat = 0.0;
                        for &blk in &self.blocks {
                            cat += self.cat_log_prob[off + level(row, blk)];
                            off += blk.1 + 1;
                        }
                        b - 0.5 * q + cat
                    }
                };
            }
            let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !max.is_finite() {
                // Every class is impossible by the numbers: fall back to the seen classes, evenly.
                for (o, b) in out.iter_mut().zip(&base) {
                    *o = if b.is_some() { 1.0 } else { 0.0 };
                }
            } else {
                out.iter_mut().for_each(|o| *o = (*o - max).exp());
            }
            let sum: f64 = out.iter().sum();
            out.iter_mut().for_each(|o| *o /= sum);
        });
        Predictions::Probabilities { n_classes: k, values }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quarry_featurize::{FeatureColumn, FeatureKind};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn gaussians(n: usize, seed: u64) -> (FeatureMatrix, Target) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = || {
            // Box–Muller.
            let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let codes: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        let cols = (0..2)
            .map(|j| {
                let values =
                    codes.iter().map(|&c| (normal() + if c == 1 { 4.0 } else { 0.0 }) as f32).collect();
                FeatureColumn {
                    name: format!("f{j}"),
                    source: format!("f{j}"),
                    kind: FeatureKind::Numeric,
                    values,
                }
            })
            .collect();
        (
            FeatureMatrix { n_rows: n, columns: cols },
            Target::Classes { classes: vec!["a".into(), "b".into()], codes },
        )
    }

    #[test]
    fn separates_two_gaussians() {
        let (x, y) = gaussians(400, 1);
        let m = fit(&x, &y, Task::Binary, &NaiveBayesParams::default()).unwrap();
        let (xt, yt) = gaussians(400, 2);
        let Target::Classes { codes, .. } = yt else { panic!("classes") };
        let Predictions::Probabilities { n_classes: 2, values } = m.predict(&xt) else { panic!("kind") };
        let correct = values.chunks(2).zip(&codes).filter(|(p, c)| u32::from(p[1] > p[0]) == **c).count();
        let acc = correct as f64 / codes.len() as f64;
        assert!(acc > 0.95, "accuracy {acc}");
        assert!(values.iter().all(|p| p.is_finite()));
    }

    #[test]
    fn one_hot_categoricals_use_a_categorical_likelihood() {
        // A level constant within class 1 must not swamp a numeric feature that says class 0.
        let n = 200;
        let codes: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        let num = codes.iter().enumerate().map(|(i, &c)| c as f32 * 10.0 + (i % 7) as f32 * 0.1).collect();
        let cat =
            codes.iter().enumerate().map(|(i, &c)| if c == 1 || i % 4 == 0 { 0.0 } else { 1.0 }).collect();
        let col =
            |name: &str, kind, values| FeatureColumn { name: name.into(), source: name.into(), kind, values };
        let x = FeatureMatrix {
            n_rows: n,
            columns: vec![
                col("num", FeatureKind::Numeric, num),
                col("cat", FeatureKind::Categorical { n_levels: 2 }, cat),
            ],
        };
        let y = Target::Classes { classes: vec!["a".into(), "b".into()], codes };
        let m = fit(&x, &y, Task::Binary, &NaiveBayesParams::default()).unwrap();
        let q = FeatureMatrix {
            n_rows: 1,
            columns: vec![
                col("num", FeatureKind::Numeric, vec![0.2]),
                col("cat", FeatureKind::Categorical { n_levels: 2 }, vec![0.0]),
            ],
        };
        let Predictions::Probabilities { values, .. } = m.predict(&q) else { panic!("kind") };
        assert!(values[0] > 0.99, "{values:?}");
    }

    #[test]
    fn regression_is_a_fit_error() {
        let (x, _) = gaussians(10, 1);
        let y = Target::Values(vec![1.0; 10]);
        let err = fit(&x, &y, Task::Regression, &NaiveBayesParams::default()).unwrap_err();
        assert!(matches!(err, TrainError::Fit { .. }), "{err}");
        assert!(err.to_string().contains("regression"), "{err}");
    }

    #[test]
    fn a_class_missing_from_training_gets_no_probability() {
        let (x, y) = gaussians(50, 3);
        let Target::Classes { codes, .. } = y else { panic!("classes") };
        let y = Target::Classes { classes: vec!["a".into(), "b".into(), "c".into()], codes };
        let m = fit(&x, &y, Task::Multiclass, &NaiveBayesParams::default()).unwrap();
        let Predictions::Probabilities { n_classes: 3, values } = m.predict(&x) else { panic!("kind") };
        assert!(values.chunks(3).all(|p| p[2] == 0.0 && (p[0] + p[1] - 1.0).abs() < 1e-12));
        serde_json::to_string(&m).unwrap();
    }
}
