//! Micro-benchmarks of the tree engine's hot loops on synthetic data:
//! `cargo bench -p quarry-learners --bench gbdt`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quarry_featurize::matrix::{FeatureColumn, FeatureKind, FeatureMatrix};
use quarry_learners::gbdt::bench::{self, Binned};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROWS: usize = 200_000;
const FEATURES: usize = 30;

/// Uniform numeric features (5 % missing in every third column) plus one 12-level categorical,
/// and logistic-style gradients.
fn data() -> (FeatureMatrix, Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut columns: Vec<FeatureColumn> = (0..FEATURES - 1)
        .map(|j| FeatureColumn {
            name: format!("x{j}"),
            source: format!("x{j}"),
            kind: FeatureKind::Numeric,
            values: (0..ROWS)
                .map(
                    |_| if j % 3 == 0 && rng.random::<f64>() < 0.05 { f32::NAN } else { rng.random::<f32>() },
                )
                .collect(),
        })
        .collect();
    columns.push(FeatureColumn {
        name: "cat".into(),
        source: "cat".into(),
        kind: FeatureKind::Categorical { n_levels: 12 },
        values: (0..ROWS).map(|_| rng.random_range(0..12) as f32).collect(),
    });
    let grad = (0..ROWS).map(|_| rng.random::<f64>() - 0.5).collect();
    let hess = (0..ROWS).map(|_| 0.05 + 0.2 * rng.random::<f64>()).collect();
    (FeatureMatrix { n_rows: ROWS, columns }, grad, hess)
}

/// On one thread (the global pool is this process's own): the per-core cost of each loop.
fn benches(c: &mut Criterion) {
    // Fails only if the pool was already built, which leaves the thread count as it was.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(1).build_global();
    let (x, grad, hess) = data();
    let binned = Binned::new(&x, 255);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    // The root (every row) and a deep leaf (a sorted 5 % sample, scattered over the data).
    let all: Vec<u32> = (0..ROWS as u32).collect();
    let leaf: Vec<u32> = (0..ROWS as u32).filter(|_| rng.random::<f64>() < 0.05).collect();

    let mut g = c.benchmark_group("gbdt_histogram");
    g.sample_size(20);
    for (name, rows) in [("root_200k", &all), ("leaf_10k", &leaf)] {
        g.bench_with_input(BenchmarkId::from_parameter(name), rows, |b, rows| {
            b.iter(|| bench::histogram(&binned, rows, &grad, &hess))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("gbdt_split");
    for (name, rows) in [("root_200k", &all), ("leaf_10k", &leaf)] {
        let hist = bench::histogram(&binned, rows, &grad, &hess);
        g.bench_function(name, |b| b.iter(|| bench::best_split(&binned, &hist)));
    }
    g.finish();

    let mut g = c.benchmark_group("gbdt_binning");
    g.sample_size(10);
    g.bench_function("200k_x30", |b| b.iter(|| Binned::new(&x, 255).total_bins()));
    g.finish();
}

criterion_group!(gbdt, benches);
criterion_main!(gbdt);
