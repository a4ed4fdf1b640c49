//! A lean open-loop HTTP/1.1 load generator (the `envoy-open` row's client): hyper's low-level
//! client over a fixed set of keep-alive connections, each driven by its own task.
//!
//! A pacer thread (`std::thread::sleep`, finer than tokio's millisecond timer) hands each
//! request at its scheduled time to an idle connection (its own one-slot channel: one wake per
//! request). When every connection is busy the request waits in a queue that a connection
//! empties before it is idle again (its latency from its schedule counts the wait), and when
//! [`QUEUE`] wait already it is dropped and counted ([`Dispatch`], one lock). The requests are
//! built once per token ([`Requests`]): each send clones a URI and a header map, nothing is
//! parsed. Answers are tallied in place (one shared, uncontended lock), not sent anywhere.
//!
//! reqwest's pool cost ~105–135 µs of CPU per request in release, ten times wrk's, and
//! saturated the 2-core machine at the row's rate; this is the same work without the pool,
//! the timeouts per request, the URL handling and the task per request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, AUTHORIZATION, HOST, HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::BoxError;

/// Keep-alive connections opened before measuring, each driven by its own task. HTTP/1.1 has
/// one request per connection at a time, so this is also the most requests in flight.
pub const CONNECTIONS: usize = 64;
/// Requests waiting for a free connection, at most; one more is dropped (and counted).
pub const QUEUE: usize = 64;
/// The longest a request may take (send to the end of the body) before it counts as failed
/// (and its connection is opened again).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A send this far behind its schedule counts as late.
pub const LATE: Duration = Duration::from_millis(1);
/// Pause between tries of a first request.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Answered with this status, not 2xx.
    Status(u16),
    /// No full answer (connection error, timeout).
    Failed,
}

impl Outcome {
    fn of(status: hyper::StatusCode) -> Outcome {
        if status.is_success() {
            Outcome::Ok
        } else {
            Outcome::Status(status.as_u16())
        }
    }
}

/// The requests, built once: `GET path` to `addr`, one header set per bearer token (Host,
/// Authorization, Accept, User-Agent as a browser sends them).
pub struct Requests {
    uri: Uri,
    headers: Vec<HeaderMap>,
}

impl Requests {
    pub fn new(
        addr: SocketAddr,
        path: &str,
        tokens: &[String],
        user_agent: &str,
    ) -> Result<Requests, BoxError> {
        if tokens.is_empty() {
            return Err("no tokens to send".into());
        }
        let host = HeaderValue::from_str(&addr.to_string())?;
        let user_agent = HeaderValue::from_str(user_agent)?;
        let headers = tokens
            .iter()
            .map(|token| {
                let mut headers = HeaderMap::with_capacity(4);
                headers.insert(HOST, host.clone());
                headers.insert(
                    AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {token}"))?,
                );
                headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
                headers.insert(USER_AGENT, user_agent.clone());
                Ok(headers)
            })
            .collect::<Result<_, BoxError>>()?;
        Ok(Requests {
            uri: path.parse()?,
            headers,
        })
    }

    /// Tokens, one header set each.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Request `i`: the `i % len`-th token's.
    fn get(&self, i: u64) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers[(i % self.headers.len() as u64) as usize].clone();
        request
    }
}

/// One keep-alive HTTP/1.1 connection; its driver task ends when it is dropped.
struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Connection, BoxError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("no connection to {addr} within {CONNECT_TIMEOUT:?}"))??;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender, driver })
    }

    /// One request, the answer's body read to its end, within [`REQUEST_TIMEOUT`].
    async fn send(&mut self, request: Request<Empty<Bytes>>) -> Outcome {
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<_, hyper::Error>(status)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(status)) => Outcome::of(status),
            Ok(Err(_)) | Err(_) => Outcome::Failed,
        }
    }

    /// After a failure the connection may be half-way through an answer or closed: a new
    /// one replaces it (counted; kept as it is when none opens).
    async fn replace(&mut self, addr: SocketAddr) -> bool {
        match Connection::open(addr).await {
            Ok(fresh) => {
                *self = fresh;
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The keep-alive connections to one HTTP server.
pub struct Pool {
    addr: SocketAddr,
    connections: Vec<Connection>,
}

impl Pool {
    /// `count` connections, opened together.
    pub async fn open(addr: SocketAddr, count: usize) -> Result<Pool, BoxError> {
        let connections = join_all((0..count).map(|_| Connection::open(addr)))
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        Ok(Pool { addr, connections })
    }

    /// Every token sent once, and every connection used at least once: request `j` of
    /// `max(tokens, connections)` on connection `j % connections`, those of one connection one
    /// after the other, up to `tries` times each until 2xx. Each token's last outcome.
    pub async fn first_sight(&mut self, requests: &Requests, tries: usize) -> Vec<Outcome> {
        let total = requests.len().max(self.connections.len());
        let stride = self.connections.len();
        let addr = self.addr;
        let per_connection = join_all(self.connections.iter_mut().enumerate().map(
            |(c, connection)| async move {
                let mut outcomes = Vec::new();
                for j in (c..total).step_by(stride) {
                    let mut outcome = Outcome::Failed;
                    for _ in 0..tries.max(1) {
                        outcome = connection.send(requests.get(j as u64)).await;
                        if outcome == Outcome::Ok {
                            break;
                        }
                        if outcome == Outcome::Failed {
                            connection.replace(addr).await;
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    outcomes.push((j % requests.len(), outcome));
                }
                outcomes
            },
        ))
        .await;
        let mut by_token = vec![Outcome::Ok; requests.len()];
        for (token, outcome) in per_connection.into_iter().flatten() {
            if outcome != Outcome::Ok {
                by_token[token] = outcome;
            }
        }
        by_token
    }

    /// `rate` GETs per second for `duration`, each handed over at its scheduled time whatever
    /// the answers (see the module). Bounded: `duration × rate` requests, each within
    /// [`REQUEST_TIMEOUT`] (plus [`CONNECT_TIMEOUT`] when its connection must be replaced), at
    /// most [`QUEUE`] left waiting when the pacer is done.
    pub async fn open_loop(
        &mut self,
        requests: &Arc<Requests>,
        rate: u32,
        duration: Duration,
    ) -> Result<Load, BoxError> {
        let count = scheduled_count(rate, duration.as_secs_f64());
        let dispatch = Arc::new(Mutex::new(Dispatch::new(self.connections.len(), QUEUE)));
        let tally = Arc::new(Mutex::new(Tally::new()));
        let addr = self.addr;
        let mut senders = Vec::with_capacity(self.connections.len());
        let mut workers: Vec<JoinHandle<Connection>> = Vec::new();
        for (id, mut connection) in self.connections.drain(..).enumerate() {
            // Holds one job at most: the pacer sends only to a connection marked idle.
            let (sender, mut jobs) = mpsc::channel::<Job>(1);
            senders.push(sender);
            let (dispatch, tally, requests) = (dispatch.clone(), tally.clone(), requests.clone());
            workers.push(tokio::spawn(async move {
                while let Some(mut job) = jobs.recv().await {
                    // Then whatever waits in the queue, until it is empty: idle again.
                    loop {
                        let sent = Instant::now();
                        let outcome = connection.send(requests.get(job.index)).await;
                        let finished = Instant::now();
                        let replaced = outcome == Outcome::Failed && connection.replace(addr).await;
                        if let Ok(mut tally) = tally.lock() {
                            tally.record(job.due, sent, finished, outcome);
                            tally.replaced += u64::from(replaced);
                        }
                        let next = dispatch.lock().ok().and_then(|mut d| d.next(id));
                        match next {
                            Some(next) => job = next,
                            None => break,
                        }
                    }
                }
                connection
            }));
        }
        let started = Instant::now();
        let pacer = {
            let dispatch = dispatch.clone();
            // The senders go with the pacer: when it is done, each connection's task ends
            // once it has nothing left to do.
            tokio::task::spawn_blocking(move || pace(started, rate, count, &dispatch, &senders))
        };
        let pacing = pacer.await.map_err(|e| format!("the pacer failed: {e}"));
        for worker in workers {
            match worker.await {
                Ok(connection) => self.connections.push(connection),
                Err(error) => return Err(format!("a connection's task failed: {error}").into()),
            }
        }
        let pacing = pacing?;
        let elapsed = started.elapsed();
        let tally = Arc::try_unwrap(tally)
            .map_err(|_| "the tally is still shared")?
            .into_inner()
            .map_err(|_| "a connection's task panicked")?;
        Ok(Load {
            scheduled: count,
            ok: tally.ok,
            non_2xx: tally.non_2xx,
            failed: tally.failed,
            dropped: pacing.dropped,
            latency: tally.latency,
            from_schedule: tally.from_schedule,
            lag: tally.lag,
            late: tally.late,
            pacer_lag: pacing.lag,
            pacer_late: pacing.late,
            replaced: tally.replaced,
            elapsed,
        })
    }
}

/// A scheduled request: which one, and when it was due.
#[derive(Debug, PartialEq, Eq)]
struct Job {
    index: u64,
    due: Instant,
}

/// Which connections are idle, and the requests waiting for one. Never both: a request finds
/// an idle connection or waits, a connection done with a request takes a waiting one or goes
/// idle, each under the same lock.
struct Dispatch {
    /// Idle connections, the last one idle on top (its socket is warm).
    idle: Vec<usize>,
    waiting: VecDeque<Job>,
    bound: usize,
}

/// Where a scheduled request goes.
#[derive(Debug, PartialEq, Eq)]
enum Handed {
    /// To this idle connection.
    To(usize, Job),
    /// Into the queue: every connection is busy.
    Queued,
    /// Nowhere: every connection is busy and the queue is full.
    Dropped,
}

impl Dispatch {
    /// `connections` idle ones, at most `bound` requests waiting.
    fn new(connections: usize, bound: usize) -> Dispatch {
        Dispatch {
            idle: (0..connections).rev().collect(),
            waiting: VecDeque::with_capacity(bound),
            bound,
        }
    }

    fn offer(&mut self, job: Job) -> Handed {
        if let Some(connection) = self.idle.pop() {
            Handed::To(connection, job)
        } else if self.waiting.len() < self.bound {
            self.waiting.push_back(job);
            Handed::Queued
        } else {
            Handed::Dropped
        }
    }

    /// Connection `connection` is done: the longest-waiting request, or it is idle.
    fn next(&mut self, connection: usize) -> Option<Job> {
        let job = self.waiting.pop_front();
        if job.is_none() {
            self.idle.push(connection);
        }
        job
    }
}

/// What the pacer saw.
struct Pacing {
    /// Requests that found every connection busy and the queue full.
    dropped: u64,
    /// How late each request was handed over against its schedule (the pacer's own lateness,
    /// no queueing), microseconds.
    lag: Histogram<u64>,
    /// Requests handed over more than [`LATE`] behind their schedule.
    late: u64,
}

/// Hands requests `0..count` over at `rate` from `started`, sleeping until each one is due:
/// to an idle connection (through its sender), else into the queue, else dropped. Runs on its
/// own thread.
fn pace(
    started: Instant,
    rate: u32,
    count: u64,
    dispatch: &Mutex<Dispatch>,
    connections: &[mpsc::Sender<Job>],
) -> Pacing {
    let mut pacing = Pacing {
        dropped: 0,
        lag: histogram(),
        late: 0,
    };
    for index in 0..count {
        let due = started + due_after(index, rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let lag = Instant::now().saturating_duration_since(due);
        pacing.lag.saturating_record(lag.as_micros().max(1) as u64);
        if lag > LATE {
            pacing.late += 1;
        }
        let handed = match dispatch.lock() {
            Ok(mut dispatch) => dispatch.offer(Job { index, due }),
            Err(_) => Handed::Dropped,
        };
        match handed {
            Handed::To(connection, job) => {
                // An idle connection's channel is empty; a closed one (its task ended) drops.
                if connections[connection].try_send(job).is_err() {
                    pacing.dropped += 1;
                }
            }
            Handed::Queued => {}
            Handed::Dropped => pacing.dropped += 1,
        }
    }
    pacing
}

/// Requests scheduled in `seconds` at `rate`: at least one.
pub fn scheduled_count(rate: u32, seconds: f64) -> u64 {
    (seconds * f64::from(rate)).round().max(1.0) as u64
}

/// When request `i` is due, counted from the start of the loop.
pub fn due_after(i: u64, rate: u32) -> Duration {
    Duration::from_secs_f64(i as f64 / f64::from(rate))
}

/// The answers so far, shared by the connections' tasks.
struct Tally {
    ok: u64,
    non_2xx: u64,
    failed: u64,
    latency: Histogram<u64>,
    from_schedule: Histogram<u64>,
    lag: Histogram<u64>,
    late: u64,
    replaced: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            ok: 0,
            non_2xx: 0,
            failed: 0,
            latency: histogram(),
            from_schedule: histogram(),
            lag: histogram(),
            late: 0,
            replaced: 0,
        }
    }

    fn record(&mut self, due: Instant, sent: Instant, finished: Instant, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Status(_) => self.non_2xx += 1,
            Outcome::Failed => self.failed += 1,
        }
        let micros = |d: Duration| (d.as_micros() as u64).max(1);
        let lag = sent.saturating_duration_since(due);
        self.latency
            .saturating_record(micros(finished.saturating_duration_since(sent)));
        self.from_schedule
            .saturating_record(micros(finished.saturating_duration_since(due)));
        self.lag.saturating_record(micros(lag));
        if lag > LATE {
            self.late += 1;
        }
    }
}

/// What one open loop measured.
pub struct Load {
    pub scheduled: u64,
    pub ok: u64,
    pub non_2xx: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Send to the end of the answer, every request that was sent; microseconds.
    pub latency: Histogram<u64>,
    /// Scheduled time to the end of the answer (counts the wait for a free connection and
    /// the client's own lateness too).
    pub from_schedule: Histogram<u64>,
    /// How late each request left against its schedule (the pacer's lateness plus the wait
    /// for a free connection).
    pub lag: Histogram<u64>,
    /// Requests that left more than [`LATE`] behind their schedule.
    pub late: u64,
    /// How late the pacer handed each request over (its own lateness only).
    pub pacer_lag: Histogram<u64>,
    /// Requests the pacer handed over more than [`LATE`] behind their schedule.
    pub pacer_late: u64,
    /// Connections opened again after a failed request.
    pub replaced: u64,
    /// From the first scheduled send to the last answer.
    pub elapsed: Duration,
}

impl Load {
    /// An empty loop's figures, `scheduled` requests planned.
    #[cfg(test)]
    pub fn empty(scheduled: u64) -> Load {
        Load {
            scheduled,
            ok: 0,
            non_2xx: 0,
            failed: 0,
            dropped: 0,
            latency: histogram(),
            from_schedule: histogram(),
            lag: histogram(),
            late: 0,
            pacer_lag: histogram(),
            pacer_late: 0,
            replaced: 0,
            elapsed: Duration::ZERO,
        }
    }

    pub fn answered(&self) -> u64 {
        self.ok + self.non_2xx
    }

    /// 2xx answers per second.
    pub fn achieved_per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.latency, q)
    }
}

/// A quantile in milliseconds of a histogram in microseconds; `None` when it is empty.
pub fn quantile_ms(histogram: &Histogram<u64>, q: f64) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(q) as f64 / 1000.0)
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_evenly_spaced_and_bounded() {
        assert_eq!(scheduled_count(4000, 6.0), 24_000);
        assert_eq!(scheduled_count(3, 0.1), 1);
        assert_eq!(due_after(0, 4000), Duration::ZERO);
        assert_eq!(due_after(4000, 4000), Duration::from_secs(1));
        assert_eq!(due_after(1, 4000), Duration::from_micros(250));
    }

    fn job(index: u64) -> Job {
        Job {
            index,
            due: Instant::now(),
        }
    }

    #[test]
    fn an_idle_connection_takes_a_request_else_it_waits_within_the_bound() {
        let mut dispatch = Dispatch::new(2, 2);
        assert!(matches!(
            dispatch.offer(job(0)),
            Handed::To(0, Job { index: 0, .. })
        ));
        assert!(matches!(
            dispatch.offer(job(1)),
            Handed::To(1, Job { index: 1, .. })
        ));
        assert_eq!(dispatch.offer(job(2)), Handed::Queued);
        assert_eq!(dispatch.offer(job(3)), Handed::Queued);
        assert_eq!(dispatch.offer(job(4)), Handed::Dropped);
        // Connection 1 is done: it takes the longest-waiting request, then the next.
        assert_eq!(dispatch.next(1).map(|job| job.index), Some(2));
        assert_eq!(dispatch.next(1).map(|job| job.index), Some(3));
        // Nothing waits: connection 1 is idle, and takes the next request.
        assert_eq!(dispatch.next(1), None);
        assert!(matches!(
            dispatch.offer(job(5)),
            Handed::To(1, Job { index: 5, .. })
        ));
        assert_eq!(dispatch.next(0), None);
        assert_eq!(dispatch.next(1), None);
        assert!(dispatch.waiting.is_empty());
        assert_eq!(dispatch.idle, vec![0, 1]);
    }

    #[test]
    fn the_pacer_drops_beyond_the_queue_and_counts() {
        // Two connections whose tasks never answer: two requests go to them, `bound` wait, in
        // order, the rest are dropped.
        let dispatch = Mutex::new(Dispatch::new(2, 8));
        let channels: Vec<_> = (0..2).map(|_| mpsc::channel::<Job>(1)).collect();
        let senders: Vec<_> = channels.iter().map(|(sender, _)| sender.clone()).collect();
        let started = Instant::now();
        let pacing = pace(started, 1_000_000, 100, &dispatch, &senders);
        assert_eq!(pacing.dropped, 90);
        assert_eq!(pacing.lag.len(), 100);
        let mut channels = channels;
        let first: Vec<u64> = channels
            .iter_mut()
            .map(|(_, jobs)| jobs.try_recv().unwrap().index)
            .collect();
        assert_eq!(first, vec![0, 1]);
        let dispatch = dispatch.into_inner().unwrap();
        let waiting: Vec<u64> = dispatch.waiting.iter().map(|job| job.index).collect();
        assert_eq!(waiting, (2..10).collect::<Vec<u64>>());
        assert_eq!(dispatch.waiting[3].due, started + due_after(5, 1_000_000));
    }

    #[test]
    fn a_closed_connection_drops_its_request() {
        let dispatch = Mutex::new(Dispatch::new(1, 0));
        let (sender, jobs) = mpsc::channel::<Job>(1);
        drop(jobs);
        let pacing = pace(Instant::now(), 1_000_000, 3, &dispatch, &[sender]);
        assert_eq!(pacing.dropped, 3);
    }

    #[test]
    fn requests_are_built_once_per_token_and_cycle() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let tokens = ["a".to_owned(), "b".to_owned()];
        let requests = Requests::new(addr, "/api/orders?page=1", &tokens, "agent/1").unwrap();
        assert_eq!(requests.len(), 2);
        let third = requests.get(2);
        assert_eq!(third.uri(), "/api/orders?page=1");
        assert_eq!(third.headers()[HOST], "127.0.0.1:8080");
        assert_eq!(third.headers()[AUTHORIZATION], "Bearer a");
        assert_eq!(third.headers()[USER_AGENT], "agent/1");
        assert_eq!(requests.get(3).headers()[AUTHORIZATION], "Bearer b");
        assert!(Requests::new(addr, "/", &[], "agent/1").is_err());
        assert!(Requests::new(addr, "/", &["bad\ntoken".to_owned()], "agent/1").is_err());
    }

    #[test]
    fn outcomes_and_the_tally() {
        assert_eq!(Outcome::of(hyper::StatusCode::OK), Outcome::Ok);
        assert_eq!(
            Outcome::of(hyper::StatusCode::FORBIDDEN),
            Outcome::Status(403)
        );
        let mut tally = Tally::new();
        let due = Instant::now();
        let on_time = due + Duration::from_micros(100);
        let late = due + Duration::from_millis(3);
        tally.record(
            due,
            on_time,
            on_time + Duration::from_millis(1),
            Outcome::Ok,
        );
        tally.record(
            due,
            late,
            late + Duration::from_millis(1),
            Outcome::Status(403),
        );
        tally.record(due, late, late, Outcome::Failed);
        assert_eq!((tally.ok, tally.non_2xx, tally.failed), (1, 1, 1));
        assert_eq!(tally.late, 2);
        assert_eq!(tally.latency.len(), 3);
        assert_eq!(
            quantile_ms(&tally.from_schedule, 1.0).map(f64::round),
            Some(4.0)
        );
    }

    #[test]
    fn an_empty_loop_has_no_quantiles() {
        let mut load = Load::empty(0);
        assert_eq!(load.quantile_ms(0.99), None);
        assert_eq!(load.answered(), 0);
        load.latency.record(1500).unwrap();
        assert_eq!(load.quantile_ms(0.5), Some(1.5));
    }
}
