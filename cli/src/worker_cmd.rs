//! `quarry worker`: leases tasks from a coordinator and runs them (see `quarry_worker::client`).

use anyhow::Result;
use quarry_worker::client::{WorkerConfig, run_worker};

use crate::client::coordinator_url;
use crate::prepare::thread_count;
use crate::remote_args::WorkerArgs;

pub fn run(args: WorkerArgs) -> Result<()> {
    if args.slots == 0 {
        anyhow::bail!("--slots must be at least 1");
    }
    let url = coordinator_url(&args.connect)?;
    let mut config = WorkerConfig::new(&url);
    config.tls = crate::tls::client_tls(&url, args.connect.tls_ca.as_deref())?;
    config.slots = args.slots;
    config.gpus = u32::from(args.gpu);
    config.token = crate::client::token(&args.connect);
    config.threads = thread_count(args.threads)?;
    config.tags = args.tags;
    if let Some(dir) = args.cache_dir {
        config.cache_dir = dir;
    }
    if let Some(v) = args.protocol_version {
        config.protocol_version = v;
    }
    config.trial_timeout = args.trial_timeout;
    config.memory_limit = args.memory_limit;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    eprintln!("worker: connecting to {} with {} slot(s)", config.coordinator, config.slots);
    runtime.block_on(run_worker(config))?;
    Ok(())
}
