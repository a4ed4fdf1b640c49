//! A real Kubernetes control plane for the tests: `etcd` and `kube-apiserver`, built from Go
//! modules by `scripts/build-control-plane.sh` (which `scripts/test.sh` runs and whose output
//! folder it exports as `GRANTFLOW_CONTROL_PLANE_DIR`), started on loopback ports as
//! controller-runtime's envtest starts them, and stopped on drop.
//!
//! The API server authorizes with RBAC, signs service-account tokens, runs the default
//! admission plugins plus `NodeRestriction` (as kubeadm enables it) and
//! `OwnerReferencesPermissionEnforcement` (as OpenShift does) and authenticates users
//! by client certificates of a test CA ([`ControlPlane::kubeconfig`] makes one per user). There
//! is no controller manager, scheduler or kubelet: no Pod ever runs, no namespace's `default`
//! ServiceAccount is made and nothing is garbage-collected — tests assert on objects, and use
//! a namespace of their own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::process::{Child, Command};

use crate::free_port;
use tempfile::TempDir;

/// How long etcd and the API server may take to become ready once built.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The user every test acts as unless it says otherwise: a member of `system:masters`.
pub const ADMIN: &str = "admin";

/// A running etcd + kube-apiserver.
pub struct ControlPlane {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    // Fields drop in order: the API server is killed (`kill_on_drop`) before etcd, and both
    // before their folder is removed.
    apiserver: Child,
    etcd: Child,
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
    dir: TempDir,
}

/// Where the built binaries are (`scripts/build-control-plane.sh`).
fn binary(name: &str) -> PathBuf {
    let dir = crate::tool("GRANTFLOW_CONTROL_PLANE_DIR");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/build-control-plane.sh",
        path.display()
    );
    path
}

fn pem_b64(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the API server is ready and the
    /// `default` namespace exists.
    pub async fn start() -> ControlPlane {
        let dir = crate::temp_dir("control-plane");
        let path = dir.path().to_owned();

        // One CA for the serving certificate and the client certificates.
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "grantflow-test-ca");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca_pem = ca_cert.pem();
        let ca = Issuer::new(ca_params, ca_key);
        std::fs::write(path.join("ca.crt"), &ca_pem).expect("write the CA");

        let (serving_cert, serving_key) = issue(&ca, "kube-apiserver", &[], true);
        std::fs::write(path.join("apiserver.crt"), serving_cert).expect("write a certificate");
        std::fs::write(path.join("apiserver.key"), serving_key).expect("write a key");
        let sa_key = KeyPair::generate().expect("service-account signing key");
        std::fs::write(path.join("sa.key"), sa_key.serialize_pem()).expect("write a key");
        std::fs::write(path.join("sa.pub"), sa_key.public_key_pem()).expect("write a key");

        let etcd_client = free_port();
        let etcd_peer = free_port();
        let etcd_log = std::fs::File::create(path.join("etcd.log")).expect("a log file");
        let etcd = Command::new(binary("etcd"))
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(path.join("etcd"))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
            ))
            .arg(format!(
                "--initial-cluster=test=http://127.0.0.1:{etcd_peer}"
            ))
            .args(["--unsafe-no-fsync=true", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(etcd_log.try_clone().expect("a log file"))
            .stderr(etcd_log)
            .kill_on_drop(true)
            .spawn()
            .expect("start etcd");

        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let apiserver_log = std::fs::File::create(path.join("kube-apiserver.log")).expect("log");
        let apiserver = Command::new(binary("kube-apiserver"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
            .arg(format!("--secure-port={port}"))
            // No advertised address on loopback (the server refuses one) and nothing to
            // reconcile: the `kubernetes` Service has no real endpoints here.
            .args([
                "--bind-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ])
            .arg("--cert-dir")
            .arg(path.join("certs"))
            .arg("--tls-cert-file")
            .arg(path.join("apiserver.crt"))
            .arg("--tls-private-key-file")
            .arg(path.join("apiserver.key"))
            .arg("--client-ca-file")
            .arg(path.join("ca.crt"))
            .arg("--service-account-key-file")
            .arg(path.join("sa.pub"))
            .arg("--service-account-signing-key-file")
            .arg(path.join("sa.key"))
            .arg(format!("--service-account-issuer={url}/"))
            .args([
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ])
            .stdin(Stdio::null())
            .stdout(apiserver_log.try_clone().expect("a log file"))
            .stderr(apiserver_log)
            .kill_on_drop(true)
            .spawn()
            .expect("start kube-apiserver");

        let mut plane = ControlPlane {
            url,
            apiserver,
            etcd,
            ca,
            ca_pem,
            dir,
        };
        let started = Instant::now();
        plane.wait_ready().await;
        // Reported, not asserted (`--nocapture` shows it): docs/kubernetes.md has the figures.
        println!(
            "control plane ready (readyz and the default namespace) {} ms after start",
            started.elapsed().as_millis()
        );
        plane
    }

    async fn wait_ready(&mut self) {
        let (cert, key) = issue(&self.ca, ADMIN, &["system:masters"], false);
        let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes())
            .expect("a client identity");
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("the CA"),
            )
            .identity(identity)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let exited = [
                ("etcd", self.etcd.try_wait()),
                ("kube-apiserver", self.apiserver.try_wait()),
            ];
            for (name, status) in exited {
                if let Ok(Some(status)) = status {
                    panic!("{name} exited ({status}) while starting:\n{}", self.logs());
                }
            }
            let ready = async {
                let readyz = http.get(format!("{}/readyz", self.url)).send().await.ok()?;
                if !readyz.status().is_success() {
                    return None;
                }
                let ns = http
                    .get(format!("{}/api/v1/namespaces/default", self.url))
                    .send()
                    .await
                    .ok()?;
                ns.status().is_success().then_some(())
            };
            if ready.await.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the control plane was not ready within {} s:\n{}",
                READY_WITHIN.as_secs(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The tail of etcd's and kube-apiserver's logs, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- etcd.log ---\n{}\n--- kube-apiserver.log ---\n{}",
            tail("etcd.log"),
            tail("kube-apiserver.log")
        )
    }

    /// The CA that signed the API server's certificate, as PEM (it also signs the client
    /// certificates and [`Self::serving_cert`]).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A serving certificate for 127.0.0.1/localhost signed by the test CA, as PEM files in
    /// the control plane's folder: `(cert, key)` — for a webhook the API server calls.
    pub fn serving_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = issue(&self.ca, name, &[], true);
        let cert_path = self.dir.path().join(format!("{name}.crt"));
        let key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert).expect("write a certificate");
        std::fs::write(&key_path, key).expect("write a key");
        (cert_path, key_path)
    }

    /// A kubeconfig for `user` in `groups` (a client certificate of the test CA; rcgen keeps
    /// one value per name attribute, so at most one group), with
    /// `namespace` as its default; written once per call into the control plane's folder.
    pub fn kubeconfig(&self, user: &str, groups: &[&str], namespace: &str) -> PathBuf {
        let (cert, key) = issue(&self.ca, user, groups, false);
        let credentials = format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            pem_b64(&cert),
            pem_b64(&key)
        );
        self.write_kubeconfig(user, &credentials, namespace)
    }

    /// The kubeconfig of [`ADMIN`] (`system:masters`), default namespace `namespace`.
    pub fn admin_kubeconfig(&self, namespace: &str) -> PathBuf {
        self.kubeconfig(ADMIN, &["system:masters"], namespace)
    }

    /// A kubeconfig that presents a bearer `token` (a service account's, from TokenRequest).
    pub fn token_kubeconfig(&self, name: &str, token: &str, namespace: &str) -> PathBuf {
        self.write_kubeconfig(name, &format!("    token: {token}\n"), namespace)
    }

    fn write_kubeconfig(&self, name: &str, credentials: &str, namespace: &str) -> PathBuf {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n{credentials}contexts:\n- name: test\n  context:\n    cluster: test\n    user: {name}\n    namespace: {namespace}\ncurrent-context: test\n",
            url = self.url,
            ca = pem_b64(&self.ca_pem),
        );
        let file = self.dir.path().join(format!(
            "kubeconfig-{}-{}.yaml",
            name.replace([':', '/'], "_"),
            crate::unique()
        ));
        std::fs::write(&file, config).expect("write a kubeconfig");
        file
    }

    /// A kube client from `kubeconfig`.
    pub async fn client(&self, kubeconfig: &Path) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("a kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a client configuration");
        kube::Client::try_from(config).expect("a kube client")
    }

    /// The folder the control plane keeps its files in (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A certificate signed by `ca`: for a server (SANs 127.0.0.1 and localhost) or for a client
/// (CN = user, O = groups, as the API server reads them). Returns `(cert PEM, key PEM)`.
fn issue(ca: &Issuer<'_, KeyPair>, name: &str, groups: &[&str], server: bool) -> (String, String) {
    let sans = if server {
        vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
    } else {
        Vec::new()
    };
    assert!(groups.len() <= 1, "one group per certificate");
    let mut params = CertificateParams::new(sans).expect("certificate params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    for group in groups {
        dn.push(DnType::OrganizationName, *group);
    }
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, ca).expect("a certificate");
    (cert.pem(), key.serialize_pem())
}
