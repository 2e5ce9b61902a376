/// Why a fit or a model load failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid parameter {name}: {message}")]
    InvalidParam { name: String, message: String },
    #[error("unknown parameter {name:?} for family {family}")]
    UnknownParam { family: String, name: String },
    #[error(
        "unknown model family {0:?}; choose one of gbdt, random_forest, extra_trees, linear, knn, naive_bayes, svm, mlp"
    )]
    UnknownFamily(String),
    #[error("training data: {0}")]
    Data(String),
    #[error("{family} failed to fit: {message}")]
    Fit { family: String, message: String },
    #[error("explain: {0}")]
    Explain(String),
    #[error("ONNX export: {0}")]
    Export(String),
    #[error("model bundle: {0}")]
    Bundle(String),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
