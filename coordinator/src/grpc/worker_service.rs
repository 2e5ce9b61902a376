//! `WorkerService`: what workers call (register, lease, progress, results, blobs).

use std::time::Duration;

use quarry_proto::{PROTOCOL_VERSION, pb};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{artifact_from_pb, shape_from_pb, task_to_pb};
use super::{ChunkStream, MAX_LEASE_WAIT, Server, status_of};
use crate::limits;
use crate::state::{Artifact, LeasedTask, Now, TaskResult};

fn stale_answer(r: Result<Option<LeasedTask>, Status>) -> Result<Response<pb::CompleteResponse>, Status> {
    match r {
        Ok(next) => Ok(Response::new(pb::CompleteResponse {
            accepted: true,
            message: String::new(),
            next: next.map(task_to_pb),
        })),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(Response::new(pb::CompleteResponse {
            accepted: false,
            message: s.message().to_string(),
            next: None,
        })),
        Err(s) => Err(s),
    }
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for Server {
    async fn register(
        &self,
        request: Request<pb::WorkerInfo>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let info = request.into_inner();
        limits::check_field("name", &info.name).map_err(status_of)?;
        if info.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: worker {:?} speaks quarry.v1 protocol {}, this coordinator speaks {}; \
                 run the same quarry release on both",
                info.name, info.protocol_version, PROTOCOL_VERSION
            )));
        }
        if !info.names_running_leases {
            return Err(Status::failed_precondition(format!(
                "worker {:?} does not name the leases it runs in its heartbeats (an older quarry release); \
                 this coordinator renews only named leases, so its tasks would expire under it: upgrade the worker",
                info.name
            )));
        }
        let slots = info.slots.max(1);
        let worker = self.mutate(|c, now| Ok(c.register(&info.name, info.gpus, slots, now))).await?;
        tracing::info!(%worker, name = %info.name, cores = info.cores, gpus = info.gpus, slots, "worker registered");
        let lease_ttl_ms = self.lock().lease_ttl_ms();
        Ok(Response::new(pb::RegisterResponse { worker_id: worker, lease_ttl_ms }))
    }

    async fn lease(&self, request: Request<pb::LeaseRequest>) -> Result<Response<pb::LeaseResponse>, Status> {
        let req = request.into_inner();
        // Renews the leases the worker still runs; the rest expire (see `Coordinator::heartbeat`).
        self.lock().heartbeat(&req.worker_id, &req.running_tokens, Now::system()).map_err(status_of)?;
        if req.max_tasks == 0 {
            return Ok(Response::new(pb::LeaseResponse { task: None }));
        }
        let wait = Duration::from_millis(req.wait_ms as u64).min(MAX_LEASE_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the attempt, so a task appearing in between still wakes us.
            let notified = self.shared.tasks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let worker = req.worker_id.clone();
            if let Some(task) = self.mutate(move |c, now| c.lease_task(&worker, now)).await? {
                return Ok(Response::new(pb::LeaseResponse { task: Some(task_to_pb(task)) }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Response::new(pb::LeaseResponse { task: None }));
            }
        }
    }

    async fn report_progress(
        &self,
        request: Request<pb::ProgressRequest>,
    ) -> Result<Response<pb::ProgressResponse>, Status> {
        let r = request.into_inner();
        limits::check_finite("loss", r.loss).map_err(status_of)?;
        let mut c = self.lock();
        let now = Now::system();
        c.check_owner(r.fencing_token, &r.worker_id).map_err(status_of)?;
        // The worker is live; only this lease is renewed (by `progress`).
        let _ = c.heartbeat(&r.worker_id, &[], now);
        let stop = c.progress(r.fencing_token, r.resource, r.loss, now);
        if let Some(l) = c.lease(r.fencing_token)
            && let crate::state::TaskKey::Trial(t) = l.task
        {
            self.shared.progress.record(&l.job, t, r.resource, r.loss);
        }
        Ok(Response::new(pb::ProgressResponse { stop }))
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let r = request.into_inner();
        let result = match r.result {
            Some(pb::complete_request::Result::Prepare(p)) => TaskResult::Prepare(shape_from_pb(
                p.shape.ok_or_else(|| Status::invalid_argument("prepare result without shape"))?,
            )),
            Some(pb::complete_request::Result::Trial(o)) => TaskResult::Trial(
                quarry_search::TrialOutcome::try_from(o)
                    .map_err(|e| Status::invalid_argument(format!("trial outcome: {e}")))?,
            ),
            Some(pb::complete_request::Result::Finalize(_)) => TaskResult::Finalize,
            None => return Err(Status::invalid_argument("complete without a result")),
        };
        let artifacts: Vec<Artifact> = r.artifacts.into_iter().map(artifact_from_pb).collect();
        limits::check_artifacts(&artifacts).map_err(status_of)?;
        for a in &artifacts {
            if !self.shared.blobs.contains(&a.hash) {
                return Err(Status::failed_precondition(format!(
                    "artifact {:?} names blob {:?}, which was not uploaded (PutBlob it first)",
                    a.name, a.hash
                )));
            }
        }
        let token = r.fencing_token;
        let (worker, lease_next) = (r.worker_id, r.lease_next);
        let done = self.mutate(move |c, now| {
            c.check_owner(token, &worker)?;
            c.complete(token, result, artifacts, now)?;
            // The result is in either way; no next task (unknown worker, nothing ready) is not an error.
            Ok(if lease_next { c.lease_task(&worker, now).ok().flatten() } else { None })
        });
        stale_answer(done.await)
    }

    async fn fail(
        &self,
        request: Request<pb::FailRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let r = request.into_inner();
        let reason = limits::cap_reason(r.reason);
        limits::check_field("worker_id", &r.worker_id).map_err(status_of)?;
        tracing::warn!(worker = %r.worker_id, token = r.fencing_token, %reason, "task failed on a worker");
        stale_answer(
            self.mutate(move |c, now| {
                c.check_owner(r.fencing_token, &r.worker_id)?;
                c.fail(r.fencing_token, &reason, now).map(|()| None)
            })
            .await,
        )
    }

    type FetchDatasetStream = ChunkStream;

    async fn fetch_dataset(
        &self,
        request: Request<pb::DatasetRef>,
    ) -> Result<Response<Self::FetchDatasetStream>, Status> {
        Ok(Response::new(self.stream_blob(&request.into_inner().hash).await?))
    }

    async fn put_blob(
        &self,
        request: Request<Streaming<pb::Chunk>>,
    ) -> Result<Response<pb::BlobRef>, Status> {
        let (hash, size) = self.receive_blob(request.into_inner()).await?;
        Ok(Response::new(pb::BlobRef { hash, size }))
    }

    type GetBlobStream = ChunkStream;

    async fn get_blob(&self, request: Request<pb::BlobRef>) -> Result<Response<Self::GetBlobStream>, Status> {
        Ok(Response::new(self.stream_blob(&request.into_inner().hash).await?))
    }
}
