use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "quarry", version, about = "AutoML for tabular data: featurize, search, ensemble, export")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Search model families and hyperparameters on a dataset and save the best pipeline.
    Fit(FitArgs),
    /// Score a file with a fitted model.
    Predict(PredictArgs),
    /// Print a fitted model's metrics on a labelled file, as JSON.
    Evaluate(EvaluateArgs),
    /// Print the inferred schema (and, with --target, the data guardrails) without training.
    Profile(ProfileArgs),
    /// Fit one model family with fixed hyperparameters (no search) and write a run folder.
    Train(TrainArgs),
    /// Per-row Shapley values of a fitted model, one column per raw input column.
    Explain(ExplainArgs),
    /// Write a fitted model as one ONNX graph (featurizer + model or ensemble).
    Export(ExportArgs),
    /// Run the coordinator: a gRPC server that hands trials to `quarry worker` processes.
    Serve(ServeArgs),
    /// Run trials for a coordinator (`quarry serve`).
    Worker(crate::remote_args::WorkerArgs),
    /// Upload a dataset and start a job on a coordinator; prints the job id.
    Submit(crate::remote_args::SubmitArgs),
    /// List a coordinator's jobs.
    Jobs(crate::remote_args::JobsArgs),
    /// A job's state (queued, running, completed, failed, cancelled) and progress.
    Status(crate::remote_args::JobArgs),
    /// A job's leaderboard so far.
    Leaderboard(crate::remote_args::JobArgs),
    /// Download a completed job's run folder.
    Download(crate::remote_args::DownloadArgs),
    /// Serve a run folder (or every registered model) over the Open Inference Protocol v2 (HTTP).
    ServeModel(crate::serving_cmd::ServeModelArgs),
    /// Per-column drift (PSI, Kolmogorov–Smirnov, chi-square) between a reference and current data.
    Drift(crate::serving_cmd::DriftArgs),
    /// The dataset registry: register, list, show.
    Data(crate::registry_cmd::DataArgs),
    /// The model registry: register, list, show, download, alias.
    Models(crate::registry_cmd::ModelsArgs),
}

#[derive(Args)]
pub struct ExplainArgs {
    /// A model directory (a run folder or its model/ subfolder).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Output CSV: one column per raw input column, then expected_value and output.
    #[arg(long)]
    pub out: PathBuf,
    /// The class to explain (default: the positive class of a binary model; required for multiclass).
    #[arg(long)]
    pub class: Option<String>,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A model directory (a run folder or its model/ subfolder).
    #[arg(long)]
    pub model: PathBuf,
    /// The .onnx file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address for the gRPC API (port 0 picks a free one; the bound address is printed as
    /// `listening grpc=ADDR`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc: String,
    /// Address for the web dashboard and JSON API (port 0 picks a free one; printed as
    /// `listening http=ADDR`).
    #[arg(long)]
    pub http: Option<String>,
    /// Largest request body the HTTP server accepts (dataset uploads); larger ones get 413.
    /// Also the largest dataset a gRPC upload (`quarry submit`) may send.
    #[arg(long, value_name = "BYTES", default_value_t = quarry_coordinator::http::DEFAULT_MAX_UPLOAD)]
    pub max_upload: u64,
    /// Largest artifact a worker may upload (PutBlob: fold models, run-folder files); larger
    /// ones are refused and their partial file deleted.
    #[arg(long, value_name = "BYTES", default_value_t = quarry_coordinator::grpc::DEFAULT_MAX_BLOB)]
    pub max_blob: u64,
    /// Limits of the /v2 inference routes (registered models), apart from --max-upload.
    #[command(flatten)]
    pub inference: crate::serving_cmd::InferenceLimitArgs,
    /// Directory for the event log (events.log, unless --redis) and the blob store (blobs/);
    /// default ./quarry-store.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Keep the event log in Redis instead (a Stream); blobs still go to --store.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Start on a Redis that would lose acknowledged changes in a crash (appendonly off,
    /// appendfsync no/everysec without WAITAOF, an evicting maxmemory-policy) or that already
    /// lost some, with a loud warning instead of refusing.
    #[arg(long, requires = "redis")]
    pub redis_unsafe: bool,
    /// Shared secret every client and worker must send (`--token` on their side).
    #[arg(long, value_name = "SECRET")]
    pub token: Option<String>,
    /// The token workers present (as their --token) instead of --token: a client's token then
    /// cannot run the worker service (lease tasks, post results), nor a worker's the client one.
    #[arg(long, value_name = "SECRET")]
    pub worker_token: Option<String>,
    /// A lease not renewed for this long expires and its task is retried elsewhere.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub lease_ttl: Duration,
    /// Connections open at once on each listener (gRPC, HTTP); more wait in the backlog.
    #[arg(long, value_name = "N", default_value_t = quarry_coordinator::conn::DEFAULT_CONN_LIMITS.max_connections)]
    pub max_connections: usize,
    /// A connection that moves no byte for this long is closed (gRPC and HTTP).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,
    /// An HTTP request's headers must arrive within this long.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub header_timeout: Duration,
    /// Write a state snapshot every N events and let go of the log before it, so a restart
    /// replays at most about N events (0: never).
    #[arg(long, value_name = "N", default_value_t = quarry_coordinator::grpc::DEFAULT_SNAPSHOT_EVERY)]
    pub snapshot_every: u64,
    /// Keep the log a snapshot covers (rotated `events.log.<N>` segments; with --redis, the
    /// stream's entries) instead of deleting it: the full history for audits and bench/chaos.py.
    #[arg(long)]
    pub keep_rotated_log: bool,
    /// A finished job keeps its trials' artifacts and progress curves this long (its
    /// leaderboard and final model stay); `never` keeps them forever.
    #[arg(long, value_name = "DURATION", value_parser = parse_retention, default_value = "7d")]
    pub retain_finished: Retention,
    /// TLS for both the gRPC and the HTTP listener.
    #[command(flatten)]
    pub tls: crate::tls::ServerTlsArgs,
}

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub target: String,
    /// gbdt, random_forest, extra_trees or linear.
    #[arg(long)]
    pub family: String,
    /// A hyperparameter, LightGBM-style names for trees (n_estimators, learning_rate, num_leaves, …); repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// A labelled file to score on (and, for gbdt with early_stopping_rounds, to stop on).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub task: TaskArg,
    #[arg(long)]
    pub metric: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub columns: ColumnArgs,
}

/// How raw columns are read: shared by `fit` and `profile`.
#[derive(Args, Clone, Default)]
pub struct ColumnArgs {
    /// Force a column's kind: NAME=numeric|boolean|categorical|datetime|text|id|ignore (repeatable).
    #[arg(long = "column-type", value_name = "NAME=KIND")]
    pub column_types: Vec<String>,
    /// Leave a column out (repeatable).
    #[arg(long = "drop", value_name = "COL")]
    pub drop: Vec<String>,
    /// Column config applied before --column-type: a .toml file (`drop = ["col", ...]` and a
    /// `[columns]` table of `name = "kind"`), or any other file of NAME=KIND lines (# comments).
    #[arg(long = "column-types-file", value_name = "FILE")]
    pub column_types_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ProfileArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub target: Option<String>,
    /// Also build the feature matrix the models would see, and report its size.
    #[arg(long)]
    pub featurize: bool,
    #[command(flatten)]
    pub columns: ColumnArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TaskArg {
    Auto,
    Binary,
    Multiclass,
    Regression,
    /// Time-series forecasting (needs --time-column and --horizon).
    Forecast,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SchedulerArg {
    Fifo,
    Median,
    Asha,
}

impl From<SchedulerArg> for quarry_coordinator::SchedulerKind {
    fn from(s: SchedulerArg) -> Self {
        match s {
            SchedulerArg::Fifo => quarry_coordinator::SchedulerKind::Fifo,
            SchedulerArg::Median => quarry_coordinator::SchedulerKind::Median,
            SchedulerArg::Asha => quarry_coordinator::SchedulerKind::Asha,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SearcherArg {
    Local,
    Tpe,
    Random,
}

impl From<SearcherArg> for quarry_coordinator::SearcherKind {
    fn from(s: SearcherArg) -> Self {
        match s {
            SearcherArg::Local => quarry_coordinator::SearcherKind::Local,
            SearcherArg::Tpe => quarry_coordinator::SearcherKind::Tpe,
            SearcherArg::Random => quarry_coordinator::SearcherKind::Random,
        }
    }
}

#[derive(Args)]
pub struct FitArgs {
    /// Training data (.csv or .parquet), or a registered dataset NAME:VERSION (see --store).
    #[arg(long)]
    pub data: PathBuf,
    /// The registry store where --data NAME:VERSION is looked up (`quarry data register`).
    #[arg(long, default_value = "quarry-store")]
    pub store: PathBuf,
    /// The column to predict.
    #[arg(long)]
    pub target: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub task: TaskArg,
    /// roc_auc, log_loss, accuracy, rmse, r2 or mae (default: by task).
    #[arg(long)]
    pub metric: Option<String>,
    /// Wall-clock budget for the whole run, e.g. 30s, 5m, 1h (default 60s unless --max-trials is given).
    #[arg(long, value_parser = parse_duration)]
    pub budget: Option<Duration>,
    /// Stop after this many trials; without --budget the run is then deterministic.
    #[arg(long)]
    pub max_trials: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Validate by group: rows sharing this column's value never sit on both sides of a fold
    /// (the column is not used as a feature).
    #[arg(long)]
    pub group_column: Option<String>,
    /// Stops unpromising boosted trials early: fifo (never), median (median stopping rule), asha.
    #[arg(long, value_enum, default_value = "fifo")]
    pub scheduler: SchedulerArg,
    /// Proposes trials after the zero-shot portfolio: local (cost-frugal moves around each
    /// family's best), tpe (tree-structured Parzen estimator) or random.
    #[arg(long, value_enum, default_value = "local")]
    pub searcher: SearcherArg,
    /// Threads for training (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Heap limit for trials, e.g. 512MiB, 2GiB (default: no limit). Each trial's memory is
    /// estimated first: one that would not fit is downsized (tree ensembles) or recorded as
    /// failed, and one whose live heap still goes over is stopped and recorded as failed.
    #[arg(long, value_parser = crate::memory::parse_limit)]
    pub memory_limit: Option<u64>,
    /// Run folder (default runs/<timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub columns: ColumnArgs,
    #[command(flatten)]
    pub forecast: crate::forecast::ForecastArgs,
}

#[derive(Args)]
pub struct PredictArgs {
    /// A model directory (a run folder or its model/ subfolder).
    #[arg(long)]
    pub model: PathBuf,
    /// Rows to score (forecast models: series id + timestamp; optional, see --horizon).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output CSV.
    #[arg(long)]
    pub out: PathBuf,
    /// Forecast models without --data: this many points after the end of training (default: the fitted horizon).
    #[arg(long)]
    pub horizon: Option<usize>,
}

#[derive(Args)]
pub struct EvaluateArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled data: must contain the target column.
    #[arg(long)]
    pub data: PathBuf,
}

/// How long something is kept: `None` is forever. A type of its own, as clap reads a bare
/// `Option` field as "the flag may be absent".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention(pub Option<Duration>);

/// A duration, or `never`.
fn parse_retention(s: &str) -> Result<Retention, String> {
    if s.trim() == "never" { Ok(Retention(None)) } else { parse_duration(s).map(|d| Retention(Some(d))) }
}

/// `90`, `90s`, `5m`, `1h`, `1h30m`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => return Err(format!("{s:?}: unknown unit {c:?} (use s, m, h or d)")),
        };
        let n: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 30s or 5m"))?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() {
        total += number.parse::<f64>().map_err(|_| format!("{s:?} is not a duration like 30s or 5m"))?;
    }
    if !(total > 0.0 && total.is_finite()) {
        return Err(format!("{s:?}: the budget must be positive"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_retention("never"), Ok(Retention(None)));
        assert_eq!(parse_retention("1h"), Ok(Retention(Some(Duration::from_secs(3600)))));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
