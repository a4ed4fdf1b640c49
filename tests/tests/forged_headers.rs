//! A client cannot hand the upstream its own GrantFlow identity, in any spelling of the
//! header names: not `x-grantflow-user` in another case, and not `x_grantflow_user`, which
//! CGI, PHP, Django, Rack and many other frameworks read as the same header.
//!
//! Two layers, each proved through a real Envoy:
//! - the example bootstrap refuses any header name with `_` (`headers_with_underscores_action:
//!   REJECT_REQUEST`): 400, before GrantFlow or the app see anything;
//! - extauthz removes every incoming header that reads as `x-grantflow-*` once case and
//!   `_`/`-` are folded, so an Envoy that lets underscores through (Envoy's and Istio's
//!   default) still forwards only GrantFlow's values.
//!
//! Requests are written on a raw socket so the header names go on the wire exactly as
//! spelled here (an HTTP client library would lower-case them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use grantflow_e2e::envoy::Envoy;
use grantflow_e2e::repo_root;
use grantflow_e2e::stack::{AUDIENCE, SIGN_IN_URL, Stack, TENANT};
use grantflow_extauthz::config::{Options, Settings};
use grantflow_extauthz::request::is_identity_header;
use grantflow_extauthz::server::{self, Running};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Underscore spellings of identity headers (and of one GrantFlow never sets).
const UNDERSCORE_SPELLINGS: &[(&str, &str)] = &[
    ("x_grantflow_user", "forged"),
    ("x_grantflow_tenant", "other"),
    ("x-grantflow_tenant", "other"),
    ("X_GrantFlow_Session", "forged-session"),
    ("x_GRANTFLOW-user", "forged"),
    ("x_grantflow_admin", "true"),
];

/// Dash spellings in several cases, one of them sent twice.
const DASH_SPELLINGS: &[(&str, &str)] = &[
    ("X-GrantFlow-User", "forged"),
    ("x-grantflow-user", "forged-again"),
    ("X-GRANTFLOW-TENANT", "other"),
    ("x-GrantFlow-session", "forged-session"),
    ("X-Grantflow-Admin", "true"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_envoy_refuses_underscore_spellings_and_the_upstream_sees_only_grantflow_identity()
 {
    let stack = Stack::start().await;
    let token = stack.token("user-alice", "sid-alice-1").await;
    let listener = stack.envoy.listener;

    for &(name, value) in UNDERSCORE_SPELLINGS {
        let (status, body) = raw_get(listener, Some(&token), &[(name, value)]).await;
        assert_eq!(
            status, 400,
            "Envoy refuses `{name}` before anyone reads it: {body}"
        );
        let (status, _) = raw_get(listener, None, &[(name, value)]).await;
        assert_eq!(status, 400, "`{name}` without a token");
    }
    // Underscores anywhere in a name, not only in ours: the rule is Envoy's.
    let (status, _) = raw_get(listener, Some(&token), &[("x_request_tag", "a")]).await;
    assert_eq!(status, 400);

    let (status, body) = raw_get(listener, Some(&token), DASH_SPELLINGS).await;
    assert_eq!(status, 200, "{body}");
    assert_only_grantflow_identity(&body, "user-alice", "sid-alice-1");

    // Refused requests reach no upstream at all.
    let (status, _) = raw_get(listener, None, DASH_SPELLINGS).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extauthz_removes_underscore_spellings_when_envoy_lets_them_through() {
    let stack = Stack::start().await;
    let token = stack.token("user-bob", "sid-bob-1").await;
    // A second extauthz on the same store and issuer, behind an Envoy that departs from the
    // example in one setting only: headers with underscores are allowed (Envoy's and
    // Istio's default).
    let extauthz = start_extauthz(&stack).await;
    let envoy = Envoy::start_edited(extauthz.grpc_addr, stack.upstream.addr, |bootstrap| {
        let setting = "headers_with_underscores_action: REJECT_REQUEST";
        assert_eq!(
            bootstrap.matches(setting).count(),
            1,
            "the example bootstrap sets `{setting}`"
        );
        bootstrap.replace(setting, "headers_with_underscores_action: ALLOW")
    })
    .await;

    let mut forged: Vec<(&str, &str)> = UNDERSCORE_SPELLINGS.to_vec();
    forged.extend_from_slice(DASH_SPELLINGS);
    forged.push(("x_request_tag", "kept"));
    let (status, body) = raw_get(envoy.listener, Some(&token), &forged).await;
    assert_eq!(status, 200, "{body}");
    let seen = assert_only_grantflow_identity(&body, "user-bob", "sid-bob-1");
    // This Envoy does let underscores through: the forged copies are gone because extauthz
    // removed them, not because Envoy dropped them.
    assert_eq!(seen["x_request_tag"], json!(["kept"]), "{seen}");

    // Each underscore spelling alone, too (no dash copy beside it to overwrite).
    for &(name, value) in UNDERSCORE_SPELLINGS {
        let (status, body) = raw_get(envoy.listener, Some(&token), &[(name, value)]).await;
        assert_eq!(status, 200, "`{name}`: {body}");
        assert_only_grantflow_identity(&body, "user-bob", "sid-bob-1");
    }
    extauthz.stop().await;
}

#[test]
fn the_istio_envoyfilter_sets_what_the_envoy_example_sets() {
    let read = |path: &str| -> Value {
        let text = std::fs::read_to_string(repo_root().join(path)).expect("the example exists");
        serde_yaml::from_str(&text).expect("valid YAML")
    };
    let hcm_type = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

    let envoy = read("examples/envoy/envoy.yaml");
    let hcm = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
    assert_eq!(hcm["typed_config"]["@type"], hcm_type);
    assert_eq!(
        hcm["typed_config"]["common_http_protocol_options"]["headers_with_underscores_action"],
        "REJECT_REQUEST"
    );

    let filter = read("examples/istio/envoyfilter-underscores.yaml");
    assert_eq!(filter["apiVersion"], "networking.istio.io/v1alpha3");
    assert_eq!(filter["kind"], "EnvoyFilter");
    assert_eq!(
        filter["metadata"]["namespace"], "istio-system",
        "in the root namespace it applies to every proxy of the mesh"
    );
    assert!(
        filter["spec"]["workloadSelector"].is_null(),
        "mesh-wide: no workload selector"
    );
    let patches = filter["spec"]["configPatches"].as_array().expect("patches");
    let mut contexts = Vec::new();
    for patch in patches {
        assert_eq!(patch["applyTo"], "NETWORK_FILTER");
        assert_eq!(
            patch["match"]["listener"]["filterChain"]["filter"]["name"],
            "envoy.filters.network.http_connection_manager"
        );
        assert_eq!(patch["patch"]["operation"], "MERGE");
        let typed = &patch["patch"]["value"]["typed_config"];
        assert_eq!(typed["@type"], hcm_type);
        assert_eq!(
            typed["common_http_protocol_options"],
            hcm["typed_config"]["common_http_protocol_options"],
            "the same setting as the Envoy example"
        );
        contexts.push(patch["match"]["context"].as_str().expect("a context"));
    }
    contexts.sort_unstable();
    assert_eq!(
        contexts,
        ["GATEWAY", "SIDECAR_INBOUND"],
        "where ext_authz runs: ingress gateways and the protected workloads' sidecars"
    );
}

/// The upstream's echo (JSON: header name → values) holds exactly GrantFlow's three identity
/// headers among every name that reads as `x-grantflow-*` once case and `_`/`-` are folded.
fn assert_only_grantflow_identity(body: &str, user: &str, session: &str) -> Value {
    let seen: Value = serde_json::from_str(body).expect("the upstream's echo");
    let identity: BTreeMap<&str, &Value> = seen
        .as_object()
        .expect("an object")
        .iter()
        .filter(|(name, _)| is_identity_header(name))
        .map(|(name, values)| (name.as_str(), values))
        .collect();
    let expected = json!({
        "x-grantflow-tenant": [TENANT],
        "x-grantflow-user": [user],
        "x-grantflow-session": [session],
    });
    assert_eq!(
        serde_json::to_value(&identity).unwrap(),
        expected,
        "the upstream saw a forged identity header: {seen}"
    );
    seen
}

/// A second extauthz sharing the stack's issuer, store and clock.
async fn start_extauthz(stack: &Stack) -> Running {
    let options = Options {
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        admin_addr: Some("127.0.0.1:0".parse().unwrap()),
        jwks_url: Some(stack.issuer.jwks_uri.clone()),
        audiences: Some(vec![AUDIENCE.into()]),
        sign_in_url: Some(SIGN_IN_URL.into()),
        ..Options::default()
    };
    let settings = Settings::from_options(options).expect("valid settings");
    let running = server::start(
        &settings,
        stack.store.clone(),
        Arc::new(stack.clock.clone()),
    )
    .await
    .expect("extauthz starts");
    for _ in 0..300 {
        if running.keys.is_loaded() {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("extauthz did not load the issuer's JWKS within 6 s");
}

/// `GET /` over HTTP/1.1 on a fresh connection, the header names written exactly as given.
/// The status and the body.
async fn raw_get(addr: SocketAddr, token: Option<&str>, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = String::from(
        "GET / HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\nConnection: close\r\n",
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to Envoy");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read the response");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("Envoy answers within 10 s");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let chunked = head.lines().any(|line| {
        line.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut payload = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .expect("a hex chunk size");
        if size == 0 {
            return payload;
        }
        payload.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}
