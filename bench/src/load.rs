//! Check requests as Envoy sends them, the gRPC clients and calls (once, or patiently for
//! set-up), and the two load shapes: a closed loop (a fixed number of calls in flight) and an
//! open loop (a fixed request rate).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

use crate::cpu::{CpuSource, CpuUse};
use crate::{BoxError, USER_AGENT};

/// The longest any single gRPC call may take before it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A CheckRequest as Envoy sends it for a browser's GET with a bearer token.
pub fn check_request(token: &str, i: usize) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "app.example.test".to_string()),
        (":method", "GET".to_string()),
        (":path", "/api/orders?page=1".to_string()),
        (":scheme", "https".to_string()),
        ("accept", "application/json".to_string()),
        ("accept-encoding", "gzip, deflate, br".to_string()),
        ("accept-language", "en-US,en;q=0.9".to_string()),
        ("authorization", format!("Bearer {token}")),
        ("user-agent", USER_AGENT.to_string()),
        ("x-forwarded-proto", "https".to_string()),
        (
            "x-request-id",
            format!("6f1c2a7e-0d7b-4b8e-9a51-{:012x}", i),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let socket = |ip: &str, port: u32| Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    port,
                ),
            ),
            ..Default::default()
        })),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(socket(&format!("203.0.113.{}", i % 250 + 1), 51_000)),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: Some(socket("10.0.0.10", 10_000)),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: format!("{i}"),
                    method: "GET".into(),
                    path: "/api/orders?page=1".into(),
                    host: "app.example.test".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

pub type Client = AuthorizationClient<Channel>;

/// `count` HTTP/2 connections to `addr` (a tonic `Channel` from `connect` is one connection).
pub async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Client>, BoxError> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        clients.push(AuthorizationClient::new(channel));
    }
    Ok(clients)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Allowed,
    Denied(i32),
    Failed,
}

fn answer(
    result: Result<Result<tonic::Response<CheckResponse>, tonic::Status>, impl Sized>,
) -> Answer {
    match result {
        Ok(Ok(response)) => match response.into_inner().http_response {
            Some(HttpResponse::OkResponse(_)) => Answer::Allowed,
            Some(HttpResponse::DeniedResponse(denied)) => {
                Answer::Denied(denied.status.map(|s| s.code).unwrap_or_default())
            }
            _ => Answer::Failed,
        },
        _ => Answer::Failed,
    }
}

pub async fn call(client: &mut Client, request: CheckRequest) -> Answer {
    answer(tokio::time::timeout(CALL_TIMEOUT, client.check(request)).await)
}

/// `request` through Check, sent again while the answer is "unavailable" (503: the store's
/// deadline overrun on a busy machine) or there is none, `tries` calls at most with `pause`
/// before each new one: the last answer and the calls made. For set-up, not measurements.
pub async fn call_patiently(
    client: &mut Client,
    request: &CheckRequest,
    tries: usize,
    pause: Duration,
) -> (Answer, usize) {
    let mut answer = call(client, request.clone()).await;
    let mut calls = 1;
    while calls < tries && matches!(answer, Answer::Denied(503) | Answer::Failed) {
        tokio::time::sleep(pause).await;
        answer = call(client, request.clone()).await;
        calls += 1;
    }
    (answer, calls)
}

/// What one loop measured.
pub struct Measured {
    pub calls: u64,
    pub allowed: u64,
    /// HTTP status of denials → how many.
    pub denied: HashMap<i32, u64>,
    pub failed: u64,
    /// Microseconds.
    pub latency: Histogram<u64>,
    pub elapsed: Duration,
    pub cpu: CpuUse,
    /// Open loop: the worst lateness of a send against its schedule, microseconds.
    pub send_lag_p99: Option<u64>,
    pub dropped: u64,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    pub fn note(&mut self, answer: Answer, micros: u64) {
        self.calls += 1;
        match answer {
            Answer::Allowed => self.allowed += 1,
            Answer::Denied(code) => *self.denied.entry(code).or_default() += 1,
            Answer::Failed => self.failed += 1,
        }
        self.latency.saturating_record(micros);
    }

    pub fn merge(&mut self, other: Measured) {
        self.calls += other.calls;
        self.allowed += other.allowed;
        for (code, n) in other.denied {
            *self.denied.entry(code).or_default() += n;
        }
        self.failed += other.failed;
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
    }

    pub fn empty() -> Measured {
        Measured {
            calls: 0,
            allowed: 0,
            denied: HashMap::new(),
            failed: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            elapsed: Duration::ZERO,
            cpu: CpuUse::default(),
            send_lag_p99: None,
            dropped: 0,
        }
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `concurrency` callers, each sending its next request when the previous answered, for
/// `duration` and at most `max_calls` calls in all. The calls take `requests` in turn, cycling
/// ([`nth_request`]): with `max_calls` at most `requests.len()`, every request is sent at most
/// once.
pub async fn closed_loop(
    clients: &[Client],
    requests: &Arc<Vec<CheckRequest>>,
    concurrency: usize,
    duration: Duration,
    max_calls: u64,
) -> Measured {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let mut client = clients[worker % clients.len()].clone();
        let requests = requests.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            let mut measured = Measured::empty();
            while Instant::now() < deadline {
                let issue = issued.fetch_add(1, Ordering::Relaxed);
                let Some(index) = nth_request(issue, requests.len(), max_calls) else {
                    break;
                };
                let request = requests[index].clone();
                let sent = Instant::now();
                let answer = call(&mut client, request).await;
                measured.note(answer, sent.elapsed().as_micros() as u64);
            }
            measured
        }));
    }
    let mut total = Measured::empty();
    for task in tasks {
        if let Ok(measured) = task.await {
            total.merge(measured);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// The request a closed loop's call number `issued` (from 0, in the order the calls are
/// issued) sends among `len`: `issued mod len`; none once `max_calls` calls are issued.
fn nth_request(issued: u64, len: usize, max_calls: u64) -> Option<usize> {
    (issued < max_calls && len > 0).then(|| (issued % len as u64) as usize)
}

/// `rate` requests per second for `duration`, each sent at its time whatever the answers
/// (at most `max_outstanding` unanswered; more are dropped and counted).
pub async fn open_loop(
    clients: &[Client],
    requests: &Arc<Vec<CheckRequest>>,
    rate: u32,
    duration: Duration,
) -> Measured {
    const MAX_OUTSTANDING: usize = 1_024;
    let count = (duration.as_secs_f64() * f64::from(rate)).round().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel::<(Answer, u64)>();
    let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut dropped = 0;
    let started = Instant::now();
    for i in 0..count {
        let due = started + period * (i as u32);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = outstanding.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let mut client = clients[i as usize % clients.len()].clone();
        let request = requests[i as usize % requests.len()].clone();
        let done = done.clone();
        let sent = Instant::now();
        lag.saturating_record(sent.saturating_duration_since(due).as_micros() as u64);
        tokio::spawn(async move {
            let answer = call(&mut client, request).await;
            let _ = done.send((answer, sent.elapsed().as_micros() as u64));
            drop(permit);
        });
    }
    drop(done);
    let mut measured = Measured::empty();
    // Every call is bounded by CALL_TIMEOUT, so this ends.
    while let Some((answer, micros)) = answers.recv().await {
        measured.note(answer, micros);
    }
    measured.elapsed = started.elapsed();
    measured.send_lag_p99 = Some(lag.value_at_quantile(0.99));
    measured.dropped = dropped;
    measured
}

/// An ext_authz server to measure.
pub struct Target<'a> {
    pub name: &'static str,
    pub grpc: SocketAddr,
    pub cpu: CpuSource,
    /// The Redis nodes the server uses (none, one, or a cluster's): their CPU and commands
    /// are summed.
    pub redis_ports: Vec<u16>,
    pub tokens: &'a [String],
    pub log: Option<&'a Path>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_loop_cycles_through_its_requests_up_to_max_calls() {
        let picks: Vec<Option<usize>> = (0..8).map(|i| nth_request(i, 3, 7)).collect();
        assert_eq!(
            picks,
            [0, 1, 2, 0, 1, 2, 0]
                .map(Some)
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn max_calls_of_the_request_count_sends_each_once() {
        let picks: Vec<usize> = (0..10).filter_map(|i| nth_request(i, 4, 4)).collect();
        assert_eq!(picks, [0, 1, 2, 3]);
        assert_eq!(nth_request(0, 0, 10), None);
    }
}
