//! The webhook's TLS: the rustls server configuration from the certificate files (re-read
//! when cert-manager rotates them, keeping the last good one), and the accept loop that
//! serves a router over it with a bounded handshake and a graceful stop.
//!
//! Hand-written rather than `axum-server`'s `RustlsConfig`: that reloads only when told to
//! (a task watching the files would be needed), while here the files are looked at again on
//! a handshake at most every [`CERT_RECHECK`] and a half-rotated pair keeps the old
//! certificate; the handshake timeout and the bounded drain on shutdown are ours too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Pem(String),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How often the certificate files are looked at again.
pub const CERT_RECHECK: Duration = Duration::from_secs(10);

/// The TLS server configuration from PEM files (a certificate chain and its private key). The
/// files are read again, at most every `recheck`, when a handshake comes: a certificate
/// rotated in place (cert-manager renewing the mounted Secret) is served without a restart.
/// A rotation that cannot be read keeps the last good certificate (and logs why).
pub fn tls_from_files(
    cert: &Path,
    key: &Path,
    recheck: Duration,
) -> Result<Arc<ServerConfig>, TlsError> {
    let files = CertificateFiles::load(cert, key, recheck)?;
    server_config(Arc::new(files))
}

/// The TLS server configuration from PEM text (fixed; for tests and tools).
pub fn tls_from_pem(cert: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(Arc::new(Fixed(certified_key(cert, key)?)))
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certified_key(cert: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Pem("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())?;
    Ok(Arc::new(certified))
}

/// The webhook's certificate, read from its files and re-read when they change.
#[derive(Debug)]
struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    recheck: Duration,
    state: parking_lot::Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    pem: (Vec<u8>, Vec<u8>),
    certified: Arc<CertifiedKey>,
    checked: Instant,
}

impl CertificateFiles {
    fn load(cert: &Path, key: &Path, recheck: Duration) -> Result<Self, TlsError> {
        let pem = (read(cert)?, read(key)?);
        let certified = certified_key(&pem.0, &pem.1)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            recheck,
            state: parking_lot::Mutex::new(Loaded {
                pem,
                certified,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock();
        if state.checked.elapsed() >= self.recheck {
            state.checked = Instant::now();
            match (read(&self.cert), read(&self.key)) {
                (Ok(cert), Ok(key)) if (&cert, &key) != (&state.pem.0, &state.pem.1) => {
                    match certified_key(&cert, &key) {
                        Ok(certified) => {
                            tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                            state.certified = certified;
                            state.pem = (cert, key);
                        }
                        // Mid-rotation (one file new, the other old) or broken: keep the old.
                        Err(error) => tracing::warn!(%error, "webhook certificate not reloaded"),
                    }
                }
                (Ok(_), Ok(_)) => {}
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "webhook certificate files unreadable; keeping the last")
                }
            }
        }
        state.certified.clone()
    }
}

impl rustls::server::ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true, then lets open
/// connections finish.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            _ = crate::until(&mut shutdown, true) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "webhook accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    // Bounded: the API server gives up on a webhook call after its own timeout (≤ 30 s).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown()).await;
}
