//! `quarry serve`: the coordinator as a gRPC server. It keeps jobs, trials and leases in an
//! event log (a file under --store, or Redis) and artifacts in a blob directory; workers
//! (`quarry worker`) do all the data work.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use quarry_coordinator::blobs::BlobStore;
use quarry_coordinator::grpc::{Auth, Server, serve};
use quarry_coordinator::redis_log::RedisLog;
use quarry_coordinator::{EventLog, FileLog};

use crate::args::ServeArgs;

pub fn run(args: ServeArgs) -> Result<()> {
    if let Some(http) = &args.http {
        eprintln!("note: --http {http}: the web dashboard is not built yet; serving gRPC only");
    }
    let store = args.store.clone().unwrap_or_else(|| PathBuf::from("quarry-store"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let blobs = BlobStore::open(&store.join("blobs"))
            .with_context(|| format!("opening the store {}", store.display()))?;
        let log: Box<dyn EventLog> = match &args.redis {
            Some(url) => Box::new(RedisLog::open(url, "coordinator")?),
            None => Box::new(FileLog::open(&store.join("events.log"))?),
        };
        let server = Server::start(log, blobs, args.lease_ttl)?;
        let listener = tokio::net::TcpListener::bind(&args.grpc)
            .await
            .with_context(|| format!("binding --grpc {}", args.grpc))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // Tests and scripts read the port from this line (--grpc 127.0.0.1:0 picks a free one).
        println!("listening grpc={addr}");
        std::io::stdout().flush().ok();
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("shutting down");
        };
        serve(server, Auth::new(args.token.as_deref()), listener, shutdown).await?;
        Ok(())
    })
}
