use std::path::PathBuf;

/// Every failure of the serving crate. The HTTP layer maps each to a status code
/// ([`ServingError::status`]) and the protocol's `{"error": "..."}` body.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("model {name:?} has no version {version:?}")]
    UnknownVersion { name: String, version: String },
    #[error("unknown dataset {0:?}")]
    UnknownDataset(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0:?} is not a valid name: {1}")]
    BadName(String, String),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Unavailable(String),
    /// A request over a size limit (body bytes, rows).
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NoReference(String),
}

impl ServingError {
    pub fn io(path: &std::path::Path, e: impl std::fmt::Display) -> ServingError {
        ServingError::Io { path: path.to_path_buf(), message: e.to_string() }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ServingError::UnknownModel(_)
            | ServingError::UnknownVersion { .. }
            | ServingError::UnknownDataset(_)
            | ServingError::NoReference(_) => 404,
            ServingError::BadRequest(_) | ServingError::BadName(..) | ServingError::Data(_) => 400,
            ServingError::TooLarge(_) => 413,
            ServingError::Unavailable(_) => 503,
            ServingError::Io { .. } | ServingError::Model(_) => 500,
        }
    }
}

pub type Result<T> = std::result::Result<T, ServingError>;
