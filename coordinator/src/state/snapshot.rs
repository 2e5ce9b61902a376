//! State snapshots: the state at a log sequence number in a form that rebuilds it without the
//! events before it, so a restart replays only the log's tail.
//!
//! A snapshot is the minimal input that rebuilds the state: the workers, the job order, the
//! highest lease-token epoch seen, each final job as a record of its fields (its search driver
//! as the board it answers with: a final job never asks its searcher again), and the events of
//! every job that is not final (replayed, so its searcher continues exactly). Live-only parts
//! (lease expiry, worker liveness: monotonic instants) are rebuilt as replay rebuilds them: from
//! the restart's `now`. Final jobs are serialized once, when they become final, so taking a
//! snapshot under the state lock copies pointers, not jobs.
//!
//! Encoding: `[len u32 LE][bytes]` records: a header (JSON), then one per final job, then one
//! per event. The log stores it with a checksum (`log::encode_snapshot`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Artifact, Coordinator, Event, Job, JobSpec, JobState, Now, PreparedShape, TaskKey, WorkerRecord, apply,
    driver_config,
};
use crate::driver::{DriverSummary, SearchDriver};
use crate::keep::{KeepSet, KeepSnapshot};

const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    version: u32,
    /// (id, name, gpus, slots), by id.
    workers: Vec<(String, String, u32, u32)>,
    order: Vec<String>,
    max_epoch: u64,
    finished: u64,
    events: u64,
}

/// A final job, field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct JobSnapshot {
    id: String,
    spec: JobSpec,
    state: JobState,
    created_ms: u64,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    reason: Option<String>,
    shape: Option<PreparedShape>,
    prepare_artifacts: Vec<Artifact>,
    driver: Option<DriverSummary>,
    queue: Vec<(TaskKey, u32)>,
    keep: KeepSnapshot,
    final_artifacts: Vec<Artifact>,
    finalize_queued: bool,
    retired_ms: Option<u64>,
}

impl JobSnapshot {
    pub(super) fn of(j: &Job) -> JobSnapshot {
        JobSnapshot {
            id: j.id.clone(),
            spec: j.spec.clone(),
            state: j.state,
            created_ms: j.created_ms,
            started_ms: j.started_ms,
            finished_ms: j.finished_ms,
            reason: j.reason.clone(),
            shape: j.shape.clone(),
            prepare_artifacts: j.prepare_artifacts.clone(),
            driver: j.driver.as_ref().map(SearchDriver::to_summary),
            queue: j.queue.iter().copied().collect(),
            keep: j.keep.to_snapshot(),
            final_artifacts: j.final_artifacts.clone(),
            finalize_queued: j.finalize_queued,
            retired_ms: j.retired_ms,
        }
    }

    fn into_job(self) -> Result<Job, String> {
        let driver = match (self.driver, &self.shape) {
            (Some(summary), Some(shape)) => {
                let config = driver_config(&self.spec, shape).map_err(|e| format!("job {}: {e}", self.id))?;
                Some(
                    SearchDriver::from_summary(config, summary)
                        .map_err(|e| format!("job {}: {e}", self.id))?,
                )
            }
            (Some(_), None) => return Err(format!("job {}: a search without a prepared shape", self.id)),
            (None, _) => None,
        };
        Ok(Job {
            id: self.id,
            spec: self.spec,
            state: self.state,
            created_ms: self.created_ms,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            reason: self.reason,
            shape: self.shape,
            prepare_artifacts: self.prepare_artifacts,
            driver,
            queue: self.queue.into_iter().collect::<VecDeque<_>>(),
            keep: KeepSet::from_snapshot(self.keep),
            final_artifacts: self.final_artifacts,
            finalize_queued: self.finalize_queued,
            retired_ms: self.retired_ms,
        })
    }
}

/// The state at one point, taken cheaply under the state lock ([`Coordinator::snapshot`]) and
/// encoded outside it ([`Snapshot::encode`]).
#[derive(Debug, Clone)]
pub struct Snapshot {
    header: Header,
    finished: Vec<Arc<Vec<u8>>>,
    events: Vec<Arc<Event>>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let events: Vec<Vec<u8>> =
            self.events.iter().map(|e| serde_json::to_vec(&**e).unwrap_or_default()).collect();
        let size = 4
            + header.len()
            + self.finished.iter().map(|f| 4 + f.len()).sum::<usize>()
            + events.iter().map(|e| 4 + e.len()).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        for r in std::iter::once(&header).chain(self.finished.iter().map(|f| &**f)).chain(events.iter()) {
            out.extend_from_slice(&(r.len() as u32).to_le_bytes());
            out.extend_from_slice(r);
        }
        out
    }
}

/// The records of an encoded snapshot, in order.
fn records(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or("a record header cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        let record = rest.get(..len).ok_or("a record runs past the end")?;
        out.push(record);
        bytes = &rest[len..];
    }
    Ok(out)
}

impl Coordinator {
    /// The state now, for a snapshot: copies of pointers to the final jobs' records and to
    /// the other jobs' events, so it is cheap under the state lock. `None` while a final job
    /// has no record (see `file_under_job`).
    pub fn snapshot(&self) -> Option<Snapshot> {
        let mut workers: Vec<(String, String, u32, u32)> =
            self.workers.iter().map(|(id, w)| (id.clone(), w.name.clone(), w.gpus, w.slots)).collect();
        workers.sort_unstable();
        let mut finished = Vec::new();
        let mut events = Vec::new();
        for id in &self.order {
            let Some(j) = self.jobs.get(id) else { continue };
            if j.state.is_final() {
                finished.push(Arc::clone(self.frozen.get(id)?));
            } else if let Some(h) = self.history.get(id) {
                events.extend(h.iter().cloned());
            }
        }
        let header = Header {
            version: VERSION,
            workers,
            order: self.order.clone(),
            max_epoch: self.tokens.max_seen(),
            finished: finished.len() as u64,
            events: events.len() as u64,
        };
        Some(Snapshot { header, finished, events })
    }

    /// The state an encoded snapshot holds (replay of the tail and the re-taken decisions are
    /// [`Coordinator::recover`]'s).
    pub(super) fn restore(lease_ttl: Duration, bytes: &[u8], now: Now) -> Result<Coordinator, String> {
        let records = records(bytes)?;
        let (header, rest) = records.split_first().ok_or("an empty snapshot")?;
        let header: Header = serde_json::from_slice(header).map_err(|e| format!("snapshot header: {e}"))?;
        if header.version != VERSION {
            return Err(format!("snapshot version {} (this coordinator reads {VERSION})", header.version));
        }
        let finished = usize::try_from(header.finished).map_err(|e| e.to_string())?;
        if rest.len() as u64 != header.finished + header.events || rest.len() < finished {
            return Err(format!(
                "snapshot holds {} records, its header says {} jobs and {} events",
                rest.len(),
                header.finished,
                header.events
            ));
        }
        let (jobs, events) = rest.split_at(finished);
        let mut c = Coordinator::new(lease_ttl);
        for (id, name, gpus, slots) in header.workers {
            c.workers.insert(id, WorkerRecord { name, gpus, slots, last_seen: now.instant });
        }
        if header.max_epoch > 0 {
            c.tokens.saw(header.max_epoch << super::EPOCH_SHIFT);
        }
        for (k, record) in jobs.iter().enumerate() {
            let snap: JobSnapshot =
                serde_json::from_slice(record).map_err(|e| format!("snapshot job record {k}: {e}"))?;
            let id = snap.id.clone();
            c.frozen.insert(id.clone(), Arc::new(record.to_vec()));
            c.jobs.insert(id, snap.into_job()?);
        }
        for (k, record) in events.iter().enumerate() {
            let e: Event = serde_json::from_slice(record).map_err(|e| format!("snapshot event {k}: {e}"))?;
            c.apply(&e, now, true);
        }
        if header.order.len() != c.jobs.len() || header.order.iter().any(|id| !c.jobs.contains_key(id)) {
            return Err("snapshot: the job order does not match its jobs".into());
        }
        c.order = header.order;
        c.rebuild_indices();
        Ok(c)
    }

    /// The derived indices (blob references, jobs that may have work, retirement order), from
    /// the jobs.
    fn rebuild_indices(&mut self) {
        self.blob_refs.clear();
        self.active.clear();
        self.retire_queue.clear();
        for (idx, id) in self.order.iter().enumerate() {
            let Some(j) = self.jobs.get(id) else { continue };
            apply::add_refs(
                &mut self.blob_refs,
                std::iter::once(j.spec.dataset_hash.as_str())
                    .chain(j.prepare_artifacts.iter().map(|a| a.hash.as_str()))
                    .chain(j.keep.artifacts().map(|a| a.hash.as_str()))
                    .chain(j.final_artifacts.iter().map(|a| a.hash.as_str())),
            );
            if !j.state.is_final() {
                self.active.insert(idx);
            } else if j.retired_ms.is_none() {
                self.retire_queue.insert((j.finish_key(), id.clone()));
            }
        }
    }

    /// Everything replay rebuilds, as text (workers without their live-only times, leases
    /// without their instants, each job field by field, blob references): two states that
    /// print the same answer every call the same way.
    pub fn dump(&self) -> String {
        let mut workers: Vec<_> = self.workers.iter().map(|(id, w)| (id, &w.name, w.gpus, w.slots)).collect();
        workers.sort_unstable();
        let mut leases: Vec<_> =
            self.leases.values().map(|l| (l.token, &l.job, l.task, &l.worker, l.attempt)).collect();
        leases.sort_unstable_by_key(|l| l.0);
        let jobs: Vec<JobSnapshot> = self.jobs().map(JobSnapshot::of).collect();
        let mut refs: Vec<_> = self.blob_refs.iter().collect();
        refs.sort_unstable();
        let active: Vec<usize> = self
            .active
            .iter()
            .copied()
            .filter(|&i| self.jobs.get(&self.order[i]).is_some_and(|j| !j.state.is_final()))
            .collect();
        serde_json::json!({
            "workers": workers,
            "leases": leases,
            "jobs": jobs,
            "order": self.order,
            "max_epoch": self.tokens.max_seen(),
            "blob_refs": refs,
            "active": active,
            "retire_queue": self.retire_queue,
        })
        .to_string()
    }
}
