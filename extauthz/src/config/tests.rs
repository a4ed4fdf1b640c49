use super::*;

fn parse(args: &[&str]) -> Options {
    let mut all = vec!["grantflow-extauthz"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).expect("valid flags").options
}

#[test]
fn defaults_need_an_issuer_unless_dev() {
    let err = Settings::from_options(Options::default()).unwrap_err();
    assert!(err.to_string().contains("jwks_url"), "{err}");
    let dev = Settings::from_options(parse(&["--dev"])).unwrap();
    assert_eq!(dev.keys, KeySource::Dev);
    assert_eq!(dev.token.audiences, vec![DEV_AUDIENCE.to_string()]);
    assert_eq!(dev.limits.default_max_age, Duration::from_secs(900));
    assert_eq!(dev.store_timeout, Duration::from_millis(50));
    assert_eq!(dev.grpc_addr.port(), 9001);
    assert_eq!(dev.token.issuers.len(), 2);
    assert_eq!(dev.admin.role, DEFAULT_ADMIN_ROLE);
    assert_eq!(dev.admin.sign_in, None);
}

#[test]
fn dashboard_sign_in_settings() {
    let settings = Settings::from_options(parse(&[
        "--dev",
        "--admin-oidc-authority",
        "https://login.microsoftonline.com/organizations/v2.0/",
        "--admin-client-id",
        "11111111-2222-3333-4444-555555555555",
        "--admin-role",
        "Sessions.Admin",
    ]))
    .unwrap();
    assert_eq!(settings.admin.role, "Sessions.Admin");
    let sign_in = settings.admin.sign_in.unwrap();
    assert_eq!(
        sign_in.authority,
        "https://login.microsoftonline.com/organizations/v2.0"
    );
    assert_eq!(
        sign_in.authority_origin,
        "https://login.microsoftonline.com"
    );
    assert_eq!(
        sign_in.scope,
        format!("openid profile {DEV_AUDIENCE}/.default")
    );

    let err = Settings::from_options(parse(&[
        "--dev",
        "--admin-oidc-authority",
        "https://login.example.test",
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("admin_client_id"), "{err}");
    for bad in [
        "ftp://x.test",
        "https://",
        "https://a b.test",
        "https://x;y.test",
    ] {
        let err = Settings::from_options(parse(&[
            "--dev",
            "--admin-oidc-authority",
            bad,
            "--admin-client-id",
            "c",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("http(s) URL"), "{bad}: {err}");
    }
}

#[test]
fn flags_win_over_the_file() {
    let dir = std::env::temp_dir().join(format!("gf-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("extauthz.yaml");
    std::fs::write(
            &file,
            "jwks_url: http://127.0.0.1:1/jwks\naudiences: [api://a, api://b]\nmax_session_age: 5m\nrequire_sid: true\nadmin_role: Ops.Admin\nadmin_scope: openid api://a/Sessions\n",
        )
        .unwrap();
    let cli = parse(&[
        "--config",
        file.to_str().unwrap(),
        "--max-session-age",
        "10m",
    ]);
    let settings = Settings::resolve(cli).unwrap();
    assert_eq!(settings.limits.default_max_age, Duration::from_secs(600));
    assert_eq!(settings.token.audiences, vec!["api://a", "api://b"]);
    assert!(settings.token.require_sid);
    assert_eq!(settings.admin.role, "Ops.Admin");
    assert_eq!(
        settings.keys,
        KeySource::Jwks("http://127.0.0.1:1/jwks".into())
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn redis_store_settings() {
    let cli = parse(&[
        "--dev",
        "--store",
        "redis",
        "--redis-url",
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
        "--redis-cluster",
        "true",
        "--store-timeout",
        "20ms",
    ]);
    match Settings::from_options(cli).unwrap().store {
        StoreConfig::Redis(redis) => {
            assert_eq!(redis.urls.len(), 2);
            assert!(redis.cluster);
            assert_eq!(redis.timeout, Duration::from_millis(20));
            assert_eq!(redis.write_timeout, Duration::from_secs(2));
        }
        other => panic!("expected the Redis store, not {other:?}"),
    }
    let err = Settings::from_options(parse(&["--dev", "--store", "redis"])).unwrap_err();
    assert!(err.to_string().contains("redis_url"), "{err}");
    assert_eq!(
        Settings::from_options(parse(&["--dev"])).unwrap().store,
        StoreConfig::Embedded {
            data_dir: DEFAULT_DATA_DIR.into()
        },
        "the embedded store is the default"
    );
    assert_eq!(
        Settings::from_options(parse(&["--dev", "--data-dir", "/var/lib/gf"]))
            .unwrap()
            .store,
        StoreConfig::Embedded {
            data_dir: "/var/lib/gf".into()
        }
    );
    assert_eq!(
        Settings::from_options(parse(&["--dev", "--store", "memory"]))
            .unwrap()
            .store,
        StoreConfig::Memory
    );
}

#[test]
fn redis_over_tls_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("gf-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.crt");
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY29udG9zbw==\n-----END CERTIFICATE-----\n";
    std::fs::write(&ca, pem).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "password=hunter2\n").unwrap();
    let ca_arg = ca.to_str().unwrap();
    let with = |url: &str, file: &str| {
        Settings::from_options(parse(&[
            "--dev",
            "--store",
            "redis",
            "--redis-url",
            url,
            "--redis-ca-file",
            file,
        ]))
    };
    match with("rediss://:secret@cache.example:6380", ca_arg)
        .unwrap()
        .store
    {
        StoreConfig::Redis(redis) => assert_eq!(redis.ca_pem.as_deref(), Some(pem.as_bytes())),
        other => panic!("expected the Redis store, not {other:?}"),
    }
    // A CA with a plain-text URL is a mistake; the error never shows the URL (password).
    let err = with("redis://:secret@cache.example:6379", ca_arg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rediss://") && !err.contains("secret"),
        "{err}"
    );
    let err = with("rediss://cache.example:6380", "/nonexistent/ca.crt")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    let err = with("rediss://cache.example:6380", not_pem.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no PEM certificate") && !err.contains("hunter2"),
        "{err}"
    );
    // Without a CA file, rediss:// trusts the system's roots.
    match Settings::from_options(parse(&[
        "--dev",
        "--store",
        "redis",
        "--redis-url",
        "rediss://cache.example:6380",
    ]))
    .unwrap()
    .store
    {
        StoreConfig::Redis(redis) => assert_eq!(redis.ca_pem, None),
        other => panic!("expected the Redis store, not {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn development_mode_listens_on_loopback_only() {
    let settings = Settings::from_options(parse(&[
        "--dev",
        "--grpc-addr",
        "[::1]:9001",
        "--admin-addr",
        "127.0.0.2:8080",
    ]))
    .unwrap();
    assert!(settings.dev);
    for (flag, addr, name) in [
        ("--admin-addr", "0.0.0.0:8080", "admin_addr"),
        ("--grpc-addr", "0.0.0.0:9001", "grpc_addr"),
        ("--admin-addr", "[::]:8080", "admin_addr"),
        ("--grpc-addr", "10.1.2.3:9001", "grpc_addr"),
    ] {
        let err = Settings::from_options(parse(&["--dev", flag, addr]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("loopback addresses only") && err.contains(name),
            "{addr}: {err}"
        );
    }
    // Outside development mode any address may be served.
    let settings = Settings::from_options(parse(&[
        "--jwks-url",
        "https://login.microsoftonline.com/common/discovery/v2.0/keys",
        "--audiences",
        "api://a",
        "--admin-addr",
        "0.0.0.0:8080",
        "--grpc-addr",
        "0.0.0.0:9001",
    ]))
    .unwrap();
    assert!(settings.admin_addr.ip().is_unspecified());
}

#[test]
fn issuer_keys_need_https_outside_loopback_and_development() {
    let with = |args: &[&str]| {
        let mut all = vec!["--audiences", "api://a"];
        all.extend_from_slice(args);
        Settings::from_options(parse(&all))
    };
    let err = with(&["--jwks-url", "http://login.example.test/keys"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("jwks_url") && err.contains("use https://"),
        "{err}"
    );
    let err = with(&[
        "--oidc-discovery-url",
        "http://login.example.test/.well-known/openid-configuration",
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("oidc_discovery_url") && err.contains("use https://"),
        "{err}"
    );
    with(&["--jwks-url", "http://127.0.0.1:5556/keys"]).unwrap();
    with(&["--jwks-url", "https://login.example.test/keys"]).unwrap();
    with(&["--dev", "--jwks-url", "http://login.example.test/keys"]).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("gf-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("extauthz.toml");
    std::fs::write(&file, "jwks_url = \"http://x\"\nmax_sesion_age = \"5m\"\n").unwrap();
    let err = Settings::resolve(parse(&["--config", file.to_str().unwrap()])).unwrap_err();
    assert!(err.to_string().contains("max_sesion_age"), "{err}");
    let err = Settings::from_options(parse(&["--dev", "--max-session-age", "30s"])).unwrap_err();
    assert!(
        err.to_string().contains("between 1 minute and 24 hours"),
        "{err}"
    );
    assert!(Cli::try_parse_from(["x", "--store-timeout", "fast"]).is_err());
    std::fs::remove_dir_all(dir).ok();
}
#[test]
fn audit_retention_is_kept_by_time_from_flag_file_or_env_and_at_least_a_day() {
    let days = |n: u64| Duration::from_secs(n * 24 * 60 * 60);
    let dev = Settings::from_options(parse(&["--dev"])).unwrap();
    assert_eq!(dev.limits.audit_retention, days(90));
    let flag = Settings::from_options(parse(&["--dev", "--audit-retention", "30d"])).unwrap();
    assert_eq!(flag.limits.audit_retention, days(30));

    let dir = std::env::temp_dir().join(format!("gf-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("extauthz.yaml");
    std::fs::write(&file, "dev: true\naudit_retention: 1d\n").unwrap();
    let settings = Settings::resolve(parse(&["--config", file.to_str().unwrap()])).unwrap();
    assert_eq!(settings.limits.audit_retention, days(1));
    std::fs::remove_dir_all(dir).ok();

    let err = Settings::from_options(parse(&["--dev", "--audit-retention", "23h"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("audit_retention must be at least 1d"),
        "{err}"
    );
    use clap::CommandFactory;
    let env = Cli::command()
        .get_arguments()
        .find(|a| a.get_id() == "audit_retention")
        .and_then(|a| a.get_env().map(|e| e.to_owned()));
    assert_eq!(
        env.as_deref(),
        Some(std::ffi::OsStr::new("GRANTFLOW_AUDIT_RETENTION"))
    );
}

#[test]
fn signal_endpoints_are_off_by_default_and_the_transmitter_needs_all_three_settings() {
    let off = Settings::from_options(parse(&["--dev"])).unwrap();
    assert_eq!(off.signals, SignalSettings::default());
    let on = Settings::from_options(parse(&[
        "--dev",
        "--backchannel-logout-audience",
        "client-a, client-b",
        "--ssf-issuer",
        "https://ssf.example.test",
        "--ssf-jwks-url",
        "https://ssf.example.test/jwks",
        "--ssf-audience",
        "https://grantflow.example.test",
    ]))
    .unwrap();
    assert_eq!(
        on.signals.backchannel_audiences,
        vec!["client-a".to_string(), "client-b".to_string()]
    );
    assert_eq!(
        on.signals.ssf,
        Some(SsfSettings {
            issuer: "https://ssf.example.test".into(),
            jwks_url: "https://ssf.example.test/jwks".into(),
            audiences: vec!["https://grantflow.example.test".into()],
        })
    );
    let partial = Settings::from_options(parse(&[
        "--dev",
        "--ssf-issuer",
        "https://ssf.example.test",
    ]))
    .unwrap_err();
    assert!(partial.to_string().contains("ssf_jwks_url"), "{partial}");
    let plain = Settings::from_options(parse(&[
        "--jwks-url",
        "https://issuer.example.test/jwks",
        "--audiences",
        "api://x",
        "--ssf-issuer",
        "https://ssf.example.test",
        "--ssf-jwks-url",
        "http://ssf.example.test/jwks",
        "--ssf-audience",
        "r",
    ]))
    .unwrap_err();
    assert!(plain.to_string().contains("ssf_jwks_url"), "{plain}");
}

#[test]
fn signal_settings_from_the_file() {
    let dir = std::env::temp_dir().join(format!("gf-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        "dev: true\nbackchannel_logout_audience: [client-a]\nssf_issuer: https://ssf.example.test\nssf_jwks_url: https://ssf.example.test/jwks\nssf_audience: [r]\n",
    )
    .unwrap();
    let settings = Settings::resolve(parse(&["--config", path.to_str().unwrap()])).unwrap();
    assert_eq!(
        settings.signals.backchannel_audiences,
        vec!["client-a".to_string()]
    );
    assert!(settings.signals.ssf.is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}
