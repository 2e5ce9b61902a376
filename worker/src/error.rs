use std::path::PathBuf;

use quarry_learners::memory::human_bytes;

/// Everything that can go wrong on the worker side: preparing data, running trials, assembling
/// the final model, talking to a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("could not start a pool of {threads} threads: {message}")]
    Pool { threads: usize, message: String },
    #[error(transparent)]
    Train(#[from] quarry_learners::TrainError),
    #[error(transparent)]
    Featurize(#[from] quarry_featurize::FeaturizeError),
    /// The file's error, said once: `error` is part of the message rather than a `source`, so
    /// a printed error chain does not repeat it.
    #[error("{path}: {error}")]
    Data { path: PathBuf, error: quarry_featurize::FeaturizeError },
    #[error(transparent)]
    Search(#[from] quarry_search::SearchError),
    /// Bad job settings (an unknown group column, …), said in words.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Final(String),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{call} failed ({code}): {message}")]
    Rpc { call: String, code: String, message: String },
    /// Admission: the trial's estimated heap does not fit the limit, even downsized.
    #[error("memory: needs ~{}, --memory-limit is {}", human_bytes(*.needs), human_bytes(*.limit))]
    MemoryRefused { needs: u64, limit: u64 },
    /// The runtime guard: the live heap went over the limit while the trial ran.
    #[error("memory: live heap {} exceeded --memory-limit {}", human_bytes(*.live), human_bytes(*.limit))]
    MemoryExceeded { live: u64, limit: u64 },
    /// The coordinator will not have this worker (wrong token, protocol version).
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
}
