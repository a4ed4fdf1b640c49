//! What several rows share to set up and read their traffic, as `pub(super)` items:
//!
//! - the stores a row runs on, each on a fresh server: [`StoreKind`], [`RunningStore`],
//!   [`DataDir`], [`on_each_store`] (the `burst`, `revocations` and `cold` rows; the
//!   `sessions` row's data folders);
//! - tokens from `/dev/token` in parallel ([`dev_tokens`], [`mint`]: `burst`, `revocations`,
//!   `tenants`) and their Check requests ([`requests_for`]);
//! - a check asked again while the store is unavailable ([`call_patiently`] from
//!   [`crate::load`], [`first_sight`]: `burst`, `revocations`);
//! - a client on its own thread and runtime ([`OwnThread`]: `burst`, `revocations`);
//! - figures: [`not_ours`] (CPU of other processes), [`histogram`] / [`ms`], [`ratio`] of two
//!   measured figures, [`cell`] and [`thousands`] for tables, [`put`] for the JSON (`burst`,
//!   `revocations`, `sessions`, `tenants`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use futures::{StreamExt, TryStreamExt};
use grantflow_e2e::redis::RedisServer;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::BoxError;
use crate::cpu::CpuUse;
use crate::extauthz::{Extauthz, StoreUnderTest};
/// Shared with `revocations` from here, beside [`first_sight`] which uses it.
pub(super) use crate::load::call_patiently;
use crate::load::{Answer, Client, check_request};
use crate::settings::Plan;

use super::Context;

/// Tokens minted at once from `/dev/token` (RSA signatures on the server).
const MINT_CONCURRENCY: usize = 8;
/// Set-up calls answered "unavailable" are tried this many times in all.
pub(super) const SETUP_TRIES: usize = 3;
/// Any single HTTP call of a row.
pub(super) const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A store a row runs on: memory, embedded (when the plan measures it), and Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoreKind {
    Memory,
    Embedded,
    Redis,
}

impl StoreKind {
    pub(super) fn for_plan(plan: &Plan) -> Vec<StoreKind> {
        let mut kinds = vec![StoreKind::Memory];
        if plan.embedded {
            kinds.push(StoreKind::Embedded);
        }
        kinds.push(StoreKind::Redis);
        kinds
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Embedded => "embedded",
            StoreKind::Redis => "redis",
        }
    }
}

/// A fresh `grantflow-extauthz` on its store (a fresh data folder, a fresh Redis), all of it
/// stopped and removed when dropped.
pub(super) struct RunningStore {
    pub(super) kind: StoreKind,
    pub(super) server: Extauthz,
    pub(super) redis: Option<RedisServer>,
    _data_dir: Option<DataDir>,
    /// Names tokens apart between stores and runs.
    pub(super) run: String,
}

/// A data folder under the temporary folder, removed when dropped (also on error paths).
pub(super) struct DataDir(PathBuf);

impl DataDir {
    /// `grantflow-bench-<pid>-<name>`, emptied first.
    pub(super) fn fresh(name: &str) -> DataDir {
        let dir =
            std::env::temp_dir().join(format!("grantflow-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl RunningStore {
    pub(super) async fn start(
        plan: &Plan,
        binary: &Path,
        kind: StoreKind,
    ) -> Result<RunningStore, BoxError> {
        let run = format!("{}-{}", kind.name(), std::process::id());
        match kind {
            StoreKind::Memory => Ok(RunningStore {
                kind,
                server: Extauthz::start(binary, StoreUnderTest::Memory, plan).await?,
                redis: None,
                _data_dir: None,
                run,
            }),
            StoreKind::Embedded => {
                let dir = DataDir::fresh(&format!("row-data-{}", next_serial()));
                let server =
                    Extauthz::start(binary, StoreUnderTest::Embedded(dir.path()), plan).await?;
                Ok(RunningStore {
                    kind,
                    server,
                    redis: None,
                    _data_dir: Some(dir),
                    run,
                })
            }
            StoreKind::Redis => {
                // `RedisServer::start` panics when Redis does not start; in a task of its own
                // that is the row's error. Killed when dropped.
                let redis = tokio::spawn(RedisServer::start())
                    .await
                    .map_err(|error| format!("Redis did not start: {error}"))?;
                let server = Extauthz::start(binary, StoreUnderTest::Redis(&redis), plan).await?;
                Ok(RunningStore {
                    kind,
                    server,
                    redis: Some(redis),
                    _data_dir: None,
                    run,
                })
            }
        }
    }

    pub(super) fn redis_port(&self) -> Option<u16> {
        self.redis.as_ref().map(|redis| redis.port)
    }

    pub(super) async fn stop(mut self) {
        self.server.stop().await;
        if let Some(redis) = &mut self.redis {
            redis.stop().await;
        }
    }
}

/// `scenario` on each store of [`StoreKind::for_plan`] in turn, each on a fresh
/// [`RunningStore`] stopped after it; `row` names the row in the progress lines. When the
/// scenario fails, the store is killed as it is dropped and the server's log stays for the
/// error message.
pub(super) async fn on_each_store<T>(
    context: &Context<'_>,
    row: &str,
    scenario: impl AsyncFn(&Plan, &RunningStore) -> Result<T, BoxError>,
) -> Result<Vec<(&'static str, T)>, BoxError> {
    let plan = context.plan;
    let mut results = Vec::new();
    for kind in StoreKind::for_plan(plan) {
        eprintln!("  {row}: {}", kind.name());
        let store = RunningStore::start(plan, context.extauthz, kind).await?;
        let measured = scenario(plan, &store).await?;
        store.stop().await;
        results.push((kind.name(), measured));
    }
    Ok(results)
}

fn next_serial() -> u64 {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// One token of its own user, in its own session.
#[derive(Debug, Clone)]
pub(super) struct Minted {
    pub(super) session: String,
    pub(super) token: String,
}

/// The tokens `/dev/token` answers at each of `urls` (its query names the user, the session,
/// the tenant, …), in the order of `urls`, `in_flight` asked at a time.
pub(super) async fn dev_tokens(
    urls: Vec<String>,
    in_flight: usize,
) -> Result<Vec<String>, BoxError> {
    let http = reqwest::Client::new();
    futures::stream::iter(urls)
        .map(|url| {
            let http = http.clone();
            async move {
                let response = http
                    .get(url)
                    .timeout(HTTP_TIMEOUT)
                    .send()
                    .await?
                    .error_for_status()?;
                Ok::<String, BoxError>(response.text().await?.trim().to_owned())
            }
        })
        .buffered(in_flight.max(1))
        .try_collect()
        .await
}

/// `count` tokens from the server's `/dev/token` (at `admin`), each of its own user
/// `{prefix}-u{i}` and session `{prefix}-s{i}`, [`MINT_CONCURRENCY`] at a time; with the admin
/// app role when `admin_role`.
pub(super) async fn mint(
    admin: SocketAddr,
    prefix: &str,
    count: usize,
    admin_role: bool,
) -> Result<Vec<Minted>, BoxError> {
    let sessions: Vec<String> = (0..count).map(|i| format!("{prefix}-s{i}")).collect();
    let urls = sessions
        .iter()
        .enumerate()
        .map(|(i, session)| {
            format!(
                "http://{admin}/dev/token?user={prefix}-u{i}&session={session}{}",
                if admin_role { "&admin=true" } else { "" }
            )
        })
        .collect();
    let tokens = dev_tokens(urls, MINT_CONCURRENCY).await?;
    Ok(sessions
        .into_iter()
        .zip(tokens)
        .map(|(session, token)| Minted { session, token })
        .collect())
}

/// Each token sent once through Check, one after the other as the main table does (its
/// signature verified, its session created); all must be allowed. This is set-up, not a
/// measurement: an answer "unavailable" (503, the store's deadline on a busy machine) or no
/// answer is tried again, up to [`SETUP_TRIES`] times.
pub(super) async fn first_sight(
    client: &Client,
    requests: &[CheckRequest],
    what: &str,
) -> Result<(), BoxError> {
    let mut client = client.clone();
    let mut refused = Vec::new();
    for request in requests {
        let (answer, _) =
            call_patiently(&mut client, request, SETUP_TRIES, Duration::from_millis(50)).await;
        if answer != Answer::Allowed {
            refused.push(answer);
        }
    }
    if let Some(first) = refused.first() {
        return Err(format!(
            "{} of {} {what} tokens were not allowed on first sight (the first: {first:?})",
            refused.len(),
            requests.len()
        )
        .into());
    }
    Ok(())
}

/// Check requests for tokens, `offset` numbering them apart from others.
pub(super) fn requests_for(tokens: &[Minted], offset: usize) -> Vec<CheckRequest> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, minted)| check_request(&minted.token, offset + i))
        .collect()
}

/// A client of its own: `work` runs on a fresh single-threaded tokio runtime on its own OS
/// thread, started at once, so that its work neither waits for nor delays the main load
/// generator's thread.
pub(super) struct OwnThread<T> {
    answer: tokio::sync::oneshot::Receiver<T>,
    thread: std::thread::JoinHandle<()>,
}

impl<T: Send + 'static> OwnThread<T> {
    pub(super) fn spawn<F, Fut>(name: &str, work: F) -> Result<OwnThread<T>, BoxError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let (done, answer) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                let _ = done.send(runtime.block_on(work()));
            })?;
        Ok(OwnThread { answer, thread })
    }

    /// Its answer (every piece of work given to it is bounded in time).
    pub(super) async fn join(self) -> Result<T, BoxError> {
        let answer = self.answer.await;
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        answer.map_err(|_| "a client thread ended without an answer".into())
    }
}

/// Busy CPU seconds of the machine that were none of ours (server, this client, Redis): another
/// process's, as the main table's "not ours".
pub(super) fn not_ours(used: &CpuUse) -> f64 {
    (used.machine_busy - used.server - used.client - used.redis.unwrap_or(0.0)).max(0.0)
}

/// A latency histogram in microseconds, as load.rs keeps them.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

pub(super) fn ms(histogram: &Histogram<u64>, q: f64) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(q) as f64 / 1000.0)
}

/// `a / b` when both were measured and `b` is not zero.
pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// A figure for a table cell: `–` when not measured.
pub(super) fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

/// Puts `value` under `key` when it was measured (absent, never 0, when not).
pub(super) fn put(map: &mut Map<String, Value>, key: &str, value: Option<f64>) {
    if let Some(value) = value.filter(|v| v.is_finite()) {
        map.insert(key.into(), json!(value));
    }
}

/// `1 000 064`: digits in groups of three, a narrow no-break space between.
pub(super) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_cells_of_what_was_not_measured() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(cell(None, 2), "–");
        assert_eq!(cell(Some(1.234), 2), "1.23");
        let mut map = Map::new();
        put(&mut map, "a_ms", None);
        put(&mut map, "b_ms", Some(f64::NAN));
        put(&mut map, "c_ms", Some(0.5));
        assert_eq!(Value::Object(map), json!({"c_ms": 0.5}));
        assert_eq!(ms(&histogram(), 0.99), None);
    }

    #[test]
    fn not_ours_is_what_none_of_ours_used() {
        let used = CpuUse {
            server: 1.0,
            client: 0.5,
            redis: Some(0.25),
            machine_busy: 2.0,
        };
        assert!((not_ours(&used) - 0.25).abs() < 1e-12);
        let used = CpuUse {
            redis: None,
            machine_busy: 1.0,
            ..used
        };
        assert_eq!(not_ours(&used), 0.0);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(1_000_064), "1\u{202f}000\u{202f}064");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn data_dirs_are_named_apart_and_removed() {
        let dir = DataDir::fresh("traffic-test");
        assert!(dir.path().ends_with(format!(
            "grantflow-bench-{}-traffic-test",
            std::process::id()
        )));
        std::fs::create_dir_all(dir.path()).unwrap();
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
    }
}
