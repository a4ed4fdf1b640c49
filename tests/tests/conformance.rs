//! One conformance suite, every store (docs/design.md §8): each case is one `async fn(Ctx)`, and
//! [`cases!`] runs it once per store — `embedded` (a fresh data folder per case), `memory`,
//! `redis` (standalone) and `redis_cluster` (three masters) — as one test per store, named
//! `<topic>::<case>::<store>`. The Rust engine (embedded, memory) and `check.lua` (Redis) face
//! exactly the same cases.
//!
//! Cases that only make sense on some stores say which (`[embedded, memory]`); tests that
//! need a particular Redis deployment (TLS, replicas, `WAIT`) are in [`redis`]. How the Redis
//! servers are shared between cases, and why some cases run alone, is in [`harness`].
//!
//! Pure engine tests (`TenantSessions`, `UserMarks`) are in `core/tests/engine.rs`.

/// Declares cases: for each, a module of that name with one `#[tokio::test]` per store.
///
/// ```text
/// cases! {
///     a_case;                            // every store, on the shared Redis servers
///     a_case_that_sweeps [; exclusive];  // every store; alone on the shared servers
///     a_clock_case [embedded, memory];   // only these stores
///     a_wiping_case [redis, redis_cluster; own];  // Redis of its own
/// }
/// ```
///
/// Sharing (see [`harness::Sharing`]): `shared` (the default), `exclusive` (needed by cases
/// that run housekeeping), `own`.
macro_rules! cases {
    ($($case:ident $([$($store:ident),* $(; $sharing:ident)?])?;)*) => {
        $( cases!(@one $case $([$($store),* $(; $sharing)?])?); )*
    };
    (@one $case:ident) => {
        cases!(@one $case [embedded, memory, redis, redis_cluster; shared]);
    };
    (@one $case:ident [; $sharing:ident]) => {
        cases!(@one $case [embedded, memory, redis, redis_cluster; $sharing]);
    };
    (@one $case:ident [$($store:ident),+]) => {
        cases!(@one $case [$($store),+; shared]);
    };
    (@one $case:ident [$($store:ident),+; $sharing:ident]) => {
        mod $case {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $store() {
                    crate::harness::run(
                        crate::harness::stores::$store,
                        crate::harness::sharing::$sharing,
                        super::$case,
                    )
                    .await;
                }
            )+
        }
    };
}

// The crate root is this file, so its modules are named by path.
#[path = "conformance/harness.rs"]
mod harness;

#[path = "conformance/decision.rs"]
mod decision;
#[path = "conformance/generation.rs"]
mod generation;
#[path = "conformance/housekeeping.rs"]
mod housekeeping;
#[path = "conformance/idempotency.rs"]
mod idempotency;
#[path = "conformance/listing.rs"]
mod listing;
#[path = "conformance/locks.rs"]
mod locks;
#[path = "conformance/policy.rs"]
mod policy;
#[path = "conformance/redis.rs"]
mod redis;
#[path = "conformance/revocation.rs"]
mod revocation;
#[path = "conformance/session_rules.rs"]
mod session_rules;
#[path = "conformance/watermark.rs"]
mod watermark;
