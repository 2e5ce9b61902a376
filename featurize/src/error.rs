use std::path::PathBuf;

/// Everything that can go wrong between a file on disk and a feature matrix.
#[derive(Debug, thiserror::Error)]
pub enum FeaturizeError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: file is empty")]
    EmptyFile { path: PathBuf },
    #[error("{path}: file has a header but no data rows")]
    NoRows { path: PathBuf },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: not valid UTF-8 ({detail}); re-save the file as UTF-8")]
    NotUtf8 { path: PathBuf, detail: String },
    #[error("{path}: column {column:?} has type {data_type}, which quarry cannot read")]
    UnsupportedColumnType { path: PathBuf, column: String, data_type: String },
    #[error("{path}: unsupported file type (expected .csv or .parquet)")]
    UnsupportedFormat { path: PathBuf },
    #[error("{path}: column name {name:?} appears more than once")]
    DuplicateColumn { path: PathBuf, name: String },
    #[error("target column {name:?} not found; columns are: {available}")]
    MissingTarget { name: String, available: String },
    #[error("feature column {name:?} is missing from the data")]
    MissingFeature { name: String },
    #[error("target column {name:?}: {message}")]
    BadTarget { name: String, message: String },
    #[error("no usable feature columns: {reason}")]
    NoFeatures { reason: String },
    #[error("unknown metric {0:?}; choose one of roc_auc, log_loss, accuracy, rmse, r2, mae")]
    UnknownMetric(String),
    #[error("metric {metric} does not apply to a {task} task")]
    MetricTaskMismatch { metric: String, task: String },
}

pub type Result<T, E = FeaturizeError> = std::result::Result<T, E>;
