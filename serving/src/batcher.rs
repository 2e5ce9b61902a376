//! Request batching: concurrent requests to one model are merged into one `Pipeline::predict`
//! call on a dedicated scoring thread.
//!
//! A lone request never waits: the scorer takes what is queued, and waits (at most
//! `max_delay` after the first request of the batch) only while other requests are known to be
//! on their way (parsed by a handler but not yet queued). So batching costs nothing at low load
//! and merges bursts at high load.
//!
//! The queue is bounded by rows (`max_queued_rows`): a request that would overfill it is
//! refused at once (503) rather than held, so a burst cannot grow memory without bound. A
//! panic while scoring fails only the requests of that batch; the thread keeps serving.

use std::panic::{AssertUnwindSafe, catch_unwind};
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
    /// Rows that may wait for the scoring thread; a request that would go over is refused
    /// (one request is always taken when nothing waits).
    pub max_queued_rows: usize,
}

/// The default `max_queued_rows`: four of the largest requests `oip::Limits` admits by default.
pub const DEFAULT_MAX_QUEUED_ROWS: usize = 4 * crate::oip::DEFAULT_MAX_REQUEST_ROWS;

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: 1024,
            max_delay: Duration::from_millis(1),
            max_queued_rows: DEFAULT_MAX_QUEUED_ROWS,
        }
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
    /// Rows sent to the scoring thread and not yet taken by it.
    queued_rows: Arc<AtomicUsize>,
    max_queued_rows: usize,
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
        let queued_rows = Arc::new(AtomicUsize::new(0));
        let (seen, queued) = (arriving.clone(), queued_rows.clone());
        std::thread::Builder::new()
            .name("quarry-scorer".into())
            .spawn(move || score_loop(&pipeline, &rx, &seen, &queued, config))
            .map_err(|e| ServingError::Unavailable(format!("cannot start the scoring thread: {e}")))?;
        Ok(Batcher { tx, arriving, queued_rows, max_queued_rows: config.max_queued_rows })
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
        let rows = table.n_rows;
        let before = self.queued_rows.fetch_add(rows, Ordering::SeqCst);
        if before > 0 && before.saturating_add(rows) > self.max_queued_rows {
            self.queued_rows.fetch_sub(rows, Ordering::SeqCst);
            return Err(ServingError::Unavailable(format!(
                "the model is busy: {before} rows wait to be scored and {rows} more would pass the queue's \
                 limit of {} (--max-queued-rows); retry later",
                self.max_queued_rows
            )));
        }
        let sent = self.tx.send(Job { table, reply });
        sent.map_err(|_| ServingError::Unavailable("the scoring thread has stopped".into()))?;
        rx.await.map_err(|_| ServingError::Unavailable("the scoring thread has stopped".into()))?
    }
}

fn score_loop(
    pipeline: &Pipeline,
    rx: &mpsc::Receiver<Job>,
    arriving: &AtomicUsize,
    queued_rows: &AtomicUsize,
    config: BatchConfig,
) {
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
        queued_rows.fetch_sub(rows, Ordering::SeqCst);
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

/// Scores `table`; a panic becomes this request's error and the scoring thread lives on.
fn predict(pipeline: &Pipeline, table: &Table) -> Result<Predictions> {
    // The pipeline is only read, so nothing it holds is left half-changed by an unwind.
    guarded(table.n_rows, || pipeline.predict(table).map_err(|e| ServingError::Data(e.to_string())))
}

/// Runs a scoring call, turning a panic into a `ServingError::Model` for that request.
fn guarded<T>(rows: usize, score: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(score)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::error!(%message, rows, "scoring panicked");
            Err(ServingError::Model(format!(
                "scoring failed unexpectedly (a bug; the request was not scored): {message}"
            )))
        }
    }
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
        let config = BatchConfig { max_delay: Duration::from_secs(30), ..BatchConfig::default() };
        let batcher = Batcher::start(pipeline, config).unwrap();
        for _ in 0..3 {
            let started = Instant::now();
            let got = batcher.score(batcher.arriving(), table.clone()).await.unwrap();
            assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
            assert_eq!(got, expected);
        }
    }

    /// A table whose columns hold fewer values than its row count: refused as bad data.
    fn short_table(pipeline: &Pipeline) -> Table {
        Table { n_rows: 3, ..one_row(pipeline) }
    }

    #[test]
    fn a_panic_while_scoring_becomes_that_requests_error() {
        let err = guarded(1, || -> Result<()> { panic!("boom at row 0") }).unwrap_err();
        assert!(matches!(err, ServingError::Model(_)), "{err}");
        assert!(err.to_string().contains("scoring failed unexpectedly"), "{err}");
        assert!(err.to_string().contains("boom at row 0"), "{err}");
        assert_eq!(guarded(1, || Ok(7)).unwrap(), 7);
    }

    #[tokio::test]
    async fn a_failing_request_fails_alone_and_the_model_keeps_serving() {
        let pipeline = pipeline();
        let table = one_row(&pipeline);
        let expected = pipeline.predict(&table).unwrap();
        let batcher = Batcher::start(pipeline.clone(), BatchConfig::default()).unwrap();
        let bad = short_table(&pipeline);
        let err = batcher.score(batcher.arriving(), bad).await.unwrap_err();
        assert!(matches!(err, ServingError::Data(_)), "{err}");
        for _ in 0..2 {
            assert_eq!(batcher.score(batcher.arriving(), table.clone()).await.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn a_request_that_would_overfill_the_queue_is_refused_and_a_lone_one_is_taken() {
        let pipeline = pipeline();
        let table = one_row(&pipeline);
        let config = BatchConfig { max_queued_rows: 4, ..BatchConfig::default() };
        let batcher = Batcher::start(pipeline.clone(), config).unwrap();
        // Four rows already wait (as if the scorer were busy): one more is over the limit.
        batcher.queued_rows.store(4, Ordering::SeqCst);
        let err = batcher.score(batcher.arriving(), table.clone()).await.unwrap_err();
        assert_eq!(err.status(), 503, "{err}");
        assert!(err.to_string().contains("--max-queued-rows"), "{err}");
        assert_eq!(batcher.queued_rows.load(Ordering::SeqCst), 4, "a refused request leaves no count");
        // With nothing waiting, even a request larger than the limit is taken.
        batcher.queued_rows.store(0, Ordering::SeqCst);
        let big = concat(std::iter::repeat_n(&table, 6));
        let got = batcher.score(batcher.arriving(), big.clone()).await.unwrap();
        assert_eq!(got, pipeline.predict(&big).unwrap());
        assert_eq!(batcher.queued_rows.load(Ordering::SeqCst), 0);
    }
}
