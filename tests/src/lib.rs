//! End-to-end test harness. Every server runs on 127.0.0.1 with a free port and stops when
//! its handle is dropped:
//!
//! - [`issuer::Issuer`]: a real OIDC issuer (npm `oauth2-mock-server`) minting Entra-shaped
//!   tokens and serving their JWKS;
//! - [`envoy::Envoy`]: a real Envoy running `examples/envoy/envoy.yaml` (ports rewritten);
//! - [`upstream::Upstream`]: the protected app, echoing the headers it received;
//! - [`redis::RedisServer`], [`redis::RedisCluster`]: real Redis (standalone, 3-master
//!   cluster);
//! - [`stack::Stack`]: all of them plus extauthz in this process, on a memory store the test
//!   can revoke through, with a clock the test moves;
//! - [`kubernetes::ApiServer`]: the kmock Kubernetes emulator with our shim
//!   (`tests/kmock/apiserver.py`), real `kubectl`, and the operator in process.
//!
//! The tools come from `scripts/install-test-tools.sh`; `scripts/test.sh` exports their paths.

pub mod chart;
pub mod envoy;
pub mod issuer;
pub mod kubernetes;
pub mod redis;
pub mod sse;
pub mod stack;
pub mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("bound").port()
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
