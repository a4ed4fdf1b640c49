//! End-to-end test harness. Every server runs on 127.0.0.1 with a free port and stops when
//! its handle is dropped:
//!
//! - [`issuer::Issuer`]: a real OIDC issuer (npm `oauth2-mock-server`) minting Entra-shaped
//!   tokens and serving their JWKS;
//! - [`process::Extauthz`]: the real `grantflow-extauthz` binary as a child process, stopped
//!   with SIGTERM or SIGKILL and started again on the same ports;
//! - [`tcp_proxy::TcpProxy`]: a TCP proxy whose target moves or is cut (failover, partition);
//! - [`envoy::Envoy`]: a real Envoy running `examples/envoy/envoy.yaml` (ports rewritten);
//! - [`upstream::Upstream`]: the protected app, echoing the headers it received;
//! - [`redis::RedisServer`], [`redis::RedisCluster`]: real Redis (standalone, 3-master
//!   cluster);
//! - [`browser`]: a `tests/browser/` script in real Chromium, its JSON result and artifacts;
//! - [`stack::Stack`]: all of them plus extauthz in this process, on a memory store the test
//!   can revoke through, with a clock the test moves;
//! - [`control_plane::ControlPlane`]: a real `kube-apiserver` + `etcd` (built from Go modules
//!   by `scripts/build-control-plane.sh`), with client-certificate users and a test CA;
//! - [`kubernetes::Operator`]: the real `grantflow-operator` binary with a kubeconfig, and
//!   real `kubectl`.
//!
//! The tools come from `scripts/install-test-tools.sh`; `scripts/test.sh` exports their paths.

pub mod browser;
pub mod chart;
pub mod control_plane;
pub mod envoy;
pub mod issuer;
pub mod kubernetes;
pub mod process;
pub mod redis;
pub mod sse;
pub mod stack;
pub mod tcp_proxy;
pub mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

/// A port that is free now on 127.0.0.1, for a server that must be told its port before it
/// starts (Redis, a webhook URL the API server is configured with).
///
/// Servers that can bind port 0 themselves should (the harness reads back what they got).
/// A port picked in advance can be taken before its server binds it, so this one comes from
/// *below* the kernel's ephemeral range: no outgoing connection and no `bind(…:0)` of another
/// process lands on it. It is never handed out twice by this process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

    let (low, high) = reserved_range();
    let span = u32::from(high - low);
    // Start somewhere different in each process (test binaries run one after another).
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for step in 0..span {
        let port = low + ((seed.wrapping_add(step)) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{low}..{high}");
}

/// Ports below the ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), above the
/// well-known and common service ports.
fn reserved_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let low = 20_000;
    assert!(
        ephemeral_low > low + 1_000,
        "the ephemeral port range starts at {ephemeral_low}, leaving no room below it"
    );
    (low, ephemeral_low)
}

/// A temporary directory named for `label` (`tempfile`), removed with everything in it when
/// the handle is dropped.
pub fn temp_dir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("grantflow-{label}-"))
        .tempdir()
        .expect("create a temporary directory")
}

/// A number not returned before by this process, for naming temporary files.
pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The repository root.
///
/// Cargo sets `CARGO_MANIFEST_DIR` when it runs a test; that run-time value wins over the
/// path compiled in, because a shared target directory may hold a binary built from another
/// checkout.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("tests/ is in the repo")
        .to_owned()
}

/// A tool path from the environment `scripts/test.sh` sets up.
pub fn tool(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "{var} is not set: run the tests with ./scripts/test.sh, which installs the tools"
        ),
    }
}
