//! Through a real Envoy, loaded by wrk (docs/design.md §10's setup): Envoy alone against Envoy +
//! ext_authz, and Envoy's CPU per request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use grantflow_e2e::free_port;
use tokio::process::{Child, Command};

use crate::cpu::{machine_cpu, micros_per, process_cpu, redis_cpu_of};
use crate::load::Target;
use crate::settings::{EnvoyTools, Plan};
use crate::{BoxError, USER_AGENT};

/// Envoy's bootstrap: one listener answering 200 itself (`direct_response`), with the
/// example's ext_authz filter (`examples/envoy/envoy.yaml`) when `extauthz` is given.
fn envoy_bootstrap(admin: u16, listener: u16, extauthz: Option<SocketAddr>) -> String {
    let (filter, cluster) = match extauthz {
        Some(addr) => (
            r#"
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      grpc_service:
                        envoy_grpc: { cluster_name: grantflow_extauthz }
                        timeout: 0.5s
                      failure_mode_allow: false
                      status_on_error: { code: ServiceUnavailable }
                      include_peer_certificate: false"#
                .to_owned(),
            format!(
                r#"
  clusters:
    - name: grantflow_extauthz
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: grantflow_extauthz
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {} }}"#,
                addr.port()
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: {{ address: 127.0.0.1, port_value: {listener} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress_http
                route_config:
                  name: local_route
                  virtual_hosts:
                    - name: app
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}
                http_filters:{filter}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{cluster}
"#
    )
}

/// A running Envoy (`--concurrency 1`), killed (and its config removed) when dropped.
pub(crate) struct EnvoyProcess {
    child: Child,
    pub(crate) pid: u32,
    /// The HTTP listener on 127.0.0.1.
    pub(crate) listener: u16,
    /// The admin interface on 127.0.0.1.
    admin: u16,
    config: PathBuf,
}

impl EnvoyProcess {
    pub(crate) async fn start(
        binary: &Path,
        extauthz: Option<SocketAddr>,
    ) -> Result<Self, BoxError> {
        let admin = free_port();
        let listener = free_port();
        let config = std::env::temp_dir().join(format!(
            "grantflow-bench-{}-envoy-{listener}.yaml",
            std::process::id()
        ));
        std::fs::write(&config, envoy_bootstrap(admin, listener, extauthz))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--use-dynamic-base-id", "-l", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("Envoy exited at once")?;
        let mut envoy = EnvoyProcess {
            child,
            pid,
            listener,
            admin,
            config,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = envoy.child.try_wait()? {
                return Err(format!("Envoy exited with {status}").into());
            }
            let ready = http
                .get(format!("http://127.0.0.1:{admin}/ready"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(envoy);
            }
            if Instant::now() > deadline {
                envoy.stop().await;
                return Err("Envoy was not ready within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = std::fs::remove_file(&self.config);
    }

    /// One counter of Envoy's admin `/stats` (e.g. `http.ingress_http.downstream_cx_total`),
    /// when Envoy answers within a second.
    pub(crate) async fn counter(&self, name: &str) -> Option<u64> {
        let text = reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/stats?filter=^{name}$",
                self.admin
            ))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?
            .text()
            .await
            .ok()?;
        stat_value(&text, name)
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        // `kill_on_drop` ends the process; the config goes with it (also on error paths).
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The value of `name` in Envoy's plain-text `/stats` (`name: 42` lines).
fn stat_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter_map(|line| line.split_once(": "))
        .find(|(key, _)| key.trim() == name)
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// What one wrk run through Envoy measured.
pub struct EnvoyRun {
    pub requests: u64,
    pub seconds: f64,
    pub non_2xx: u64,
    pub socket_errors: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub envoy_cpu: f64,
    pub extauthz_cpu: Option<f64>,
    pub redis_cpu: Option<f64>,
    pub wrk_cpu: Option<f64>,
    pub machine_busy: f64,
}

impl EnvoyRun {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// wrk output: a latency like `412.00us`, `2.31ms` or `1.02s`, in milliseconds.
fn wrk_millis(value: &str) -> Option<f64> {
    let value = value.trim();
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// bash's `times`: the children's user and system seconds (its second line, `0m1.234s 0m0.5s`).
fn children_cpu(times: &str) -> Option<f64> {
    let line = times
        .lines()
        .filter(|l| l.contains('m') && l.ends_with('s'))
        .nth(1)?;
    line.split_whitespace()
        .map(|t| {
            let (m, s) = t.strip_suffix('s')?.split_once('m')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
        })
        .sum()
}

/// `wrk -t1 -c<concurrency>` for `seconds` against Envoy; parsed. Bounded: killed after
/// `seconds + 30`.
async fn wrk(
    tools: &EnvoyTools,
    plan: &Plan,
    port: u16,
    token: Option<&str>,
    seconds: f64,
) -> Result<(String, Option<f64>), BoxError> {
    let duration = format!("{}s", seconds.ceil().max(1.0) as u64);
    let mut args = vec![
        tools.wrk.display().to_string(),
        "-t1".into(),
        format!("-c{}", plan.concurrency),
        format!("-d{duration}"),
        "--latency".into(),
        "-H".into(),
        "accept: application/json".into(),
        "-H".into(),
        format!("user-agent: {USER_AGENT}"),
    ];
    if let Some(token) = token {
        args.push("-H".into());
        args.push(format!("authorization: Bearer {token}"));
    }
    args.push(format!("http://127.0.0.1:{port}/"));
    // `times` after wrk: the CPU wrk used, so the machine's other load can be told apart.
    let script = r#""$@"; status=$?; echo "--times--"; times; exit $status"#;
    let run = Command::new("bash")
        .args(["-c", script, "wrk"])
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs_f64(seconds + 30.0), run)
        .await
        .map_err(|_| "wrk did not finish in time")??;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("wrk failed ({}): {text}", output.status).into());
    }
    let (report, times) = text.split_once("--times--").unwrap_or((&text, ""));
    Ok((report.to_owned(), children_cpu(times)))
}

pub async fn through_envoy(
    plan: &Plan,
    tools: &EnvoyTools,
    target: Option<&Target<'_>>,
) -> Result<EnvoyRun, BoxError> {
    let envoy = EnvoyProcess::start(&tools.envoy, target.map(|t| t.grpc)).await?;
    let token = target.map(|t| t.tokens[0].as_str());
    if plan.warmup > 0.0 {
        wrk(tools, plan, envoy.listener, token, plan.warmup).await?;
    }
    let server_cpu = target.map(|t| t.cpu);
    let redis_ports = target.map_or(&[][..], |t| &t.redis_ports[..]);
    let sample = || {
        (
            process_cpu(&format!("/proc/{}/stat", envoy.pid)),
            server_cpu.map(|cpu| cpu.seconds()),
            redis_cpu_of(redis_ports.iter().copied()),
            machine_cpu(),
        )
    };
    let before = sample();
    let (report, wrk_cpu) = wrk(tools, plan, envoy.listener, token, plan.seconds).await?;
    let after = sample();
    envoy.stop().await;

    let mut run = EnvoyRun {
        requests: 0,
        seconds: plan.seconds.ceil().max(1.0),
        non_2xx: 0,
        socket_errors: report.contains("Socket errors"),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        envoy_cpu: after.0 - before.0,
        extauthz_cpu: after.1.zip(before.1).map(|(a, b)| a - b),
        redis_cpu: after.2.zip(before.2).map(|(a, b)| a - b),
        wrk_cpu,
        machine_busy: after.3 - before.3,
    };
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => run.p50_ms = wrk_millis(value).unwrap_or(f64::NAN),
            ["99%", value] => run.p99_ms = wrk_millis(value).unwrap_or(f64::NAN),
            ["Non-2xx", "or", "3xx", "responses:", n] => run.non_2xx = n.parse().unwrap_or(0),
            [n, "requests", "in", elapsed, ..] => {
                run.requests = n.parse().unwrap_or(0);
                if let Some(s) = wrk_millis(elapsed.trim_end_matches(',')) {
                    run.seconds = s / 1000.0;
                }
            }
            _ => {}
        }
    }
    eprintln!(
        "  through Envoy: {:.0} requests/s, Envoy {:.1} µs CPU/request{}",
        run.rate(),
        micros_per(run.envoy_cpu, run.requests),
        run.extauthz_cpu.map_or(String::new(), |c| format!(
            ", extauthz {:.1} µs CPU/check",
            micros_per(c, run.requests)
        ))
    );
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_values_are_read_by_exact_name() {
        let text = "http.ingress_http.downstream_cx_total: 17\n\
                    http.ingress_http.downstream_cx_total_extra: 3\n";
        assert_eq!(
            stat_value(text, "http.ingress_http.downstream_cx_total"),
            Some(17)
        );
        assert_eq!(stat_value(text, "http.ingress_http.other"), None);
        assert_eq!(stat_value("x: not-a-number\n", "x"), None);
    }
}
