//! Kubernetes for the end-to-end tests: the `kmock` emulator with our shim
//! (`tests/kmock/apiserver.py`) as the API server, serving the committed CRDs over TLS; real
//! `kubectl` against it; and the operator in this process, on the store extauthz uses.
//!
//! The emulator is not a real API server; what it does not do, and how that is covered, is in
//! `docs/kubernetes.md` ("What the end-to-end tests cannot show").

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grantflow_core::clock::Clock;
use grantflow_core::store::SessionStore;
use grantflow_operator::config::{Settings, WebhookTls};
use grantflow_operator::server::{self, Running};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::{free_port, loopback, repo_root};

/// The namespace the tests put their objects in (and the operator its Lease).
pub const NAMESPACE: &str = "grantflow";

/// A tool from the test venv (`scripts/install-test-tools.sh`), else from PATH.
fn venv_tool(name: &str) -> PathBuf {
    let local = repo_root().join(".venv/bin").join(name);
    if local.exists() {
        local
    } else {
        PathBuf::from(name)
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "grantflow-{label}-{}-{}",
            std::process::id(),
            crate::unique()
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for 127.0.0.1, as PEM files: `(cert, key)`.
pub fn self_signed(dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("generate a certificate");
    let cert = dir.write(&format!("{name}.crt"), &generated.cert.pem());
    let key = dir.write(
        &format!("{name}.key"),
        &generated.signing_key.serialize_pem(),
    );
    (cert, key)
}

/// The emulated API server.
pub struct ApiServer {
    pub url: String,
    ca_pem: String,
    dir: TempDir,
    _child: Child,
    /// The emulator exits when this pipe closes.
    _stdin: ChildStdin,
}

/// A user of the API server: a bearer token and the name it stands for.
pub struct User {
    pub token: &'static str,
    pub name: &'static str,
}

impl ApiServer {
    /// Starts the emulator with the committed CRDs, these users, and (optionally) a mutating
    /// webhook for Revocations at `webhook_url`, trusted through `webhook_ca`.
    pub async fn start(users: &[User], webhook: Option<(&str, &Path)>) -> ApiServer {
        let dir = TempDir::new("apiserver");
        let (cert, key) = self_signed(&dir, "apiserver");
        let root = repo_root();
        let mut command = Command::new(venv_tool("python"));
        command
            .arg(root.join("tests/kmock/apiserver.py"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key);
        for crd in ["crds/sessionpolicies.yaml", "crds/revocations.yaml"] {
            command.arg("--crd").arg(root.join(crd));
        }
        for user in users {
            command
                .arg("--token")
                .arg(format!("{}={}", user.token, user.name));
        }
        if let Some((url, ca)) = webhook {
            command
                .args(["--webhook-url", url])
                .arg("--webhook-ca")
                .arg(ca);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start tests/kmock/apiserver.py (run ./scripts/test.sh for the venv)");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let line = tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .expect("the emulator announces itself within 30 s")
        .expect("read the emulator's stdout")
        .expect("the emulator printed its address");
        let ready: Value = serde_json::from_str(&line).expect("the emulator prints JSON");
        ApiServer {
            url: ready["url"].as_str().expect("a URL").to_owned(),
            ca_pem: std::fs::read_to_string(&cert).expect("read the CA"),
            dir,
            _child: child,
            _stdin: stdin,
        }
    }

    /// A kubeconfig for `token`, default namespace [`NAMESPACE`]; written once per token.
    pub fn kubeconfig(&self, token: &str) -> PathBuf {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kmock\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: kmock\n  context:\n    cluster: kmock\n    user: user\n    namespace: {NAMESPACE}\ncurrent-context: kmock\n",
            url = self.url
        );
        self.dir.write(&format!("kubeconfig-{token}.yaml"), &config)
    }

    /// A kube client authenticated with `token`.
    pub async fn client(&self, token: &str) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig(token))
            .expect("read the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a client configuration");
        kube::Client::try_from(config).expect("a kube client")
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

/// The operator's webhook certificate (as cert-manager would make it) and port.
pub struct WebhookCert {
    pub tls: WebhookTls,
    pub port: u16,
}

impl WebhookCert {
    pub fn new(dir: &TempDir) -> WebhookCert {
        let (cert, key) = self_signed(dir, "webhook");
        WebhookCert {
            tls: WebhookTls { cert, key },
            port: free_port(),
        }
    }

    pub fn url(&self) -> String {
        format!(
            "https://127.0.0.1:{}{}",
            self.port,
            grantflow_operator::webhook::PATH
        )
    }
}

/// Starts an operator in this process as replica `identity`, on `store`.
pub async fn start_operator(
    client: kube::Client,
    webhook: &WebhookCert,
    identity: &str,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
) -> Running {
    let mut settings = Settings::for_tests();
    settings.webhook_addr = loopback(webhook.port);
    settings.webhook_tls = Some(webhook.tls.clone());
    settings.lease.namespace = NAMESPACE.into();
    settings.lease.identity = identity.into();
    server::start(&settings, client, store, clock)
        .await
        .expect("the operator starts")
}

/// Whether the operator at `admin` holds the Lease (its `leader` gauge).
pub async fn is_leader(http: &reqwest::Client, running: &Running) -> bool {
    let metrics = http
        .get(format!("http://{}/metrics", running.admin_addr))
        .send()
        .await
        .expect("the operator's admin side answers")
        .text()
        .await
        .expect("metrics text");
    metrics
        .lines()
        .any(|line| line == "grantflow_operator_leader 1")
}
