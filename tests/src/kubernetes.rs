//! Kubernetes for the end-to-end tests, on the real control plane of
//! [`crate::control_plane`]: real `kubectl`, and the real `grantflow-operator` binary as a
//! child process (one per replica) with a kubeconfig, as a pod would run it.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{free_port, loopback};

/// A tool from the test venv (`scripts/install-test-tools.sh`), else from PATH.
pub fn venv_tool(name: &str) -> PathBuf {
    let local = crate::repo_root().join(".venv/bin").join(name);
    if local.exists() {
        local
    } else {
        PathBuf::from(name)
    }
}

/// Runs `kubectl` with `kubeconfig`; returns its output, whatever its exit code.
pub async fn kubectl_output(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let run = Command::new(venv_tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} finished within 60 s"))
        .expect("run kubectl (run ./scripts/test.sh for the venv)")
}

/// Runs `kubectl`, asserts it succeeded, returns its standard output.
pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let output = kubectl_output(kubeconfig, args).await;
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {}s",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a [`Operator`] replica runs.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// The kubeconfig it talks to the API server with (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// `--redis-url`.
    pub redis_url: String,
    /// `POD_NAMESPACE`: where its Lease and Events go.
    pub namespace: String,
    /// `POD_NAME`: its identity in the Lease.
    pub identity: String,
    /// The webhook's serving certificate and key, if it serves the webhook.
    pub webhook_tls: Option<(PathBuf, PathBuf)>,
    /// The webhook's port (the API server is configured with it before the operator starts).
    pub webhook_port: u16,
    /// Further environment (`GRANTFLOW_*` settings).
    pub env: Vec<(String, String)>,
}

/// A running `grantflow-operator` binary; killed on drop.
pub struct Operator {
    pub admin_addr: SocketAddr,
    pub identity: String,
    log: PathBuf,
    child: Child,
}

impl Operator {
    /// The binary beside the running test executable (`cargo test --workspace` builds it:
    /// the operator package has integration tests).
    pub fn binary() -> PathBuf {
        crate::process::workspace_binary("grantflow-operator")
    }

    /// Starts a replica and waits until its `/healthz` answers (leading or not). Its output
    /// goes to `log_dir/<identity>.log`.
    pub async fn start(options: &OperatorOptions, log_dir: &Path) -> Operator {
        let admin_addr = loopback(free_port());
        let log = log_dir.join(format!(
            "operator-{}-{}.log",
            options.identity,
            crate::unique()
        ));
        let file = File::create(&log).expect("an operator log file");
        let mut command = Command::new(Self::binary());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &options.kubeconfig)
            .env("GRANTFLOW_STORE", "redis")
            .env("GRANTFLOW_REDIS_URL", &options.redis_url)
            .env("GRANTFLOW_OPERATOR_ADMIN_ADDR", admin_addr.to_string())
            .env(
                "GRANTFLOW_WEBHOOK_ADDR",
                loopback(options.webhook_port).to_string(),
            )
            .env("POD_NAMESPACE", &options.namespace)
            .env("POD_NAME", &options.identity)
            .env("RUST_LOG", "info")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some((cert, key)) = &options.webhook_tls {
            command
                .env("GRANTFLOW_WEBHOOK_CERT", cert)
                .env("GRANTFLOW_WEBHOOK_KEY", key);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start grantflow-operator");
        let mut operator = Operator {
            admin_addr,
            identity: options.identity.clone(),
            log,
            child,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = operator.child.try_wait() {
                panic!("the operator exited ({status}):\n{}", operator.log());
            }
            let healthy = http
                .get(format!("http://{admin_addr}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return operator;
            }
            assert!(
                Instant::now() < deadline,
                "the operator was not healthy within 30 s:\n{}",
                operator.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it holds the Lease (its `grantflow_operator_leader` gauge).
    pub async fn is_leader(&self) -> bool {
        let Ok(response) = reqwest::get(format!("http://{}/metrics", self.admin_addr)).await else {
            return false;
        };
        response
            .text()
            .await
            .unwrap_or_default()
            .lines()
            .any(|line| line == "grantflow_operator_leader 1")
    }

    /// A metric line's value (the first line starting with `prefix`).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.admin_addr))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// SIGTERM, then waits for it to exit (it releases its Lease on the way out).
    pub async fn stop(mut self) -> ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => status.expect("wait for the operator"),
            Err(_) => panic!("the operator did not exit within 15 s:\n{}", self.log()),
        }
    }
}
