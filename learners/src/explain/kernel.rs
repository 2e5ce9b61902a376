//! KernelSHAP (Lundberg & Lee 2017) against background rows: `v(S)` is the model's mean output
//! with the row's values on the columns in `S` and each background row's elsewhere. The
//! weighted least-squares fit is solved with the efficiency constraint eliminated, so
//! `expected + Σ φ = output` holds exactly whatever the sampling error.
//!
//! Up to [`MAX_EXACT_PLAYERS`] columns every coalition is enumerated with its Shapley kernel
//! weight, which gives the exact Shapley values of that game. Past it, coalitions are sampled
//! (seeded) by size from the kernel distribution, each with its complement, and the standard
//! error is estimated from two independent halves of the sample.

use quarry_featurize::FeatureMatrix;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::{Contributions, ExplainOptions};
use crate::error::{Result, TrainError};

/// Columns up to which every coalition is enumerated (2^11 - 2 = 2046 coalitions).
pub(crate) const MAX_EXACT_PLAYERS: usize = 11;
/// Model evaluations per explained row at most (coalitions × background rows).
const MAX_EVALS_PER_ROW: usize = 40_000;

/// What KernelSHAP did, for the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelReport {
    /// Coalitions evaluated per row.
    pub coalitions: usize,
    /// Every coalition enumerated: the values are the exact Shapley values of the background game.
    pub exact: bool,
    pub background_rows: usize,
    /// Estimated standard error of a Shapley value (root mean square over rows, outputs and
    /// columns); 0 when exact.
    pub std_error: f64,
}

impl KernelReport {
    pub(crate) fn merge(&self, o: &KernelReport) -> KernelReport {
        KernelReport {
            coalitions: self.coalitions.max(o.coalitions),
            exact: self.exact && o.exact,
            background_rows: self.background_rows.min(o.background_rows),
            std_error: self.std_error.max(o.std_error),
        }
    }
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Coalitions as player masks with their weights.
fn coalitions(m: usize, wanted: usize, rng: &mut ChaCha8Rng) -> (Vec<Vec<bool>>, Vec<f64>, bool) {
    let mut masks = Vec::new();
    let mut weights = Vec::new();
    if m <= MAX_EXACT_PLAYERS {
        for bits in 1u32..(1u32 << m) - 1 {
            let mask: Vec<bool> = (0..m).map(|j| bits >> j & 1 == 1).collect();
            let s = bits.count_ones() as usize;
            masks.push(mask);
            weights.push((m - 1) as f64 / (binomial(m, s) * (s * (m - s)) as f64));
        }
        return (masks, weights, true);
    }
    let size_weight: Vec<f64> = (1..m).map(|s| 1.0 / (s * (m - s)) as f64).collect();
    let total: f64 = size_weight.iter().sum();
    let mut players: Vec<usize> = (0..m).collect();
    for _ in 0..wanted.div_ceil(2) {
        let mut u = rng.random::<f64>() * total;
        let mut s = 1;
        for (i, w) in size_weight.iter().enumerate() {
            if u < *w {
                s = i + 1;
                break;
            }
            u -= w;
            s = i + 1;
        }
        players.shuffle(rng);
        let mut mask = vec![false; m];
        for &p in &players[..s] {
            mask[p] = true;
        }
        let complement: Vec<bool> = mask.iter().map(|b| !b).collect();
        masks.push(mask);
        masks.push(complement);
        weights.push(1.0);
        weights.push(1.0);
    }
    (masks, weights, false)
}

/// Solves `min Σ w (y - A φ)²` subject to `Σ φ = total` for one output. `values[c]` is
/// `v(S_c) - v(∅)`; `use_c` selects the coalitions used.
fn solve(
    m: usize,
    masks: &[Vec<bool>],
    weights: &[f64],
    values: &[f64],
    total: f64,
    use_c: &dyn Fn(usize) -> bool,
) -> Vec<f64> {
    if m <= 1 {
        return vec![total; m];
    }
    let n = m - 1;
    let mut ata = vec![0.0; n * n];
    let mut aty = vec![0.0; n];
    for (c, mask) in masks.iter().enumerate() {
        if !use_c(c) {
            continue;
        }
        let last = f64::from(u8::from(mask[m - 1]));
        let a: Vec<f64> = (0..n).map(|i| f64::from(u8::from(mask[i])) - last).collect();
        let y = values[c] - last * total;
        let w = weights[c];
        for i in 0..n {
            if a[i] == 0.0 {
                continue;
            }
            aty[i] += w * a[i] * y;
            for j in 0..n {
                ata[i * n + j] += w * a[i] * a[j];
            }
        }
    }
    // A tiny ridge keeps a sampled design with unseen players solvable.
    let trace: f64 = (0..n).map(|i| ata[i * n + i]).sum();
    let ridge = 1e-12 * (trace / n as f64).max(1e-300);
    for i in 0..n {
        ata[i * n + i] += ridge;
    }
    let mut phi = gauss_solve(ata, aty, n);
    let rest: f64 = phi.iter().sum();
    phi.push(total - rest);
    phi
}

/// Gaussian elimination with partial pivoting.
fn gauss_solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs())).unwrap_or(col);
        if pivot != col {
            for j in 0..n {
                a.swap(col * n + j, pivot * n + j);
            }
            b.swap(col, pivot);
        }
        let d = a[col * n + col];
        if d.abs() < 1e-300 {
            continue;
        }
        for i in col + 1..n {
            let f = a[i * n + col] / d;
            if f != 0.0 {
                for j in col..n {
                    a[i * n + j] -= f * a[col * n + j];
                }
                b[i] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| a[i * n + j] * x[j]).sum();
        let d = a[i * n + i];
        x[i] = if d.abs() < 1e-300 { 0.0 } else { (b[i] - s) / d };
    }
    x
}

/// KernelSHAP of `f` (rows in, `n_out` values per row out) on every row of `x`.
pub(crate) fn kernel_shap(
    f: &(dyn Fn(&FeatureMatrix) -> Vec<f64> + Sync),
    n_out: usize,
    x: &FeatureMatrix,
    player_of: &[u32],
    n_players: usize,
    background: &FeatureMatrix,
    opts: &ExplainOptions,
) -> Result<(Contributions, KernelReport)> {
    let m = n_players;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (masks, weights, exact) = coalitions(m, opts.kernel_coalitions.max(2), &mut rng);
    let n_bg = opts
        .kernel_background
        .min(background.n_rows)
        .min(MAX_EVALS_PER_ROW / masks.len().max(1))
        .max(1)
        .min(background.n_rows);
    let bg_rows: Vec<usize> =
        (0..background.n_rows).step_by(background.n_rows.div_ceil(n_bg).max(1)).collect();
    let bg = background.select_rows(&bg_rows);
    let base_out = f(&bg);
    if base_out.len() != bg.n_rows * n_out {
        return Err(TrainError::Explain(format!(
            "model returned {} values for {} rows × {n_out} outputs",
            base_out.len(),
            bg.n_rows
        )));
    }
    let mut expected = vec![0.0; n_out];
    for r in base_out.chunks(n_out) {
        expected.iter_mut().zip(r).for_each(|(e, v)| *e += v / bg.n_rows as f64);
    }
    let output = f(x);
    let n_c = masks.len();
    // Rows are explained in parallel; each builds its (coalition × background) rows and
    // evaluates them in one call.
    let per_row: Vec<(Vec<f64>, f64)> = (0..x.n_rows)
        .into_par_iter()
        .map(|row| {
            let mut sx = FeatureMatrix { n_rows: n_c * bg.n_rows, columns: bg.columns.clone() };
            for (j, col) in sx.columns.iter_mut().enumerate() {
                let pl = player_of[j] as usize;
                let bgv = &bg.columns[j].values;
                let xv = x.columns[j].values[row];
                col.values = masks
                    .iter()
                    .flat_map(|mask| {
                        let take_x = mask[pl];
                        bgv.iter().map(move |&b| if take_x { xv } else { b })
                    })
                    .collect();
            }
            let out = f(&sx);
            let mut phi = vec![0.0; n_out * m];
            let mut sq_err = 0.0;
            for o in 0..n_out {
                let values: Vec<f64> = (0..n_c)
                    .map(|c| {
                        let s: f64 = (0..bg.n_rows).map(|b| out[(c * bg.n_rows + b) * n_out + o]).sum();
                        s / bg.n_rows as f64 - expected[o]
                    })
                    .collect();
                let total = output[row * n_out + o] - expected[o];
                let full = solve(m, &masks, &weights, &values, total, &|_| true);
                if !exact {
                    // Pairs (a coalition and its complement) stay together in each half.
                    let a = solve(m, &masks, &weights, &values, total, &|c| (c / 2) % 2 == 0);
                    let b = solve(m, &masks, &weights, &values, total, &|c| (c / 2) % 2 == 1);
                    sq_err += a.iter().zip(&b).map(|(p, q)| (p - q).powi(2)).sum::<f64>();
                }
                phi[o * m..(o + 1) * m].copy_from_slice(&full);
            }
            (phi, sq_err)
        })
        .collect();
    let mut phi = Vec::with_capacity(x.n_rows * n_out * m);
    let mut sq = 0.0;
    for (p, e) in per_row {
        phi.extend(p);
        sq += e;
    }
    // Each half has twice the full sample's variance: Var(a - b) = 4 σ²_full.
    let count = (x.n_rows * n_out * m).max(1) as f64;
    let std_error = if exact { 0.0 } else { (sq / count).sqrt() / 2.0 };
    let report = KernelReport { coalitions: n_c, exact, background_rows: bg.n_rows, std_error };
    Ok((Contributions { n_outputs: n_out, n_players: m, expected, phi, output }, report))
}
