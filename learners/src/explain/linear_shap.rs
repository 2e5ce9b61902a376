//! Exact SHAP of a linear model: with the design built column by column from the raw values,
//! `φ_col = Σ_{design columns j of col} coef_j · (d_j(x) − mean_j)`, the means over the
//! background rows' design. One-hot blocks, imputed and scaled numerics all land on their column.

use quarry_featurize::{FeatureMatrix, Task};

use super::Contributions;
use crate::design::{ColumnPrep, design};
use crate::linear::LinearModel;

pub(crate) fn contributions(
    m: &LinearModel,
    x: &FeatureMatrix,
    player_of: &[u32],
    n_players: usize,
    background: &FeatureMatrix,
) -> Contributions {
    let d = design(&m.prep, x);
    let db = design(&m.prep, background);
    // The player of every design column.
    let mut design_player = Vec::with_capacity(d.ncols());
    for (prep, &pl) in m.prep.iter().zip(player_of) {
        let width = match prep {
            ColumnPrep::OneHot { n_levels } => *n_levels as usize,
            _ => 1,
        };
        design_player.extend(std::iter::repeat_n(pl as usize, width));
    }
    let nb = db.nrows().max(1) as f64;
    let means: Vec<f64> = db.columns().into_iter().map(|c| c.sum() / nb).collect();
    let k = m.n_outputs;
    let mut expected = m.intercept.clone();
    for (j, mean) in means.iter().enumerate() {
        for (o, e) in expected.iter_mut().enumerate() {
            *e += m.coef[j * k + o] * mean;
        }
    }
    let mut phi = vec![0.0; x.n_rows * k * n_players];
    let mut output = vec![0.0; x.n_rows * k];
    for (r, row) in d.rows().into_iter().enumerate() {
        let out = &mut output[r * k..(r + 1) * k];
        out.copy_from_slice(&m.intercept);
        for (j, &v) in row.iter().enumerate() {
            for o in 0..k {
                let c = m.coef[j * k + o];
                out[o] += c * v;
                phi[(r * k + o) * n_players + design_player[j]] += c * (v - means[j]);
            }
        }
    }
    if m.task == Task::Binary && k == 2 {
        // The log-odds of class 1 is the difference of the two class scores.
        let reduce = |v: &[f64]| v.chunks(2).map(|p| p[1] - p[0]).collect::<Vec<f64>>();
        let phi1: Vec<f64> = (0..x.n_rows)
            .flat_map(|r| {
                let base = r * 2 * n_players;
                let phi = &phi;
                (0..n_players).map(move |j| phi[base + n_players + j] - phi[base + j])
            })
            .collect();
        return Contributions {
            n_outputs: 1,
            n_players,
            expected: reduce(&expected),
            phi: phi1,
            output: reduce(&output),
        };
    }
    Contributions { n_outputs: k, n_players, expected, phi, output }
}
