//! Restart time of `quarry serve` after a long history (bench/RESULTS.md): synthesizes
//! `EVENTS` realistic events through the state machine's own API (jobs of 100 trials run by 8
//! workers, each result with three artifacts, one lease in 20 expiring and retried, jobs
//! finishing and new ones submitted), writes them to the log as the server does (group
//! commits, a snapshot every `--snapshot-every` events), then times `Server::start` on the
//! store: open the log, load the snapshot, replay the tail, ready to serve. Also times the
//! full replay of the same history without snapshots.
//!
//! cargo run --release -p quarry-coordinator --example restart_bench -- [file|redis://HOST:PORT/] [EVENTS] [SNAPSHOT_EVERY]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use quarry_coordinator::blobs::BlobStore;
use quarry_coordinator::grpc::Server;
use quarry_coordinator::redis_log::RedisLog;
use quarry_coordinator::state::{Artifact, Coordinator, JobSpec, LeasedKind, Now, PreparedShape, TaskResult};
use quarry_coordinator::{EventLog, FileLog, TrialOutcome};
use quarry_search::{TrialId, TrialStatus};

const TTL: Duration = Duration::from_secs(15);

fn open(kind: &str, dir: &std::path::Path, name: &str) -> Box<dyn EventLog> {
    if kind.starts_with("redis://") {
        Box::new(RedisLog::open(kind, name).unwrap())
    } else {
        Box::new(FileLog::open(&dir.join(name).join("events.log")).unwrap())
    }
}

/// Writes `events` synthesized events to `logs` (each gets every batch; `every`: snapshot
/// period per log, 0 for none).
fn synthesize(events: u64, logs: &mut [(Box<dyn EventLog>, u64)]) -> (u64, u64) {
    let start = Now::system();
    let mut c = Coordinator::new(TTL);
    let workers: Vec<String> = (0..8).map(|i| c.register(&format!("bench{i}"), 0, 1, start)).collect();
    let shape = PreparedShape {
        n_rows: 10_000,
        n_features: 20,
        n_classes: 2,
        task: "binary".into(),
        metric: "roc_auc".into(),
        n_folds: 3,
        families: ["gbdt", "random_forest", "extra_trees", "linear", "knn", "naive_bayes"]
            .map(String::from)
            .to_vec(),
    };
    let spec = |k: u64| JobSpec {
        dataset_hash: format!("{k:064x}"),
        file_name: "bench.csv".into(),
        target: "y".into(),
        max_trials: Some(100),
        seed: k,
        ..JobSpec::default()
    };
    for _ in 0..4 {
        c.create_job(spec(c.jobs().count() as u64), start).unwrap();
    }
    for l in logs.iter_mut() {
        l.0.recover().unwrap();
    }
    let (mut written, mut last_snap) = (0u64, vec![0u64; logs.len()]);
    let mut trials = 0u64;
    let mut step = 0u64;
    while written < events {
        step += 1;
        let now = start.plus_ms(step);
        let w = &workers[(step % 8) as usize];
        match c.lease_task(w, now).unwrap() {
            None => {
                c.create_job(spec(c.jobs().count() as u64), now).unwrap();
            }
            Some(task) if step.is_multiple_of(20) => {
                // Expires and is retried.
                c.fail(task.token, "lease expired", now).unwrap();
            }
            Some(task) => {
                let result = match task.kind {
                    LeasedKind::Prepare => TaskResult::Prepare(shape.clone()),
                    LeasedKind::Trial { spec, .. } => {
                        trials += 1;
                        let id = spec.id.0;
                        let noise = ((id * 7919 + step) % 1000) as f64 / 1000.0;
                        TaskResult::Trial(TrialOutcome {
                            id: TrialId(id),
                            status: if id % 50 == 7 { TrialStatus::Failed } else { TrialStatus::Completed },
                            score: Some(0.80 + 0.1 * noise),
                            fit_seconds: 0.1 + noise,
                            rounds: Some(100),
                            failure_reason: None,
                        })
                    }
                    LeasedKind::Finalize(_) => TaskResult::Finalize,
                };
                let artifacts = ["oof.bin", "fold0.json", "fold1.json"]
                    .iter()
                    .map(|n| Artifact {
                        name: (*n).into(),
                        hash: format!("{:064x}", step * 3 + n.len() as u64),
                        size: 4096,
                    })
                    .collect();
                c.complete(task.token, result, artifacts, now).unwrap();
            }
        }
        let _ = c.take_garbage();
        let batch: Vec<Vec<u8>> = c.take_pending().iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
        if batch.is_empty() {
            continue;
        }
        written += batch.len() as u64;
        for (k, (log, every)) in logs.iter_mut().enumerate() {
            log.append_batch(&batch).unwrap();
            if *every > 0 && written >= last_snap[k] + *every {
                // What the server does: the copy under the lock, then encode + write in the
                // log thread (appends wait meanwhile).
                let t = Instant::now();
                let snapshot = c.snapshot().unwrap();
                let taken = t.elapsed();
                let state = snapshot.encode();
                log.write_snapshot(written, &state).unwrap();
                eprintln!(
                    "snapshot at {written}: {:.1} MB, taken in {:.1} ms under the lock, encoded and written in {:.0} ms",
                    state.len() as f64 / 1e6,
                    taken.as_secs_f64() * 1e3,
                    (t.elapsed() - taken).as_secs_f64() * 1e3
                );
                last_snap[k] = written;
            }
        }
    }
    (written, trials)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).cloned().unwrap_or_else(|| "file".into());
    let events: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let every: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let tag = std::process::id();
    let (snap_name, full_name) = (format!("bench-snap-{tag}"), format!("bench-full-{tag}"));
    let t = Instant::now();
    let mut logs =
        vec![(open(&kind, dir.path(), &snap_name), every), (open(&kind, dir.path(), &full_name), 0)];
    let (written, trials) = synthesize(events, &mut logs);
    drop(logs);
    eprintln!("{kind}: wrote {written} events ({trials} trials) in {:.1} s", t.elapsed().as_secs_f64());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut dumps = Vec::new();
    for (name, label) in [(&snap_name, format!("snapshot every {every}")), (&full_name, "no snapshot".into())]
    {
        let blobs = BlobStore::open(&dir.path().join("blobs")).unwrap();
        let log = open(&kind, dir.path(), name);
        let t = Instant::now();
        let server = runtime.block_on(async { Server::start(log, blobs, TTL) }).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let jobs = server.read(|c| c.jobs().count());
        println!("{kind}\t{label}\t{written} events\t{jobs} jobs\tstart {secs:.2} s");
        dumps.push(server.read(|c| c.dump()));
    }
    assert!(dumps[0] == dumps[1], "the snapshot's restart differs from the full replay");
    println!("same state either way ({} bytes dumped)", dumps[0].len());
    if kind.starts_with("redis://") {
        let mut con = redis::Client::open(kind.as_str()).unwrap().get_connection().unwrap();
        for name in [&snap_name, &full_name] {
            for key in ["events", "snapshot", "epoch"] {
                let _: Result<(), _> = redis::cmd("DEL").arg(format!("quarry:{name}:{key}")).query(&mut con);
            }
        }
    }
}
