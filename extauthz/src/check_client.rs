//! `grantflow-extauthz check`: sends one Check request, as Envoy would, and prints the answer.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The ext_authz server.
    #[arg(long, default_value = "http://127.0.0.1:9001")]
    pub server: String,
    /// Bearer token to present (omit to send none).
    #[arg(long)]
    pub token: Option<String>,
    /// The Accept header, e.g. text/html for a browser.
    #[arg(long, default_value = "application/json")]
    pub accept: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    pub path: String,
}

/// Prints a line; a closed pipe (`| head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Returns whether the request was allowed.
pub async fn run(args: CheckArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let mut headers = HashMap::from([
        ("accept".to_string(), args.accept),
        (
            "user-agent".to_string(),
            concat!("grantflow-extauthz-check/", env!("CARGO_PKG_VERSION")).to_string(),
        ),
    ]);
    if let Some(token) = args.token {
        headers.insert("authorization".into(), format!("Bearer {}", token.trim()));
    }
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: args.path,
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut client = AuthorizationClient::connect(args.server).await?;
    let response = client.check(request).await?.into_inner();
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            say!("ALLOWED");
            for h in ok.headers.iter().filter_map(|h| h.header.as_ref()) {
                say!("  upstream header {}: {}", h.key, h.value);
            }
            Ok(true)
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            let status = denied.status.map(|s| s.code).unwrap_or_default();
            say!("DENIED {status}");
            for h in denied.headers.iter().filter_map(|h| h.header.as_ref()) {
                say!("  {}: {}", h.key, h.value);
            }
            say!("\n{}", denied.body);
            Ok(false)
        }
        Some(HttpResponse::ErrorResponse(_)) | None => {
            say!(
                "DENIED (no HTTP response; gRPC status {:?})",
                response.status.map(|s| s.code)
            );
            Ok(false)
        }
    }
}
