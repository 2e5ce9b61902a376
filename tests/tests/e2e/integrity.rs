//! What one request may not do to the coordinator (issue #23): a result carrying NaN may not
//! poison the event log, one oversized field may not stop it, and an upload may not fill the
//! disk or leave its temporary file behind. A raw gRPC client plays a misbehaving worker or
//! client against the real `quarry serve`; every wait polls under a deadline.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use quarry_proto::pb;
use quarry_proto::{PROTOCOL_VERSION, QuarryServiceClient, WorkerServiceClient};
use quarry_tests::cluster::{
    Proc, cluster_dir, free_port, read, serve, small_csv, status, submit, wait_completed, worker,
};
use tonic::Code;
use tonic::transport::Channel;

/// More than the file log's 64 MiB record limit once serialized.
const HUGE: usize = 70 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn worker_client(url: &str) -> WorkerServiceClient<Channel> {
    WorkerServiceClient::connect(url.to_string()).await.unwrap().max_decoding_message_size(256 << 20)
}

async fn register(w: &mut WorkerServiceClient<Channel>, name: String) -> Result<String, tonic::Status> {
    let info = pb::WorkerInfo {
        protocol_version: PROTOCOL_VERSION,
        name,
        slots: 1,
        names_running_leases: true,
        ..Default::default()
    };
    w.register(info).await.map(|r| r.into_inner().worker_id)
}

/// Long-polls until a task comes.
async fn lease(w: &mut WorkerServiceClient<Channel>, worker_id: &str) -> pb::Task {
    for _ in 0..10 {
        let req = pb::LeaseRequest {
            worker_id: worker_id.to_string(),
            max_tasks: 1,
            wait_ms: 5_000,
            ..Default::default()
        };
        if let Some(task) = w.lease(req).await.unwrap().into_inner().task {
            return task;
        }
    }
    panic!("no task within 50 s");
}

/// The shape a prepare task of [`small_csv`] reports.
fn small_shape() -> pb::DataShapeInfo {
    pb::DataShapeInfo {
        n_rows: 80,
        n_features: 2,
        n_classes: 0,
        task: "regression".into(),
        metric: "rmse".into(),
        n_folds: 5,
        families: vec!["linear".into()],
    }
}

fn assert_refused(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, field: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(s.message().contains(field), "the error does not name {field:?}: {}", s.message());
        }
        Ok(v) => panic!("accepted, expected {code:?} naming {field:?}: {v:?}"),
    }
}

/// A trial result with `fit_seconds = NaN` was taken and logged as `null`, and the restarted
/// coordinator refused to start on that record. Now NaN and infinite numbers are refused at
/// the wire (InvalidArgument naming the field); after kill -9 the coordinator replays its log
/// and a real worker finishes the job.
#[test]
fn a_nan_result_is_refused_and_the_coordinator_restarts() {
    let Some(tmp) = cluster_dir() else { return };
    let store = tmp.path().join("store");
    let store_args = ["--store", store.to_str().unwrap()];
    let grpc = format!("127.0.0.1:{}", free_port());
    let ttl = ["--lease-ttl", "2s"];
    let (mut server, url) = serve(&store_args, &grpc, &ttl, &tmp.path().join("serve1.log"));
    let data = tmp.path().join("small.csv");
    small_csv(&data);
    let job = submit(&url, &data, "y", &["--max-trials", "2", "--task", "regression", "--seed", "1"]);

    let rt = runtime();
    let (progress, nan_fit, inf_score) = rt.block_on(async {
        let mut w = worker_client(&url).await;
        let id = register(&mut w, "raw".into()).await.unwrap();
        let prepare = lease(&mut w, &id).await;
        assert!(matches!(prepare.kind, Some(pb::task::Kind::Prepare(_))), "{prepare:?}");
        let done = w
            .complete(pb::CompleteRequest {
                worker_id: id.clone(),
                fencing_token: prepare.fencing_token,
                result: Some(pb::complete_request::Result::Prepare(pb::PrepareResult {
                    shape: Some(small_shape()),
                })),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(done.accepted, "{done:?}");
        let trial = lease(&mut w, &id).await;
        let Some(pb::task::Kind::Trial(t)) = &trial.kind else { panic!("expected a trial: {trial:?}") };
        let trial_id = t.trial.as_ref().unwrap().trial_id;
        let progress = w
            .report_progress(pb::ProgressRequest {
                worker_id: id.clone(),
                fencing_token: trial.fencing_token,
                resource: 1,
                loss: f64::NAN,
            })
            .await;
        let complete = |score: Option<f64>, fit_seconds: f64| pb::CompleteRequest {
            worker_id: id.clone(),
            fencing_token: trial.fencing_token,
            result: Some(pb::complete_request::Result::Trial(pb::TrialOutcome {
                trial_id,
                status: pb::TrialStatus::Completed as i32,
                score,
                fit_seconds,
                ..Default::default()
            })),
            ..Default::default()
        };
        let nan_fit = w.complete(complete(Some(0.5), f64::NAN)).await.map(|r| r.into_inner());
        let inf_score = w.complete(complete(Some(f64::INFINITY), 0.1)).await.map(|r| r.into_inner());
        (progress, nan_fit, inf_score)
    });

    // kill -9, then a restart on the same store must replay every record it logged.
    server.kill();
    let (_server, url) = serve(&store_args, &grpc, &ttl, &tmp.path().join("serve2.log"));
    assert_eq!(status(&url, &job).map(|s| s.0), Some("running".to_string()));
    assert_refused(nan_fit, Code::InvalidArgument, "fit_seconds");
    assert_refused(inf_score, Code::InvalidArgument, "score");
    assert_refused(progress, Code::InvalidArgument, "loss");
    // It serves: the raw client's leases expire and a real worker runs the job to the end.
    let _worker = worker(&url, tmp.path(), 0, &[]);
    wait_completed(&url, &job);
}

/// `quarry serve` on a file store at `dir/store` with `--http` too: (process, gRPC URL, HTTP
/// address, store).
fn serve_http(dir: &Path, extra: &[&str]) -> (Proc, String, String, std::path::PathBuf) {
    let http = format!("127.0.0.1:{}", free_port());
    let store = dir.join("store");
    let args = [&["--http", http.as_str()][..], extra].concat();
    let (server, url) =
        serve(&["--store", store.to_str().unwrap()], "127.0.0.1:0", &args, &dir.join("serve.log"));
    (server, url, http, store)
}

/// A multipart/form-data body: text fields, then the file.
fn multipart(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "quarry-integrity-boundary";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n").as_bytes(),
        );
        body.extend(v.as_bytes());
        body.extend(b"\r\n");
    }
    body.extend(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.csv\"\r\nContent-Type: text/csv\r\n\r\n")
            .as_bytes(),
    );
    body.extend(file);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut resp = agent.post(url).header("Content-Type", content_type).send(body).unwrap();
    (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default())
}

/// One field over the log's record limit (a 70 MB target, worker name or failure reason) made
/// the log thread stop for good: every later change answered Unavailable. Now the oversized
/// request alone is refused (InvalidArgument / 400 naming the field; a failure reason is cut
/// short instead) and the next normal job completes.
#[test]
fn an_oversized_field_is_refused_and_the_next_job_completes() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url, http, _store) = serve_http(tmp.path(), &[]);
    let data = tmp.path().join("small.csv");
    small_csv(&data);
    let csv = std::fs::read(&data).unwrap();
    let huge = "y".repeat(HUGE);

    let rt = runtime();
    rt.block_on(async {
        let mut q = QuarryServiceClient::connect(url.clone()).await.unwrap();
        let chunk = pb::Chunk { data: csv.clone(), name: "small.csv".into() };
        let dataset = q.upload_dataset(tokio_stream::iter([chunk])).await.unwrap().into_inner();
        let spec = pb::JobSpec {
            dataset_hash: dataset.hash,
            file_name: "small.csv".into(),
            target: huge.clone(),
            max_trials: Some(1),
            ..Default::default()
        };
        assert_refused(q.create_job(spec).await, Code::InvalidArgument, "target");
        let mut w = worker_client(&url).await;
        assert_refused(register(&mut w, huge.clone()).await, Code::InvalidArgument, "name");
    });
    let (ct, body) = multipart(&[("target", &huge)], &csv);
    let (code, text) = post(&format!("http://{http}/api/jobs"), &ct, &body);
    assert_eq!(code, 400, "{}", &text[..text.len().min(300)]);
    assert!(text.contains("target"), "{}", &text[..text.len().min(300)]);

    // Still taking changes: a normal job, whose prepare task a raw worker fails with a huge
    // reason (kept, cut short), then runs to the end on a real worker.
    let job = submit(&url, &data, "y", &["--max-trials", "2", "--task", "regression", "--seed", "1"]);
    rt.block_on(async {
        let mut w = worker_client(&url).await;
        let id = register(&mut w, "raw".into()).await.unwrap();
        let task = lease(&mut w, &id).await;
        let failed = w
            .fail(pb::FailRequest { worker_id: id, fencing_token: task.fencing_token, reason: huge.clone() })
            .await
            .unwrap()
            .into_inner();
        assert!(failed.accepted, "{failed:?}");
    });
    let _worker = worker(&url, tmp.path(), 0, &[]);
    wait_completed(&url, &job);
    let log = read(&tmp.path().join("serve.log"));
    assert!(!log.contains("stops accepting changes"), "the log thread stopped:\n{log}");
}

fn temp_files(store: &Path) -> Vec<String> {
    std::fs::read_dir(store.join("blobs").join("tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// `PutBlob` is capped (`--max-blob`): a larger upload is refused with ResourceExhausted
/// naming the flag, and nothing of it stays on disk; a smaller one is stored. A dataset upload
/// over HTTP that is cut off by `--max-upload` part way (a chunked body, no declared length)
/// leaves no temporary file either.
#[test]
fn uploads_over_their_cap_are_refused_and_leave_no_temp_file() {
    let Some(tmp) = cluster_dir() else { return };
    let (_server, url, http, store) =
        serve_http(tmp.path(), &["--max-blob", "100000", "--max-upload", "100000"]);
    let rt = runtime();
    rt.block_on(async {
        let mut w = worker_client(&url).await;
        let chunks = (0..4).map(|i| pb::Chunk { data: vec![i as u8; 40_000], name: String::new() });
        let r = w.put_blob(tokio_stream::iter(chunks.collect::<Vec<_>>())).await;
        assert_refused(r, Code::ResourceExhausted, "--max-blob");
        let small = pb::Chunk { data: vec![7; 1000], name: String::new() };
        let blob = w.put_blob(tokio_stream::iter([small])).await.unwrap().into_inner();
        assert_eq!(blob.size, 1000);
        assert!(store.join("blobs").join(&blob.hash).is_file());
    });
    assert_eq!(temp_files(&store), Vec::<String>::new());

    // A chunked multipart upload that passes --max-upload once its file part has begun.
    let mut con = std::net::TcpStream::connect(&http).unwrap();
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (ct, body) = multipart(&[("target", "y")], &vec![b'1'; 300_000]);
    write!(con, "POST /api/jobs HTTP/1.1\r\nHost: {http}\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    for piece in body.chunks(16 * 1024) {
        if write!(con, "{:x}\r\n", piece.len())
            .and_then(|()| con.write_all(piece))
            .and_then(|()| con.write_all(b"\r\n"))
            .is_err()
        {
            break; // the server answered and closed early
        }
    }
    let _ = con.write_all(b"0\r\n\r\n");
    let mut answer = String::new();
    let _ = con.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(temp_files(&store), Vec::<String>::new());
}
