//! CPU accounting, from the kernel's counters: a child process or the threads of this process
//! (`/proc/<pid>/stat`), Redis (`INFO cpu`, summed over the nodes of a cluster), and the whole
//! machine (`/proc/stat`), so that a noisy neighbour shows.

use std::process::Command as StdCommand;

use grantflow_e2e::redis::redis_cli;

use crate::redis_info::info_field;

/// CPU seconds used, from the kernel's counters.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    server: f64,
    client: f64,
    redis: Option<f64>,
    /// Every CPU of the machine together: busy seconds of CPU.
    machine_busy: f64,
}

/// CPU seconds used in a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub server: f64,
    pub client: f64,
    pub redis: Option<f64>,
    pub machine_busy: f64,
}

impl CpuSample {
    /// `redis_ports`: every Redis node the server uses (none, one, or a cluster's nodes, whose
    /// CPU is summed); an `Option<u16>` works too.
    pub fn take(server: CpuSource, redis_ports: impl IntoIterator<Item = u16>) -> CpuSample {
        let machine_busy = machine_cpu();
        let server_seconds = server.seconds();
        let mut client = process_cpu("/proc/self/stat");
        if let CpuSource::Threads(_) = server {
            client -= server_seconds;
        }
        CpuSample {
            server: server_seconds,
            client,
            redis: redis_cpu_of(redis_ports),
            machine_busy,
        }
    }

    pub fn since(&self, before: &CpuSample) -> CpuUse {
        CpuUse {
            server: self.server - before.server,
            client: self.client - before.client,
            redis: self.redis.zip(before.redis).map(|(a, b)| a - b),
            machine_busy: self.machine_busy - before.machine_busy,
        }
    }
}

/// Where a server's CPU time is counted.
#[derive(Debug, Clone, Copy)]
pub enum CpuSource {
    /// A child process.
    Process(u32),
    /// The threads of this process with this name.
    Threads(&'static str),
}

impl CpuSource {
    pub fn seconds(&self) -> f64 {
        match self {
            CpuSource::Process(pid) => process_cpu(&format!("/proc/{pid}/stat")),
            CpuSource::Threads(name) => std::fs::read_dir("/proc/self/task")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|task| {
                    let stat = task.path().join("stat");
                    let text = std::fs::read_to_string(&stat).ok()?;
                    let comm = text.split_once('(')?.1.rsplit_once(')')?.0;
                    (comm == *name).then(|| process_cpu(&stat.to_string_lossy()))
                })
                .sum(),
        }
    }
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        StdCommand::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), in seconds.
pub fn process_cpu(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    (field(14).unwrap_or(0.0) + field(15).unwrap_or(0.0)) / clock_ticks()
}

/// Redis's own CPU (`INFO cpu`: used_cpu_user + used_cpu_sys), in seconds.
pub fn redis_cpu(port: u16) -> Option<f64> {
    let info = redis_cli(port, &["INFO", "cpu"])?;
    let user: f64 = info_field(&info, "used_cpu_user")?.parse().ok()?;
    let sys: f64 = info_field(&info, "used_cpu_sys")?.parse().ok()?;
    Some(user + sys)
}

/// Redis's own CPU summed over `ports` (the nodes of a cluster), in seconds; `None` for no
/// port or when a node does not answer.
pub fn redis_cpu_of(ports: impl IntoIterator<Item = u16>) -> Option<f64> {
    sum_all(ports.into_iter().map(redis_cpu))
}

/// The sum of every value; `None` when there is none or one is missing.
fn sum_all(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut total = None;
    for value in values {
        total = Some(total.unwrap_or(0.0) + value?);
    }
    total
}

/// All CPUs: busy seconds since boot, from the first line of `/proc/stat`.
pub fn machine_cpu() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal (guest is inside user)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle) / clock_ticks()
}

/// Microseconds of CPU per call.
pub fn micros_per(seconds: f64, calls: u64) -> f64 {
    seconds * 1e6 / calls.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_cpu_is_summed_and_missing_means_unmeasured() {
        assert_eq!(sum_all([Some(1.0), Some(2.5), Some(0.5)]), Some(4.0));
        assert_eq!(sum_all([Some(1.0), None]), None);
        assert_eq!(sum_all([]), None);
        assert_eq!(redis_cpu_of(None), None);
    }
}
