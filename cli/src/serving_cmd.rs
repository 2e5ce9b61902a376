//! `quarry serve-model` (one run folder, or every registered model, over the Open Inference
//! Protocol v2) and `quarry drift`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use quarry_featurize::load_table;
use quarry_serving::batcher::DEFAULT_MAX_QUEUED_ROWS;
use quarry_serving::drift::{DriftReport, Reference, Thresholds, compare};
use quarry_serving::model::{load_pipeline, reference_from_file, training_file};
use quarry_serving::oip::{DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_REQUEST_ROWS};
use quarry_serving::{BatchConfig, Limits, Registry, ServedModel};

/// What one inference request may hold and how many rows may wait for a model; `quarry serve`
/// (its /v2 routes) and `quarry serve-model` both take these.
#[derive(Args)]
pub struct InferenceLimitArgs {
    /// Largest inference request body (JSON and binary tensors together); larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_REQUEST_BODY)]
    pub max_request_body: usize,
    /// Most rows one inference request may hold (like Triton's max_batch_size); more get 413.
    #[arg(long, value_name = "ROWS", default_value_t = DEFAULT_MAX_REQUEST_ROWS)]
    pub max_request_rows: usize,
    /// Rows that may wait for a model's scoring thread; a request that would go over gets 503.
    #[arg(long, value_name = "ROWS", default_value_t = DEFAULT_MAX_QUEUED_ROWS)]
    pub max_queued_rows: usize,
}

impl InferenceLimitArgs {
    pub fn limits(&self) -> Limits {
        Limits { max_body: self.max_request_body, max_rows: self.max_request_rows.max(1) }
    }

    pub fn batch_config(&self, max_rows: usize, max_delay: Duration) -> BatchConfig {
        BatchConfig { max_rows: max_rows.max(1), max_delay, max_queued_rows: self.max_queued_rows.max(1) }
    }
}

#[derive(Args)]
pub struct ServeModelArgs {
    /// A run folder (or its model/ subfolder) to serve alone.
    #[arg(long, required_unless_present = "registry", conflicts_with = "registry")]
    pub model: Option<PathBuf>,
    /// The model's name in URLs (/v2/models/NAME); default: the run folder's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Serve every model registered in this store instead (versions and aliases in URLs).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one; printed as `listening http=ADDR`).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub http: String,
    /// Training-like data to compare scored rows with (GET /v2/models/NAME/drift); default: the
    /// training file recorded in run.json, if it is still there unchanged.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// A batch of merged concurrent requests stops growing at this many rows.
    #[arg(long, default_value_t = 1024)]
    pub max_batch_rows: usize,
    /// How long a batch may wait for requests already on their way, in microseconds.
    #[arg(long, default_value_t = 1000)]
    pub max_batch_delay_us: u64,
    /// Requests must carry `Authorization: Bearer SECRET` (compared in constant time).
    #[arg(long, value_name = "SECRET")]
    pub token: Option<String>,
    #[command(flatten)]
    pub limits: InferenceLimitArgs,
    #[command(flatten)]
    pub tls: crate::tls::ServerTlsArgs,
}

pub fn serve_model(args: ServeModelArgs) -> Result<()> {
    let tls = args.tls.load()?;
    let config =
        args.limits.batch_config(args.max_batch_rows, Duration::from_micros(args.max_batch_delay_us));
    let limits = args.limits.limits();
    let router = match (&args.model, &args.registry) {
        (Some(dir), _) => {
            let pipeline = load_pipeline(dir)?;
            let name = match &args.name {
                Some(n) => n.clone(),
                None => std::fs::canonicalize(dir)?
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("model")
                    .to_string(),
            };
            quarry_serving::registry::validate_name(&name)?;
            let reference = match &args.reference {
                Some(file) => Some(reference_from_file(&pipeline, file)?),
                None => training_file(dir).and_then(|(file, _)| reference_from_file(&pipeline, &file).ok()),
            };
            if reference.is_none() {
                eprintln!(
                    "note: no drift reference (pass --reference FILE to enable /v2/models/{name}/drift)"
                );
            }
            quarry_serving::router(ServedModel::new(pipeline, &name, "1", reference, config)?, limits)
        }
        (None, Some(store)) => quarry_serving::registry_router(store, config, limits),
        (None, None) => bail!("give --model RUN_DIR or --registry STORE"),
    };
    // The coordinator's constant-time token check; the body limit is the router's own
    // (--max-request-body), so the outer one is left open.
    let protect = quarry_coordinator::http::HttpConfig {
        token: args.token.clone(),
        max_upload: u64::MAX,
        secure_cookie: args.tls.tls_cert.is_some(),
    };
    let router = quarry_coordinator::http::protect(router, &protect);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.http)
            .await
            .with_context(|| format!("binding {}", args.http))?;
        println!("listening http={}", listener.local_addr()?);
        use std::io::Write;
        std::io::stdout().flush()?;
        // Single-row answers are small writes: `serve_http` turns Nagle's algorithm off.
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let conns = quarry_coordinator::conn::ConnLimits::default();
        crate::tls::serve_http(listener, router, tls.as_ref(), conns, shutdown).await?;
        Ok(())
    })
}

#[derive(Args)]
pub struct DriftArgs {
    /// The reference data: a file, or a registered dataset NAME:VERSION.
    #[arg(long)]
    pub reference: String,
    /// The current data to compare with the reference.
    #[arg(long)]
    pub current: PathBuf,
    /// A column left out of the comparison (the label).
    #[arg(long)]
    pub target: Option<String>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The registry store for NAME:VERSION references.
    #[arg(long, default_value = "quarry-store")]
    pub store: PathBuf,
}

pub fn drift(args: DriftArgs) -> Result<()> {
    let as_path = PathBuf::from(&args.reference);
    let reference_file = if as_path.exists() {
        as_path
    } else {
        let registry = Registry::open(&args.store);
        let record = registry.dataset(&args.reference).with_context(|| {
            format!(
                "--reference {}: neither a file nor a registered dataset in {}",
                args.reference,
                args.store.display()
            )
        })?;
        registry.dataset_file(&record)?
    };
    let reference = load_table(&reference_file)?;
    let current = load_table(&args.current)?;
    if let Some(t) = &args.target
        && reference.table.column(t).is_none()
    {
        bail!("--target {t:?}: no such column in {}", reference_file.display());
    }
    let exclude: Vec<&str> = args.target.iter().map(String::as_str).collect();
    let reference = Reference::from_table(&reference.table, None, &exclude, 0);
    let current = Reference::like(&reference, &current.table, 0);
    let report = compare(&reference, &current, &Thresholds::default());
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| path.display().to_string())?;
    }
    Ok(())
}

fn print_report(r: &DriftReport) {
    println!(
        "{:<24} {:<12} {:>8} {:>8} {:>8} {:<10} {:>10} {:>10} {:>7}  verdict",
        "column", "kind", "n_ref", "n_cur", "psi", "test", "statistic", "p_value", "effect"
    );
    for c in &r.columns {
        println!(
            "{:<24} {:<12} {:>8} {:>8} {:>8.4} {:<10} {:>10.4} {:>10.3e} {:>7.3}  {}",
            c.column,
            c.kind,
            c.n_reference,
            c.n_current,
            c.psi,
            c.test,
            c.statistic,
            c.p_value,
            c.effect,
            c.verdict
        );
    }
    let t = &r.thresholds;
    println!(
        "thresholds: drift if psi >= {} or (p < {} and effect >= {}); warn if psi >= {}",
        t.psi_drift, t.p_value, t.min_effect, t.psi_warn
    );
    if r.drifted_columns.is_empty() {
        println!("verdict: {}", r.verdict);
    } else {
        println!("verdict: {} ({})", r.verdict, r.drifted_columns.join(", "));
    }
}
