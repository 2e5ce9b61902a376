use std::path::PathBuf;

/// Everything that can go wrong on the worker side: preparing data, running trials, assembling
/// the final model, talking to a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("could not start a pool of {threads} threads: {message}")]
    Pool { threads: usize, message: String },
    #[error("{0}")]
    Train(#[from] quarry_learners::TrainError),
    #[error("{0}")]
    Featurize(#[from] quarry_featurize::FeaturizeError),
    #[error("{path}: {source}")]
    Data { path: PathBuf, source: quarry_featurize::FeaturizeError },
    #[error("{0}")]
    Search(#[from] quarry_search::SearchError),
    /// Bad job settings (an unknown group column, …), said in words.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Final(String),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{call} failed ({code}): {message}")]
    Rpc { call: String, code: String, message: String },
    /// The coordinator will not have this worker (wrong token, protocol version).
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
}
