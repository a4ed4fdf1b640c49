//! Step 1 of the request path: an Envoy `CheckRequest` read into a plain description of the
//! HTTP request — the bearer token, the client and what it accepts.

use std::net::IpAddr;

use grantflow_core::text;

use crate::check_wire::CheckRequest;

/// Prefix of the identity headers GrantFlow sets for the upstream; a client must not be able
/// to send its own.
pub const IDENTITY_HEADER_PREFIX: &str = "x-grantflow-";

/// Whether an incoming header name is, to the upstream, one of GrantFlow's identity headers:
/// it starts with [`IDENTITY_HEADER_PREFIX`] once ASCII case is folded and every `_` is read
/// as `-`. CGI (`HTTP_X_GRANTFLOW_USER`), PHP, Django, Rack and many other frameworks treat
/// `_` and `-` alike, so `x_grantflow_user` would otherwise reach the app beside, or instead
/// of, the real `x-grantflow-user`.
pub fn is_identity_header(name: &str) -> bool {
    let prefix = IDENTITY_HEADER_PREFIX.as_bytes();
    name.len() >= prefix.len()
        && name.bytes().zip(prefix).all(|(byte, &expected)| {
            let folded = match byte.to_ascii_lowercase() {
                b'_' => b'-',
                other => other,
            };
            folded == expected
        })
}

/// What the session layer needs from one HTTP request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// The `Authorization` header, when present.
    pub credential: Credential,
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// Names, as received, of incoming headers that read as `x-grantflow-*` once case and
    /// `_`/`-` are folded ([`is_identity_header`]): client copies, to be removed.
    pub identity_headers: Vec<String>,
}

/// The `Authorization` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credential {
    #[default]
    Missing,
    Bearer(String),
    /// Present but not a `Bearer` token.
    Unsupported,
}

/// A header name or value of the `CheckRequest` that is not UTF-8: the request is refused
/// (Envoy never sends one; a client that reaches the gRPC port directly might).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

/// Reads a `CheckRequest` ([`crate::check_wire`]: only the parts a check needs).
/// `trusted_proxy_hops` proxies in front of Envoy append to `x-forwarded-for`; the client is
/// the entry they appended (0: Envoy's peer address).
pub fn read_check_request(
    check: &CheckRequest,
    trusted_proxy_hops: usize,
) -> Result<HttpRequest, NotUtf8> {
    let Some(entries) = check.headers() else {
        return Ok(HttpRequest::default());
    };
    let mut headers = Vec::with_capacity(entries.len());
    for entry in entries {
        let name = std::str::from_utf8(&entry.key).map_err(|_| NotUtf8)?;
        let value = std::str::from_utf8(&entry.value).map_err(|_| NotUtf8)?;
        headers.push((name, value));
    }
    // Envoy sends header names in lower case; of a name sent twice the last one counts, as
    // protobuf maps define.
    let header = |name: &str| {
        headers
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| *value)
    };
    let peer = check
        .client_address()
        .and_then(|a| a.parse::<IpAddr>().ok());
    let forwarded =
        header("x-forwarded-for").and_then(|xff| forwarded_client(xff, trusted_proxy_hops));
    let mut identity_headers: Vec<String> = headers
        .iter()
        .filter(|(name, _)| is_identity_header(name))
        .map(|(name, _)| (*name).to_owned())
        .collect();
    identity_headers.sort();
    identity_headers.dedup();
    Ok(HttpRequest {
        credential: credential(header("authorization")),
        accept: header("accept").map(str::to_owned),
        // Envoy refuses NUL, CR and LF in headers, but a client that reaches the gRPC port
        // directly can send anything: the stored agent is cleaned like every displayed text.
        user_agent: header("user-agent")
            .map(|ua| text::clean(ua, 512))
            .filter(|ua| !ua.is_empty()),
        client_ip: if trusted_proxy_hops == 0 {
            peer
        } else {
            forwarded.or(peer)
        },
        identity_headers,
    })
}

fn credential(authorization: Option<&str>) -> Credential {
    let Some(value) = authorization else {
        return Credential::Missing;
    };
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Credential::Missing
            } else {
                Credential::Bearer(token.to_owned())
            }
        }
        // `Bearer` with nothing after it (trimmed above) carries no token.
        _ if value.is_empty() || value.eq_ignore_ascii_case("bearer") => Credential::Missing,
        _ => Credential::Unsupported,
    }
}

/// The entry `hops` from the right of an `x-forwarded-for` list.
fn forwarded_client(xff: &str, hops: usize) -> Option<IpAddr> {
    let entries: Vec<&str> = xff.split(',').map(str::trim).collect();
    let index = entries.len().checked_sub(hops)?;
    entries.get(index)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest as EnvoyHttp, Peer, Request,
    };

    fn check(headers: &[(&str, &str)], peer: &str) -> CheckRequest {
        CheckRequest::from(&envoy_types::ext_authz::v3::pb::CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: peer.into(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(EnvoyHttp {
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
    }

    fn read(check: &CheckRequest, hops: usize) -> HttpRequest {
        read_check_request(check, hops).expect("UTF-8 headers")
    }

    #[test]
    fn reads_token_client_and_forged_headers() {
        let req = check(
            &[
                ("authorization", "Bearer abc.def.ghi"),
                ("accept", "text/html"),
                ("user-agent", "curl/8"),
                ("x-grantflow-user", "forged"),
                ("x-grantflow-admin", "1"),
                ("x-forwarded-for", "203.0.113.9, 10.0.0.7"),
            ],
            "10.0.0.8",
        );
        let plain = read(&req, 0);
        assert_eq!(plain.credential, Credential::Bearer("abc.def.ghi".into()));
        assert_eq!(plain.client_ip, Some("10.0.0.8".parse().unwrap()));
        assert_eq!(
            plain.identity_headers,
            vec!["x-grantflow-admin", "x-grantflow-user"]
        );
        assert_eq!(read(&req, 1).client_ip, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(
            read(&req, 2).client_ip,
            Some("203.0.113.9".parse().unwrap())
        );
        // More hops than entries: fall back to the peer.
        assert_eq!(read(&req, 5).client_ip, Some("10.0.0.8".parse().unwrap()));
    }

    #[test]
    fn identity_headers_are_matched_with_case_and_underscores_folded() {
        for name in [
            "x-grantflow-user",
            "x_grantflow_user",
            "X-GrantFlow-User",
            "X_GRANTFLOW_TENANT",
            "x-grantflow_tenant",
            "x_grantflow-session",
            "x-grantflow-",
            "x_grantflow_admin",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in [
            "x-grantflow",
            "x_grantflow",
            "grantflow-user",
            "x-grantflowuser",
            "x--grantflow-user",
            "y-grantflow-user",
            "x-grantflow\u{2010}user",
            "",
        ] {
            assert!(!is_identity_header(name), "{name}");
        }
        let req = check(
            &[
                ("x_grantflow_user", "forged"),
                ("x_grantflow_tenant", "other"),
                ("x-grantflow_session", "s"),
                ("x-grantflow-user", "forged-too"),
                ("x_forwarded_for", "198.51.100.1"),
            ],
            "10.0.0.8",
        );
        assert_eq!(
            read(&req, 0).identity_headers,
            vec![
                "x-grantflow-user",
                "x-grantflow_session",
                "x_grantflow_tenant",
                "x_grantflow_user",
            ]
        );
    }

    #[test]
    fn user_agent_loses_control_and_format_characters() {
        let agent = |ua: &str| read(&check(&[("user-agent", ua)], "10.0.0.8"), 0);
        assert_eq!(
            agent("curl/8\0\r\nX-Injected: 1\u{202e}\u{200b}")
                .user_agent
                .as_deref(),
            Some("curl/8   X-Injected: 1")
        );
        assert_eq!(agent(" \u{200b}\r\n").user_agent, None);
        assert_eq!(
            agent(&"a".repeat(600)).user_agent.map(|ua| ua.len()),
            Some(512)
        );
        assert_eq!(
            agent("Mozilla/5.0 (X11; Linux x86_64)")
                .user_agent
                .as_deref(),
            Some("Mozilla/5.0 (X11; Linux x86_64)")
        );
    }

    #[test]
    fn credentials() {
        assert_eq!(credential(None), Credential::Missing);
        assert_eq!(
            credential(Some("bearer  t ")),
            Credential::Bearer("t".into())
        );
        assert_eq!(credential(Some("Bearer ")), Credential::Missing);
        assert_eq!(credential(Some("Basic dXNlcjpw")), Credential::Unsupported);
        assert_eq!(credential(Some("garbage")), Credential::Unsupported);
        assert_eq!(read(&CheckRequest::default(), 0), HttpRequest::default());
    }

    #[test]
    fn a_header_that_is_not_utf8_refuses_the_request_and_the_last_of_a_name_counts() {
        use crate::check_wire::{AttributeContext, Header, HttpRequest as Http, Request};
        let with = |headers: Vec<(&'static [u8], &'static [u8])>| CheckRequest {
            attributes: Some(AttributeContext {
                source: None,
                request: Some(Request {
                    http: Some(Http {
                        headers: headers
                            .into_iter()
                            .map(|(key, value)| Header {
                                key: key.into(),
                                value: value.into(),
                            })
                            .collect(),
                    }),
                }),
            }),
        };
        let bad_value = with(vec![(b"authorization", b"Bearer t"), (b"x-a", b"\xff")]);
        assert_eq!(read_check_request(&bad_value, 0), Err(NotUtf8));
        let bad_name = with(vec![(b"\xc3", b"v"), (b"authorization", b"Bearer t")]);
        assert_eq!(read_check_request(&bad_name, 0), Err(NotUtf8));
        let twice = with(vec![
            (b"authorization", b"Bearer first"),
            (b"x-grantflow-user", b"a"),
            (b"authorization", b"Bearer last"),
            (b"x-grantflow-user", b"b"),
        ]);
        let read = read(&twice, 0);
        assert_eq!(read.credential, Credential::Bearer("last".into()));
        assert_eq!(read.identity_headers, vec!["x-grantflow-user"]);
    }
}
