//! What Redis says about itself through `redis-cli`: `INFO` fields, command statistics,
//! `DBSIZE`.

use std::collections::HashMap;

use grantflow_e2e::redis::redis_cli;

/// `INFO commandstats`: command → (calls, microseconds spent executing it).
pub fn command_stats(port: u16) -> HashMap<String, (u64, u64)> {
    let info = redis_cli(port, &["INFO", "commandstats"]).unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((name.to_owned(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

/// Per command run between two `command_stats`: (calls, µs per call), busiest first.
pub fn command_delta(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
) -> Vec<(String, u64, f64)> {
    let mut delta: Vec<(String, u64, f64)> = after
        .iter()
        .filter_map(|(name, (calls, usec))| {
            let (calls0, usec0) = before.get(name).copied().unwrap_or((0, 0));
            let calls = calls.checked_sub(calls0).filter(|n| *n > 0)?;
            let usec = usec.saturating_sub(usec0);
            Some((name.clone(), calls, usec as f64 / calls as f64))
        })
        .filter(|(name, _, _)| name != "info")
        .collect();
    delta.sort_by_key(|d| std::cmp::Reverse(d.1));
    delta
}

pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

pub fn dbsize(port: u16) -> u64 {
    redis_cli(port, &["DBSIZE"])
        .and_then(|out| out.trim().parse().ok())
        .unwrap_or(0)
}
