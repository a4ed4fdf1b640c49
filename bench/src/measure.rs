//! One server measured: fresh tokens first seen, a warm-up, the closed loop and the open loop
//! with CPU and Redis command counts around each, then the same server through Envoy.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::CheckRequest;

use crate::BoxError;
use crate::cpu::{CpuSample, CpuSource, micros_per};
use crate::envoy::{EnvoyRun, through_envoy};
use crate::extauthz::{Extauthz, StoreUnderTest};
use crate::load::{Answer, Measured, Target, call, check_request, closed_loop, connect, open_loop};
use crate::noop::{NOOP_THREADS, NoopServer};
use crate::redis_info::{command_delta, command_stats_of};
use crate::settings::Plan;

/// Both loops against one store.
pub struct StoreRun {
    pub store: &'static str,
    pub closed: Measured,
    pub open: Measured,
    /// Redis commands run in the closed loop: (name, calls, µs inside Redis per call).
    pub commands: Vec<(String, u64, f64)>,
    /// The same server behind Envoy, loaded by wrk.
    pub envoy: Option<EnvoyRun>,
}

/// Both loops against `grantflow-extauthz` (`binary`) on `store`, started for this and stopped
/// after.
pub async fn bench_store(
    plan: &Plan,
    binary: &Path,
    store: StoreUnderTest<'_>,
) -> Result<StoreRun, BoxError> {
    let server = Extauthz::start(binary, store, plan).await?;
    let run = format!("{}-{}", store.name(), std::process::id());
    let tokens = server.tokens(plan.tokens, &run).await?;
    let target = Target {
        name: store.name(),
        grpc: server.grpc,
        cpu: CpuSource::Process(server.pid),
        redis_ports: store.redis_ports(),
        tokens: &tokens,
        log: Some(&server.log),
    };
    let measured = measure(plan, &target).await;
    server.stop().await;
    measured
}

/// A bare tonic ext_authz server in this process (its own runtime, threads named
/// [`NOOP_THREADS`]) that allows everything: the floor any ext_authz server pays.
pub async fn bench_noop(plan: &Plan) -> Result<StoreRun, BoxError> {
    let server = NoopServer::start()?;
    let tokens: Vec<String> = (0..plan.tokens)
        .map(|i| format!("noop-token-{i}"))
        .collect();
    let target = Target {
        name: "no-op",
        grpc: server.addr,
        cpu: CpuSource::Threads(NOOP_THREADS),
        redis_ports: Vec::new(),
        tokens: &tokens,
        log: None,
    };
    let measured = measure(plan, &target).await;
    server.stop();
    measured
}

async fn measure(plan: &Plan, target: &Target<'_>) -> Result<StoreRun, BoxError> {
    let requests: Arc<Vec<CheckRequest>> = Arc::new(
        target
            .tokens
            .iter()
            .enumerate()
            .map(|(i, token)| check_request(token, i))
            .collect(),
    );
    let clients = connect(target.grpc, plan.connections).await?;

    // First sight of every token: signature verified, session created. Must all be allowed.
    let mut first = clients[0].clone();
    for request in requests.iter() {
        let answer = call(&mut first, request.clone()).await;
        if answer != Answer::Allowed {
            return Err(format!(
                "{}: a fresh token was not allowed ({answer:?}); see {}",
                target.name,
                target
                    .log
                    .map_or("its output".into(), |l| l.display().to_string())
            )
            .into());
        }
    }
    if plan.warmup > 0.0 {
        let warmup = Duration::from_secs_f64(plan.warmup);
        closed_loop(
            &clients,
            &requests,
            plan.concurrency,
            warmup,
            plan.max_calls,
        )
        .await;
    }

    let redis_ports = || target.redis_ports.iter().copied();
    let commands_before =
        (!target.redis_ports.is_empty()).then(|| command_stats_of(&target.redis_ports));
    let before = CpuSample::take(target.cpu, redis_ports());
    let mut closed = closed_loop(
        &clients,
        &requests,
        plan.concurrency,
        Duration::from_secs_f64(plan.seconds),
        plan.max_calls,
    )
    .await;
    let after = CpuSample::take(target.cpu, redis_ports());
    closed.cpu = after.since(&before);
    let commands = match commands_before {
        Some(before) => command_delta(&before, &command_stats_of(&target.redis_ports)),
        None => Vec::new(),
    };
    eprintln!(
        "  closed loop: {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms, server {:.1} µs CPU/check",
        closed.rate(),
        closed.quantile_ms(0.5),
        closed.quantile_ms(0.99),
        micros_per(closed.cpu.server, closed.calls)
    );

    let before = CpuSample::take(target.cpu, redis_ports());
    let mut open = open_loop(
        &clients,
        &requests,
        plan.rate,
        Duration::from_secs_f64(plan.open_seconds),
    )
    .await;
    let after = CpuSample::take(target.cpu, redis_ports());
    open.cpu = after.since(&before);
    eprintln!(
        "  open loop {}/s: p50 {:.3} ms, p99 {:.3} ms",
        plan.rate,
        open.quantile_ms(0.5),
        open.quantile_ms(0.99)
    );
    drop(clients);
    let envoy = match &plan.envoy {
        Some(tools) => Some(through_envoy(plan, tools, Some(target)).await?),
        None => None,
    };
    Ok(StoreRun {
        store: target.name,
        closed,
        open,
        commands,
        envoy,
    })
}
