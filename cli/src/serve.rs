//! `quarry serve`: the coordinator as a gRPC server. It keeps jobs, trials and leases in an
//! event log (a file under --store, or Redis) and artifacts in a blob directory; workers
//! (`quarry worker`) do all the data work. With `--http`, the dashboard and JSON API are
//! served on the same runtime over the same state.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use quarry_coordinator::blobs::BlobStore;
use quarry_coordinator::grpc::{Auth, Server, serve_tls};
use quarry_coordinator::http::{self, HttpConfig};
use quarry_coordinator::redis_log::RedisLog;
use quarry_coordinator::{EventLog, FileLog};

use crate::args::ServeArgs;

/// Everything served on `--http`. Routers merged here (`.merge(...)`) sit behind the same
/// token check and upload limit, which wrap the whole.
fn http_router(server: &Server, args: &ServeArgs, store: &std::path::Path) -> axum::Router {
    // The dashboard and API, plus every model registered under the same store served over the
    // Open Inference Protocol v2 (`/v2/...`); one token and upload limit guard both.
    let limits = &args.inference;
    let batch = limits.batch_config(1024, std::time::Duration::from_millis(1));
    let routes =
        http::router(server.clone()).merge(quarry_serving::registry_router(store, batch, limits.limits()));
    let config = HttpConfig { token: args.token.clone(), max_upload: args.max_upload };
    http::protect(routes, &config)
}

pub fn run(args: ServeArgs) -> Result<()> {
    let store = args.store.clone().unwrap_or_else(|| PathBuf::from("quarry-store"));
    let tls = args.tls.load()?.map(std::sync::Arc::new);
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
        server.set_max_upload(args.max_upload);
        let listener = tokio::net::TcpListener::bind(&args.grpc)
            .await
            .with_context(|| format!("binding --grpc {}", args.grpc))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // Tests and scripts read the port from this line (--grpc 127.0.0.1:0 picks a free one).
        println!("listening grpc={addr}");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let http_task = match &args.http {
            Some(http_addr) => {
                let listener = tokio::net::TcpListener::bind(http_addr)
                    .await
                    .with_context(|| format!("binding --http {http_addr}"))?;
                let addr = listener.local_addr().context("reading the bound address")?;
                println!("listening http={addr}");
                let router = http_router(&server, &args, &store);
                let mut stop = stop_rx.clone();
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                let tls = tls.clone();
                Some(tokio::spawn(async move {
                    crate::tls::serve_http(listener, router, tls.as_deref(), shutdown).await
                }))
            }
            None => None,
        };
        std::io::stdout().flush().ok();
        let shutdown = async move {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("shutting down");
            let _ = stop_tx.send(true);
        };
        let grpc_tls = tls.as_deref().map(crate::tls::ServerTls::grpc);
        serve_tls(server, Auth::new(args.token.as_deref()), listener, grpc_tls, shutdown).await?;
        if let Some(task) = http_task {
            // Open event streams would hold a graceful shutdown forever; give them a moment.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
        }
        Ok(())
    })
}
