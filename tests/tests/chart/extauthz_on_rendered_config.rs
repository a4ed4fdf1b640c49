//! extauthz starts in this process from the exact file the chart's ConfigMap holds (only listen
//! addresses and the Redis address rewritten) and serves real Envoy traffic on each store the
//! chart can name: embedded, the in-chart Redis, a plain URL, a Redis Cluster, Redis over TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use grantflow_core::clock::{Clock, SystemClock};
use grantflow_e2e::chart::{self, Rendered, ci_values, secret_value};
use grantflow_e2e::envoy::Envoy;
use grantflow_e2e::issuer::Issuer;
use grantflow_e2e::kubernetes::eventually;
use grantflow_e2e::redis::{RedisCluster, RedisServer, redis_cli};
use grantflow_e2e::stack::{AUDIENCE, TENANT};
use grantflow_e2e::upstream::Upstream;
use grantflow_e2e::{free_port, loopback};
use grantflow_extauthz::config::{Options, Settings};
use grantflow_extauthz::server;
use serde_json::{Value, json};

use crate::support::{CONFIG_FILE, EXTAUTHZ, args_of, config_map_text, env_of, redis_url_to};

/// Replaces the single line starting with `key: ` by `key: value`.
fn rewrite_line(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}: ");
    let count = text.lines().filter(|l| l.starts_with(&prefix)).count();
    assert_eq!(count, 1, "one `{key}` in\n{text}");
    text.lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// What the test gives in place of the Secret the chart's Deployment reads
/// GRANTFLOW_REDIS_URL from.
enum RedisUrlEnv {
    /// The Secret is rendered by the chart: its URL with the address rewritten.
    Rendered { port: u16 },
    /// An existing Secret the user made: these URLs.
    Given(Vec<String>),
    /// No such variable: the URLs are in the file (rewritten to this port).
    InFile { port: u16 },
    /// No Redis at all (the embedded store): its data folder, the Deployment's volume mount,
    /// becomes this local folder.
    NoRedis { data_dir: PathBuf },
}

/// What the test gives in place of a key of a Secret the chart's Deployment mounts as a file
/// (a Secret the user made): the local file with its content.
struct SecretFile<'a> {
    secret: &'a str,
    key: &'a str,
    local: PathBuf,
}

/// The local file of `mounted` that `container` of `deployment` sees at the in-cluster
/// `path`, found through the Secret volume the container mounts there (read-only).
fn local_file(
    file: &str,
    rendered: &Rendered,
    deployment: &Value,
    container: &str,
    path: &str,
    mounted: &[SecretFile],
) -> PathBuf {
    let (secret, key, mount) = rendered
        .secret_file(deployment, container, path)
        .unwrap_or_else(|| panic!("{file}: {container} has a Secret key mounted at {path}"));
    assert_eq!(
        mount["readOnly"], true,
        "{file}: {path} is mounted read-only"
    );
    mounted
        .iter()
        .find(|f| f.secret == secret && f.key == key)
        .unwrap_or_else(|| {
            panic!("{file}: the test gives no file for key {key} of Secret {secret}")
        })
        .local
        .clone()
}

/// Starts extauthz in this process exactly as the chart's Deployment does: `--config` the
/// ConfigMap's file, GRANTFLOW_REDIS_URL and GRANTFLOW_REDIS_CA_FILE (the only GRANTFLOW_*
/// variables the pod may get), with only the listen addresses and the Redis address changed
/// and the in-cluster CA path replaced by the local file of `mounted` the Deployment's Secret
/// volume puts there. Then sends Envoy traffic.
async fn serve_the_rendered_config(
    file: &str,
    issuer: &Issuer,
    redis: RedisUrlEnv,
    mounted: &[SecretFile<'_>],
) {
    let values = ci_values(file);
    // Testable values: the test issuer's keys and audience.
    let set = json!({"config": {"jwks_url": issuer.jwks_uri, "audiences": [AUDIENCE]}});
    let rendered = chart::render(&[&values], Some(&set)).expect("renders");
    let deployment = rendered.get("Deployment", EXTAUTHZ);
    let container = rendered.container(deployment, "extauthz");
    assert_eq!(args_of(container), ["--config", CONFIG_FILE], "{file}");
    let env = env_of(container);
    let grantflow_vars: Vec<&String> = env.keys().filter(|k| k.starts_with("GRANTFLOW_")).collect();

    let mut config = config_map_text(&rendered);
    let grpc = loopback(free_port());
    let admin = loopback(free_port());
    config = rewrite_line(&config, "grpc_addr", &grpc.to_string());
    config = rewrite_line(&config, "admin_addr", &admin.to_string());
    let redis_url = match redis {
        RedisUrlEnv::Rendered { port } => {
            let source = &env["GRANTFLOW_REDIS_URL"]["valueFrom"]["secretKeyRef"];
            let secret = rendered.get("Secret", source["name"].as_str().unwrap());
            let url = secret_value(secret, source["key"].as_str().unwrap());
            // The test Redis takes the chart's password.
            let password = secret_value(secret, "password");
            assert!(url.contains(&format!(":{password}@")));
            redis_cli(port, &["CONFIG", "SET", "requirepass", &password])
                .expect("set the chart's password on the test Redis");
            Some(vec![redis_url_to(&url, port)])
        }
        RedisUrlEnv::Given(urls) => {
            assert!(env["GRANTFLOW_REDIS_URL"]["valueFrom"]["secretKeyRef"].is_object());
            Some(urls)
        }
        RedisUrlEnv::NoRedis { data_dir } => {
            assert!(!env.contains_key("GRANTFLOW_REDIS_URL"), "{file}");
            assert!(!config.contains("redis"), "{file}: {config}");
            let mount = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "data")
                .expect("the data volume is mounted");
            let in_pod = mount["mountPath"].as_str().unwrap();
            assert!(
                config.contains(&format!("data_dir: {in_pod}\n")),
                "{file}: data_dir is the volume's mount: {config}"
            );
            config = rewrite_line(&config, "data_dir", &data_dir.display().to_string());
            None
        }
        RedisUrlEnv::InFile { port } => {
            assert!(!env.contains_key("GRANTFLOW_REDIS_URL"), "{file}");
            let marker = "redis_url:\n- ";
            let start = config.find(marker).expect("redis_url in the file") + marker.len();
            let end = start + config[start..].find('\n').unwrap();
            let url = config[start..end].to_owned();
            config = config.replace(&url, &redis_url_to(&url, port));
            None
        }
    };
    // The CA file: the path the Deployment names, where its Secret volume puts the CA.
    let redis_ca_file = env.get("GRANTFLOW_REDIS_CA_FILE").map(|var| {
        let path = var["value"]
            .as_str()
            .expect("GRANTFLOW_REDIS_CA_FILE is a path");
        local_file(file, &rendered, deployment, "extauthz", path, mounted)
    });
    assert_eq!(
        redis_ca_file.iter().count(),
        mounted.len(),
        "{file}: the Deployment reads every Secret file the test gives"
    );
    assert_eq!(
        grantflow_vars,
        redis_ca_file
            .iter()
            .map(|_| "GRANTFLOW_REDIS_CA_FILE")
            .chain(redis_url.iter().map(|_| "GRANTFLOW_REDIS_URL"))
            .collect::<Vec<_>>(),
        "{file}: nothing else overrides the file"
    );

    let dir = grantflow_e2e::temp_dir("extauthz");
    let path = dir.path().join(Path::new(CONFIG_FILE).file_name().unwrap());
    std::fs::write(&path, &config).unwrap();
    // As clap fills Options: GRANTFLOW_REDIS_URL and GRANTFLOW_REDIS_CA_FILE from the
    // environment, the rest from the file.
    let options = Options {
        config: Some(path),
        store_args: grantflow_extauthz::config::StoreArgs {
            redis_url,
            redis_ca_file,
            ..Default::default()
        },
        ..Options::default()
    };
    let settings = Settings::resolve(options)
        .unwrap_or_else(|e| panic!("{file}: the rendered configuration is valid: {e}"));
    assert_eq!(settings.grpc_addr, grpc);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = settings
        .store
        .open(settings.limits, clock.clone())
        .expect("the store opens");
    let running = server::start(&settings, store, clock.clone())
        .await
        .expect("extauthz starts");

    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(30),
        &format!("{file}: /readyz answers 200"),
        || async {
            let ready = http.get(format!("http://{admin}/readyz")).send().await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        },
    )
    .await;

    // Real traffic through Envoy: a token of the tenant is let through, no token is not.
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(running.grpc_addr, upstream.addr).await;
    let now = clock.now_secs();
    let token = issuer
        .token(json!({
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "aud": AUDIENCE, "tid": TENANT, "oid": "chart-user", "sub": "chart-user",
            "sid": format!("chart-{file}"), "iat": now, "nbf": now, "ver": "2.0",
            "scp": "access_as_user",
        }))
        .await;
    let allowed = http
        .get(envoy.url("/"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("Envoy answers");
    assert_eq!(allowed.status(), 200, "{file}");
    let seen: Value = allowed.json().await.unwrap();
    assert_eq!(seen["x-grantflow-tenant"], json!([TENANT]), "{file}");
    let refused = http
        .get(envoy.url("/"))
        .send()
        .await
        .expect("Envoy answers");
    assert_eq!(refused.status(), 401, "{file}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_the_embedded_store() {
    let issuer = Issuer::start().await;
    let data = grantflow_e2e::temp_dir("embedded-data");
    serve_the_rendered_config(
        "embedded-values.yaml",
        &issuer,
        RedisUrlEnv::NoRedis {
            data_dir: data.path().join("grantflow"),
        },
        &[],
    )
    .await;
    assert!(
        data.path()
            .join("grantflow")
            .join(grantflow_core::store::DATABASE_FILE)
            .is_file(),
        "the embedded store wrote its data folder"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_the_in_chart_redis() {
    let issuer = Issuer::start().await;
    let redis = RedisServer::start().await;
    serve_the_rendered_config(
        "default-values.yaml",
        &issuer,
        RedisUrlEnv::Rendered { port: redis.port },
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_a_plain_redis_url() {
    let issuer = Issuer::start().await;
    let redis = RedisServer::start().await;
    serve_the_rendered_config(
        "hpa-values.yaml",
        &issuer,
        RedisUrlEnv::InFile { port: redis.port },
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_a_redis_cluster() {
    let issuer = Issuer::start().await;
    let cluster = RedisCluster::start().await;
    serve_the_rendered_config(
        "external-redis-cluster-values.yaml",
        &issuer,
        RedisUrlEnv::Given(cluster.urls()),
        &[],
    )
    .await;
}

/// A Redis over TLS whose certificate a private CA signs: the rendered file's rediss:// URL
/// (rewritten to the test server's TLS port) and the CA given as the Secret the values name
/// (redis-ca, key ca.crt), which the process finds only through the rendered
/// GRANTFLOW_REDIS_CA_FILE and the volume mounted at that path.
#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_a_redis_over_tls_with_a_private_ca() {
    let issuer = Issuer::start().await;
    let redis = RedisServer::start_tls().await;
    let port = redis.tls_port.expect("a server started with TLS");
    serve_the_rendered_config(
        "external-redis-tls-values.yaml",
        &issuer,
        RedisUrlEnv::InFile { port },
        &[SecretFile {
            secret: "redis-ca",
            key: "ca.crt",
            local: redis.ca_file(),
        }],
    )
    .await;
}
