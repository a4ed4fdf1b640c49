//! Real Redis servers for tests: standalone, or a local 3-master cluster. Each runs on a free
//! loopback port (see [`free_port`]) in its own temporary directory and is killed when
//! dropped. A server counts as started only once the process on the port is ours.
//!
//! Every server is also handed to a [`lifeline`] watchdog, which kills it once this process has
//! ended if nothing stopped it before — after `SIGKILL` or an abort, and for the servers that
//! are never dropped: [`RedisServer::shared`] and [`RedisCluster::shared`], one server (one
//! cluster) for a whole test binary, started by the first test that asks.

use std::path::PathBuf;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{free_port, tool};

pub struct RedisServer {
    /// The plain-text port (tests administer every server through it).
    pub port: u16,
    /// The TLS port, for a server started with TLS.
    pub tls_port: Option<u16>,
    /// The port of the primary this server replicates.
    replica_of: Option<u16>,
    /// The cluster bus port, for a cluster node.
    bus_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone Redis with AOF off (tests need no persistence).
    pub async fn start() -> RedisServer {
        Self::start_fresh(false, None, None).await
    }

    /// One standalone Redis for every test of this test binary, started by the first test
    /// that asks (the others wait for it) and never stopped by a test: it lives in a `static`,
    /// which is never dropped, so the [`lifeline`] watchdog kills it and removes its directory
    /// once the binary has ended, however it ends. Tests that share it keep their data apart
    /// themselves (e.g. a tenant of their own each); a test that wipes, stops or reconfigures
    /// Redis needs a server of its own ([`Self::start`]).
    pub async fn shared() -> &'static RedisServer {
        static SHARED: tokio::sync::OnceCell<RedisServer> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(Self::start).await
    }

    /// The process id of the running server.
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// A replica of `primary` (standalone), in sync when this returns.
    pub async fn start_replica_of(primary: &RedisServer) -> RedisServer {
        let replica = Self::start_fresh(false, None, Some(primary.port)).await;
        wait_until(
            Duration::from_secs(20),
            || {
                redis_cli(replica.port, &["INFO", "replication"])
                    .is_some_and(|info| info.contains("master_link_status:up"))
            },
            "the replica is in sync with its primary",
        )
        .await;
        replica
    }

    /// A standalone Redis that also serves TLS on [`Self::tls_url`], with a self-signed
    /// certificate for 127.0.0.1 ([`Self::ca_file`]).
    pub async fn start_tls() -> RedisServer {
        Self::start_fresh(false, Some(&self_signed()), None).await
    }

    /// A server on new ports; tries other ports should a port be taken after all.
    /// `tls`: the certificate and key (PEM) to serve TLS with.
    async fn start_fresh(
        cluster: bool,
        tls: Option<&(String, String)>,
        replica_of: Option<u16>,
    ) -> RedisServer {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "grantflow-redis-{}-{}",
                std::process::id(),
                crate::unique()
            ));
            std::fs::create_dir_all(&dir).expect("create the Redis directory");
            if let Some((cert, key)) = tls {
                std::fs::write(dir.join("tls.crt"), cert).expect("write the certificate");
                std::fs::write(dir.join("tls.key"), key).expect("write the key");
            }
            let mut server = RedisServer {
                port,
                tls_port: tls.map(|_| free_port()),
                replica_of,
                // A cluster's bus port is set too: the default, port + 10000, may be taken or
                // past 65535.
                bus_port: cluster.then(free_port),
                dir,
                child: None,
            };
            match server.spawn().await {
                Ok(()) => return server,
                Err(why) if attempt < ATTEMPTS => {
                    eprintln!("redis-server on port {port}: {why}; trying another port");
                }
                Err(why) => panic!("redis-server on port {port}: {why}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    /// Starts the process and waits until *it* (not some other server on the port) answers.
    async fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(tool("REDIS_SERVER_BIN"));
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(bus_port) = self.bus_port {
            command
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-port", &bus_port.to_string()]);
        }
        if let Some(primary) = self.replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        if let Some(tls_port) = self.tls_port {
            let cert = self.ca_file();
            let key = self.dir.join("tls.key");
            command
                .args(["--tls-port", &tls_port.to_string()])
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-key-file")
                .arg(&key)
                .arg("--tls-ca-cert-file")
                .arg(&cert)
                .args(["--tls-auth-clients", "no"]);
            if self.bus_port.is_some() {
                // The cluster bus is TLS too; clients on the TLS port are told TLS ports.
                command.args(["--tls-cluster", "yes"]);
            }
        }
        let mut child = command.spawn().expect("start redis-server");
        let pid = child.id().expect("a running child");
        lifeline::watch(pid, &self.dir);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("poll redis-server") {
                lifeline::forget(pid);
                return Err(format!("exited at start ({status}); its log is above"));
            }
            if self.process_id() == Some(pid) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                lifeline::forget(pid);
                return Err("did not answer within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The `process_id` of the server answering on the port.
    fn process_id(&self) -> Option<u32> {
        let info = redis_cli(self.port, &["INFO", "server"])?;
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Store settings for this server alone: plain connection, `timeout` per call, 2 s for
    /// writes, no replicas waited for.
    pub fn settings(&self, timeout: Duration) -> grantflow_core::store::RedisSettings {
        grantflow_core::store::RedisSettings {
            urls: vec![self.url()],
            cluster: false,
            timeout,
            write_timeout: Duration::from_secs(2),
            ca_pem: None,
            wait_replicas: 0,
        }
    }

    /// `rediss://` on the TLS port of a server started with TLS.
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a server started with TLS");
        format!("rediss://127.0.0.1:{port}")
    }

    /// The server's self-signed certificate (PEM), which is its own CA.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    /// Kills the server (like a crash).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let _ = child.kill().await;
            if let Some(pid) = pid {
                lifeline::forget(pid);
            }
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(why) = self.spawn().await {
            panic!("redis-server restarting on port {}: {why}", self.port);
        }
    }

    /// Freezes the process (`SIGSTOP`): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen process (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("a running server");
        let status = StdCommand::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid}");
    }

    /// `INFO memory` → `used_memory` in bytes.
    pub fn used_memory(&self) -> u64 {
        let info = redis_cli(self.port, &["INFO", "memory"]).unwrap_or_default();
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("INFO memory reports used_memory")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let pid = child.id();
            let _ = child.start_kill();
            if let Some(pid) = pid {
                lifeline::forget(pid);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local Redis Cluster of three masters (no replicas).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        Self::start_with(false).await
    }

    /// One cluster for every test of this test binary, like [`RedisServer::shared`]: started
    /// by the first test that asks, killed by the [`lifeline`] watchdog once the binary has
    /// ended.
    pub async fn shared() -> &'static RedisCluster {
        static SHARED: tokio::sync::OnceCell<RedisCluster> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(Self::start).await
    }

    /// A cluster whose nodes also serve TLS (clients and the cluster bus), all with one
    /// self-signed certificate for 127.0.0.1 ([`Self::ca_file`]).
    pub async fn start_tls() -> RedisCluster {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> RedisCluster {
        let certificate = tls.then(self_signed);
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_fresh(true, certificate.as_ref(), None).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let created = redis_cli(nodes[0].port, &args);
        assert!(created.is_some(), "redis-cli --cluster create succeeded");
        let cluster = RedisCluster { nodes };
        wait_until(
            Duration::from_secs(30),
            || cluster.is_ok(),
            "the cluster reports cluster_state:ok",
        )
        .await;
        cluster
    }

    fn is_ok(&self) -> bool {
        self.nodes.iter().all(|n| {
            redis_cli(n.port, &["CLUSTER", "INFO"])
                .is_some_and(|info| info.contains("cluster_state:ok"))
        })
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::tls_url).collect()
    }

    /// The nodes' certificate (PEM), which is its own CA.
    pub fn ca_file(&self) -> PathBuf {
        self.nodes[0].ca_file()
    }

    /// The index of the node that serves `key`'s slot.
    pub fn node_of(&self, key: &str) -> usize {
        let slot: u16 = redis_cli(self.nodes[0].port, &["CLUSTER", "KEYSLOT", key])
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT");
        let slots = redis_cli(self.nodes[0].port, &["CLUSTER", "SLOTS"]).expect("CLUSTER SLOTS");
        // `redis-cli` prints each range as: start, end, ip, port, id, … one value per line.
        let lines: Vec<&str> = slots.lines().map(str::trim).collect();
        for window in lines.windows(4) {
            if let (Ok(start), Ok(end), Ok(port)) = (
                window[0].parse::<u16>(),
                window[1].parse::<u16>(),
                window[3].parse::<u16>(),
            ) && window[2] == "127.0.0.1"
                && (start..=end).contains(&slot)
            {
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port == port)
                    .expect("a node of ours");
            }
        }
        panic!("no node serves slot {slot}");
    }
}

/// Kills the servers of this process once it has ended, whichever way it ends — returning from
/// `main`, a panic, an abort, `SIGKILL` — unless they were stopped before. Servers in a
/// `static` are never dropped (Rust runs no destructor of a static at exit), and a killed
/// process drops nothing: without this they would outlive it.
///
/// One watchdog per process (`awk`, started with the first server) reads its standard input,
/// a pipe whose only writer is this process (the write end is close-on-exec, so no other child
/// inherits it): `+ <pid> <dir>` for each server started, `- <pid>` for each one stopped. When
/// this process is gone the kernel closes the pipe; the watchdog reads end-of-file, kills the
/// servers still listed (`SIGKILL`: they hold nothing worth saving) and removes their
/// directories.
pub mod lifeline {
    use std::io::Write;
    use std::path::Path;
    use std::process::{ChildStdin, Command, Stdio};
    use std::sync::Mutex;

    const WATCHDOG: &str = r#"
        $1 == "+" { live[$2] = $3 }
        $1 == "-" { delete live[$2] }
        END { for (pid in live) system("kill -KILL " pid " 2>/dev/null; rm -rf -- '" live[pid] "'") }
    "#;

    static PIPE: Mutex<Option<ChildStdin>> = Mutex::new(None);

    fn tell(line: String) {
        let mut pipe = PIPE.lock().unwrap_or_else(|e| e.into_inner());
        if pipe.is_none() {
            let mut watchdog = Command::new("awk")
                .arg(WATCHDOG)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the lifeline watchdog (awk)");
            *pipe = watchdog.stdin.take();
            // The watchdog outlives this process by design; nothing waits for it here.
            drop(watchdog);
        }
        if let Some(pipe) = pipe.as_mut() {
            // A watchdog that is gone cannot be helped; the servers are still stopped on drop.
            let _ = pipe.write_all(line.as_bytes());
        }
    }

    /// A server started: kill `pid` and remove `dir` when this process ends.
    pub fn watch(pid: u32, dir: &Path) {
        tell(format!("+ {pid} {}\n", dir.display()));
    }

    /// A server stopped (and its process id free for reuse): forget it.
    pub fn forget(pid: u32) {
        tell(format!("- {pid}\n"));
    }
}

/// A self-signed certificate for 127.0.0.1 and its key (PEM).
fn self_signed() -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("generate a certificate");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// Runs `redis-cli -p port args…`; its stdout on success.
pub fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let output = StdCommand::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
