//! Step 4 of the request path: an [`Outcome`] rendered as an Envoy `CheckResponse` —
//! allow with identity headers for the upstream, or deny with a page.

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;

use crate::outcome::{Denial, Outcome};
use crate::pages;
use crate::request::HttpRequest;

pub const TENANT_HEADER: &str = "x-grantflow-tenant";
pub const USER_HEADER: &str = "x-grantflow-user";
pub const SESSION_HEADER: &str = "x-grantflow-session";

/// gRPC status codes Envoy reads from `CheckResponse.status`.
const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
const GRPC_UNAVAILABLE: i32 = 14;
const GRPC_UNAUTHENTICATED: i32 = 16;

pub fn check_response(
    outcome: &Outcome,
    request: &HttpRequest,
    sign_in_url: &str,
    dynamic_metadata: bool,
) -> CheckResponse {
    match outcome {
        Outcome::Allow { identity, .. } => {
            let facts = [
                (TENANT_HEADER, identity.tenant.as_str()),
                (USER_HEADER, identity.user.as_str()),
                (SESSION_HEADER, identity.session.id.as_str()),
            ];
            // Our three headers overwrite any client copy; every other incoming header that
            // reads as `x-grantflow-*` once case and `_`/`-` are folded (`x_grantflow_user`,
            // `x-grantflow_tenant`, `x-grantflow-admin`…) is removed, so nothing upstream can
            // be forged. The names we set are never in `headers_to_remove`, so the removal
            // cannot undo what we set.
            let headers = facts.iter().map(|(k, v)| header(k, v, true)).collect();
            let headers_to_remove = forged_headers(request, &facts);
            // Off by default: Envoy merges every field into the stream's metadata, which
            // measurably costs it CPU on every request (docs/benchmarks.md, finding 5).
            let metadata = dynamic_metadata.then(|| {
                structure(&[
                    ("tenant", identity.tenant.as_str()),
                    ("user", identity.user.as_str()),
                    ("session", identity.session.id.as_str()),
                    ("session_anchor", identity.session.anchor.as_str()),
                    ("verdict", "allow"),
                ])
            });
            CheckResponse {
                status: Some(rpc::Status {
                    code: GRPC_OK,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    headers_to_remove,
                    ..Default::default()
                })),
                dynamic_metadata: metadata,
            }
        }
        Outcome::Deny {
            denial,
            identity,
            lock,
        } => {
            let page = pages::render_with(
                *denial,
                pages::wants_html(request.accept.as_deref()),
                sign_in_url,
                lock.as_ref(),
            );
            let mut headers = vec![
                header("content-type", page.content_type, true),
                header("cache-control", "no-store", true),
                header("x-content-type-options", "nosniff", true),
            ];
            match denial {
                Denial::MissingToken => headers.push(header("www-authenticate", "Bearer", true)),
                Denial::Unavailable => headers.push(header("retry-after", "5", true)),
                // Not a credential problem, and no wait helps: a slot frees when a session
                // ends, so neither WWW-Authenticate nor Retry-After.
                Denial::TooManySessions | Denial::SessionLimit { .. } => {}
                // Forbidden, not a credential problem: no new token helps before it ends.
                Denial::Locked => {}
                _ => headers.push(header(
                    "www-authenticate",
                    r#"Bearer error="invalid_token""#,
                    true,
                )),
            }
            let mut metadata = vec![("verdict", outcome.label())];
            if let Some(identity) = identity {
                metadata.push(("tenant", identity.tenant.as_str()));
                metadata.push(("user", identity.user.as_str()));
                metadata.push(("session", identity.session.id.as_str()));
            }
            let code = match page.status {
                503 => GRPC_UNAVAILABLE,
                429 => GRPC_RESOURCE_EXHAUSTED,
                403 => GRPC_PERMISSION_DENIED,
                _ => GRPC_UNAUTHENTICATED,
            };
            CheckResponse {
                status: Some(rpc::Status {
                    code,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(page.status),
                    }),
                    headers,
                    body: page.body,
                })),
                dynamic_metadata: dynamic_metadata.then(|| structure(&metadata)),
            }
        }
    }
}

/// The incoming identity headers to remove: all but those we set (which we overwrite).
fn forged_headers(request: &HttpRequest, facts: &[(&str, &str)]) -> Vec<String> {
    request
        .identity_headers
        .iter()
        .filter(|name| !facts.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)))
        .cloned()
        .collect()
}

fn header(key: &str, value: &str, overwrite: bool) -> HeaderValueOption {
    let action = if overwrite {
        HeaderAppendAction::OverwriteIfExistsOrAdd
    } else {
        HeaderAppendAction::AppendIfExistsOrAdd
    };
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: action.into(),
        keep_empty_value: false,
    }
}

fn structure(fields: &[(&str, &str)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use grantflow_core::identity::{Identity, SessionAnchor, SessionKey};

    use super::*;

    fn identity() -> Arc<Identity> {
        Arc::new(Identity {
            tenant: "t-1".into(),
            user: "u-1".into(),
            display_name: None,
            session: SessionKey {
                id: "s-1".into(),
                anchor: SessionAnchor::Sid,
            },
            auth_time: None,
            issued_at: None,
            not_before: None,
            expires_at: 0,
            roles: Vec::new(),
        })
    }

    fn request(identity_headers: &[&str]) -> HttpRequest {
        HttpRequest {
            identity_headers: identity_headers.iter().map(|h| h.to_string()).collect(),
            ..HttpRequest::default()
        }
    }

    #[test]
    fn allow_sets_identity_and_removes_every_spelling_of_a_forged_one() {
        let outcome = Outcome::Allow {
            identity: identity(),
            created: false,
        };
        let request = request(&[
            "X-GrantFlow-User",
            "x-grantflow-admin",
            "x-grantflow-tenant",
            "x-grantflow_tenant",
            "x_grantflow_session",
            "x_grantflow_user",
        ]);
        let response = check_response(&outcome, &request, "https://sign-in.test/", false);
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
            panic!("an allow is an OkResponse: {response:?}");
        };
        let set: Vec<(&str, &str)> = ok
            .headers
            .iter()
            .map(|h| {
                let h = h.header.as_ref().unwrap();
                (h.key.as_str(), h.value.as_str())
            })
            .collect();
        assert_eq!(
            set,
            [
                (TENANT_HEADER, "t-1"),
                (USER_HEADER, "u-1"),
                (SESSION_HEADER, "s-1")
            ]
        );
        assert!(
            ok.headers
                .iter()
                .all(|h| h.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32)
        );
        // What we set is overwritten, never removed (Envoy removes after it sets); every
        // other spelling goes.
        assert_eq!(
            ok.headers_to_remove,
            [
                "x-grantflow-admin",
                "x-grantflow_tenant",
                "x_grantflow_session",
                "x_grantflow_user",
            ]
        );
    }

    #[test]
    fn deny_sends_nothing_upstream() {
        let outcome = Outcome::Deny {
            denial: Denial::InvalidToken,
            identity: Some(identity()),
            lock: None,
        };
        let response = check_response(
            &outcome,
            &request(&["x_grantflow_user"]),
            "https://sign-in.test/",
            false,
        );
        // A denied request never reaches the upstream: Envoy answers the client with the
        // page; the response headers carry no identity.
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
            panic!("a deny is a DeniedResponse: {response:?}");
        };
        assert!(
            denied
                .headers
                .iter()
                .all(|h| { !crate::request::is_identity_header(&h.header.as_ref().unwrap().key) })
        );
    }

    #[test]
    fn too_many_sessions_is_a_429_without_a_credential_challenge() {
        let outcome = Outcome::Deny {
            denial: Denial::TooManySessions,
            identity: Some(identity()),
            lock: None,
        };
        let response = check_response(&outcome, &request(&[]), "https://sign-in.test/", false);
        assert_eq!(
            response.status.as_ref().unwrap().code,
            GRPC_RESOURCE_EXHAUSTED
        );
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
            panic!("a deny is a DeniedResponse: {response:?}");
        };
        assert_eq!(denied.status.unwrap().code, 429);
        let names: Vec<&str> = denied
            .headers
            .iter()
            .map(|h| h.header.as_ref().unwrap().key.as_str())
            .collect();
        assert_eq!(
            names,
            ["content-type", "cache-control", "x-content-type-options"]
        );
        assert!(denied.body.contains("too-many-sessions"));
    }

    #[test]
    fn session_limit_is_a_403_permission_denied_without_a_credential_challenge() {
        let outcome = Outcome::Deny {
            denial: Denial::SessionLimit { limit: 2 },
            identity: Some(identity()),
            lock: None,
        };
        let response = check_response(&outcome, &request(&[]), "https://sign-in.test/", false);
        assert_eq!(
            response.status.as_ref().unwrap().code,
            GRPC_PERMISSION_DENIED
        );
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
            panic!("a deny is a DeniedResponse: {response:?}");
        };
        assert_eq!(denied.status.unwrap().code, 403);
        assert!(
            denied
                .headers
                .iter()
                .all(|h| h.header.as_ref().unwrap().key != "www-authenticate")
        );
        assert_eq!(outcome.label(), "session_limit");
        let idle = Outcome::Deny {
            denial: Denial::SessionIdle {
                idle_seconds: Some(300),
            },
            identity: Some(identity()),
            lock: None,
        };
        let response = check_response(&idle, &request(&[]), "https://sign-in.test/", false);
        assert_eq!(response.status.as_ref().unwrap().code, GRPC_UNAUTHENTICATED);
        assert_eq!(idle.label(), "session_idle");
    }

    #[test]
    fn dynamic_metadata_only_when_turned_on() {
        let allow = Outcome::Allow {
            identity: identity(),
            created: false,
        };
        let deny = Outcome::Deny {
            denial: Denial::InvalidToken,
            identity: Some(identity()),
            lock: None,
        };
        for outcome in [&allow, &deny] {
            let off = check_response(outcome, &request(&[]), "/", false);
            assert_eq!(off.dynamic_metadata, None, "off by default: {outcome:?}");
        }
        let on = check_response(&allow, &request(&[]), "/", true);
        let fields = on.dynamic_metadata.expect("turned on").fields;
        let text = |k: &str| match &fields[k].kind {
            Some(Kind::StringValue(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(
            [
                text("tenant"),
                text("user"),
                text("session"),
                text("verdict")
            ],
            ["t-1", "u-1", "s-1", "allow"]
        );
        assert_eq!(text("session_anchor"), "sid");
        let on = check_response(&deny, &request(&[]), "/", true);
        let fields = on.dynamic_metadata.expect("turned on").fields;
        assert!(
            matches!(&fields["verdict"].kind, Some(Kind::StringValue(v)) if v == "invalid_token")
        );
    }
}
