//! Snapshots, rotation and retention through the real server: a job run over gRPC on a file
//! store that snapshots every few events, restarted from what is on disk, then retired.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quarry_coordinator::FileLog;
use quarry_coordinator::blobs::BlobStore;
use quarry_coordinator::grpc::{Auth, Server, serve};
use quarry_coordinator::state::{JobSpec, JobState};
use quarry_proto::{PROTOCOL_VERSION, WorkerServiceClient, pb};
use tonic::transport::Channel;

/// Long enough that no lease expires while the test runs (the reaper ticks every TTL / 4).
const TTL: Duration = Duration::from_secs(10);

async fn start(store: &Path) -> (Server, WorkerServiceClient<Channel>) {
    let blobs = BlobStore::open(&store.join("blobs")).unwrap();
    let log = FileLog::open(&store.join("events.log")).unwrap();
    let server = Server::start(Box::new(log), blobs, TTL).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(server.clone(), Auth::new(None), listener, std::future::pending()));
    let client = WorkerServiceClient::connect(format!("http://{addr}")).await.unwrap();
    (server, client)
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn register(w: &mut WorkerServiceClient<Channel>) -> String {
    let info = pb::WorkerInfo {
        protocol_version: PROTOCOL_VERSION,
        name: "w".into(),
        slots: 1,
        names_running_leases: true,
        ..Default::default()
    };
    w.register(info).await.unwrap().into_inner().worker_id
}

/// What a prepare task reports: a small binary job searching `families`.
fn shape(families: &[&str]) -> pb::DataShapeInfo {
    pb::DataShapeInfo {
        n_rows: 100,
        n_features: 3,
        n_classes: 2,
        task: "binary".into(),
        metric: "roc_auc".into(),
        n_folds: 3,
        families: families.iter().map(|f| f.to_string()).collect(),
    }
}

/// Runs the job's tasks to the end, each result with an artifact of its own bytes; returns
/// the blob paths of (trial artifacts, final artifact).
async fn run_job(
    server: &Server,
    w: &mut WorkerServiceClient<Channel>,
    worker: &str,
) -> (Vec<PathBuf>, PathBuf) {
    let mut trial_blobs = Vec::new();
    loop {
        let lease =
            pb::LeaseRequest { worker_id: worker.into(), max_tasks: 1, wait_ms: 0, running_tokens: vec![] };
        let Some(task) = w.lease(lease).await.unwrap().into_inner().task else { panic!("no task left") };
        let (hash, _) =
            server.blobs().put(format!("artifact of {}", task.fencing_token).as_bytes()).await.unwrap();
        let path = server.blobs().path(&hash).unwrap();
        let artifacts = vec![pb::ArtifactInfo { name: "oof".into(), hash, size: 1 }];
        let (result, done) = match task.kind.unwrap() {
            pb::task::Kind::Prepare(_) => {
                let shape = shape(&["gbdt", "linear"]);
                (pb::complete_request::Result::Prepare(pb::PrepareResult { shape: Some(shape) }), false)
            }
            pb::task::Kind::Trial(t) => {
                trial_blobs.push(path.clone());
                let id = t.trial.unwrap().trial_id;
                let outcome = pb::TrialOutcome {
                    trial_id: id,
                    status: pb::TrialStatus::Completed as i32,
                    score: Some(0.7 + id as f64 / 100.0),
                    fit_seconds: 0.5,
                    rounds: None,
                    failure_reason: None,
                };
                (pb::complete_request::Result::Trial(outcome), false)
            }
            pb::task::Kind::Finalize(_) => {
                (pb::complete_request::Result::Finalize(pb::FinalizeResult {}), true)
            }
        };
        let complete = pb::CompleteRequest {
            worker_id: worker.into(),
            fencing_token: task.fencing_token,
            result: Some(result),
            artifacts,
            lease_next: false,
        };
        assert!(w.complete(complete).await.unwrap().into_inner().accepted);
        if done {
            return (trial_blobs, path);
        }
    }
}

async fn poll(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_restart_from_a_snapshot_keeps_every_job_and_retirement_deletes_only_trial_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let (dump, final_blob, trial_blobs) = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt.block_on(async {
            let (server, mut w) = start(store).await;
            server.set_retain_finished(None);
            server.set_snapshot_every(7);
            let worker = register(&mut w).await;
            let (data, _) = server.blobs().put(b"a,y\n1,0\n").await.unwrap();
            let spec = |seed| JobSpec {
                dataset_hash: data.clone(),
                file_name: "d.csv".into(),
                target: "y".into(),
                max_trials: Some(4),
                seed,
                ..JobSpec::default()
            };
            server.create_job(spec(1)).await.unwrap();
            let (trial_blobs, final_blob) = run_job(&server, &mut w, &worker).await;
            // A second job left running (prepared, a trial leased): its events are in the
            // snapshot and replayed.
            server.create_job(spec(2)).await.unwrap();
            for _ in 0..2 {
                let lease = pb::LeaseRequest {
                    worker_id: worker.clone(),
                    max_tasks: 1,
                    wait_ms: 0,
                    running_tokens: vec![],
                };
                let task = w.lease(lease).await.unwrap().into_inner().task.unwrap();
                if let Some(pb::task::Kind::Prepare(_)) = task.kind {
                    let shape = shape(&["gbdt"]);
                    let complete = pb::CompleteRequest {
                        worker_id: worker.clone(),
                        fencing_token: task.fencing_token,
                        result: Some(pb::complete_request::Result::Prepare(pb::PrepareResult {
                            shape: Some(shape),
                        })),
                        artifacts: vec![],
                        lease_next: false,
                    };
                    w.complete(complete).await.unwrap();
                }
            }
            // No snapshot after this; a last change, once durable, means every snapshot sent
            // before it was written (the log thread takes them in order).
            server.set_snapshot_every(0);
            register(&mut w).await;
            (server.read(|c| c.dump()), final_blob, trial_blobs)
        });
        rt.shutdown_timeout(Duration::from_secs(5));
        out
    };
    let names = files(store);
    assert!(names.contains(&"events.snapshot".to_string()), "{names:?}");
    assert!(
        !names.contains(&"events.log".to_string()),
        "the first segment was covered and deleted: {names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("events.log.")), "{names:?}");
    assert!(trial_blobs.iter().all(|p| p.is_file()) && final_blob.is_file());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (server, _w) = start(store).await;
        // Every open lease gets a fresh TTL at replay, as before; the dump holds no instants.
        assert_eq!(server.read(|c| c.dump()), dump);
        let states: Vec<JobState> = server.read(|c| c.jobs().map(|j| j.state).collect());
        assert_eq!(states, [JobState::Completed, JobState::Running]);
        // Retire at once: the trials' blobs go once the eviction is durable; the model and
        // the dataset stay, and so does the leaderboard.
        server.set_retain_finished(Some(Duration::ZERO));
        poll("the retired job's trial blobs are deleted", || trial_blobs.iter().all(|p| !p.exists())).await;
        assert!(final_blob.is_file());
        let job = server.read(|c| {
            let j = c.jobs().next().unwrap();
            (j.retired_ms.is_some(), j.leaderboard().len(), j.spec.dataset_hash.clone())
        });
        assert_eq!((job.0, job.1), (true, 4));
        assert!(server.blobs().contains(&job.2));
    });
}

/// A file log whose appends wait while its gate is shut: the records handed to it are then
/// applied in memory but not durable.
struct GatedLog {
    inner: FileLog,
    shut: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl quarry_coordinator::log::EventLog for GatedLog {
    fn append_batch(&mut self, records: &[Vec<u8>]) -> Result<u64, quarry_coordinator::log::LogError> {
        let (lock, opened) = &*self.shut;
        let mut shut = lock.lock().unwrap();
        while *shut {
            shut = opened.wait(shut).unwrap();
        }
        drop(shut);
        self.inner.append_batch(records)
    }

    fn replay(&mut self) -> Result<Vec<Vec<u8>>, quarry_coordinator::log::LogError> {
        self.inner.replay()
    }
}

/// An evicted blob is deleted only once its eviction event is durable: while the log cannot
/// write, a retired job's trial blobs stay on disk (a crash then replays a state that still
/// names them); once the write goes through, they are deleted.
#[test]
fn evicted_blobs_are_deleted_only_once_their_eviction_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let shut = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let blobs = BlobStore::open(&store.join("blobs")).unwrap();
        let log = GatedLog { inner: FileLog::open(&store.join("events.log")).unwrap(), shut: shut.clone() };
        let server = Server::start(Box::new(log), blobs, TTL).unwrap();
        server.set_retain_finished(None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(server.clone(), Auth::new(None), listener, std::future::pending()));
        let mut w = WorkerServiceClient::connect(format!("http://{addr}")).await.unwrap();
        let worker = register(&mut w).await;
        let (data, _) = server.blobs().put(b"a,y\n1,0\n").await.unwrap();
        let spec = JobSpec {
            dataset_hash: data,
            file_name: "d.csv".into(),
            target: "y".into(),
            max_trials: Some(3),
            seed: 1,
            ..JobSpec::default()
        };
        server.create_job(spec).await.unwrap();
        let (trial_blobs, _) = run_job(&server, &mut w, &worker).await;
        assert!(!trial_blobs.is_empty() && trial_blobs.iter().all(|p| p.is_file()));

        *shut.0.lock().unwrap() = true;
        server.set_retain_finished(Some(Duration::ZERO));
        let retired = || server.read(|c| c.jobs().next().is_some_and(|j| j.retired_ms.is_some()));
        poll("the job is retired in memory", retired).await;
        // Applied, not durable: for half a second (deletion follows the eviction at once when
        // it does not wait for the log), every blob stays.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            assert!(
                trial_blobs.iter().all(|p| p.is_file()),
                "a blob was deleted before its eviction was durable"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        *shut.0.lock().unwrap() = false;
        shut.1.notify_all();
        poll("the trial blobs are deleted once the eviction is durable", || {
            trial_blobs.iter().all(|p| !p.exists())
        })
        .await;
    });
}
