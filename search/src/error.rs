#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("no model family to search")]
    NoFamilies,
    #[error("validation: {0}")]
    Validation(String),
}
