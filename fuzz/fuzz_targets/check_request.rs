//! The `CheckRequest` → request mapping (`grantflow_extauthz::request::read_check_request`):
//! arbitrary header names and values (some with the names that matter), peer addresses and
//! trusted proxy hops. Checked against the rules it promises: every header that reads as
//! `x-grantflow-*` once case and `_`/`-` are folded is reported (and nothing else), a bearer
//! token is never blank or padded, a stored user agent has no control character, and the
//! client address is the peer's with no trusted hop.
#![no_main]

use std::collections::HashMap;
use std::net::IpAddr;

use arbitrary::Arbitrary;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest as EnvoyHttp, Peer, Request,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use grantflow_extauthz::request::{Credential, is_identity_header, read_check_request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Name {
    Authorization,
    Accept,
    UserAgent,
    XForwardedFor,
    /// `x-grantflow-` / `X_GRANTFLOW_` / … and a tail.
    Identity {
        case: u16,
        underscores: u16,
        tail: String,
    },
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Bearer {
        scheme: u8,
        spaces: u8,
        token: String,
    },
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    headers: Vec<(Name, Value)>,
    peer: Option<String>,
    hops: u8,
    no_http: bool,
}

fn name(n: &Name) -> String {
    match n {
        Name::Authorization => "authorization".into(),
        Name::Accept => "accept".into(),
        Name::UserAgent => "user-agent".into(),
        Name::XForwardedFor => "x-forwarded-for".into(),
        Name::Identity {
            case,
            underscores,
            tail,
        } => {
            let prefix: String = "x-grantflow-"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    let c = if case >> (i % 16) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    };
                    if c == '-' && underscores >> (i % 16) & 1 == 1 {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
            format!("{prefix}{tail}")
        }
        Name::Any(s) => s.clone(),
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::Bearer {
            scheme,
            spaces,
            token,
        } => {
            let scheme = ["Bearer", "bearer", "BEARER", "Basic", "bEaReR"][usize::from(scheme % 5)];
            let spaces = " ".repeat(usize::from(spaces % 4));
            format!("{scheme}{spaces}{token}")
        }
        Value::Any(s) => s.clone(),
    }
}

/// The identity-header rule written independently: fold case and `_` → `-`, compare.
fn reads_as_identity(name: &str) -> bool {
    let folded: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            '_' => '-',
            other => other,
        })
        .collect();
    folded.starts_with("x-grantflow-")
}

fuzz_target!(|input: Input| {
    let headers: HashMap<String, String> = input
        .headers
        .iter()
        .map(|(n, v)| (name(n), value(v)))
        .collect();
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            source: input.peer.as_ref().map(|peer| Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: peer.clone(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: (!input.no_http).then(|| EnvoyHttp {
                    headers: headers.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let hops = usize::from(input.hops % 8);
    // Through the wire, as the server reads it: only the parts a check needs.
    let wire = grantflow_extauthz::check_wire::CheckRequest::from(&check);
    let read = read_check_request(&wire, hops).expect("Rust strings are UTF-8");
    if input.no_http {
        assert_eq!(read, Default::default());
        return;
    }

    let mut expected: Vec<String> = headers
        .keys()
        .filter(|n| reads_as_identity(n))
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(read.identity_headers, expected, "identity headers");
    for n in headers.keys() {
        assert_eq!(is_identity_header(n), reads_as_identity(n), "{n:?}");
    }

    match (&read.credential, headers.get("authorization")) {
        (Credential::Missing, None) => {}
        (_, None) => panic!("a credential without an authorization header"),
        (Credential::Bearer(token), Some(raw)) => {
            assert!(!token.is_empty() && token.trim() == token, "{token:?}");
            assert!(raw.contains(token.as_str()));
        }
        (Credential::Missing | Credential::Unsupported, Some(_)) => {}
    }

    if let Some(ua) = &read.user_agent {
        assert!(
            !ua.is_empty() && !ua.chars().any(char::is_control),
            "{ua:?}"
        );
        assert!(ua.chars().count() <= 512);
    }
    assert_eq!(read.accept.as_ref(), headers.get("accept"));

    let peer: Option<IpAddr> = input.peer.as_ref().and_then(|p| p.parse().ok());
    if hops == 0 {
        assert_eq!(read.client_ip, peer);
    } else if read.client_ip != peer {
        // Then it came from `x-forwarded-for`.
        let xff = headers.get("x-forwarded-for").expect("x-forwarded-for");
        let ip = read.client_ip.expect("an address");
        assert!(
            xff.split(',')
                .any(|e| e.trim().parse::<IpAddr>().ok() == Some(ip)),
            "{ip} not in {xff:?}"
        );
    }
});
