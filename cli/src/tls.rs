//! TLS (rustls, ring provider) for `quarry serve` (gRPC and HTTP), `quarry serve-model` (HTTP)
//! and the gRPC clients (`worker`, `submit`, `jobs`, …). PEM files are read and checked here,
//! once, before anything listens or connects, so a bad file is an error naming it (exit 2)
//! rather than a failed handshake later. Plain text stays the default.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use quarry_coordinator::conn::{ConnLimits, IdleTimeout, limited_incoming};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A client that connects but never finishes its handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Clone, Default)]
pub struct ServerTlsArgs {
    /// Serve over TLS with this certificate chain (PEM, leaf first; needs --tls-key).
    /// Default: plain text.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// A checked certificate chain and its key: PEM text for tonic, a rustls config for HTTP.
/// No `Debug`: it holds the private key.
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    rustls: Arc<rustls::ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read the file", path.display()))
}

/// The certificates in a PEM file (at least one).
fn read_certs(flag: &str, path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>)> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{flag} {}: not a valid PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        bail!("{flag} {}: no certificate (-----BEGIN CERTIFICATE-----) in the file", path.display());
    }
    Ok((pem, certs))
}

impl ServerTlsArgs {
    /// `None` without `--tls-cert`; otherwise both files, checked (the key must match the
    /// certificate).
    pub fn load(&self) -> Result<Option<ServerTls>> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let (cert_pem, certs) = read_certs("--tls-cert", cert)?;
        let key_pem = read("--tls-key", key)?;
        let parsed = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            anyhow!("--tls-key {}: no usable PEM private key in the file ({e})", key.display())
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_no_client_auth()
            .with_single_cert(certs, parsed)
            .map_err(|e| {
                anyhow!("--tls-key {} does not fit --tls-cert {} ({e})", key.display(), cert.display())
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(ServerTls { cert_pem, key_pem, rustls: Arc::new(config) }))
    }
}

impl ServerTls {
    pub fn grpc(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

/// The client side for `url`: `None` for `http://`; for `https://`, the CA in `--tls-ca`
/// (a self-signed deployment) or else the system's roots.
pub fn client_tls(url: &str, ca: Option<&Path>) -> Result<Option<ClientTlsConfig>> {
    let https = url.starts_with("https://");
    match (https, ca) {
        (false, None) => Ok(None),
        (false, Some(ca)) => bail!(
            "--tls-ca {} is for a TLS coordinator, but {url} is plain text (use https://)",
            ca.display()
        ),
        (true, Some(ca)) => {
            let (pem, _) = read_certs("--tls-ca", ca)?;
            Ok(Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))))
        }
        (true, None) => Ok(Some(ClientTlsConfig::new().with_native_roots())),
    }
}

/// Runs the TLS handshakes of accepted connections concurrently (a slow client delays only
/// itself, and no handshake outlives [`HANDSHAKE_TIMEOUT`]); the finished streams come out.
fn tls_streams<S>(
    mut incoming: S,
    tls: &ServerTls,
) -> tokio::sync::mpsc::Receiver<TlsStream<IdleTimeout<TcpStream>>>
where
    S: Stream<Item = std::io::Result<IdleTimeout<TcpStream>>> + Unpin + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls.rustls.clone());
    let (tx, ready) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(stream) = incoming.next().await {
            let Ok(stream) = stream else { continue };
            let (acceptor, ready_tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = ready_tx.send(tls).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    ready
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until `shutdown` resolves,
/// under `limits`: a bounded number of connections, each closed when idle, and headers read
/// within the header timeout (HTTP/1: hyper's; HTTP/2: the keep-alive ping's). (`axum::serve` gives hyper no timer, so hyper's header
/// timeout never fires there: a client sending half a header held its connection for ever.)
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<&ServerTls>,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Small JSON answers and SSE events must not wait for Nagle's algorithm: `limited_incoming`
    // turns it off on every socket.
    let incoming = limited_incoming(listener, limits);
    match tls {
        Some(tls) => {
            let streams = tokio_stream::wrappers::ReceiverStream::new(tls_streams(incoming, tls));
            serve_connections(streams, router, limits, shutdown).await
        }
        None => serve_connections(incoming.filter_map(Result::ok), router, limits, shutdown).await,
    }
}

/// Serves each connection `streams` yields on its own task (HTTP/1 or HTTP/2); on `shutdown`,
/// stops accepting, lets the open connections finish their requests and returns.
async fn serve_connections<S, Io>(
    mut streams: S,
    router: axum::Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: Stream<Item = Io> + Unpin,
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // hyper has no HTTP/2 header timeout. A client holding a header block open (one
    // CONTINUATION frame now and then) cannot answer a ping meanwhile, so the ping's timeout
    // is the header timeout: such a connection is closed `header_timeout` after the ping.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 3)
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let io = tokio::select! {
            () = &mut shutdown => break,
            io = streams.next() => match io {
                Some(io) => io,
                None => break,
            },
        };
        while connections.try_join_next().is_some() {}
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let (builder, mut stop) = (builder.clone(), stop_rx.clone());
        connections.spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("http connection: {e}");
                    }
                }
                // Only `true` is ever sent: any change means stop.
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }

    fn err(args: &ServerTlsArgs) -> String {
        match args.load() {
            Ok(_) => panic!("loaded"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn bad_pem_files_are_errors_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("quarry-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let junk = write(&dir, "junk.pem", "hello\n");
        let missing = dir.join("missing.pem");
        let args = |c: &Path, k: &Path| ServerTlsArgs { tls_cert: Some(c.into()), tls_key: Some(k.into()) };
        let e = err(&args(&missing, &junk));
        assert!(e.contains("--tls-cert") && e.contains("missing.pem"), "{e}");
        let e = err(&args(&junk, &junk));
        assert!(e.contains("--tls-cert") && e.contains("junk.pem") && e.contains("no certificate"), "{e}");
        let e = client_tls("https://h:1", Some(&junk)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("--tls-ca") && e.contains("junk.pem"), "{e}");
        let e = client_tls("http://h:1", Some(&junk)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("plain text"), "{e}");
        assert!(ServerTlsArgs::default().load().is_ok_and(|t| t.is_none()));
        assert!(client_tls("http://h:1", None).is_ok_and(|t| t.is_none()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
