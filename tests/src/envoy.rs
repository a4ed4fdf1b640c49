//! A real Envoy running the example bootstrap, `examples/envoy/envoy.yaml`, with only its
//! port numbers rewritten.
//!
//! Envoy binds its admin and listener ports itself (port 0) and the harness reads back what
//! it got (`--admin-address-path`, then the admin `/listeners`): a port picked in advance by
//! the test could be taken by any other process or outgoing connection before Envoy binds it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{repo_root, tool};

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
        Self::start_edited(extauthz, app, str::to_owned).await
    }

    /// Like [`Envoy::start`], on the example bootstrap as `edit` returns it (a test of what
    /// happens when a deployment departs from the example in one setting).
    pub async fn start_edited(
        extauthz: SocketAddr,
        app: SocketAddr,
        edit: impl FnOnce(&str) -> String,
    ) -> Envoy {
        let example = repo_root().join("examples/envoy/envoy.yaml");
        let bootstrap = std::fs::read_to_string(&example).expect("read the example bootstrap");
        let bootstrap = edit(&bootstrap);
        let config = rewrite_port(&bootstrap, ADMIN_PORT, 0);
        let config = rewrite_port(&config, LISTENER_PORT, 0);
        let config = rewrite_port(&config, EXTAUTHZ_PORT, extauthz.port());
        let config = rewrite_port(&config, APP_PORT, app.port());
        let file = TempFile::write("envoy.yaml", &config);
        let admin_path = file.0.with_file_name("admin-address");
        let mut child = Command::new(tool("ENVOY_BIN"))
            .arg("-c")
            .arg(&file.0)
            .arg("--admin-address-path")
            .arg(&admin_path)
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
        let (admin, listener) = wait_ready(&mut child, &admin_path).await;
        Envoy {
            listener,
            admin,
            _child: child,
            _config: file,
        }
    }

    /// The URL of `path` through Envoy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listener, path)
    }
}

/// Waits until Envoy answers `/ready`; its admin and `ingress` listener addresses.
async fn wait_ready(child: &mut Child, admin_path: &std::path::Path) -> (SocketAddr, SocketAddr) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("poll Envoy") {
            panic!("Envoy exited before it was ready ({status}); its log is above");
        }
        let admin = std::fs::read_to_string(admin_path)
            .ok()
            .and_then(|text| text.trim().parse::<SocketAddr>().ok());
        if let Some(admin) = admin {
            let ready = http.get(format!("http://{admin}/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return (admin, listener_address(&http, admin).await);
            }
        }
        assert!(
            Instant::now() < deadline,
            "Envoy did not become ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The address Envoy bound for the `ingress` listener, from its admin `/listeners`.
async fn listener_address(http: &reqwest::Client, admin: SocketAddr) -> SocketAddr {
    let listeners: serde_json::Value = http
        .get(format!("http://{admin}/listeners?format=json"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("Envoy admin /listeners")
        .json()
        .await
        .expect("/listeners is JSON");
    let ingress = listeners["listener_statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["name"] == "ingress")
        .expect("the bootstrap has an `ingress` listener");
    let socket = &ingress["local_address"]["socket_address"];
    let ip = socket["address"].as_str().expect("listener address");
    let port = socket["port_value"].as_u64().expect("listener port");
    format!("{ip}:{port}").parse().expect("a socket address")
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
            crate::unique()
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
