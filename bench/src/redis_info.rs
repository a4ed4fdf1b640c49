//! What Redis says about itself through `redis-cli`: `INFO` fields, command statistics (of one
//! server or summed over a cluster's nodes), `DBSIZE`.

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

/// [`command_stats`] summed over `ports` (the nodes of a cluster).
pub fn command_stats_of(ports: &[u16]) -> HashMap<String, (u64, u64)> {
    sum_stats(ports.iter().map(|port| command_stats(*port)))
}

fn sum_stats(
    nodes: impl IntoIterator<Item = HashMap<String, (u64, u64)>>,
) -> HashMap<String, (u64, u64)> {
    let mut total: HashMap<String, (u64, u64)> = HashMap::new();
    for node in nodes {
        for (name, (calls, usec)) in node {
            let entry = total.entry(name).or_default();
            entry.0 += calls;
            entry.1 += usec;
        }
    }
    total
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(entries: &[(&str, u64, u64)]) -> HashMap<String, (u64, u64)> {
        entries
            .iter()
            .map(|(name, calls, usec)| (name.to_string(), (*calls, *usec)))
            .collect()
    }

    #[test]
    fn node_stats_are_summed_per_command() {
        let total = sum_stats([
            stats(&[("evalsha", 10, 100), ("ping", 1, 1)]),
            stats(&[("evalsha", 5, 60)]),
        ]);
        assert_eq!(total, stats(&[("evalsha", 15, 160), ("ping", 1, 1)]));
    }

    #[test]
    fn the_delta_is_per_call_busiest_first_without_info() {
        let before = stats(&[("evalsha", 10, 100), ("info", 3, 30)]);
        let after = stats(&[
            ("evalsha", 30, 300),
            ("info", 9, 90),
            ("cluster", 1, 4),
            ("get", 0, 0),
        ]);
        assert_eq!(
            command_delta(&before, &after),
            vec![
                ("evalsha".to_string(), 20, 10.0),
                ("cluster".to_string(), 1, 4.0)
            ]
        );
    }
}
