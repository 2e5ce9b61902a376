//! Arguments of the distributed commands: `worker`, `submit`, `jobs`, `status`, `leaderboard`,
//! `download`.

use std::path::PathBuf;

use clap::Args;

use crate::args::FitArgs;

/// Where the coordinator is and how to authenticate: every client command takes these.
#[derive(Args, Clone)]
pub struct Connect {
    /// The coordinator's gRPC address, e.g. http://10.0.0.5:7070 (default: $QUARRY_COORDINATOR).
    #[arg(long)]
    pub coordinator: Option<String>,
    /// The shared secret the coordinator was started with (default: $QUARRY_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// Trust this CA (PEM) for an https:// coordinator, e.g. a self-signed one (default: the
    /// system's roots); an address without a scheme then means https://.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
    /// Offer this machine's GPU (GPU-wanting trials go only to such workers).
    #[arg(long)]
    pub gpu: bool,
    /// Training threads, shared by the slots (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// A label the coordinator may match tasks on (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Where fetched datasets are cached (default: a folder under the system temp dir).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The protocol version sent on register (tests only).
    #[arg(long, hide = true)]
    pub protocol_version: Option<u32>,
    /// The longest one trial may run (e.g. 10m); one still running 2 s past it (or past the
    /// job's deadline) is recorded as failed and its thread abandoned.
    #[arg(long, value_parser = crate::args::parse_duration)]
    pub trial_timeout: Option<std::time::Duration>,
    /// Heap limit for this worker's trials together, e.g. 512MiB, 2GiB (default: no limit).
    /// Each trial's memory is estimated first: one that would not fit is downsized (tree
    /// ensembles) or recorded as failed, one that fits only beside fewer running trials waits,
    /// and one whose live heap still goes over is stopped and recorded as failed.
    #[arg(long, value_parser = crate::memory::parse_limit)]
    pub memory_limit: Option<u64>,
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// `quarry fit`'s options, the same struct: the data file is uploaded to the coordinator,
    /// --out is where --wait puts the run folder, and --threads is refused (a worker setting).
    #[command(flatten)]
    pub fit: FitArgs,
    /// Groups related jobs.
    #[arg(long, default_value = "default")]
    pub experiment: String,
    /// Follow the job and download its run folder when it completes.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Only this experiment's jobs.
    #[arg(long)]
    pub experiment: Option<String>,
}

#[derive(Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// The job id `submit` printed.
    pub job: String,
}

#[derive(Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub connect: Connect,
    pub job: String,
    /// Where the run folder goes.
    #[arg(long)]
    pub out: PathBuf,
}
