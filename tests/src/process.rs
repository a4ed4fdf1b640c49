//! The real `grantflow-extauthz` binary as a child process, for tests that stop it (SIGTERM,
//! SIGKILL) and start it again.
//!
//! Its gRPC and admin ports are picked once ([`free_port`]: below the ephemeral range, never
//! handed out twice by this process) and kept across restarts, so an Envoy started in front
//! of it keeps pointing at it. Its output (every run, appended) goes to a log file, printed
//! when a test panics while the process handle is alive.

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{free_port, loopback};

/// How long a start may take until `/readyz` answers 200 (the store opened, the issuer's
/// keys loaded).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a stopped process may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

use tempfile::TempDir;

/// How to stop the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the process shuts down by itself (and must exit 0).
    Term,
    /// SIGKILL (`kill -9`): no chance to clean up, like a crash or an OOM kill.
    Kill,
}

/// A binary of this workspace next to the running test executable: a test binary lives in
/// `<target>/<profile>/deps/`, the workspace's binaries in `<target>/<profile>/`
/// (`cargo test --workspace` builds them: their packages have integration tests).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in <target>/<profile>/deps");
    let binary = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the {name} binary is missing at {}: build it first (`cargo build -p {name}`, with \
         the same CARGO_TARGET_DIR and profile as the tests; `cargo test --workspace` builds it)",
        binary.display()
    );
    binary
}

/// A running (or stopped) `grantflow-extauthz` process.
pub struct Extauthz {
    /// The ext_authz gRPC address (the same for every run).
    pub grpc_addr: SocketAddr,
    /// The admin HTTP address (the same for every run).
    pub admin_addr: SocketAddr,
    args: Vec<OsString>,
    /// Working directory and log file.
    dir: TempDir,
    child: Option<Child>,
}

impl Extauthz {
    /// The binary next to the running test executable.
    pub fn binary() -> PathBuf {
        workspace_binary("grantflow-extauthz")
    }

    /// Starts the binary with `args` (every setting except the two addresses, which are
    /// picked here) and waits until `/readyz` answers 200.
    pub async fn start<I, S>(args: I) -> Extauthz
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut extauthz = Extauthz {
            grpc_addr: loopback(free_port()),
            admin_addr: loopback(free_port()),
            args: args.into_iter().map(Into::into).collect(),
            dir: crate::temp_dir("extauthz"),
            child: None,
        };
        extauthz.spawn().await;
        extauthz
    }

    /// The URL of `path` on the admin HTTP side.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// The process id of the current run.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Everything the process (every run of it) wrote to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("extauthz.log")
    }

    /// Stops the process and waits (bounded) until it exited; its exit status.
    pub async fn stop(&mut self, how: Stop) -> ExitStatus {
        let mut child = self.child.take().expect("the process is running");
        match how {
            Stop::Term => {
                let pid = child.id().expect("a running child");
                let sent = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
            }
            Stop::Kill => child.start_kill().expect("send SIGKILL"),
        }
        match tokio::time::timeout(EXIT_WITHIN, child.wait()).await {
            Ok(status) => status.expect("wait for grantflow-extauthz"),
            Err(_) => {
                let _ = child.kill().await;
                panic!(
                    "grantflow-extauthz did not exit within {EXIT_WITHIN:?} of {how:?}; its log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Starts it again with the same settings, on the same ports.
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the process before restarting it"
        );
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the log file");
        let mut command = Command::new(Self::binary());
        // Only the settings given here: none from the environment of the test run.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GRANTFLOW_") {
                command.env_remove(name);
            }
        }
        command
            .env("RUST_LOG", "info")
            .arg("--grpc-addr")
            .arg(self.grpc_addr.to_string())
            .arg("--admin-addr")
            .arg(self.admin_addr.to_string())
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start grantflow-extauthz");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client");
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = child.try_wait().expect("poll grantflow-extauthz") {
                panic!(
                    "grantflow-extauthz exited at start ({status}); its log:\n{}",
                    self.log()
                );
            }
            let ready = http.get(self.admin_url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                self.child = Some(child);
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                panic!(
                    "grantflow-extauthz was not ready within {READY_WITHIN:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Extauthz {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- grantflow-extauthz log ({}) ---\n{}--- end of log ---",
                self.args
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                self.log()
            );
        }
    }
}
