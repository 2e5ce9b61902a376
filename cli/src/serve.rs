//! `quarry serve`: the coordinator as a gRPC server. It keeps jobs, trials and leases in an
//! event log (a file under --store, or Redis) and artifacts in a blob directory; workers
//! (`quarry worker`) do all the data work. With `--http`, the dashboard and JSON API are
//! served on the same runtime over the same state.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use quarry_coordinator::blobs::BlobStore;
use quarry_coordinator::conn::ConnLimits;
use quarry_coordinator::grpc::{Auth, Server, serve_limited};
use quarry_coordinator::http::{self, HttpConfig};
use quarry_coordinator::owner::{EpochRecord, StoreLock};
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
    let config = HttpConfig {
        token: args.token.clone(),
        max_upload: args.max_upload,
        secure_cookie: args.tls.tls_cert.is_some(),
    };
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
        // First, so a second coordinator on this store touches nothing (exits 2 naming us).
        let mut lock = StoreLock::acquire(&store)?;
        let blobs = BlobStore::open(&store.join("blobs"))
            .with_context(|| format!("opening the store {}", store.display()))?;
        let (log, last_epoch, log_id): (Box<dyn EventLog>, u64, String) = match &args.redis {
            Some(url) => {
                let mut log = RedisLog::open(url, "coordinator")?;
                log.keep_rotated(args.keep_rotated_log);
                log.check_durability(args.redis_unsafe)?;
                let last = log.claim(&lock, args.redis_unsafe)?;
                let id = log.id();
                (Box::new(log), last, id)
            }
            None => {
                let last = lock.last_epoch().epoch;
                let log = FileLog::open_with(&store.join("events.log"), args.keep_rotated_log)?;
                (Box::new(log), last, "file".into())
            }
        };
        let server = Server::start_at(log, blobs, args.lease_ttl, last_epoch + 1)?;
        // Before the listeners: no lease of this epoch exists until it is on disk.
        lock.record_epoch(EpochRecord { epoch: server.epoch(), log: log_id })?;
        let limits = ConnLimits {
            max_connections: args.max_connections,
            idle_timeout: args.idle_timeout,
            header_timeout: args.header_timeout,
        };
        server.set_max_upload(args.max_upload);
        server.set_max_blob(args.max_blob);
        server.set_retain_finished(args.retain_finished.0);
        server.set_snapshot_every(args.snapshot_every);
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
                    crate::tls::serve_http(listener, router, tls.as_deref(), limits, shutdown).await
                }))
            }
            None => None,
        };
        std::io::stdout().flush().ok();
        let shutdown = {
            let server = server.clone();
            async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => eprintln!("shutting down"),
                    // A coordinator that can no longer log changes serves nothing useful, and a
                    // graceful stop would wait on the workers' open streams: exit (2) now, so a
                    // supervisor restarts it and the start-up checks decide.
                    why = server.log_stopped() => {
                        tracing::error!("the event log stopped: {why}");
                        eprintln!("error: the event log stopped: {why}");
                        std::process::exit(2);
                    }
                }
                let _ = stop_tx.send(true);
            }
        };
        let grpc_tls = tls.as_deref().map(crate::tls::ServerTls::grpc);
        let worker_auth = match &args.worker_token {
            Some(t) => Auth::for_workers(Some(t)),
            None => Auth::new(args.token.as_deref()),
        };
        let client_auth = Auth::new(args.token.as_deref());
        serve_limited(server, client_auth, worker_auth, listener, grpc_tls, limits, shutdown).await?;
        if let Some(task) = http_task {
            // Open event streams would hold a graceful shutdown forever; give them a moment.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
        }
        drop(lock);
        Ok(())
    })
}
