//! The control-plane tier: the CRDs, the operator and the chart against a real
//! `kube-apiserver` + `etcd` (built from Go modules by `scripts/build-control-plane.sh`, started
//! per test by `grantflow_e2e::control_plane`), with real `kubectl`, the real operator binary,
//! real Redis, a real Envoy and tokens from a real OIDC issuer.
//!
//! There is no kubelet, scheduler or controller manager: no Pod runs, nothing is
//! garbage-collected, namespaces are never finalized. The tests assert on the objects the API
//! server accepts and on what the operator does, not on workloads.

mod crds;
mod helm;
mod operator;
mod rbac;
mod support;
