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
use std::path::Path;
use std::sync::Arc;

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

/// The TLS server configuration from PEM files (a certificate chain and its private key).
pub fn tls_from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    tls_from_pem(&read(cert)?, &read(key)?)
}

/// The TLS server configuration from PEM text.
pub fn tls_from_pem(cert: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Pem("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
