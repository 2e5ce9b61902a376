//! `QuarryService`: what clients call (upload, jobs, leaderboards, artifacts).

use std::sync::atomic::Ordering;

use quarry_proto::pb;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{artifact_to_pb, job_info, leaderboard_pb, spec_from_pb};
use super::{ChunkStream, JobEventStream, Server};

#[tonic::async_trait]
impl pb::quarry_service_server::QuarryService for Server {
    async fn upload_dataset(
        &self,
        request: Request<Streaming<pb::Chunk>>,
    ) -> Result<Response<pb::DatasetRef>, Status> {
        let max = self.shared.max_upload.load(Ordering::Relaxed);
        let (hash, size) = self.receive_limited(request.into_inner(), max, "--max-upload").await?;
        tracing::info!(%hash, size, "dataset uploaded");
        Ok(Response::new(pb::DatasetRef { hash, size }))
    }

    async fn create_job(&self, request: Request<pb::JobSpec>) -> Result<Response<pb::JobId>, Status> {
        let id = Server::create_job(self, spec_from_pb(request.into_inner())).await?;
        Ok(Response::new(pb::JobId { id }))
    }

    async fn get_job(&self, request: Request<pb::JobId>) -> Result<Response<pb::JobInfo>, Status> {
        let id = request.into_inner().id;
        let c = self.lock();
        let j = c.job(&id).ok_or_else(|| Status::not_found(format!("unknown job {id}")))?;
        Ok(Response::new(job_info(j)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let experiment = request.into_inner().experiment;
        let c = self.lock();
        let jobs = c
            .jobs()
            .filter(|j| experiment.is_empty() || j.spec.experiment == experiment)
            .map(job_info)
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    type WatchJobStream = JobEventStream;

    async fn watch_job(&self, request: Request<pb::JobId>) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = request.into_inner().id;
        // Subscribe before the snapshot so nothing falls between them.
        let mut rx = self.shared.job_events.subscribe();
        let snapshot = {
            let c = self.lock();
            job_info(c.job(&id).ok_or_else(|| Status::not_found(format!("unknown job {id}")))?)
        };
        let server = self.clone();
        let (tx, out) = mpsc::channel::<Result<pb::JobEvent, Status>>(64);
        tokio::spawn(async move {
            if send_job_info(&tx, &server, snapshot).await {
                return;
            }
            loop {
                match rx.recv().await {
                    Ok((job, event)) if job == id => {
                        let fin = matches!(&event.kind, Some(pb::job_event::Kind::Job(j))
                            if pb::JobState::try_from(j.state).is_ok_and(|s| s.is_final()));
                        if tx.send(Ok(event)).await.is_err() || fin {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow a reader: resend the job as it is now and go on.
                        let info = server.lock().job(&id).map(job_info);
                        if let Some(info) = info
                            && send_job_info(&tx, &server, info).await
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))))
    }

    async fn list_trials(&self, request: Request<pb::JobId>) -> Result<Response<pb::Leaderboard>, Status> {
        let id = request.into_inner().id;
        let c = self.lock();
        let j = c.job(&id).ok_or_else(|| Status::not_found(format!("unknown job {id}")))?;
        Ok(Response::new(leaderboard_pb(j)))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::JobId>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let id = request.into_inner().id;
        self.mutate(|c, now| c.cancel(&id, now)).await?;
        let c = self.lock();
        Ok(Response::new(pb::CancelJobResponse { job: c.job(&id).map(job_info) }))
    }

    type DownloadArtifactStream = ChunkStream;

    async fn download_artifact(
        &self,
        request: Request<pb::ArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        let req = request.into_inner();
        let hash = {
            let c = self.lock();
            let j =
                c.job(&req.job_id).ok_or_else(|| Status::not_found(format!("unknown job {}", req.job_id)))?;
            j.final_artifacts.iter().find(|a| a.name == req.name).map(|a| a.hash.clone()).ok_or_else(
                || {
                    Status::not_found(format!(
                        "job {} has no artifact {:?} (see ListArtifacts)",
                        req.job_id, req.name
                    ))
                },
            )?
        };
        Ok(Response::new(self.stream_blob(&hash).await?))
    }

    async fn list_artifacts(
        &self,
        request: Request<pb::JobId>,
    ) -> Result<Response<pb::ArtifactList>, Status> {
        let id = request.into_inner().id;
        let c = self.lock();
        let j = c.job(&id).ok_or_else(|| Status::not_found(format!("unknown job {id}")))?;
        Ok(Response::new(pb::ArtifactList {
            artifacts: j.final_artifacts.iter().map(artifact_to_pb).collect(),
        }))
    }
}

/// Sends the whole job as it is now to a `WatchJob` reader; `true` when the watch is over (the
/// reader left, or the job has finished).
async fn send_job_info(
    tx: &mpsc::Sender<Result<pb::JobEvent, Status>>,
    server: &Server,
    info: pb::JobInfo,
) -> bool {
    let done = pb::JobState::try_from(info.state).is_ok_and(|s| s.is_final());
    let seq = server.shared.event_seq.load(Ordering::Relaxed);
    tx.send(Ok(pb::JobEvent { seq, kind: Some(pb::job_event::Kind::Job(info)) })).await.is_err() || done
}
