//! The client commands: `submit`, `jobs`, `status`, `leaderboard`, `download`, talking to a
//! coordinator's `QuarryService`.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use quarry_proto::QuarryServiceClient;
use quarry_proto::pb::{self, JobState};
use quarry_worker::client::{Auth, channel_tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::args::SchedulerArg;
use crate::output::default_run_dir;
use crate::remote_args::{Connect, DownloadArgs, JobArgs, JobsArgs, SubmitArgs};

type Client = QuarryServiceClient<InterceptedService<Channel, Auth>>;

const DEFAULT_BUDGET: Duration = Duration::from_secs(60);
const CHUNK: usize = 1 << 20;

pub fn coordinator_url(c: &Connect) -> Result<String> {
    let url = match &c.coordinator {
        Some(u) => u.clone(),
        None => std::env::var("QUARRY_COORDINATOR")
            .ok()
            .filter(|u| !u.is_empty())
            .context("no coordinator: pass --coordinator URL or set QUARRY_COORDINATOR")?,
    };
    Ok(if url.contains("://") {
        url
    } else if c.tls_ca.is_some() {
        format!("https://{url}")
    } else {
        format!("http://{url}")
    })
}

pub fn token(c: &Connect) -> Option<String> {
    c.token.clone().or_else(|| std::env::var("QUARRY_TOKEN").ok().filter(|t| !t.is_empty()))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// The channel connects lazily, which needs `rt`'s reactor.
fn connect(c: &Connect, rt: &tokio::runtime::Runtime) -> Result<Client> {
    let _context = rt.enter();
    let url = coordinator_url(c)?;
    let auth = Auth::new(token(c).as_deref())?;
    let tls = crate::tls::client_tls(&url, c.tls_ca.as_deref())?;
    Ok(QuarryServiceClient::with_interceptor(channel_tls(&url, tls)?, auth)
        .max_decoding_message_size(quarry_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(quarry_proto::MAX_MESSAGE_BYTES))
}

/// A gRPC status as one readable line.
fn status_error(call: &str, s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::Unavailable if s.message().contains("tcp connect") => {
            anyhow::anyhow!("{call}: the coordinator is unreachable ({})", s.message())
        }
        tonic::Code::Unavailable => anyhow::anyhow!(
            "{call}: the coordinator is unreachable ({}; if it serves TLS, use an https:// address \
             and --tls-ca)",
            s.message()
        ),
        // What a plain-text client reads from a TLS server.
        tonic::Code::Unknown | tonic::Code::Internal
            if s.message().contains("protocol error") || s.message().contains("transport error") =>
        {
            anyhow::anyhow!(
                "{call}: the coordinator's answer is not plain gRPC ({}); if it serves TLS, use an \
                 https:// address and --tls-ca",
                s.message()
            )
        }
        tonic::Code::Unauthenticated => anyhow::anyhow!("{call}: {} (check --token)", s.message()),
        _ => anyhow::anyhow!("{call}: {}", s.message()),
    }
}

fn state_of(info: &pb::JobInfo) -> JobState {
    JobState::try_from(info.state).unwrap_or(JobState::Unspecified)
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    if args.fit.max_trials == Some(0) {
        bail!("--max-trials must be at least 1");
    }
    if args.fit.threads.is_some() {
        bail!("--threads is a worker setting: pass it to `quarry worker`");
    }
    if args.fit.memory_limit.is_some() {
        bail!("--memory-limit is a worker setting: pass it to `quarry worker`");
    }
    let budget = match (args.fit.budget, args.fit.max_trials) {
        (Some(b), _) => Some(b),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_BUDGET),
    };
    let column_types_file = match &args.fit.columns.column_types_file {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| p.display().to_string())?),
        None => None,
    };
    if matches!(args.fit.task, crate::args::TaskArg::Forecast) {
        anyhow::bail!(
            "--task forecast runs with `quarry fit` only; coordinators do not run forecasting jobs yet"
        );
    }
    // Overrides are checked here too, so a typo fails before the upload.
    args.fit.columns.overrides()?;
    let file_name = args.fit.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let rt = runtime()?;
    let mut client = connect(&args.connect, &rt)?;
    rt.block_on(async {
        let hash = upload(&mut client, &args.fit.data).await?;
        let spec = pb::JobSpec {
            experiment: args.experiment.clone(),
            dataset_hash: hash,
            file_name,
            target: args.fit.target.clone(),
            task: match args.fit.task {
                crate::args::TaskArg::Auto => "auto",
                crate::args::TaskArg::Binary => "binary",
                crate::args::TaskArg::Multiclass => "multiclass",
                crate::args::TaskArg::Regression => "regression",
                crate::args::TaskArg::Forecast => "forecast",
            }
            .into(),
            metric: args.fit.metric.clone().unwrap_or_default(),
            seed: args.fit.seed,
            budget_ms: budget.map(|b| b.as_millis() as u64),
            max_trials: args.fit.max_trials.map(|m| m as u64),
            scheduler: match args.fit.scheduler {
                SchedulerArg::Fifo => "fifo",
                SchedulerArg::Median => "median",
                SchedulerArg::Asha => "asha",
            }
            .into(),
            column_types: args.fit.columns.column_types.clone(),
            drop_columns: args.fit.columns.drop.clone(),
            group_column: args.fit.group_column.clone(),
            column_types_file,
            searcher: quarry_coordinator::SearcherKind::from(args.fit.searcher).name().into(),
        };
        let id = client.create_job(spec).await.map_err(|s| status_error("create job", s))?.into_inner().id;
        if !args.wait {
            println!("{id}");
            return Ok(());
        }
        eprintln!("job {id} submitted; following it");
        let info = watch(&mut client, &id, args.fit.max_trials, budget).await?;
        match state_of(&info) {
            JobState::Completed => {}
            state => {
                bail!("job {id} {}: {}", state.word(), info.reason.as_deref().unwrap_or("no reason given"))
            }
        }
        let out = match &args.fit.out {
            Some(d) => d.clone(),
            None => default_run_dir(Path::new("runs"))?,
        };
        download_into(&mut client, &id, &out).await?;
        let board = client
            .list_trials(pb::JobId { id: id.clone() })
            .await
            .map_err(|s| status_error("leaderboard", s))?
            .into_inner();
        print_board(&board, 10);
        println!("run folder: {}", out.display());
        println!("{id}");
        Ok(())
    })
}

/// Streams the file in chunks (never whole in memory); returns its hash.
async fn upload(client: &mut Client, path: &Path) -> Result<String> {
    let mut file = tokio::fs::File::open(path).await.with_context(|| path.display().to_string())?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::Chunk>(4);
    let display = path.display().to_string();
    let reader = tokio::spawn(async move {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = file.read(&mut buf).await.with_context(|| display.clone())?;
            if n == 0 && !first {
                return Ok::<(), anyhow::Error>(());
            }
            buf.truncate(n);
            let chunk = pb::Chunk { data: buf, name: if first { name.clone() } else { String::new() } };
            first = false;
            if tx.send(chunk).await.is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    let resp = client.upload_dataset(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    reader.await.context("upload reader")??;
    Ok(resp.map_err(|s| status_error("upload", s))?.into_inner().hash)
}

/// Follows the job's events with a progress bar until it reaches a final state.
async fn watch(
    client: &mut Client,
    id: &str,
    max_trials: Option<usize>,
    budget: Option<Duration>,
) -> Result<pb::JobInfo> {
    let bar = match max_trials.filter(|_| budget.is_none()) {
        Some(n) => ProgressBar::new(n as u64),
        None => ProgressBar::new_spinner(),
    };
    let template = if max_trials.is_some() && budget.is_none() {
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} trials {prefix} · {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {pos} trials {prefix} · {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut stream = match client.watch_job(pb::JobId { id: id.to_string() }).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                // The coordinator may be restarting: its log brings the job back.
                bar.set_message("coordinator unreachable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(s) => return Err(status_error("watch", s)),
        };
        loop {
            match stream.message().await {
                Ok(Some(event)) => match event.kind {
                    Some(pb::job_event::Kind::Job(info)) => {
                        bar.set_message(format!("{} ({})", state_of(&info).word(), info.phase));
                        bar.set_position(info.trials_finished);
                        if let (Some(s), Some(f)) = (info.best_score, &info.best_family) {
                            bar.set_prefix(format!("best {s:.4} ({f})"));
                        }
                        if state_of(&info).is_final() {
                            bar.finish_and_clear();
                            return Ok(info);
                        }
                    }
                    Some(pb::job_event::Kind::TrialStarted(t)) => {
                        bar.set_message(format!("trial {} ({})", t.trial_id, t.family));
                    }
                    Some(pb::job_event::Kind::TrialFinished(_)) => bar.inc(1),
                    None => {}
                },
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown => break,
                Err(s) => return Err(status_error("watch", s)),
            }
        }
        // The stream ended: ask for the state directly (and re-watch unless it is final).
        match client.get_job(pb::JobId { id: id.to_string() }).await {
            Ok(info) if state_of(info.get_ref()).is_final() => {
                bar.finish_and_clear();
                return Ok(info.into_inner());
            }
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::Unavailable => tokio::time::sleep(backoff).await,
            Err(s) => return Err(status_error("status", s)),
        }
    }
}

/// A relative path from the coordinator, refused if it could escape the folder.
fn safe_join(dir: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("artifact name {name:?} is not a plain relative path");
    }
    if let Some(why) = name.split('/').find_map(|part| quarry_featurize::safe_name(part).err()) {
        bail!("artifact name {name:?}: {why}");
    }
    Ok(dir.join(rel))
}

async fn download_into(client: &mut Client, id: &str, out: &Path) -> Result<()> {
    let list = client
        .list_artifacts(pb::JobId { id: id.to_string() })
        .await
        .map_err(|s| status_error("list artifacts", s))?
        .into_inner();
    if list.artifacts.is_empty() {
        bail!("job {id} has no run folder yet (is it completed? see `quarry status {id}`)");
    }
    for a in &list.artifacts {
        let path = safe_join(out, &a.name)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.with_context(|| parent.display().to_string())?;
        }
        let mut stream = client
            .download_artifact(pb::ArtifactRequest { job_id: id.to_string(), name: a.name.clone() })
            .await
            .map_err(|s| status_error("download", s))?
            .into_inner();
        let mut file = tokio::fs::File::create(&path).await.with_context(|| path.display().to_string())?;
        while let Some(chunk) = stream.message().await.map_err(|s| status_error("download", s))? {
            file.write_all(&chunk.data).await.with_context(|| path.display().to_string())?;
        }
        file.flush().await.with_context(|| path.display().to_string())?;
    }
    crate::report::write(out);
    Ok(())
}

pub fn download(args: DownloadArgs) -> Result<()> {
    let rt = runtime()?;
    let mut client = connect(&args.connect, &rt)?;
    rt.block_on(download_into(&mut client, &args.job, &args.out))?;
    println!("run folder: {}", args.out.display());
    Ok(())
}

pub fn jobs(args: JobsArgs) -> Result<()> {
    let rt = runtime()?;
    let mut client = connect(&args.connect, &rt)?;
    let req = pb::ListJobsRequest { experiment: args.experiment.unwrap_or_default() };
    let list = rt.block_on(client.list_jobs(req)).map_err(|s| status_error("jobs", s))?.into_inner();
    println!("{:<28} {:<12} {:<10} {:<9} {:>7}  best", "job", "experiment", "state", "phase", "trials");
    for j in &list.jobs {
        let experiment = j.spec.as_ref().map_or("", |s| s.experiment.as_str());
        let best = match (j.best_score, &j.best_family) {
            (Some(s), Some(f)) => format!("{s:.5} ({f})"),
            _ => "-".into(),
        };
        println!(
            "{:<28} {:<12} {:<10} {:<9} {:>7}  {best}",
            j.id,
            experiment,
            state_of(j).word(),
            j.phase,
            j.trials_finished
        );
    }
    Ok(())
}

pub fn status(args: JobArgs) -> Result<()> {
    let rt = runtime()?;
    let mut client = connect(&args.connect, &rt)?;
    let info = rt
        .block_on(client.get_job(pb::JobId { id: args.job.clone() }))
        .map_err(|s| status_error("status", s))?
        .into_inner();
    println!("{}", state_of(&info).word());
    println!("phase: {}", info.phase);
    println!("trials: {} finished, {} started", info.trials_finished, info.trials_started);
    if let (Some(s), Some(f)) = (info.best_score, &info.best_family) {
        println!("best: {s:.5} ({f})");
    }
    if let Some(r) = &info.reason {
        println!("reason: {r}");
    }
    Ok(())
}

fn print_board(board: &pb::Leaderboard, top: usize) {
    println!("{:>4}  {:>5}  {:<14} {:>12}  {:>8}  status", "rank", "trial", "family", board.metric, "fit s");
    for (rank, e) in board.entries.iter().take(top).enumerate() {
        let score = e.validation_score.map_or_else(|| "-".to_string(), |s| format!("{s:.5}"));
        let status = quarry_proto::convert::status_from_pb(e.status)
            .map(|s| format!("{s:?}").to_lowercase())
            .unwrap_or_else(|_| "unknown".into());
        println!(
            "{:>4}  {:>5}  {:<14} {:>12}  {:>8.2}  {status}",
            rank + 1,
            e.trial_id,
            e.family,
            score,
            e.fit_seconds
        );
    }
    if board.entries.len() > top {
        println!("  … {} more trials", board.entries.len() - top);
    }
}

pub fn leaderboard(args: JobArgs) -> Result<()> {
    let rt = runtime()?;
    let mut client = connect(&args.connect, &rt)?;
    let board = rt
        .block_on(client.list_trials(pb::JobId { id: args.job.clone() }))
        .map_err(|s| status_error("leaderboard", s))?
        .into_inner();
    print_board(&board, usize::MAX);
    Ok(())
}
