//! Applying an event: the only code that changes state, live and in replay.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use quarry_search::{TrialId, TrialOutcome, TrialStatus};

use super::{
    Artifact, Coordinator, Event, Job, JobState, Lease, MAX_ATTEMPTS, Now, TaskKey, WorkerRecord, driver_for,
};
use crate::driver::Next;
use crate::keep::KeepSet;

impl Coordinator {
    /// The only place state changes. `replaying`: the driver has not yet been asked for an
    /// issued trial (live, it already has).
    pub fn apply(&mut self, e: &Event, now: Now, replaying: bool) {
        self.apply_change(e, now, replaying);
        self.file_under_job(e);
    }

    /// Keeps what snapshots and retirement need about the event's job: a job not yet final
    /// keeps its events; a final one is serialized once (its snapshot record) and waits for
    /// retirement.
    fn file_under_job(&mut self, e: &Event) {
        let Some(id) = e.job() else { return };
        let Some(j) = self.jobs.get(id) else { return };
        if !j.state.is_final() {
            self.history.entry(id.to_string()).or_default().push(Arc::new(e.clone()));
            return;
        }
        self.history.remove(id);
        let finished = j.finish_key();
        if j.retired_ms.is_none() {
            self.retire_queue.insert((finished, id.to_string()));
        } else {
            self.retire_queue.remove(&(finished, id.to_string()));
        }
        match serde_json::to_vec(&super::snapshot::JobSnapshot::of(j)) {
            Ok(bytes) => {
                self.frozen.insert(id.to_string(), Arc::new(bytes));
            }
            Err(err) => {
                // Only a non-finite number could get here (the limits refuse those); no
                // snapshot is taken while a job lacks its record.
                tracing::error!(job = %id, %err, "cannot serialize a finished job for snapshots");
                self.frozen.remove(id);
            }
        }
    }

    fn apply_change(&mut self, e: &Event, now: Now, replaying: bool) {
        match e {
            Event::WorkerRegistered { worker, name, gpus, slots } => {
                let record =
                    WorkerRecord { name: name.clone(), gpus: *gpus, slots: *slots, last_seen: now.instant };
                self.workers.insert(worker.clone(), record);
            }
            Event::JobCreated { job, spec, at_ms } => {
                add_refs(&mut self.blob_refs, [spec.dataset_hash.as_str()]);
                self.active.insert(self.order.len());
                let mut queue = VecDeque::new();
                queue.push_back((TaskKey::Prepare, 1));
                self.jobs.insert(
                    job.clone(),
                    Job {
                        id: job.clone(),
                        spec: spec.clone(),
                        state: JobState::Queued,
                        created_ms: *at_ms,
                        started_ms: None,
                        finished_ms: None,
                        reason: None,
                        shape: None,
                        prepare_artifacts: Vec::new(),
                        driver: None,
                        queue,
                        keep: KeepSet::default(),
                        final_artifacts: Vec::new(),
                        finalize_queued: false,
                        retired_ms: None,
                    },
                );
                self.order.push(job.clone());
            }
            Event::Leased { token, job, task, worker, attempt, at_ms } => {
                self.tokens.saw(*token);
                if let Some(j) = self.jobs.get_mut(job) {
                    if j.started_ms.is_none() {
                        j.started_ms = Some(if *at_ms > 0 { *at_ms } else { j.created_ms });
                    }
                    if let Some(pos) = j.queue.iter().position(|(k, _)| k == task) {
                        j.queue.remove(pos);
                    }
                    if j.state == JobState::Queued {
                        j.state = JobState::Running;
                    }
                }
                if let TaskKey::Trial(t) = task {
                    self.gpu_waiting.remove(&(job.clone(), *t));
                }
                let ends_by = self.lease_ends_by(job, now);
                let mut lease = Lease {
                    token: *token,
                    job: job.clone(),
                    task: *task,
                    worker: worker.clone(),
                    attempt: *attempt,
                    expires: now.instant,
                    ends_by,
                };
                lease.expires = lease.renewed(now.instant, Duration::from_millis(self.lease_ttl_ms));
                self.leases.insert(*token, lease);
            }
            Event::Released { token, reason, at_ms, .. } => {
                let Some(lease) = self.leases.remove(token) else { return };
                let Some(j) = self.jobs.get_mut(&lease.job) else { return };
                if j.state.is_final() {
                    return;
                }
                if lease.attempt < MAX_ATTEMPTS {
                    // Retries go first: they hold up the determinism window.
                    j.queue.push_front((lease.task, lease.attempt + 1));
                    return;
                }
                let why = format!("gave up after {} attempts: {reason}", lease.attempt);
                match lease.task {
                    TaskKey::Trial(id) => {
                        let outcome = TrialOutcome {
                            id: TrialId(id),
                            status: TrialStatus::Failed,
                            score: None,
                            fit_seconds: 0.0,
                            rounds: None,
                            failure_reason: Some(why),
                        };
                        if let Some(d) = j.driver.as_mut()
                            && let Err(err) = d.record(outcome)
                        {
                            tracing::warn!(job = %j.id, %err, "event log: giving up on a trial");
                        }
                        // Considering this id may let later results through, and evict.
                        let evicted = j.keep.add(TrialId(id), String::new(), None, Vec::new());
                        drop_refs(&mut self.blob_refs, &mut self.garbage, evicted);
                    }
                    TaskKey::Prepare | TaskKey::Finalize => {
                        let what = if lease.task == TaskKey::Prepare { "prepare" } else { "finalize" };
                        j.state = JobState::Failed;
                        j.reason = Some(format!("{what} {why}"));
                        j.finished_ms = Some(*at_ms);
                        j.queue.clear();
                    }
                }
            }
            Event::Prepared { token, shape, artifacts, .. } => {
                let Some(lease) = self.leases.remove(token) else { return };
                let Some(j) = self.jobs.get_mut(&lease.job) else { return };
                if j.state.is_final() {
                    return;
                }
                match driver_for(&j.spec, shape) {
                    Ok(d) => j.driver = Some(d),
                    Err(message) => {
                        j.state = JobState::Failed;
                        j.reason = Some(message);
                    }
                }
                j.shape = Some(shape.clone());
                add_refs(&mut self.blob_refs, artifacts.iter().map(|a| a.hash.as_str()));
                let old = std::mem::replace(&mut j.prepare_artifacts, artifacts.clone());
                drop_refs(&mut self.blob_refs, &mut self.garbage, old);
            }
            Event::TrialIssued { job, trial } => {
                let Some(j) = self.jobs.get_mut(job) else { return };
                let Some(d) = j.driver.as_mut() else { return };
                if replaying {
                    match d.next_trial(now.instant, None) {
                        Next::Trial(s) if s.id.0 == *trial => {}
                        other => {
                            // Only a log written by different search code can get here.
                            tracing::error!(job = %job, trial, ?other, "event log: replay suggested a different trial");
                        }
                    }
                }
                j.queue.push_back((TaskKey::Trial(*trial), 1));
            }
            Event::TrialFinished { token, outcome, artifacts, .. } => {
                let Some(lease) = self.leases.remove(token) else { return };
                let Some(j) = self.jobs.get_mut(&lease.job) else { return };
                let Some(d) = j.driver.as_mut() else { return };
                let metric = d.config().metric;
                let family = d.spec(outcome.id).map(|s| s.family.clone()).unwrap_or_default();
                match d.record(outcome.clone()) {
                    Ok(_) => {
                        let loss = match (outcome.status, outcome.score) {
                            (TrialStatus::Completed, Some(s)) => Some(metric.to_loss(s)),
                            _ => None,
                        };
                        add_refs(&mut self.blob_refs, artifacts.iter().map(|a| a.hash.as_str()));
                        let evicted = j.keep.add(outcome.id, family, loss, artifacts.clone());
                        drop_refs(&mut self.blob_refs, &mut self.garbage, evicted);
                    }
                    Err(err) => tracing::warn!(job = %j.id, %err, "a result for a trial not in flight"),
                }
            }
            Event::SearchClosed { job } => {
                if let Some(d) = self.jobs.get_mut(job).and_then(|j| j.driver.as_mut()) {
                    d.close();
                }
            }
            Event::FinalizeQueued { job } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.finalize_queued = true;
                    j.queue.push_back((TaskKey::Finalize, 1));
                }
            }
            Event::Finalized { token, artifacts, at_ms, .. } => {
                let Some(lease) = self.leases.remove(token) else { return };
                let Some(j) = self.jobs.get_mut(&lease.job) else { return };
                add_refs(&mut self.blob_refs, artifacts.iter().map(|a| a.hash.as_str()));
                let old = std::mem::replace(&mut j.final_artifacts, artifacts.clone());
                drop_refs(&mut self.blob_refs, &mut self.garbage, old);
                j.state = JobState::Completed;
                j.finished_ms = Some(*at_ms);
            }
            Event::JobFailed { job, reason, at_ms } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.state = JobState::Failed;
                    j.reason = Some(reason.clone());
                    j.finished_ms = Some(*at_ms);
                    j.queue.clear();
                }
                self.leases.retain(|_, l| l.job != *job);
            }
            Event::JobCancelled { job, at_ms } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.state = JobState::Cancelled;
                    j.reason = Some("cancelled by a client".into());
                    j.finished_ms = Some(*at_ms);
                    j.queue.clear();
                    if let Some(d) = j.driver.as_mut() {
                        d.close();
                    }
                }
                self.leases.retain(|_, l| l.job != *job);
            }
            Event::JobRetired { job, at_ms } => {
                let Some(j) = self.jobs.get_mut(job) else { return };
                if !j.state.is_final() || j.retired_ms.is_some() {
                    return;
                }
                j.retired_ms = Some(*at_ms);
                let mut dropped = j.keep.clear();
                dropped.append(&mut j.prepare_artifacts);
                drop_refs(&mut self.blob_refs, &mut self.garbage, dropped);
            }
        }
    }
}

/// Counts a reference to each blob.
pub(super) fn add_refs<'a>(refs: &mut HashMap<String, u32>, hashes: impl IntoIterator<Item = &'a str>) {
    for h in hashes {
        *refs.entry(h.to_string()).or_default() += 1;
    }
}

/// Drops a reference to each artifact's blob; a blob left with none is garbage.
fn drop_refs(refs: &mut HashMap<String, u32>, garbage: &mut Vec<String>, dropped: Vec<Artifact>) {
    for a in dropped {
        if let Some(n) = refs.get_mut(&a.hash) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                refs.remove(&a.hash);
                garbage.push(a.hash);
            }
        }
    }
}
