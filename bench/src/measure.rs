//! One server measured: fresh tokens first seen, a warm-up, the closed loop and the open loop
//! with CPU and Redis command counts around each ([`load`], also the warm load of the
//! `sessions` and `tenants` rows), then the same server through Envoy.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::CheckRequest;

use crate::BoxError;
use crate::cpu::{CpuSample, CpuSource, micros_per};
use crate::envoy::{EnvoyRun, through_envoy};
use crate::extauthz::{Extauthz, StoreUnderTest};
use crate::load::{
    Answer, Measured, Target, call_patiently, check_request, closed_loop, connect, open_loop,
};
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

/// The main tables' load on `target` ([`load`] for the main durations), then the same server
/// through Envoy.
async fn measure(plan: &Plan, target: &Target<'_>) -> Result<StoreRun, BoxError> {
    let Loaded {
        closed,
        open,
        commands,
        first_sight_retries,
    } = load(plan, &Loops::main(plan), target).await?;
    if first_sight_retries > 0 {
        eprintln!("  first sight: {first_sight_retries} checks tried again after a 503");
    }
    eprintln!(
        "  closed loop: {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms, server {:.1} µs CPU/check",
        closed.rate(),
        closed.quantile_ms(0.5),
        closed.quantile_ms(0.99),
        micros_per(closed.cpu.server, closed.calls)
    );
    eprintln!(
        "  open loop {}/s: p50 {:.3} ms, p99 {:.3} ms",
        plan.rate,
        open.quantile_ms(0.5),
        open.quantile_ms(0.99)
    );
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

/// How long each loop of a load runs, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loops {
    pub warmup: f64,
    pub closed: f64,
    pub open: f64,
}

impl Loops {
    /// The main tables' durations: `--warmup-seconds`, `--seconds`, `--open-seconds`.
    pub fn main(plan: &Plan) -> Loops {
        Loops {
            warmup: plan.warmup,
            closed: plan.seconds,
            open: plan.open_seconds,
        }
    }
}

/// What [`load`] measured.
pub struct Loaded {
    pub closed: Measured,
    pub open: Measured,
    /// Redis commands run in the closed loop: (name, calls, µs inside Redis per call).
    pub commands: Vec<(String, u64, f64)>,
    /// First checks tried again after a 503 or no answer (not measured; a busy machine's sign).
    pub first_sight_retries: u32,
}

/// Calls of a token's first check at most, while the server answers 503 (its 50 ms store
/// deadline overrun on a busy machine) or not at all, and the pause before each new one.
const FIRST_SIGHT_TRIES: usize = 4;
const FIRST_SIGHT_PAUSE: Duration = Duration::from_millis(20);

/// `target` loaded for `loops`: every token once, one at a time (first sight: verified, session
/// created or found; all must be allowed, a 503 tried again and counted), a warm-up, the closed
/// loop and the open loop, with CPU around each loop and the Redis commands of the closed loop.
/// The main tables' load and the `sessions` / `tenants` rows' warm load.
pub async fn load(plan: &Plan, loops: &Loops, target: &Target<'_>) -> Result<Loaded, BoxError> {
    let requests: Arc<Vec<CheckRequest>> = Arc::new(
        target
            .tokens
            .iter()
            .enumerate()
            .map(|(i, token)| check_request(token, i))
            .collect(),
    );
    let clients = connect(target.grpc, plan.connections).await?;

    let mut first = clients[0].clone();
    let mut first_sight_retries = 0;
    for request in requests.iter() {
        let (answer, calls) =
            call_patiently(&mut first, request, FIRST_SIGHT_TRIES, FIRST_SIGHT_PAUSE).await;
        first_sight_retries += calls as u32 - 1;
        if answer != Answer::Allowed {
            return Err(format!(
                "{}: a token's first check was not allowed ({answer:?}); see {}",
                target.name,
                target
                    .log
                    .map_or("its output".into(), |l| l.display().to_string())
            )
            .into());
        }
    }
    if loops.warmup > 0.0 {
        closed_loop(
            &clients,
            &requests,
            plan.concurrency,
            Duration::from_secs_f64(loops.warmup),
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
        Duration::from_secs_f64(loops.closed),
        plan.max_calls,
    )
    .await;
    closed.cpu = CpuSample::take(target.cpu, redis_ports()).since(&before);
    let commands = match commands_before {
        Some(before) => command_delta(&before, &command_stats_of(&target.redis_ports)),
        None => Vec::new(),
    };

    let before = CpuSample::take(target.cpu, redis_ports());
    let mut open = open_loop(
        &clients,
        &requests,
        plan.rate,
        Duration::from_secs_f64(loops.open),
    )
    .await;
    open.cpu = CpuSample::take(target.cpu, redis_ports()).since(&before);
    Ok(Loaded {
        closed,
        open,
        commands,
        first_sight_retries,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::settings::Settings;

    #[test]
    fn the_main_loops_are_the_plan_durations() {
        let plan = Plan::new(&Settings::parse_from([
            "bench",
            "--seconds",
            "3",
            "--warmup-seconds",
            "0.5",
            "--open-seconds",
            "1.5",
            "--envoy",
            "0",
        ]))
        .unwrap();
        assert_eq!(
            Loops::main(&plan),
            Loops {
                warmup: 0.5,
                closed: 3.0,
                open: 1.5
            }
        );
    }
}
