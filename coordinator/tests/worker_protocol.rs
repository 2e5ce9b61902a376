//! The worker protocol over real gRPC (issue #23): a worker that does not name its running
//! leases is refused at registration, and results, failures and progress on a lease are
//! accepted only from the worker that holds it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use quarry_coordinator::MemoryLog;
use quarry_coordinator::blobs::BlobStore;
use quarry_coordinator::grpc::{Auth, Server, serve};
use quarry_coordinator::state::JobSpec;
use quarry_proto::{PROTOCOL_VERSION, WorkerServiceClient, pb};
use tonic::Code;
use tonic::transport::Channel;

async fn start(dir: &std::path::Path) -> (Server, WorkerServiceClient<Channel>) {
    let blobs = BlobStore::open(&dir.join("blobs")).unwrap();
    let server = Server::start(Box::new(MemoryLog::default()), blobs, Duration::from_secs(10)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(server.clone(), Auth::new(None), listener, std::future::pending()));
    let client = WorkerServiceClient::connect(format!("http://{addr}")).await.unwrap();
    (server, client)
}

fn info(name: &str, names_running_leases: bool) -> pb::WorkerInfo {
    pb::WorkerInfo {
        protocol_version: PROTOCOL_VERSION,
        name: name.into(),
        slots: 1,
        names_running_leases,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_workers_are_refused_and_only_a_leases_holder_may_answer_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut w) = start(dir.path()).await;

    let old = w.register(info("old", false)).await.unwrap_err();
    assert_eq!(old.code(), Code::FailedPrecondition);
    assert!(old.message().contains("upgrade the worker"), "{}", old.message());

    let holder = w.register(info("holder", true)).await.unwrap().into_inner().worker_id;
    let intruder = w.register(info("intruder", true)).await.unwrap().into_inner().worker_id;
    let mut blob = server.blobs().writer().await.unwrap();
    blob.write(b"a,y\n1,2\n").await.unwrap();
    let (hash, _) = blob.finish().await.unwrap();
    let spec = JobSpec {
        dataset_hash: hash,
        file_name: "d.csv".into(),
        target: "y".into(),
        max_trials: Some(2),
        ..JobSpec::default()
    };
    server.create_job(spec).await.unwrap();
    let lease =
        pb::LeaseRequest { worker_id: holder.clone(), max_tasks: 1, wait_ms: 0, running_tokens: vec![] };
    let task = w.lease(lease).await.unwrap().into_inner().task.unwrap();
    let token = task.fencing_token;

    let fail = pb::FailRequest { worker_id: intruder.clone(), fencing_token: token, reason: "x".into() };
    assert_eq!(w.fail(fail).await.unwrap_err().code(), Code::PermissionDenied);
    let complete = pb::CompleteRequest {
        worker_id: intruder.clone(),
        fencing_token: token,
        result: Some(pb::complete_request::Result::Finalize(pb::FinalizeResult {})),
        artifacts: vec![],
        lease_next: false,
    };
    assert_eq!(w.complete(complete).await.unwrap_err().code(), Code::PermissionDenied);
    let progress = pb::ProgressRequest { worker_id: intruder, fencing_token: token, resource: 1, loss: 0.5 };
    assert_eq!(w.report_progress(progress).await.unwrap_err().code(), Code::PermissionDenied);
    // The lease is untouched: its holder can still give it back.
    assert!(server.read(|c| c.lease(token).is_some()));
    let fail = pb::FailRequest { worker_id: holder, fencing_token: token, reason: "test".into() };
    assert!(w.fail(fail).await.unwrap().into_inner().accepted);
}
