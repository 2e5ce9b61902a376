//! Request batching: concurrent requests to one model are merged into one `Pipeline::predict`
//! call on a dedicated scoring thread.
//!
//! A lone request never waits: the scorer takes what is queued, and waits (at most
//! `max_delay` after the first request of the batch) only while other requests are known to be
//! on their way (parsed by a handler but not yet queued). So batching costs nothing at low load
//! and merges bursts at high load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use quarry_featurize::{Predictions, RawColumn, RawValues, StrColumn, Table};
use quarry_learners::Pipeline;
use tokio::sync::oneshot;

use crate::error::{Result, ServingError};

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// A batch stops growing at this many rows.
    pub max_rows: usize,
    /// How long a batch may wait for requests that are on their way.
    pub max_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_rows: 1024, max_delay: Duration::from_millis(1) }
    }
}

struct Job {
    table: Table,
    reply: oneshot::Sender<Result<Predictions>>,
}

/// Handle to a model's scoring thread; cheap to share. The thread ends when the last handle
/// is dropped.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    arriving: Arc<AtomicUsize>,
}

/// Marks a request as on its way to the batcher until it is queued (or abandoned).
pub struct Arrival {
    arriving: Arc<AtomicUsize>,
    done: bool,
}

impl Arrival {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.arriving.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Batcher {
    pub fn start(pipeline: Arc<Pipeline>, config: BatchConfig) -> Result<Batcher> {
        let (tx, rx) = mpsc::channel::<Job>();
        let arriving = Arc::new(AtomicUsize::new(0));
        let seen = arriving.clone();
        std::thread::Builder::new()
            .name("quarry-scorer".into())
            .spawn(move || score_loop(&pipeline, &rx, &seen, config))
            .map_err(|e| ServingError::Unavailable(format!("cannot start the scoring thread: {e}")))?;
        Ok(Batcher { tx, arriving })
    }

    /// Call when a request starts being parsed, so a forming batch may wait for it.
    pub fn arriving(&self) -> Arrival {
        self.arriving.fetch_add(1, Ordering::SeqCst);
        Arrival { arriving: self.arriving.clone(), done: false }
    }

    /// Scores `table` (whose columns must be exactly the model's input columns, in order, as
    /// text) as part of a batch.
    pub async fn score(&self, mut arrival: Arrival, table: Table) -> Result<Predictions> {
        let (reply, rx) = oneshot::channel();
        // Uncount this request before queueing it: if the scorer took it while it still
        // counted as on its way, a lone request would wait up to `max_delay` for itself (a
        // race the sender usually wins, so it showed only in the latency tail).
        arrival.finish();
        let sent = self.tx.send(Job { table, reply });
        sent.map_err(|_| ServingError::Unavailable("the scoring thread has stopped".into()))?;
        rx.await.map_err(|_| ServingError::Unavailable("the scoring thread has stopped".into()))?
    }
}

fn score_loop(pipeline: &Pipeline, rx: &mpsc::Receiver<Job>, arriving: &AtomicUsize, config: BatchConfig) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + config.max_delay;
        let mut rows = first.table.n_rows;
        let mut jobs = vec![first];
        while rows < config.max_rows {
            let next = match rx.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if arriving.load(Ordering::SeqCst) == 0 || now >= deadline {
                        None
                    } else {
                        rx.recv_timeout(deadline - now).ok()
                    }
                }
            };
            let Some(job) = next else { break };
            rows += job.table.n_rows;
            jobs.push(job);
        }
        score_batch(pipeline, jobs);
    }
}

fn score_batch(pipeline: &Pipeline, mut jobs: Vec<Job>) {
    if jobs.len() == 1 {
        if let Some(job) = jobs.pop() {
            let out = predict(pipeline, &job.table);
            let _ = job.reply.send(out);
        }
        return;
    }
    tracing::debug!(requests = jobs.len(), "scoring a merged batch");
    let merged = concat(jobs.iter().map(|j| &j.table));
    match predict(pipeline, &merged) {
        Ok(all) => {
            let mut start = 0;
            for job in jobs {
                let n = job.table.n_rows;
                let _ = job.reply.send(Ok(slice(&all, start, start + n)));
                start += n;
            }
        }
        // One bad request must not fail its neighbours: score each alone to attribute the error.
        Err(_) => {
            for job in jobs {
                let _ = job.reply.send(predict(pipeline, &job.table));
            }
        }
    }
}

fn predict(pipeline: &Pipeline, table: &Table) -> Result<Predictions> {
    pipeline.predict(table).map_err(|e| ServingError::Data(e.to_string()))
}

/// Stacks tables with the same columns in the same order (text columns, as built by the model).
fn concat<'a>(tables: impl Iterator<Item = &'a Table> + Clone) -> Table {
    let Some(first) = tables.clone().next() else { return Table::default() };
    let mut n_rows = 0;
    let mut columns: Vec<RawColumn> = first
        .columns
        .iter()
        .map(|c| RawColumn { name: c.name.clone(), values: RawValues::Text(StrColumn::new()) })
        .collect();
    for t in tables {
        n_rows += t.n_rows;
        for (out, col) in columns.iter_mut().zip(&t.columns) {
            if let (RawValues::Text(out), RawValues::Text(src)) = (&mut out.values, &col.values) {
                for v in src.iter() {
                    out.push(v);
                }
            }
        }
    }
    Table { n_rows, columns }
}

fn slice(p: &Predictions, start: usize, end: usize) -> Predictions {
    match p {
        Predictions::Values(v) => Predictions::Values(v[start..end].to_vec()),
        Predictions::Probabilities { n_classes, values } => Predictions::Probabilities {
            n_classes: *n_classes,
            values: values[start * n_classes..end * n_classes].to_vec(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pipeline() -> Arc<Pipeline> {
        let dir = tempfile::tempdir().unwrap();
        let bundle = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/bundles/gbdt.json");
        std::fs::copy(bundle, dir.path().join("pipeline.json")).unwrap();
        Arc::new(Pipeline::load(dir.path()).unwrap())
    }

    fn one_row(pipeline: &Pipeline) -> Table {
        let columns = pipeline
            .featurizer
            .used_columns()
            .map(|c| {
                let mut v = StrColumn::new();
                v.push((c.name == "island").then_some("Biscoe"));
                RawColumn { name: c.name.clone(), values: RawValues::Text(v) }
            })
            .collect();
        Table { n_rows: 1, columns }
    }

    /// A request alone must not wait for the batch window (30 s here), whichever thread wins
    /// the race between queueing it and uncounting its arrival.
    #[tokio::test]
    async fn a_lone_request_does_not_wait_for_the_batch_window() {
        let pipeline = pipeline();
        let table = one_row(&pipeline);
        let expected = pipeline.predict(&table).unwrap();
        let config = BatchConfig { max_rows: 1024, max_delay: Duration::from_secs(30) };
        let batcher = Batcher::start(pipeline, config).unwrap();
        for _ in 0..3 {
            let started = Instant::now();
            let got = batcher.score(batcher.arriving(), table.clone()).await.unwrap();
            assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
            assert_eq!(got, expected);
        }
    }
}
