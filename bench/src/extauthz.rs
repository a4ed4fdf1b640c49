//! The server measured: the real `grantflow-extauthz --dev` as a child process on free loopback
//! ports, one per store (standalone Redis or a Redis Cluster for the Redis store), with tokens
//! from its `/dev/token`; and where its binary comes from.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use grantflow_e2e::free_port;
use grantflow_e2e::redis::{RedisCluster, RedisServer};
use tokio::process::{Child, Command};

use crate::BoxError;
use crate::settings::Plan;

/// How long a started extauthz may take to be ready: the embedded store reads every session
/// back first (the `sessions` row starts it on a million).
const READY_WITHIN_SECS: u64 = 180;

/// The store the extauthz process runs with.
#[derive(Clone, Copy)]
pub enum StoreUnderTest<'a> {
    Memory,
    /// The embedded store in this (fresh) data folder.
    Embedded(&'a Path),
    Redis(&'a RedisServer),
    /// The Redis store on a Redis Cluster (`--redis-cluster true`, every node a seed).
    RedisCluster(&'a RedisCluster),
}

impl StoreUnderTest<'_> {
    /// How the benchmark names it (`redis-cluster` for the Redis store on a cluster).
    pub fn name(&self) -> &'static str {
        match self {
            StoreUnderTest::Memory => "memory",
            StoreUnderTest::Embedded(_) => "embedded",
            StoreUnderTest::Redis(_) => "redis",
            StoreUnderTest::RedisCluster(_) => "redis-cluster",
        }
    }

    /// extauthz's `--store`.
    fn store_flag(&self) -> &'static str {
        match self {
            StoreUnderTest::RedisCluster(_) => "redis",
            other => other.name(),
        }
    }

    /// The ports of the Redis nodes the store uses: none, one, or the cluster's.
    pub fn redis_ports(&self) -> Vec<u16> {
        match self {
            StoreUnderTest::Memory | StoreUnderTest::Embedded(_) => Vec::new(),
            StoreUnderTest::Redis(redis) => vec![redis.port],
            StoreUnderTest::RedisCluster(cluster) => {
                cluster.nodes.iter().map(|node| node.port).collect()
            }
        }
    }
}

/// A running `grantflow-extauthz --dev`, killed when dropped.
pub struct Extauthz {
    child: Child,
    pub pid: u32,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Extauthz {
    pub async fn start(
        binary: &Path,
        store: StoreUnderTest<'_>,
        plan: &Plan,
    ) -> Result<Extauthz, BoxError> {
        let grpc = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let log = std::env::temp_dir().join(format!(
            "grantflow-bench-{}-extauthz-{}.log",
            std::process::id(),
            store.name()
        ));
        let mut command = Command::new(binary);
        command
            .args(["--dev", "--grpc-addr", &grpc.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--store", store.store_flag()])
            // The store deadline of production; the bench reports any 503 it causes.
            .args(["--store-timeout", "50ms"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true);
        for name in [
            "GRANTFLOW_CONFIG",
            "GRANTFLOW_STORE",
            "GRANTFLOW_DATA_DIR",
            "GRANTFLOW_REDIS_URL",
            "GRANTFLOW_REDIS_CLUSTER",
            "GRANTFLOW_LOG_FORMAT",
        ] {
            command.env_remove(name);
        }
        command.env_remove("TOKIO_WORKER_THREADS");
        if let Some(filter) = &plan.server_log {
            command.env("RUST_LOG", filter);
        }
        if let Some(workers) = plan.server_workers {
            command.env("TOKIO_WORKER_THREADS", workers.to_string());
        }
        match store {
            StoreUnderTest::Redis(redis) => {
                command.args(["--redis-url", &redis.url()]);
            }
            StoreUnderTest::RedisCluster(cluster) => {
                command
                    .args(["--redis-url", &cluster.urls().join(",")])
                    .args(["--redis-cluster", "true"]);
            }
            StoreUnderTest::Embedded(dir) => {
                command.arg("--data-dir").arg(dir);
            }
            StoreUnderTest::Memory => {}
        }
        let child = command.spawn()?;
        let pid = child.id().ok_or("extauthz exited at once")?;
        let mut extauthz = Extauthz {
            child,
            pid,
            grpc,
            admin,
            log,
        };
        extauthz.wait_ready().await?;
        Ok(extauthz)
    }

    async fn wait_ready(&mut self) -> Result<(), BoxError> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(READY_WITHIN_SECS);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(
                    format!("extauthz exited with {status}; see {}", self.log.display()).into(),
                );
            }
            let ready = http
                .get(format!("http://{}/readyz", self.admin))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "extauthz was not ready within {READY_WITHIN_SECS} s; see {}",
                    self.log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tokens of `count` distinct users, each in its own session, from `/dev/token`.
    pub async fn tokens(&self, count: usize, run: &str) -> Result<Vec<String>, BoxError> {
        self.tokens_in_flight(count, run, 1).await
    }

    /// [`Self::tokens`] with `in_flight` requests at once (each signs RS256 in the server, so
    /// more than one per core gains nothing). Users `bench<i>` and sessions `bench-<run>-<i>`:
    /// a `run` of its own gives sessions never seen before.
    pub async fn tokens_in_flight(
        &self,
        count: usize,
        run: &str,
        in_flight: usize,
    ) -> Result<Vec<String>, BoxError> {
        let http = reqwest::Client::new();
        let mint = |i: usize| {
            let http = http.clone();
            let url = format!(
                "http://{}/dev/token?user=bench{i}&session=bench-{run}-{i}",
                self.admin
            );
            async move {
                let response = http
                    .get(url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await?
                    .error_for_status()?;
                Ok::<String, BoxError>(response.text().await?.trim().to_owned())
            }
        };
        futures::stream::iter((0..count).map(mint))
            .buffered(in_flight.max(1))
            .try_collect()
            .await
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `configured` (`--extauthz-bin`, `GRANTFLOW_EXTAUTHZ_BIN`), else the release (or, in a debug
/// run, debug) `grantflow-extauthz` next to this binary, built first by the cargo that runs us
/// so that it is current.
pub fn extauthz_binary(configured: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return Ok(path);
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let binary = me.with_file_name("grantflow-extauthz");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = StdCommand::new(cargo);
    build.current_dir(grantflow_e2e::repo_root()).args([
        "build",
        "-p",
        "grantflow-extauthz",
        "--bin",
        "grantflow-extauthz",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    // Target directory: the one we were built into (cargo passes CARGO_TARGET_DIR through).
    eprintln!("building grantflow-extauthz ...");
    let status = build
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() || !binary.exists() {
        return Err(format!(
            "cargo build -p grantflow-extauthz failed ({status}) or did not produce {}; \
             set GRANTFLOW_EXTAUTHZ_BIN to a built binary",
            binary.display()
        ));
    }
    Ok(binary)
}
