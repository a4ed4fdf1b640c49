//! The reconcilers against kube's mocked API server (`tower_test::mock`): every scenario
//! states the exact requests the operator must make — method, URL, body — answers them, and
//! fails when a request is missing or one too many arrives. One test binary: the mocked API
//! server and the shared set-up in `harness`, a module per reconciler.

mod harness;
mod policies;
mod revocations;
