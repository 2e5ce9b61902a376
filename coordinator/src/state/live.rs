//! Live operations: each checks, emits events and applies them (replay never decides).

use std::time::Duration;

use quarry_search::{Decision, TrialId, TrialStatus};

use super::{
    Artifact, Coordinator, Event, FinalizeInput, JobSpec, JobState, Lease, LeasedKind, LeasedTask, Now,
    StateError, TaskKey, TaskResult, scheduler_kind, wants_gpu,
};
use crate::driver::Next;
use crate::job::SearcherKind;
use crate::limits;

impl Coordinator {
    pub fn register(&mut self, name: &str, gpus: u32, slots: u32, now: Now) -> String {
        let worker = format!("w{}", self.workers.len() + 1);
        self.emit(
            Event::WorkerRegistered { worker: worker.clone(), name: name.to_string(), gpus, slots },
            now,
        );
        worker
    }

    pub fn create_job(&mut self, mut spec: JobSpec, now: Now) -> Result<String, StateError> {
        limits::check_spec(&spec)?;
        if spec.dataset_hash.is_empty() {
            return Err(StateError::InvalidSpec("no dataset_hash: upload the dataset first".into()));
        }
        if spec.target.is_empty() {
            return Err(StateError::InvalidSpec("no target column".into()));
        }
        // Workers name their cached copy after it: it must stay one plain file name.
        if let Err(why) = quarry_featurize::safe_name(&spec.file_name)
            && !spec.file_name.is_empty()
        {
            return Err(StateError::InvalidSpec(format!("file name {:?}: {why}", spec.file_name)));
        }
        if spec.max_trials == Some(0) {
            return Err(StateError::InvalidSpec("max_trials must be at least 1".into()));
        }
        scheduler_kind(&spec.scheduler).map_err(StateError::InvalidSpec)?;
        SearcherKind::parse(&spec.searcher).map_err(StateError::InvalidSpec)?;
        if spec.budget_ms.is_none() && spec.max_trials.is_none() {
            // The same default as `quarry fit`.
            spec.budget_ms = Some(60_000);
        }
        if spec.experiment.is_empty() {
            spec.experiment = "default".into();
        }
        let job = format!("job-{}", self.order.len() + 1);
        let event = Event::JobCreated { job: job.clone(), spec, at_ms: now.unix_ms };
        limits::check_event(&event)?;
        self.emit(event, now);
        Ok(job)
    }

    /// A worker's heartbeat: it is live, and the leases it names (`running`: the tasks it still
    /// runs) are renewed. Its other leases are not: a task the worker gave up on expires after
    /// one TTL even while the worker keeps calling. Tokens it does not hold are ignored.
    pub fn heartbeat(&mut self, worker: &str, running: &[u64], now: Now) -> Result<(), StateError> {
        let w = self.workers.get_mut(worker).ok_or_else(|| StateError::UnknownWorker(worker.to_string()))?;
        w.last_seen = now.instant;
        let ttl = Duration::from_millis(self.lease_ttl_ms);
        for token in running {
            if let Some(l) = self.leases.get_mut(token).filter(|l| l.worker == worker) {
                l.expires = l.renewed(now.instant, ttl);
            }
        }
        Ok(())
    }

    /// Re-queues (or gives up on) every task whose lease ran out. Returns how many expired.
    pub fn expire(&mut self, now: Now) -> usize {
        let mut expired: Vec<(u64, String)> = self
            .leases
            .values()
            .filter(|l| l.expires <= now.instant)
            .map(|l| (l.token, l.worker.clone()))
            .collect();
        expired.sort_unstable();
        for (token, worker) in &expired {
            let Some(job) = self.leases.get(token).map(|l| l.job.clone()) else { continue };
            let reason = format!(
                "lease expired (worker {worker} did not renew it within {} ms, or the job's deadline + {} s passed)",
                self.lease_ttl_ms,
                super::LEASE_GRACE.as_secs()
            );
            self.emit(Event::Released { token: *token, job: job.clone(), reason, at_ms: now.unix_ms }, now);
            self.advance(&job, now);
        }
        expired.len()
    }

    /// A task for this worker, if any job has one: round-robin over running jobs; a queued
    /// job starts (oldest first) only when no running job has work for this worker. Its
    /// budget starts then too, so twenty jobs submitted to four workers queue instead of
    /// each spending its budget waiting for a share of the workers.
    pub fn lease_task(&mut self, worker: &str, now: Now) -> Result<Option<LeasedTask>, StateError> {
        self.heartbeat(worker, &[], now)?;
        // A CPU worker may take GPU-wanting trials when no GPU worker is live.
        let gpu = self.workers.get(worker).is_some_and(|w| w.gpus > 0)
            || !self.workers.values().any(|w| w.gpus > 0 && self.is_live(w, now));
        // Only jobs that may still have work: a store with many finished jobs costs nothing
        // here. Final ones are dropped from the set as they are met.
        let jobs = &self.jobs;
        let order = &self.order;
        let state_of = |idx: usize| order.get(idx).and_then(|id| jobs.get(id)).map(|j| j.state);
        self.active.retain(|&idx| state_of(idx).is_some_and(|s| !s.is_final()));
        let running = |idx: &usize| state_of(*idx) == Some(JobState::Running);
        let queued = |idx: &usize| state_of(*idx) == Some(JobState::Queued);
        // Round-robin over running jobs from `rr`, then queued ones oldest first.
        let candidates: Vec<usize> = self
            .active
            .range(self.rr..)
            .chain(self.active.range(..self.rr))
            .copied()
            .filter(running)
            .chain(self.active.iter().copied().filter(queued))
            .collect();
        for idx in candidates {
            let id = self.order[idx].clone();
            if let Some(key) = self.next_task_of(&id, gpu, now) {
                self.rr = idx + 1;
                let token = self.tokens.next();
                let attempt = self
                    .jobs
                    .get(&id)
                    .and_then(|j| j.queue.iter().find(|(k, _)| *k == key))
                    .map_or(1, |q| q.1);
                self.emit(
                    Event::Leased {
                        token,
                        job: id.clone(),
                        task: key,
                        worker: worker.to_string(),
                        attempt,
                        at_ms: now.unix_ms,
                    },
                    now,
                );
                return Ok(self.describe(token, now));
            }
        }
        Ok(None)
    }

    /// The key of the next task of `job` this worker may run, issuing a trial when the queue
    /// is empty and the driver allows one.
    fn next_task_of(&mut self, id: &str, gpu: bool, now: Now) -> Option<TaskKey> {
        let j = self.jobs.get(id)?;
        if j.state.is_final() {
            return None;
        }
        let for_gpu =
            |t: u64| j.driver.as_ref().and_then(|d| d.spec(TrialId(t))).is_some_and(|s| wants_gpu(&s.family));
        // A GPU trial that waited long enough for a GPU worker goes to anyone.
        let waited = |t: u64| {
            self.gpu_waiting.get(&(id.to_string(), t)).is_some_and(|since| {
                now.instant.saturating_duration_since(*since) >= super::GPU_FALLBACK_WAIT
            })
        };
        let fits = |key: &TaskKey| match key {
            TaskKey::Trial(t) => gpu || !for_gpu(*t) || waited(*t),
            _ => true,
        };
        if let Some((key, _)) = j.queue.iter().find(|(k, _)| fits(k)) {
            return Some(*key);
        }
        let passed_over: Vec<u64> = j
            .queue
            .iter()
            .filter_map(|(k, _)| match k {
                TaskKey::Trial(t) if !gpu => Some(*t),
                _ => None,
            })
            .collect();
        for t in passed_over {
            self.gpu_waiting.entry((id.to_string(), t)).or_insert(now.instant);
        }
        let search_deadline = j.deadline_ms().map(|d| now.instant_at(d.saturating_sub(j.reserve_ms())));
        let d = self.jobs.get_mut(id)?.driver.as_mut()?;
        if d.is_closed() {
            return None;
        }
        match d.next_trial(now.instant, search_deadline) {
            Next::Trial(spec) => {
                let wants = wants_gpu(&spec.family);
                self.emit(Event::TrialIssued { job: id.to_string(), trial: spec.id.0 }, now);
                if !gpu && wants {
                    self.gpu_waiting.entry((id.to_string(), spec.id.0)).or_insert(now.instant);
                }
                (gpu || !wants).then_some(TaskKey::Trial(spec.id.0))
            }
            Next::Wait => None,
            Next::Done => {
                self.emit(Event::SearchClosed { job: id.to_string() }, now);
                self.advance(id, now);
                // The finalize task may be ready now.
                let j = self.jobs.get(id)?;
                j.queue.front().map(|(k, _)| *k)
            }
        }
    }

    fn describe(&self, token: u64, now: Now) -> Option<LeasedTask> {
        let lease = self.leases.get(&token)?;
        let j = self.jobs.get(&lease.job)?;
        let kind = match lease.task {
            TaskKey::Prepare => LeasedKind::Prepare,
            TaskKey::Trial(t) => {
                let deadline_ms = j.deadline_ms().map(|d| d.saturating_sub(j.reserve_ms()));
                LeasedKind::Trial {
                    spec: j.driver.as_ref()?.spec(TrialId(t))?.clone(),
                    shape: j.shape.clone().unwrap_or_default(),
                    deadline_ms,
                    remaining_ms: deadline_ms.map(|d| d.saturating_sub(now.unix_ms)),
                }
            }
            TaskKey::Finalize => LeasedKind::Finalize(FinalizeInput {
                leaderboard: j.leaderboard(),
                kept: j.keep.kept(),
                prepare_artifacts: j.prepare_artifacts.clone(),
                shape: j.shape.clone().unwrap_or_default(),
                deadline_ms: j.deadline_ms(),
                remaining_ms: j.deadline_ms().map(|d| d.saturating_sub(now.unix_ms)),
                elapsed_seconds: now.unix_ms.saturating_sub(j.started_ms.unwrap_or(j.created_ms)) as f64
                    / 1000.0,
            }),
        };
        Some(LeasedTask { token, job: lease.job.clone(), attempt: lease.attempt, spec: j.spec.clone(), kind })
    }

    /// A running lease, renewed; `StaleLease` when it no longer exists.
    fn live_lease(&mut self, token: u64, now: Now) -> Result<Lease, StateError> {
        let ttl = Duration::from_millis(self.lease_ttl_ms);
        let l = self.leases.get_mut(&token).ok_or(StateError::StaleLease(token))?;
        l.expires = l.renewed(now.instant, ttl);
        Ok(l.clone())
    }

    /// Whether `worker` holds lease `token` (a lease that no longer exists passes: the call
    /// that follows answers it as stale). Results, failures and progress must come from the
    /// lease's holder.
    pub fn check_owner(&self, token: u64, worker: &str) -> Result<(), StateError> {
        match self.leases.get(&token) {
            Some(l) if l.worker != worker => {
                Err(StateError::NotLeaseOwner { token, worker: worker.to_string() })
            }
            _ => Ok(()),
        }
    }

    /// Per-round progress of a trial: `true` means stop.
    pub fn progress(&mut self, token: u64, resource: u64, loss: f64, now: Now) -> bool {
        let Ok(lease) = self.live_lease(token, now) else { return true };
        let TaskKey::Trial(t) = lease.task else { return false };
        let Some(d) = self.jobs.get_mut(&lease.job).and_then(|j| j.driver.as_mut()) else { return true };
        d.on_progress(TrialId(t), resource as usize, loss) == Decision::Stop
    }

    pub fn complete(
        &mut self,
        token: u64,
        result: TaskResult,
        artifacts: Vec<Artifact>,
        now: Now,
    ) -> Result<(), StateError> {
        let lease = self.live_lease(token, now)?;
        let name = |k: TaskKey| match k {
            TaskKey::Prepare => "prepare",
            TaskKey::Trial(_) => "trial",
            TaskKey::Finalize => "finalize",
        };
        limits::check_artifacts(&artifacts)?;
        let event = match (lease.task, result) {
            (TaskKey::Prepare, TaskResult::Prepare(shape)) => {
                limits::check_shape(&shape)?;
                Event::Prepared { token, job: lease.job.clone(), shape, artifacts, at_ms: now.unix_ms }
            }
            (TaskKey::Trial(t), TaskResult::Trial(mut outcome)) => {
                // The lease names the trial; a worker cannot complete another one with it.
                outcome.id = TrialId(t);
                outcome.failure_reason = outcome.failure_reason.map(limits::cap_reason);
                Event::TrialFinished { token, job: lease.job.clone(), outcome, artifacts }
            }
            (TaskKey::Finalize, TaskResult::Finalize) => {
                Event::Finalized { token, job: lease.job.clone(), artifacts, at_ms: now.unix_ms }
            }
            (k, r) => {
                let got = match r {
                    TaskResult::Prepare(_) => "prepare",
                    TaskResult::Trial(_) => "trial",
                    TaskResult::Finalize => "finalize",
                };
                return Err(StateError::WrongResult { token, expected: name(k), got });
            }
        };
        limits::check_event(&event)?;
        self.emit(event, now);
        self.advance(&lease.job, now);
        Ok(())
    }

    /// The worker could not run the task: retry it elsewhere (up to [`MAX_ATTEMPTS`]).
    pub fn fail(&mut self, token: u64, reason: &str, now: Now) -> Result<(), StateError> {
        let lease = self.live_lease(token, now)?;
        let job = lease.job.clone();
        let reason = limits::cap_reason(reason.to_string());
        self.emit(Event::Released { token, job, reason, at_ms: now.unix_ms }, now);
        self.advance(&lease.job, now);
        Ok(())
    }

    pub fn cancel(&mut self, job: &str, now: Now) -> Result<(), StateError> {
        let j = self.jobs.get(job).ok_or_else(|| StateError::UnknownJob(job.to_string()))?;
        if !j.state.is_final() {
            self.emit(Event::JobCancelled { job: job.to_string(), at_ms: now.unix_ms }, now);
        }
        Ok(())
    }

    /// Retires every finished job that ended at least `retain` ago: its trials' artifacts
    /// are let go (deleted once that is durable) and the server drops its progress curves.
    /// Walks only the due jobs. Returns how many were retired.
    pub fn retire(&mut self, now: Now, retain: Duration) -> usize {
        let cutoff = now.unix_ms.saturating_sub(retain.as_millis() as u64);
        let due: Vec<(u64, String)> =
            self.retire_queue.iter().take_while(|(at, _)| *at <= cutoff).cloned().collect();
        let mut retired = 0;
        for key in due {
            self.retire_queue.remove(&key);
            let (_, id) = key;
            if self.jobs.get(&id).is_some_and(|j| j.state.is_final() && j.retired_ms.is_none()) {
                self.emit(Event::JobRetired { job: id, at_ms: now.unix_ms }, now);
                retired += 1;
            }
        }
        retired
    }

    /// Decisions that follow from the state alone: a finished search queues the finalize task,
    /// or fails the job when no trial succeeded.
    pub(super) fn advance(&mut self, id: &str, now: Now) {
        let Some(j) = self.jobs.get(id) else { return };
        if j.state.is_final() || j.finalize_queued {
            return;
        }
        let Some(d) = j.driver.as_ref() else { return };
        if !d.is_finished() {
            return;
        }
        if d.entries().iter().any(|e| e.status == TrialStatus::Completed) {
            self.emit(Event::FinalizeQueued { job: id.to_string() }, now);
        } else {
            let reasons: Vec<String> = d
                .entries()
                .iter()
                .filter_map(|e| e.failure_reason.as_ref().map(|r| format!("{}: {r}", e.family)))
                .take(5)
                .collect();
            let reason = if d.entries().is_empty() {
                "no trial finished within the budget; give it a larger budget".to_string()
            } else {
                format!("every trial failed ({})", reasons.join("; "))
            };
            self.emit(Event::JobFailed { job: id.to_string(), reason, at_ms: now.unix_ms }, now);
        }
    }
}
