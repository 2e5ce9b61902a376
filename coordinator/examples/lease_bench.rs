//! Lease + report + complete round trips per second over real gRPC on loopback, with no-op
//! trials, at several numbers of simulated workers; then the coordinator's memory after a
//! 100,000-trial job.
//!
//! cargo run --release -p quarry-coordinator --example lease_bench -- [file|memory|redis://HOST:PORT/] [TRIALS_PER_RUN] [TOTAL_TRIALS]
//!
//! Each run is done twice: with a separate `Lease` call per task (what `quarry worker` does),
//! and with the next lease piggybacked on `Complete` (`lease_next`: one call and one log write
//! fewer per task). Either way every reply waits for its events to be durable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quarry_coordinator::blobs::BlobStore;
use quarry_coordinator::grpc::{Auth, Server, serve};
use quarry_coordinator::redis_log::RedisLog;
use quarry_coordinator::{EventLog, FileLog, MemoryLog};
use quarry_proto::pb;
use quarry_proto::pb::quarry_service_client::QuarryServiceClient;
use quarry_proto::pb::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn start(kind: &str, dir: &std::path::Path) -> Channel {
    let log: Box<dyn EventLog> = match kind {
        "memory" => Box::<MemoryLog>::default(),
        url if url.starts_with("redis://") => {
            // A fresh stream per bench run.
            let name = format!("bench-{}", std::process::id());
            Box::new(RedisLog::open(url, &name).unwrap())
        }
        _ => Box::new(FileLog::open(&dir.join("events.log")).unwrap()),
    };
    let blobs = BlobStore::open(&dir.join("blobs")).unwrap();
    let server = Server::start(log, blobs, Duration::from_secs(30)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(server, Auth::new(None), listener, std::future::pending()));
    Channel::from_shared(format!("http://{addr}")).unwrap().tcp_nodelay(true).connect().await.unwrap()
}

/// Creates a budgeted job (no determinism window, so every worker can be busy) of `trials`
/// no-op trials and completes its prepare task.
async fn job(ch: &Channel, trials: u64) -> String {
    let mut q = QuarryServiceClient::new(ch.clone());
    let data = tokio_stream::iter(vec![pb::Chunk { data: b"x,y\n1,0\n".to_vec(), name: "d.csv".into() }]);
    let hash = q.upload_dataset(data).await.unwrap().into_inner().hash;
    let spec = pb::JobSpec {
        dataset_hash: hash,
        file_name: "d.csv".into(),
        target: "y".into(),
        seed: 1,
        budget_ms: Some(3_600_000),
        max_trials: Some(trials),
        ..Default::default()
    };
    let id = q.create_job(spec).await.unwrap().into_inner().id;
    let mut w = worker_client(ch);
    let wid = register(&mut w).await;
    let t = w
        .lease(pb::LeaseRequest {
            worker_id: wid.clone(),
            max_tasks: 1,
            wait_ms: 1000,
            running_tokens: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let task = t.task.expect("the prepare task");
    let shape = pb::DataShapeInfo {
        n_rows: 1000,
        n_features: 10,
        n_classes: 2,
        task: "binary".into(),
        metric: "roc_auc".into(),
        n_folds: 5,
        families: vec!["gbdt".into(), "linear".into(), "random_forest".into()],
    };
    let done = w
        .complete(pb::CompleteRequest {
            worker_id: wid,
            fencing_token: task.fencing_token,
            result: Some(pb::complete_request::Result::Prepare(pb::PrepareResult { shape: Some(shape) })),
            artifacts: vec![],
            lease_next: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.accepted);
    id
}

fn worker_client(ch: &Channel) -> WorkerServiceClient<Channel> {
    WorkerServiceClient::new(ch.clone())
        .max_decoding_message_size(quarry_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(quarry_proto::MAX_MESSAGE_BYTES)
}

async fn register(w: &mut WorkerServiceClient<Channel>) -> String {
    let info = pb::WorkerInfo {
        protocol_version: quarry_proto::PROTOCOL_VERSION,
        name: "bench".into(),
        cores: 1,
        slots: 1,
        names_running_leases: true,
        ..Default::default()
    };
    w.register(info).await.unwrap().into_inner().worker_id
}

/// One simulated worker: lease, one progress report, complete, until no trial comes; then
/// completes the job's finalize task if it gets it. `piggyback`: the next lease rides on
/// `Complete`. Returns the trials it completed.
async fn worker(ch: Channel, done: Arc<AtomicU64>, piggyback: bool) {
    let mut w = worker_client(&ch);
    let wid = register(&mut w).await;
    let lease = |mut w: WorkerServiceClient<Channel>, wid: String| async move {
        w.lease(pb::LeaseRequest { worker_id: wid, max_tasks: 1, wait_ms: 300, running_tokens: vec![] })
            .await
            .unwrap()
            .into_inner()
            .task
    };
    let mut next = lease(w.clone(), wid.clone()).await;
    while let Some(task) = next.take() {
        let result = match task.kind {
            Some(pb::task::Kind::Trial(trial)) => {
                let spec = trial.trial.unwrap();
                w.report_progress(pb::ProgressRequest {
                    worker_id: wid.clone(),
                    fencing_token: task.fencing_token,
                    resource: 1,
                    loss: 0.4,
                })
                .await
                .unwrap();
                pb::complete_request::Result::Trial(pb::TrialOutcome {
                    trial_id: spec.trial_id,
                    status: pb::TrialStatus::Completed as i32,
                    score: Some(0.5 + (spec.trial_id % 100) as f64 / 1000.0),
                    fit_seconds: 0.001,
                    rounds: None,
                    failure_reason: None,
                })
            }
            // The finalize task carries the whole leaderboard (20 MB at 100,000 trials).
            Some(pb::task::Kind::Finalize(f)) => {
                let entries = f.leaderboard.map_or(0, |l| l.entries.len());
                assert!(entries > 0);
                pb::complete_request::Result::Finalize(pb::FinalizeResult {})
            }
            _ => return,
        };
        let is_trial = matches!(result, pb::complete_request::Result::Trial(_));
        let r = w
            .complete(pb::CompleteRequest {
                worker_id: wid.clone(),
                fencing_token: task.fencing_token,
                result: Some(result),
                artifacts: vec![],
                lease_next: piggyback,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.accepted, "{}", r.message);
        if is_trial {
            done.fetch_add(1, Ordering::Relaxed);
        }
        next = if piggyback && r.next.is_some() { r.next } else { lease(w.clone(), wid.clone()).await };
    }
}

async fn run(ch: &Channel, workers: usize, trials: u64, piggyback: bool) -> (f64, f64) {
    let id = job(ch, trials).await;
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> =
        (0..workers).map(|_| tokio::spawn(worker(ch.clone(), done.clone(), piggyback))).collect();
    for h in handles {
        h.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let mut q = QuarryServiceClient::new(ch.clone());
    let info = q.get_job(pb::JobId { id }).await.unwrap().into_inner();
    assert_eq!(info.trials_finished, trials);
    assert_eq!(info.state, pb::JobState::Completed as i32, "the finalize task ran");
    (n as f64 / secs, secs)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).cloned().unwrap_or_else(|| "file".into());
    let per_run: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5_000);
    let total: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let ch = start(&kind, dir.path()).await;
    println!("log: {kind}; {per_run} no-op trials per run (lease + 1 progress report + complete)");
    for piggyback in [false, true] {
        let mode = if piggyback { "lease piggybacked on Complete" } else { "separate Lease call" };
        for workers in [1usize, 8, 64] {
            // One worker is latency-bound: a tenth of the trials tell its rate as well.
            let n = if workers == 1 { (per_run / 10).max(100) } else { per_run };
            let (rate, secs) = run(&ch, workers, n, piggyback).await;
            println!("{mode}: workers {workers:>3}: {rate:>8.0} round trips/s ({n} in {secs:.2} s)");
        }
    }
    let before = rss_mib();
    let (rate, secs) = run(&ch, 64, total, true).await;
    println!(
        "{total} trials in one job (64 workers, piggybacked): {rate:.0}/s in {secs:.1} s; process RSS {:.1} MiB (was {before:.1} MiB before that job)",
        rss_mib()
    );
}
