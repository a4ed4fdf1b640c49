//! The mutating admission webhook: records who created a Revocation.
//!
//! On CREATE the API server sends the requester's `userInfo`; the webhook answers with a
//! JSONPatch that sets [`REQUESTED_BY_ANNOTATION`] to `userInfo.username`, replacing whatever
//! the requester typed there. On UPDATE it puts the value recorded at creation back (or removes
//! one added later), so the annotation cannot be edited afterwards either. The operator uses
//! it as the audit actor.
//!
//! Served over TLS ([`crate::tls`]) on its own port, at [`PATH`]; every replica serves it,
//! leader or not. Register it with `failurePolicy: Fail` so no Revocation is created
//! unrecorded.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use grantflow_crds::{GROUP, REQUESTED_BY_ANNOTATION};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::metrics::Metrics;
// The TLS side, in its own module; re-exported where the webhook's users look for it.
pub use crate::tls::{CERT_RECHECK, TlsError, serve_tls, tls_from_files, tls_from_pem};

/// Where the API server posts AdmissionReviews for Revocations.
pub const PATH: &str = "/mutate/revocations";

/// The webhook's routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(PATH, post(mutate)).with_state(metrics)
}

async fn mutate(
    State(metrics): State<Arc<Metrics>>,
    review: Result<Json<AdmissionReview<DynamicObject>>, JsonRejection>,
) -> Result<Json<Value>, JsonRejection> {
    // A body that is no AdmissionReview is answered by axum (4xx), and counted.
    let Json(review) = review.inspect_err(|_| metrics.admission("rejected"))?;
    let (response, result) = answer(review);
    metrics.admission(result);
    Ok(Json(to_wire(response.into_review())))
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
