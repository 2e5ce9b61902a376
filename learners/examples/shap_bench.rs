//! TreeSHAP benchmark (the Python shap comparison in `bench/shap/run.sh`).
//!
//! ```sh
//! cargo run --release -p quarry-learners --example shap_bench -- [--threads N] [--repeat R] [--dump DIR]
//! ```
//!
//! Trains a 300-round depth-8 GBDT (255 leaves, learning rate 0.1) on 50,000 × 30 synthetic
//! logistic rows from a fixed seed, then times exact TreeSHAP of the first 10,000 rows on a
//! rayon pool of N threads (best of R, default 3). Prints one JSON line. `--dump DIR` writes the feature
//! matrix (`x.f32`, column-major little-endian, NaN = missing) and labels (`y.f64`) so the
//! LightGBM side trains on the same rows.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use quarry_featurize::matrix::{FeatureColumn, FeatureKind, FeatureMatrix, Target};
use quarry_featurize::metric::Task;
use quarry_learners::explain::tree_shap_values;
use quarry_learners::gbdt::{self, TreeMode, TreeParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROWS: usize = 50_000;
const FEATURES: usize = 30;
const EXPLAIN_ROWS: usize = 10_000;

fn main() -> Result<(), Box<dyn Error>> {
    let mut threads = 1;
    let mut repeat = 3;
    let mut dump: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().ok_or("--threads N")?.parse()?,
            "--repeat" => repeat = args.next().ok_or("--repeat R")?.parse()?,
            "--dump" => dump = Some(args.next().ok_or("--dump DIR")?.into()),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let cols: Vec<Vec<f32>> = (0..FEATURES)
        .map(|_| {
            (0..ROWS)
                .map(|_| if rng.random::<f64>() < 0.02 { f32::NAN } else { rng.random::<f32>() })
                .collect()
        })
        .collect();
    let weights: Vec<f64> =
        (0..FEATURES).map(|j| if j % 3 == 0 { 0.0 } else { rng.random_range(-2.0..2.0) }).collect();
    let codes: Vec<u32> = (0..ROWS)
        .map(|i| {
            let mut z = 0.0;
            for (j, c) in cols.iter().enumerate() {
                let v = if c[i].is_nan() { 0.5 } else { f64::from(c[i]) };
                z += weights[j] * (v - 0.5) + if j < 4 { (6.0 * v).sin() } else { 0.0 };
            }
            u32::from(rng.random::<f64>() < 1.0 / (1.0 + (-z).exp()))
        })
        .collect();
    if let Some(d) = &dump {
        std::fs::create_dir_all(d)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(d.join("x.f32"))?);
        for c in &cols {
            for v in c {
                f.write_all(&v.to_le_bytes())?;
            }
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(d.join("y.f64"))?);
        for &c in &codes {
            f.write_all(&f64::from(c).to_le_bytes())?;
        }
    }
    let x = FeatureMatrix {
        n_rows: ROWS,
        columns: cols
            .into_iter()
            .enumerate()
            .map(|(j, values)| FeatureColumn {
                name: format!("f{j}"),
                source: format!("f{j}"),
                kind: FeatureKind::Numeric,
                values,
            })
            .collect(),
    };
    let y = Target::Classes { classes: vec!["0".into(), "1".into()], codes };
    let params = TreeParams {
        mode: TreeMode::Gbdt,
        n_estimators: 300,
        learning_rate: 0.1,
        num_leaves: 255,
        max_depth: 8,
        min_child_samples: 20,
        ..TreeParams::default()
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let t0 = Instant::now();
    let model = pool.install(|| gbdt::fit(&x, &y, Task::Binary, None, &params, 0, &mut |_, _| true))?;
    let fit_seconds = t0.elapsed().as_secs_f64();
    let xs = x.select_rows(&(0..EXPLAIN_ROWS).collect::<Vec<_>>());
    let mut best = f64::INFINITY;
    let mut checksum = 0.0;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let (expected, phi) = pool.install(|| tree_shap_values(&model, &xs));
        best = best.min(t.elapsed().as_secs_f64());
        checksum = expected[0] + phi.iter().sum::<f64>() / EXPLAIN_ROWS as f64;
    }
    println!(
        "{{\"side\":\"quarry\",\"threads\":{threads},\"trees\":{},\"leaves\":{},\"features\":{FEATURES},\"explain_rows\":{EXPLAIN_ROWS},\"fit_seconds\":{fit_seconds:.3},\"shap_seconds\":{best:.3},\"mean_output\":{checksum:.6}}}",
        model.n_trees(),
        model.n_leaves()
    );
    Ok(())
}
