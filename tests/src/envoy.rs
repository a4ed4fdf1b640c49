//! A real Envoy running the example bootstrap, `examples/envoy/envoy.yaml`, with only its
//! port numbers rewritten to free ones.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{free_port, loopback, repo_root, tool};

/// The ports the example bootstrap uses.
const ADMIN_PORT: u16 = 9901;
const LISTENER_PORT: u16 = 10000;
const EXTAUTHZ_PORT: u16 = 9001;
const APP_PORT: u16 = 8081;

pub struct Envoy {
    /// Where clients send requests.
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    _child: Child,
    _config: TempFile,
}

impl Envoy {
    /// Starts Envoy in front of `app`, asking the ext_authz servers at `extauthz`.
    pub async fn start(extauthz: SocketAddr, app: SocketAddr) -> Envoy {
        let example = repo_root().join("examples/envoy/envoy.yaml");
        let bootstrap = std::fs::read_to_string(&example).expect("read the example bootstrap");
        let admin = loopback(free_port());
        let listener = loopback(free_port());
        let config = rewrite_port(&bootstrap, ADMIN_PORT, admin.port());
        let config = rewrite_port(&config, LISTENER_PORT, listener.port());
        let config = rewrite_port(&config, EXTAUTHZ_PORT, extauthz.port());
        let config = rewrite_port(&config, APP_PORT, app.port());
        let file = TempFile::write("envoy.yaml", &config);
        let child = Command::new(tool("ENVOY_BIN"))
            .arg("-c")
            .arg(&file.0)
            .args([
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "-l",
                "warning",
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start Envoy");
        let envoy = Envoy {
            listener,
            admin,
            _child: child,
            _config: file,
        };
        envoy.wait_ready().await;
        envoy
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("http://{}/ready", self.admin))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Envoy did not become ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The URL of `path` through Envoy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listener, path)
    }
}

/// Replaces `port_value: from` (which must occur exactly once) with `to`.
fn rewrite_port(config: &str, from: u16, to: u16) -> String {
    let needle = format!("port_value: {from}");
    assert_eq!(
        config.matches(&needle).count(),
        1,
        "the bootstrap has one `{needle}`"
    );
    config.replace(&needle, &format!("port_value: {to}"))
}

/// A file removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn write(name: &str, contents: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!(
            "grantflow-e2e-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write a temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
