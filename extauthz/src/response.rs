//! Step 4 of the request path: an [`Outcome`] rendered as an Envoy `CheckResponse` —
//! allow with identity headers for the upstream, or deny with a page.

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;

use crate::authorize::Outcome;
use crate::pages::{self, Denial};
use crate::request::HttpRequest;

pub const TENANT_HEADER: &str = "x-grantflow-tenant";
pub const USER_HEADER: &str = "x-grantflow-user";
pub const SESSION_HEADER: &str = "x-grantflow-session";

/// gRPC status codes Envoy reads from `CheckResponse.status`.
const GRPC_OK: i32 = 0;
const GRPC_UNAVAILABLE: i32 = 14;
const GRPC_UNAUTHENTICATED: i32 = 16;

pub fn check_response(
    outcome: &Outcome,
    request: &HttpRequest,
    sign_in_url: &str,
) -> CheckResponse {
    match outcome {
        Outcome::Allow { identity, .. } => {
            let facts = [
                (TENANT_HEADER, identity.tenant.as_str()),
                (USER_HEADER, identity.user.as_str()),
                (SESSION_HEADER, identity.session.id.as_str()),
            ];
            // Our three headers overwrite any client copy; every other incoming
            // `x-grantflow-*` header is removed, so nothing upstream can be forged.
            let headers = facts.iter().map(|(k, v)| header(k, v, true)).collect();
            let headers_to_remove = request
                .identity_headers
                .iter()
                .filter(|name| !facts.iter().any(|(k, _)| k == name))
                .cloned()
                .collect();
            let mut metadata = vec![
                ("tenant", identity.tenant.as_str()),
                ("user", identity.user.as_str()),
                ("session", identity.session.id.as_str()),
                ("session_anchor", identity.session.anchor.as_str()),
            ];
            metadata.push(("verdict", "allow"));
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
                dynamic_metadata: Some(structure(&metadata)),
            }
        }
        Outcome::Deny { denial, identity } => {
            let page = pages::render(
                *denial,
                pages::wants_html(request.accept.as_deref()),
                sign_in_url,
            );
            let mut headers = vec![
                header("content-type", page.content_type, true),
                header("cache-control", "no-store", true),
                header("x-content-type-options", "nosniff", true),
            ];
            match denial {
                Denial::MissingToken => headers.push(header("www-authenticate", "Bearer", true)),
                Denial::Unavailable => headers.push(header("retry-after", "5", true)),
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
            let code = if page.status == 503 {
                GRPC_UNAVAILABLE
            } else {
                GRPC_UNAUTHENTICATED
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
                dynamic_metadata: Some(structure(&metadata)),
            }
        }
    }
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
