//! 1 vs 1 000 tenants (issue 10, item 3): the same number of hot tokens (`plan.tenant_count`,
//! one user each) all in the development tenant, then spread over `plan.tenant_count` tenants
//! (one user each), on the memory store and on Redis, each through the real
//! `grantflow-extauthz` (a fresh process, and a fresh Redis, for each). Tokens of other tenants
//! come from `/dev/token?tenant=<GUID>`. Redis's keys and bytes per tenant: what the
//! many-tenant store holds beyond the one-tenant store, over the extra tenants.

use grantflow_e2e::redis::RedisServer;
use serde_json::{Map, Value, json};

use super::sessions::warm::{
    P99_GOAL, Ratios, THROUGHPUT_GOAL, Warm, loops_of, not_allowed_note, warm_load,
};
use super::traffic::{RunningStore, StoreKind, cell, dev_tokens, put, thousands};
use super::{Context, Section};
use crate::cpu::CpuSource;
use crate::extauthz::Extauthz;
use crate::load::Target;
use crate::measure::Loops;
use crate::redis_info::dbsize;
use crate::settings::Plan;
use crate::{BoxError, TENANT};

/// The short mode's most tenants (and hot tokens): minting a token signs it with RS256, and
/// four loads of 1 000 would take most of the short mode's time.
const SHORT_TENANTS: usize = 250;
/// `/dev/token` calls in flight while minting (each signs an RS256 token).
const MINT_CONCURRENCY: usize = 4;

/// The `i`th tenant of the many-tenant load: a GUID that is not the development tenant.
pub fn tenant_id(i: usize) -> String {
    format!("7e0a0000-0000-4000-8000-{i:012x}")
}

/// Tenants (and hot tokens) of the many-tenant load: `plan.tenant_count`, at most
/// [`SHORT_TENANTS`] in the short mode.
pub fn tenant_count(plan: &Plan) -> usize {
    if plan.short {
        plan.tenant_count.min(SHORT_TENANTS)
    } else {
        plan.tenant_count
    }
}

/// Which tenant each hot token is for: all the development tenant, or one tenant each.
fn tenants_of(tokens: usize, spread: bool) -> Vec<String> {
    (0..tokens)
        .map(|i| {
            if spread {
                tenant_id(i)
            } else {
                TENANT.to_owned()
            }
        })
        .collect()
}

/// A token per tenant of `tenants` (user `t<i>`, session `<run>-<i>`), from `/dev/token`.
async fn mint(server: &Extauthz, tenants: &[String], run: &str) -> Result<Vec<String>, BoxError> {
    let admin = server.admin;
    let urls = tenants
        .iter()
        .enumerate()
        .map(|(i, tenant)| {
            format!("http://{admin}/dev/token?user=t{i}&session={run}-{i}&tenant={tenant}")
        })
        .collect();
    dev_tokens(urls, MINT_CONCURRENCY).await
}

/// One load: `tenants.len()` hot tokens over those tenants.
struct Phase {
    tenants: usize,
    warm: Warm,
    /// Redis `DBSIZE` and `used_memory` after the load.
    redis_keys: Option<u64>,
    redis_bytes: Option<u64>,
}

async fn phase(
    context: &Context<'_>,
    loops: &Loops,
    kind: StoreKind,
    spread: bool,
) -> Result<Phase, BoxError> {
    let plan: &Plan = context.plan;
    let tenants = tenants_of(tenant_count(plan), spread);
    let distinct = if spread { tenants.len() } else { 1 };
    // A fresh server, and a fresh Redis, each time, so that its keys and bytes are this load's
    // alone.
    let store = RunningStore::start(plan, context.extauthz, kind).await?;
    let server = &store.server;
    let run = format!("tenants-{}-{distinct}-{}", kind.name(), std::process::id());
    let tokens = mint(server, &tenants, &run).await?;
    let target = Target {
        name: kind.name(),
        grpc: server.grpc,
        cpu: CpuSource::Process(server.pid),
        redis_ports: store.redis_port().into_iter().collect(),
        tokens: &tokens,
        log: Some(&server.log),
    };
    // On an error the store is killed when dropped and the server's log stays for the message.
    let warm = warm_load(plan, loops, &target).await?;
    let redis_keys = store.redis_port().map(dbsize);
    let redis_bytes = store.redis.as_ref().map(RedisServer::used_memory);
    store.stop().await;
    Ok(Phase {
        tenants: distinct,
        warm,
        redis_keys,
        redis_bytes,
    })
}

/// `(many − one) / (tenants of many − tenants of one)`: what each extra tenant costs.
pub fn per_extra_tenant(one: (u64, usize), many: (u64, usize)) -> Option<f64> {
    let extra = many.1.checked_sub(one.1).filter(|n| *n > 0)?;
    Some((many.0 as f64 - one.0 as f64) / extra as f64)
}

fn phase_json(phase: &Phase) -> Value {
    let mut figures = phase.warm.json();
    figures.insert("tenants".into(), json!(phase.tenants));
    if let Some(keys) = phase.redis_keys {
        figures.insert("redis_keys".into(), json!(keys));
    }
    if let Some(bytes) = phase.redis_bytes {
        figures.insert("redis_used_memory_bytes".into(), json!(bytes));
    }
    Value::Object(figures)
}

pub async fn run(context: &Context<'_>) -> Result<Section, BoxError> {
    let plan = context.plan;
    let loops = loops_of(plan);
    let count = tenant_count(plan);
    let mut measured = Vec::new();
    for kind in [StoreKind::Memory, StoreKind::Redis] {
        let store = kind.name();
        eprintln!("  {store}: {count} hot tokens in 1 tenant");
        let one = phase(context, &loops, kind, false).await?;
        eprintln!("  {store}: {count} hot tokens in {count} tenants");
        let many = phase(context, &loops, kind, true).await?;
        measured.push((store, one, many));
    }

    let mut markdown = format!("### 1 vs {} tenants\n\n", thousands(count));
    markdown.push_str(&format!(
        "The same warm Check load ({n} hot tokens, one user each; closed loop {} calls in \
         flight for {:.1} s after {:.2} s warm-up, open loop {}/s for {:.1} s) with every token \
         in the development tenant, then with the {n} tokens spread over {n} tenants (one user \
         each; tokens from `/dev/token?tenant=<GUID>`), through the real extauthz: a fresh \
         process, and for Redis a fresh `redis-server`, for each load. Redis keys and bytes \
         per tenant: `DBSIZE` and `used_memory` after the many-tenant load minus after the \
         one-tenant load, over the extra tenants. Goal: with {n} tenants, throughput ≥ \
         {THROUGHPUT_GOAL}× and both p99s ≤ {P99_GOAL}× one tenant's.{short}\n\n",
        plan.concurrency,
        loops.closed,
        loops.warmup,
        plan.rate,
        loops.open,
        n = count,
        short = if count < plan.tenant_count {
            format!(
                " (The short mode: {count} tenants instead of {}.)",
                plan.tenant_count
            )
        } else {
            String::new()
        },
    ));
    markdown.push_str(
        "| store | tenants | checks/s | closed p99, ms | open p99, ms | server CPU µs/check \
         | Redis CPU µs/check | Redis keys | Redis used_memory, bytes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut json = Map::new();
    json.insert("tenant_count".into(), json!(count));
    json.insert("hot_tokens".into(), json!(count));
    let mut ratio_rows = Vec::new();
    let mut per_tenant = None;
    for (store, one, many) in &measured {
        for phase in [one, many] {
            markdown.push_str(&format!(
                "| {store} | {} | {} | {} | {} |\n",
                phase.tenants,
                phase.warm.cells(),
                phase.redis_keys.map_or("–".into(), |k| k.to_string()),
                phase.redis_bytes.map_or("–".into(), |b| b.to_string()),
            ));
        }
        let ratios = Ratios::of(&one.warm, &many.warm);
        ratio_rows.push((*store, ratios));
        let mut figures = Map::new();
        figures.insert("one".into(), phase_json(one));
        figures.insert("many".into(), phase_json(many));
        figures.insert("ratios".into(), ratios.json());
        let keys = one
            .redis_keys
            .zip(many.redis_keys)
            .and_then(|(a, b)| per_extra_tenant((a, one.tenants), (b, many.tenants)));
        let bytes = one
            .redis_bytes
            .zip(many.redis_bytes)
            .and_then(|(a, b)| per_extra_tenant((a, one.tenants), (b, many.tenants)));
        put(&mut figures, "redis_keys_per_tenant", keys);
        put(&mut figures, "redis_bytes_per_tenant", bytes);
        if keys.is_some() || bytes.is_some() {
            per_tenant = Some((keys, bytes));
        }
        json.insert((*store).into(), Value::Object(figures));
    }
    markdown.push_str(&format!(
        "\n| store | throughput, {n} / 1 tenant | closed p99, {n} / 1 | open p99, {n} / 1 \
         | goal (≥ {THROUGHPUT_GOAL}×, ≤ {P99_GOAL}×, ≤ {P99_GOAL}×) |\n|---|---:|---:|---:|---|\n",
        n = count
    ));
    for (store, ratios) in &ratio_rows {
        markdown.push_str(&format!("| {store} | {} |\n", ratios.cells()));
    }
    markdown.push_str(&not_allowed_note(measured.iter().flat_map(
        |(store, one, many)| {
            [
                (format!("{store}, 1 tenant"), &one.warm),
                (format!("{store}, {count} tenants"), &many.warm),
            ]
        },
    )));
    if let Some((keys, bytes)) = per_tenant {
        markdown.push_str(&format!(
            "\nRedis per extra tenant: {} keys, {} bytes.\n",
            cell(keys, 2),
            cell(bytes, 0)
        ));
    }
    Ok(Section {
        markdown,
        json: Value::Object(json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_distinct_guids_other_than_the_development_tenant() {
        let spread = tenants_of(1_000, true);
        let mut distinct = spread.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 1_000);
        assert!(
            spread
                .iter()
                .all(|t| grantflow_core::identity::is_guid(t) && t != TENANT)
        );
        assert!(tenants_of(3, false).iter().all(|t| t == TENANT));
    }

    #[test]
    fn the_short_mode_has_fewer_tenants() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let settings = crate::settings::Settings::parse_from(args);
            tenant_count(&Plan::new(&settings).unwrap())
        };
        assert_eq!(parse(&["bench"]), 1_000);
        assert_eq!(parse(&["bench", "--seconds", "2"]), SHORT_TENANTS);
        assert_eq!(
            parse(&["bench", "--seconds", "2", "--tenant-count", "20"]),
            20
        );
    }

    #[test]
    fn cost_per_extra_tenant() {
        assert_eq!(per_extra_tenant((100, 1), (1_099, 1_000)), Some(1.0));
        assert_eq!(per_extra_tenant((100, 1), (100, 1)), None);
        assert_eq!(per_extra_tenant((500, 1), (302, 100)), Some(-2.0));
    }
}
