//! Render time of the dashboard's job page for a job with many trials (bench/RESULTS.md).
//!
//! Synthesizes a job through the state machine's own API (register, create, prepare, then
//! lease and complete N trials with made-up scores), replays the events into a `Server`,
//! serves the dashboard, and times GETs of the job page and the API over loopback.
//!
//! `cargo run --release -p quarry-coordinator --example dashboard_bench -- [N] [--hold SECS]`
//! (`--hold` keeps serving afterwards, e.g. for timing a browser against the printed URL).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use quarry_coordinator::blobs::BlobStore;
use quarry_coordinator::grpc::Server;
use quarry_coordinator::state::{Coordinator, JobSpec, LeasedKind, Now, PreparedShape, TaskResult};
use quarry_coordinator::{EventLog, MemoryLog, TrialOutcome};
use quarry_search::{TrialId, TrialStatus};

fn synthesize(n: u64) -> Vec<Vec<u8>> {
    let now = Now::system();
    let mut c = Coordinator::new(Duration::from_secs(3600));
    let w = c.register("bench", 0, 1, now);
    let spec = JobSpec {
        dataset_hash: "0".repeat(64),
        file_name: "bench.csv".into(),
        target: "y".into(),
        max_trials: Some(n),
        ..JobSpec::default()
    };
    let job = c.create_job(spec, now).unwrap_or_default();
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
    let mut done = 0;
    while let Ok(Some(task)) = c.lease_task(&w, now) {
        let result = match task.kind {
            LeasedKind::Prepare => TaskResult::Prepare(shape.clone()),
            LeasedKind::Trial { spec, .. } => {
                done += 1;
                let id = spec.id.0;
                // A made-up score: noisy, slowly improving.
                let noise = ((id * 7919) % 1000) as f64 / 1000.0;
                TaskResult::Trial(TrialOutcome {
                    id: TrialId(id),
                    status: if id % 50 == 7 { TrialStatus::Failed } else { TrialStatus::Completed },
                    score: Some(0.80 + 0.05 * noise + 0.05 * (id as f64 / n as f64)),
                    fit_seconds: 0.1 + noise,
                    rounds: None,
                    failure_reason: None,
                })
            }
            LeasedKind::Finalize(_) => break,
        };
        if c.complete(task.token, result, Vec::new(), now).is_err() {
            break;
        }
    }
    eprintln!("synthesized {done} trials of {job}");
    c.take_pending().iter().filter_map(|e| serde_json::to_vec(e).ok()).collect()
}

/// One HTTP/1.1 GET over loopback: (status line, body bytes, seconds).
fn get(addr: std::net::SocketAddr, path: &str) -> (String, usize, f64) {
    let t = Instant::now();
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return ("connect failed".into(), 0, 0.0) };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&buf);
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    (status, body, secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let hold: u64 = args
        .iter()
        .position(|a| a == "--hold")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let records = synthesize(n);
    let dir = std::env::temp_dir().join(format!("quarry-dashboard-bench-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async move {
        let mut log = MemoryLog::default();
        let _ = log.append_batch(&records);
        let blobs = BlobStore::open(&dir.join("blobs")).unwrap_or_else(|e| panic!("blobs: {e}"));
        let t = Instant::now();
        let server =
            Server::start(Box::new(log), blobs, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("replayed {} events in {:.3}s", records.len(), t.elapsed().as_secs_f64());
        let router = quarry_coordinator::http::router(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        println!("listening http={addr}");
        tokio::spawn(quarry_coordinator::http::serve(listener, router, std::future::pending()));
        let result = tokio::task::spawn_blocking(move || {
            println!("| request | status | body bytes | median ms (20 runs) |");
            println!("|---|---|---|---|");
            for path in ["/jobs/job-1", "/api/jobs/job-1/leaderboard", "/api/jobs", "/jobs/job-1/trials/1000"]
            {
                let _ = get(addr, path);
                let runs: Vec<(String, usize, f64)> = (0..20).map(|_| get(addr, path)).collect();
                let (status, bytes) = (runs[0].0.clone(), runs[0].1);
                let ms = median(runs.iter().map(|r| r.2 * 1e3).collect());
                println!("| GET {path} | {status} | {bytes} | {ms:.2} |");
            }
        })
        .await;
        if let Err(e) = result {
            eprintln!("bench thread: {e}");
        }
        if hold > 0 {
            tokio::time::sleep(Duration::from_secs(hold)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
