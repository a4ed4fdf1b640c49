//! The part of Envoy's `CheckRequest` the session layer reads, decoded straight off the wire.
//!
//! `envoy.service.auth.v3.CheckRequest` carries much more than a check needs: the destination,
//! the path, host, method, request id, context extensions, metadata, TLS details. Decoding all
//! of it into `envoy-types`' structs (every header into a `HashMap<String, String>`, two
//! allocations and a SipHash each) cost about as much as the whole rest of a check
//! (docs/benchmarks.md, "Decoding only what a check reads"). These messages declare only the
//! fields [`crate::request`] reads, under their tags in Envoy's protos; protobuf skips every
//! other field without building it. The header map is read as what it is on the wire — a
//! repeated key/value entry — into zero-copy [`Bytes`] slices of the received buffer.
//!
//! Field tags (envoy/service/auth/v3/{external_auth,attribute_context}.proto,
//! envoy/config/core/v3/address.proto):
//! `CheckRequest.attributes = 1` → `AttributeContext.source = 1` → `Peer.address = 1` →
//! `Address.socket_address = 1` (a oneof member) → `SocketAddress.address = 2`;
//! `AttributeContext.request = 4` → `Request.http = 2` → `HttpRequest.headers = 3`
//! (`map<string, string>`: entries with `key = 1`, `value = 2`).
//!
//! Differences from the full decoding, none of which lets a request through: a header name or
//! value that is not UTF-8 is refused by [`crate::request::read_check_request`] (the full
//! decoding refused the whole message); of repeated map keys the last wins, as protobuf maps
//! define; an `Address` whose oneof names a pipe or an internal address after a socket
//! address keeps the socket address (Envoy sends one).

use bytes::Bytes;

/// `envoy.service.auth.v3.CheckRequest`, only what a check reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext`: the source peer and the request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
}

/// `envoy.service.auth.v3.AttributeContext.Peer`: its address.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
}

/// `envoy.config.core.v3.Address`: the socket address member of its oneof.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

/// `envoy.config.core.v3.SocketAddress`: the IP address as text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SocketAddress {
    #[prost(string, tag = "2")]
    pub address: String,
}

/// `envoy.service.auth.v3.AttributeContext.Request`: the HTTP request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `envoy.service.auth.v3.AttributeContext.HttpRequest`: its headers, in the order received.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Header>,
}

/// One entry of the `headers` map, as sent: bytes that should be UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

impl CheckRequest {
    /// The HTTP request's headers, when the request has an HTTP part.
    pub fn headers(&self) -> Option<&[Header]> {
        let http = self.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
        Some(&http.headers)
    }

    /// The source peer's IP address as Envoy wrote it.
    pub fn client_address(&self) -> Option<&str> {
        let address = self
            .attributes
            .as_ref()?
            .source
            .as_ref()?
            .address
            .as_ref()?;
        Some(address.socket_address.as_ref()?.address.as_str())
    }
}

impl From<&envoy_types::ext_authz::v3::pb::CheckRequest> for CheckRequest {
    /// The full message through the wire: what this server reads of what Envoy sends.
    fn from(full: &envoy_types::ext_authz::v3::pb::CheckRequest) -> Self {
        use prost::Message;
        CheckRequest::decode(full.encode_to_vec().as_slice())
            .expect("a CheckRequest's encoding decodes as its own subset")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::ext_authz::v3::pb::CheckRequest as Full;
    use envoy_types::pb::envoy::config::core::v3::{
        Address as FullAddress, Metadata, SocketAddress as FullSocket, address, socket_address,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext as FullContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest as FullHttp, Peer as FullPeer, Request as FullRequest,
    };
    use prost::Message;

    use super::*;

    fn socket(ip: &str, port: u32) -> FullAddress {
        FullAddress {
            address: Some(address::Address::SocketAddress(FullSocket {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }
    }

    /// A CheckRequest as Envoy fills it: every field around the few this server reads.
    fn as_envoy_sends(headers: &[(&str, &str)]) -> Full {
        Full {
            attributes: Some(FullContext {
                source: Some(FullPeer {
                    address: Some(socket("203.0.113.7", 51_000)),
                    principal: "spiffe://cluster.local/ns/a/sa/b".into(),
                    ..Default::default()
                }),
                destination: Some(FullPeer {
                    address: Some(socket("10.0.0.10", 10_000)),
                    ..Default::default()
                }),
                request: Some(FullRequest {
                    time: Some(envoy_types::pb::google::protobuf::Timestamp {
                        seconds: 1_764_000_000,
                        nanos: 5,
                    }),
                    http: Some(FullHttp {
                        id: "4711".into(),
                        method: "GET".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        path: "/api/orders?page=1".into(),
                        host: "app.example.test".into(),
                        scheme: "https".into(),
                        protocol: "HTTP/1.1".into(),
                        size: 12,
                        body: "{\"a\": 1}".into(),
                        ..Default::default()
                    }),
                }),
                context_extensions: HashMap::from([("route".into(), "orders".into())]),
                metadata_context: Some(Metadata::default()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn reads_the_headers_and_the_client_address_and_skips_the_rest() {
        let full = as_envoy_sends(&[
            ("authorization", "Bearer a.b.c"),
            ("user-agent", "curl/8"),
            (":path", "/api/orders?page=1"),
        ]);
        let lean = CheckRequest::from(&full);
        assert_eq!(lean.client_address(), Some("203.0.113.7"));
        let mut headers: Vec<(&[u8], &[u8])> = lean
            .headers()
            .unwrap()
            .iter()
            .map(|h| (h.key.as_ref(), h.value.as_ref()))
            .collect();
        headers.sort();
        assert_eq!(
            headers,
            vec![
                (&b":path"[..], &b"/api/orders?page=1"[..]),
                (b"authorization", b"Bearer a.b.c"),
                (b"user-agent", b"curl/8"),
            ]
        );
    }

    #[test]
    fn parts_that_are_absent_read_as_absent() {
        let empty = CheckRequest::from(&Full::default());
        assert_eq!(empty.headers(), None);
        assert_eq!(empty.client_address(), None);
        let mut no_http = as_envoy_sends(&[]);
        no_http.attributes.as_mut().unwrap().request = None;
        assert_eq!(CheckRequest::from(&no_http).headers(), None);
        assert_eq!(
            CheckRequest::from(&as_envoy_sends(&[])).headers(),
            Some(&[][..])
        );
    }

    #[test]
    fn a_header_that_is_not_utf8_still_decodes_to_be_refused_by_the_reader() {
        // What the full decoding rejects as a whole message reaches the reader, which refuses.
        let mut wire = Vec::new();
        HttpRequest {
            headers: vec![Header {
                key: Bytes::from_static(b"user-agent"),
                value: Bytes::from_static(b"\xff\xfe"),
            }],
        }
        .encode(&mut wire)
        .unwrap();
        assert!(FullHttp::decode(wire.as_slice()).is_err());
        let lean = HttpRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(lean.headers[0].value.as_ref(), b"\xff\xfe");
    }
}
