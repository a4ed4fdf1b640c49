//! A real OIDC issuer: `tests/issuer/issuer.mjs` on oauth2-mock-server.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

pub struct Issuer {
    /// The issuer's own URL (tokens carry Entra-style `iss` values instead).
    pub url: String,
    pub jwks_uri: String,
    /// The `iss` of the Shared Signals transmitter's SETs (`POST /token` with `signer: ssf`).
    pub ssf_issuer: String,
    /// The transmitter's JWKS.
    pub ssf_jwks_uri: String,
    control: String,
    http: reqwest::Client,
    _child: Child,
    /// The issuer exits when this pipe closes, so it never outlives the test.
    _stdin: ChildStdin,
}

impl Issuer {
    pub async fn start() -> Issuer {
        let script = std::env::var_os("GRANTFLOW_ISSUER_SCRIPT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| crate::repo_root().join("tests/issuer/issuer.mjs"));
        let mut child = Command::new("node")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/issuer/issuer.mjs (is Node.js installed?)");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the issuer announces itself within 30 s")
            .expect("read the issuer's stdout")
            .expect("the issuer printed its addresses");
        let ready: Value = serde_json::from_str(&line).expect("the issuer prints JSON");
        let field = |name: &str| ready[name].as_str().expect("issuer address").to_owned();
        Issuer {
            url: field("issuer"),
            jwks_uri: field("jwks_uri"),
            ssf_issuer: field("ssf_issuer"),
            ssf_jwks_uri: field("ssf_jwks_uri"),
            control: field("control"),
            http: reqwest::Client::new(),
            _child: child,
            _stdin: stdin,
        }
    }

    /// A token with these claims (a claim set to `null` is left out), valid for an hour.
    pub async fn token(&self, claims: Value) -> String {
        self.token_for(claims, 3600).await
    }

    /// A token with these claims, valid for `expires_in` seconds (negative: already expired).
    pub async fn token_for(&self, claims: Value, expires_in: i64) -> String {
        self.mint(json!({ "claims": claims, "expires_in": expires_in }))
            .await
    }

    /// A token minted by the control API's `POST /token` with this request body (`claims`,
    /// `expires_in`, `kid`, `typ`, `signer`: see `issuer.mjs`).
    pub async fn mint(&self, request: Value) -> String {
        let response: Value = self
            .http
            .post(format!("{}/token", self.control))
            .json(&request)
            .send()
            .await
            .expect("issuer control API")
            .error_for_status()
            .expect("issuer minted a token")
            .json()
            .await
            .expect("issuer answers JSON");
        response["token"].as_str().expect("a token").to_owned()
    }

    /// Rotates the signing key; the old one leaves the JWKS. Returns the new `kid`.
    pub async fn rotate(&self) -> String {
        let response: Value = self
            .http
            .post(format!("{}/rotate", self.control))
            .send()
            .await
            .expect("issuer control API")
            .json()
            .await
            .expect("issuer answers JSON");
        response["kid"].as_str().expect("a kid").to_owned()
    }
}
