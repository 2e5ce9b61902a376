//! Benchmark of the histogram tree engine (the LightGBM comparison in `bench/gbdt/run.sh`).
//!
//! ```sh
//! cargo run --release -p quarry-learners --example gbdt_bench -- \
//!     --train train.csv --test test.csv --target y [--name NAME] [--threads N] [--repeat R] [--dump DIR]
//! cargo run --release -p quarry-learners --example gbdt_bench -- --synthetic [--threads N] [--dump DIR]
//! cargo run --release -p quarry-learners --example gbdt_bench -- --synthetic --rows 50000 --mode random_forest
//! ```
//!
//! `--mode gbdt|random_forest|extra_trees` (default gbdt): forests grow 100 trees with the
//! search's forest defaults (`family::tree_defaults`), 255 bins, no early stopping.
//! `--rows N` keeps only the first N training rows (the test rows are unchanged).
//!
//! Fits GBDT with fixed settings (100 rounds, learning rate 0.1, 31 leaves, 255 bins, 20 rows
//! per leaf, no subsampling, no early stopping) on a rayon pool of N threads and prints one
//! JSON line: dataset, threads, fit_seconds (best of R fits; binning included, CSV load and
//! featurization excluded), predict_seconds, metric, score.
//!
//! `--synthetic`: 250,000 × 30 logistic rows from a fixed seed, the first 200,000 for training.
//!
//! `--dump DIR` writes the exact feature matrices and targets the engine saw, so the LightGBM
//! side reads identical rows and features: `{train,test}_x.f32` (column-major little-endian
//! `f32`, NaN = missing), `{train,test}_y.f64` (values or class codes) and `meta.json`;
//! with `--dump-only` it stops there.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use quarry_featurize::matrix::{FeatureColumn, FeatureKind, FeatureMatrix, Predictions, Target};
use quarry_featurize::metric::Task;
use quarry_featurize::{Featurizer, TargetEncoder, load_table};
use quarry_learners::family::tree_defaults;
use quarry_learners::gbdt::{self, TreeMode, TreeParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    train: Option<PathBuf>,
    test: Option<PathBuf>,
    target: Option<String>,
    name: Option<String>,
    synthetic: bool,
    threads: usize,
    repeat: usize,
    dump: Option<PathBuf>,
    dump_only: bool,
    model_json: Option<PathBuf>,
    seed: u64,
    mode: TreeMode,
    rows: Option<usize>,
    /// Overrides of the mode's tree size (forests: compare at boosting's tree size).
    num_leaves: Option<usize>,
    min_child_samples: Option<usize>,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        train: None,
        test: None,
        target: None,
        name: None,
        synthetic: false,
        threads: 1,
        repeat: 1,
        dump: None,
        dump_only: false,
        model_json: None,
        seed: 0,
        mode: TreeMode::Gbdt,
        rows: None,
        num_leaves: None,
        min_child_samples: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--train" => a.train = Some(value()?.into()),
            "--test" => a.test = Some(value()?.into()),
            "--target" => a.target = Some(value()?),
            "--name" => a.name = Some(value()?),
            "--threads" => a.threads = value()?.parse()?,
            "--repeat" => a.repeat = value()?.parse::<usize>()?.max(1),
            "--dump" => a.dump = Some(value()?.into()),
            "--seed" => a.seed = value()?.parse()?,
            "--rows" => a.rows = Some(value()?.parse()?),
            "--num-leaves" => a.num_leaves = Some(value()?.parse()?),
            "--min-child-samples" => a.min_child_samples = Some(value()?.parse()?),
            "--mode" => {
                a.mode = match value()?.as_str() {
                    "gbdt" => TreeMode::Gbdt,
                    "random_forest" => TreeMode::RandomForest,
                    "extra_trees" => TreeMode::ExtraTrees,
                    other => return Err(format!("unknown --mode {other:?}").into()),
                }
            }
            "--synthetic" => a.synthetic = true,
            "--dump-only" => a.dump_only = true,
            "--model-json" => a.model_json = Some(value()?.into()),
            "-h" | "--help" => {
                println!(
                    "gbdt_bench (--synthetic | --train F --test F --target COL) [--name N] [--threads N] [--repeat R] [--dump DIR [--dump-only]] [--model-json FILE] [--seed S] [--mode gbdt|random_forest|extra_trees] [--rows N] [--num-leaves N] [--min-child-samples N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(a)
}

/// Train/test features and targets, as the engine sees them.
struct Data {
    name: String,
    task: Task,
    train: (FeatureMatrix, Target),
    test: (FeatureMatrix, Target),
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// 250,000 × 30 uniform(-1, 1) features, a logistic label on 6 of them (with an interaction and
/// a non-monotone term); rows 0..200,000 train, the rest test.
fn synthetic() -> Data {
    const N: usize = 250_000;
    const N_TRAIN: usize = 200_000;
    const P: usize = 30;
    let mut rng = ChaCha8Rng::seed_from_u64(20_240_601);
    let columns: Vec<FeatureColumn> = (0..P)
        .map(|j| FeatureColumn {
            name: format!("x{j}"),
            source: format!("x{j}"),
            kind: FeatureKind::Numeric,
            values: (0..N).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        })
        .collect();
    let c = |j: usize, i: usize| f64::from(columns[j].values[i]);
    let codes: Vec<u32> = (0..N)
        .map(|i| {
            let z = 2.0 * c(0, i) - c(1, i) + 2.0 * c(2, i) * c(3, i) + (3.0 * c(4, i)).sin() + 0.5 * c(5, i);
            u32::from(rng.random::<f64>() < sigmoid(2.0 * z))
        })
        .collect();
    let x = FeatureMatrix { n_rows: N, columns };
    let y = Target::Classes { classes: vec!["0".into(), "1".into()], codes };
    let train: Vec<usize> = (0..N_TRAIN).collect();
    let test: Vec<usize> = (N_TRAIN..N).collect();
    Data {
        name: "synthetic_200k_x30".into(),
        task: Task::Binary,
        train: (x.select_rows(&train), y.select_rows(&train)),
        test: (x.select_rows(&test), y.select_rows(&test)),
    }
}

fn from_csv(train: &Path, test: &Path, target: &str, name: String) -> Res<Data> {
    let train_table = load_table(train)?.table;
    let test_table = load_table(test)?.table;
    let encoder = TargetEncoder::fit(&train_table, target, None)?;
    let featurizer = Featurizer::fit(&train_table, &[target])?;
    let (ty, t_kept) = encoder.encode(&train_table)?;
    let (vy, v_kept) = encoder.encode(&test_table)?;
    let tx = featurizer.transform(&train_table)?.select_rows(&t_kept);
    let vx = featurizer.transform(&test_table)?.select_rows(&v_kept);
    Ok(Data { name, task: encoder.task, train: (tx, ty), test: (vx, vy) })
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Res<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(bytes)?;
    f.flush()?;
    Ok(())
}

fn dump(dir: &Path, data: &Data) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    for (tag, (x, y)) in [("train", &data.train), ("test", &data.test)] {
        let mut bytes = Vec::with_capacity(x.n_rows * x.n_features() * 4);
        for c in &x.columns {
            for v in &c.values {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        write_bytes(&dir.join(format!("{tag}_x.f32")), &bytes)?;
        let ys: Vec<f64> = match y {
            Target::Classes { codes, .. } => codes.iter().map(|&c| f64::from(c)).collect(),
            Target::Values(v) => v.clone(),
        };
        let bytes: Vec<u8> = ys.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_bytes(&dir.join(format!("{tag}_y.f64")), &bytes)?;
    }
    let (x, y) = &data.train;
    let categorical: Vec<usize> = x
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.kind, FeatureKind::Categorical { .. }))
        .map(|(j, _)| j)
        .collect();
    let meta = serde_json::json!({
        "name": data.name,
        "task": data.task,
        "n_classes": y.n_classes(),
        "n_features": x.n_features(),
        "n_train": x.n_rows,
        "n_test": data.test.0.n_rows,
        "categorical": categorical,
        "feature_names": x.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
    });
    write_bytes(&dir.join("meta.json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    Ok(())
}

/// The benchmark's fixed settings (the LightGBM side mirrors them for GBDT); forests take the
/// search's forest defaults with the same tree count and bins.
fn bench_params(mode: TreeMode) -> TreeParams {
    if mode != TreeMode::Gbdt {
        return TreeParams {
            n_estimators: 100,
            max_bin: 255,
            early_stopping_rounds: 0,
            ..tree_defaults(mode)
        };
    }
    TreeParams {
        n_estimators: 100,
        learning_rate: 0.1,
        num_leaves: 31,
        max_bin: 255,
        min_child_samples: 20,
        subsample: 1.0,
        colsample_bytree: 1.0,
        early_stopping_rounds: 0,
        ..TreeParams::default()
    }
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let data = if args.synthetic {
        synthetic()
    } else {
        let (Some(train), Some(test), Some(target)) = (&args.train, &args.test, &args.target) else {
            return Err("need --synthetic or all of --train, --test, --target".into());
        };
        let name = args.name.clone().unwrap_or_else(|| {
            train
                .parent()
                .and_then(|p| p.file_name())
                .map_or("data".into(), |s| s.to_string_lossy().into_owned())
        });
        from_csv(train, test, target, name)?
    };
    let mut data = data;
    if let Some(n) = args.rows.filter(|&n| n < data.train.0.n_rows) {
        let keep: Vec<usize> = (0..n).collect();
        data.train = (data.train.0.select_rows(&keep), data.train.1.select_rows(&keep));
        data.name = format!("{}_first{n}", data.name);
    }
    if let Some(dir) = &args.dump {
        dump(dir, &data)?;
    }
    if args.dump_only {
        return Ok(());
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build()?;
    let mut params = bench_params(args.mode);
    params.num_leaves = args.num_leaves.unwrap_or(params.num_leaves);
    params.min_child_samples = args.min_child_samples.unwrap_or(params.min_child_samples);
    let metric = data.task.default_metric();
    let (tx, ty) = &data.train;
    let (vx, vy) = &data.test;
    let mut fits = Vec::with_capacity(args.repeat);
    let mut model = None;
    for _ in 0..args.repeat {
        let start = Instant::now();
        let m = pool.install(|| gbdt::fit(tx, ty, data.task, None, &params, args.seed, &mut |_, _| true))?;
        fits.push(start.elapsed().as_secs_f64());
        model = Some(m);
    }
    let model = model.ok_or("no fit")?;
    // Binning alone (included in fit_seconds), for the breakdown.
    let start = Instant::now();
    let bins = pool.install(|| gbdt::bench::Binned::new(tx, params.max_bin).total_bins());
    let bin_s = start.elapsed().as_secs_f64();
    if let Some(path) = &args.model_json {
        write_bytes(path, serde_json::to_string(&model)?.as_bytes())?;
    }
    let start = Instant::now();
    let pred: Predictions = pool.install(|| model.predict(vx));
    let predict_s = start.elapsed().as_secs_f64();
    let score = metric.score(vy, &pred);
    let fit_s = fits.iter().copied().fold(f64::INFINITY, f64::min);
    let line = serde_json::json!({
        "engine": "quarry",
        "mode": format!("{:?}", args.mode),
        "dataset": data.name,
        "task": data.task,
        "threads": args.threads,
        "n_train": tx.n_rows,
        "n_test": vx.n_rows,
        "n_features": tx.n_features(),
        "fit_seconds": fit_s,
        "fit_seconds_all": fits,
        "bin_seconds": bin_s,
        "total_bins": bins,
        "predict_seconds": predict_s,
        "metric": metric.name(),
        "score": score,
        "n_leaves": model.n_leaves(),
    });
    println!("{line}");
    Ok(())
}
