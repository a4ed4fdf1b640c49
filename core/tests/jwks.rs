//! Fetching the JWKS over HTTP from a local server (loopback only): the body cap, redirects,
//! the https rule, the timeout, and that the keys stay when a fetch fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use grantflow_core::jwks::{
    HttpJwks, JwksError, JwksLocation, JwksSource, KeySet, MAX_DOCUMENT_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const N: &str = "hhgjSP6hLQ5VObL5waePpCLIAOOZNXHZ3Lgsmquia9_U9rcMsV9YmO_2Wi4BnSmtHF8niw-stuTIRw5ZChIfegfUnlPWqVbEgMgGNJi4ycb--jZoIerbdSoykRL6JwnE5TeTX7qogvcLPSntGIDBhQE4Pv-Qbsop2hiDBgfhYAq5mxkX02tsCh5M-cZcCHmMemAvpmctKt7PebDeqF44QOVa4Q9Y3TaaqllULttsf-zePFlD3LLE5fCPbr8nWc-dTpUzZniWradR1ikwfZORX4e34OAsSNUFyuXnb3cCa5HmcLsUXd9i1RBjGiTRNx5yFrCieVQHbhXZUsPy173Y-Q";

fn jwks_body() -> String {
    format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256","n":"{N}","e":"AQAB"}}]}}"#
    )
}

/// A tiny HTTP/1.1 server on 127.0.0.1 answering by path; counts the requests it gets.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
    /// When set, `/jwks` answers with an endless body (as a hostile issuer would).
    hostile: Arc<AtomicBool>,
}

impl Server {
    async fn start(other_origin: Option<String>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let hostile = Arc::new(AtomicBool::new(false));
        let (h, b, o) = (hits.clone(), base.clone(), other_origin);
        let hostile_flag = hostile.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                h.fetch_add(1, Ordering::SeqCst);
                let (b, o, hostile) = (b.clone(), o.clone(), hostile_flag.load(Ordering::SeqCst));
                tokio::spawn(serve(stream, b, o, hostile));
            }
        });
        Server {
            base,
            hits,
            hostile,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn serve(mut stream: TcpStream, base: String, other: Option<String>, hostile: bool) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    let ok = |body: String| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let redirect = |to: String| {
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    };
    let reply = match path.as_str() {
        "/jwks" if hostile => return endless(stream).await,
        "/jwks" => ok(jwks_body()),
        "/discovery" => ok(format!(r#"{{"jwks_uri":"{base}/jwks"}}"#)),
        "/discovery-plain-http" => ok(r#"{"jwks_uri":"http://keys.example.test/jwks"}"#.to_owned()),
        "/moved" => redirect("/jwks".to_owned()),
        "/elsewhere" => redirect(format!("{}/jwks", other.unwrap())),
        "/declared-huge" => format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{{\"keys\":[",
            200 * 1024 * 1024
        ),
        "/endless" => return endless(stream).await,
        "/silent" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A chunked body that never ends (no content-length to refuse up front); stops when the
/// client hangs up. Writes at most 64 MiB so a client that never stops cannot fill the disk.
async fn endless(mut stream: TcpStream) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
    framed.extend_from_slice(&chunk);
    framed.extend_from_slice(b"\r\n");
    for _ in 0..1024 {
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

fn http(location: JwksLocation) -> HttpJwks {
    HttpJwks::new(location, Duration::from_secs(5))
}

fn reason(result: Result<jsonwebtoken::jwk::JwkSet, JwksError>) -> String {
    match result {
        Ok(set) => panic!("expected a refusal, got {} keys", set.keys.len()),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn a_jwks_on_a_loopback_host_is_fetched_directly_through_discovery_and_same_origin_redirects()
{
    let server = Server::start(None).await;
    for location in [
        JwksLocation::Jwks(server.url("/jwks")),
        JwksLocation::Discovery(server.url("/discovery")),
        JwksLocation::Jwks(server.url("/moved")),
    ] {
        let set = http(location.clone()).fetch().await.unwrap();
        assert_eq!(set.keys.len(), 1, "{location:?}");
    }
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_while_it_streams() {
    let server = Server::start(None).await;
    let err = reason(
        http(JwksLocation::Jwks(server.url("/declared-huge")))
            .fetch()
            .await,
    );
    assert!(
        err.contains(&format!("larger than {MAX_DOCUMENT_BYTES} bytes")),
        "{err}"
    );
    // No content-length: the read stops at the cap instead of buffering an endless body.
    let started = Instant::now();
    let err = reason(
        http(JwksLocation::Jwks(server.url("/endless")))
            .fetch()
            .await,
    );
    assert!(
        err.contains(&format!("larger than {MAX_DOCUMENT_BYTES} bytes")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The same cap on the discovery document.
    let err = reason(
        http(JwksLocation::Discovery(server.url("/endless")))
            .fetch()
            .await,
    );
    assert!(
        err.contains("discovery document") && err.contains("larger than"),
        "{err}"
    );
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_not_followed() {
    let other = Server::start(None).await;
    let server = Server::start(Some(other.base.clone())).await;
    let err = reason(
        http(JwksLocation::Jwks(server.url("/elsewhere")))
            .fetch()
            .await,
    );
    assert!(
        err.contains("to another origin") && err.contains(&other.base),
        "{err}"
    );
    assert_eq!(
        other.hits.load(Ordering::SeqCst),
        0,
        "the other origin was asked"
    );
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused() {
    let err = reason(
        http(JwksLocation::Jwks("http://keys.example.test/jwks".into()))
            .fetch()
            .await,
    );
    assert!(err.contains("use https://"), "{err}");
    // A discovery document on loopback that points the JWKS at a plain-http host.
    let server = Server::start(None).await;
    let err = reason(
        http(JwksLocation::Discovery(server.url("/discovery-plain-http")))
            .fetch()
            .await,
    );
    assert!(
        err.contains("fetching the JWKS failed") && err.contains("use https://"),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out_with_a_clear_error() {
    let server = Server::start(None).await;
    let started = Instant::now();
    let err = reason(
        HttpJwks::new(
            JwksLocation::Jwks(server.url("/silent")),
            Duration::from_millis(300),
        )
        .fetch()
        .await,
    );
    assert!(err.contains("no complete answer within 300ms"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_keys_stay_when_a_refresh_fails() {
    let server = Server::start(None).await;
    let keys = KeySet::new(
        http(JwksLocation::Jwks(server.url("/jwks"))),
        Duration::ZERO,
    );
    assert_eq!(keys.refresh().await.unwrap(), 1);
    assert!(keys.get("k1").await.is_some());
    server.hostile.store(true, Ordering::SeqCst);
    let err = keys.refresh().await.unwrap_err().to_string();
    assert!(err.contains("larger than"), "{err}");
    assert!(keys.get("k1").await.is_some(), "the old key was dropped");
    assert!(keys.is_loaded());
}
