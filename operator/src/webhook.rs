//! The mutating admission webhook: records who created a Revocation.
//!
//! On CREATE the API server sends the requester's `userInfo`; the webhook answers with a
//! JSONPatch that sets [`REQUESTED_BY_ANNOTATION`] to `userInfo.username`, replacing whatever
//! the requester typed there. On UPDATE it puts the value recorded at creation back (or removes
//! one added later), so the annotation cannot be edited afterwards either. The operator uses
//! it as the audit actor.
//!
//! Served over TLS (rustls) on its own port, at [`PATH`]; every replica serves it, leader or
//! not. Register it with `failurePolicy: Fail` so no Revocation is created unrecorded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use grantflow_crds::{GROUP, REQUESTED_BY_ANNOTATION};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Where the API server posts AdmissionReviews for Revocations.
pub const PATH: &str = "/mutate/revocations";

/// The webhook's routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(PATH, post(mutate)).with_state(metrics)
}

async fn mutate(
    State(metrics): State<Arc<Metrics>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<Value> {
    let (response, result) = answer(review);
    metrics.admission(result);
    Json(to_wire(response.into_review()))
}

/// The review as JSON, with the patch in the documented base64 form (kube writes the bytes
/// as an array of numbers).
pub fn to_wire(review: AdmissionReview<DynamicObject>) -> Value {
    let mut json = serde_json::to_value(review).unwrap_or(Value::Null);
    if let Some(patch) = json.pointer_mut("/response/patch")
        && let Ok(bytes) = serde_json::from_value::<Vec<u8>>(patch.clone())
    {
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    json
}

/// Answers one review; the label says what happened (for metrics).
pub fn answer(review: AdmissionReview<DynamicObject>) -> (AdmissionResponse, &'static str) {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(%error, "malformed AdmissionReview");
            return (AdmissionResponse::invalid(error.to_string()), "invalid");
        }
    };
    let response = AdmissionResponse::from(&request);
    if request.kind.group != GROUP || request.kind.kind != "Revocation" {
        return (response, "ignored");
    }
    let Some(object) = &request.object else {
        return (response, "ignored");
    };
    let ops = match request.operation {
        Operation::Create => {
            let user = request
                .user_info
                .username
                .as_deref()
                .filter(|u| !u.is_empty());
            let Some(user) = user else {
                return (
                    response.deny("the requesting user has no name; cannot record who revoked"),
                    "denied",
                );
            };
            set_annotation(object, user)
        }
        Operation::Update => {
            let recorded = request
                .old_object
                .as_ref()
                .and_then(|old| old.metadata.annotations.as_ref())
                .and_then(|a| a.get(REQUESTED_BY_ANNOTATION));
            let current = object
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REQUESTED_BY_ANNOTATION));
            match (recorded, current) {
                (Some(recorded), current) if current != Some(recorded) => {
                    set_annotation(object, recorded)
                }
                (None, Some(_)) => vec![PatchOperation::Remove(RemoveOperation {
                    path: annotation_path(),
                })],
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    };
    if ops.is_empty() {
        return (response, "allowed");
    }
    match response.with_patch(json_patch::Patch(ops)) {
        Ok(patched) => (patched, "patched"),
        Err(error) => {
            tracing::error!(%error, "cannot serialise the admission patch");
            (
                AdmissionResponse::invalid("cannot record the requester"),
                "invalid",
            )
        }
    }
}

fn annotation_path() -> PointerBuf {
    PointerBuf::from_tokens(["metadata", "annotations", REQUESTED_BY_ANNOTATION])
}

/// Operations that set the annotation to `user`, creating the annotations map if needed
/// (JSONPatch `add` replaces an existing member).
fn set_annotation(object: &DynamicObject, user: &str) -> Vec<PatchOperation> {
    if object.metadata.annotations.is_none() {
        let value = serde_json::json!({ REQUESTED_BY_ANNOTATION: user });
        return vec![PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value,
        })];
    }
    vec![PatchOperation::Add(AddOperation {
        path: annotation_path(),
        value: Value::String(user.to_owned()),
    })]
}

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
