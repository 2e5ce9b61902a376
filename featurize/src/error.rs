use std::path::PathBuf;

/// Everything that can go wrong between a file on disk and a feature matrix.
#[derive(Debug, thiserror::Error)]
pub enum FeaturizeError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// The file would take more memory to load than this process may use, or more rows than
    /// a table can hold; found before the rows are materialized.
    #[error("{path}: too large to load: {message}")]
    TooLarge { path: PathBuf, message: String },
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
    #[error("column {column:?} has {len} values but the table has {n_rows} rows")]
    ColumnLength { column: String, len: usize, n_rows: usize },
    #[error("column type override {arg:?}: {message}")]
    BadOverride { arg: String, message: String },
    #[error("{path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    #[error("column {name:?} named in the column overrides is not in the data; columns are: {available}")]
    UnknownOverrideColumn { name: String, available: String },
    #[error("unknown metric {0:?}; choose one of roc_auc, log_loss, accuracy, rmse, r2, mae")]
    UnknownMetric(String),
    #[error("series {series:?}: timestamp {time} appears more than once (one row per series and time)")]
    DuplicateTimestamp { series: String, time: String },
    #[error("{0}")]
    Forecast(String),
    #[error("metric {metric} does not apply to a {task} task")]
    MetricTaskMismatch { metric: String, task: String },
}

pub type Result<T, E = FeaturizeError> = std::result::Result<T, E>;

/// Error text from a library, made fit for one `error:` line: newlines folded, at most 300 chars.
pub(crate) fn one_line(s: &str) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate_chars(&flat, 300)
}

/// A cell value quoted for an error message, cut short so a 1 MB cell stays a short line.
pub(crate) fn preview(s: &str) -> String {
    format!("{:?}", truncate_chars(s, 40))
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Column names for a "columns are: …" hint; a 10,000-column file must not print them all.
pub(crate) fn name_list<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 20;
    let total = names.len();
    let mut out: Vec<String> = names.take(SHOWN).map(|n| format!("{:?}", truncate_chars(n, 40))).collect();
    if total > SHOWN {
        out.push(format!("… ({} more)", total - SHOWN));
    }
    out.join(", ")
}
