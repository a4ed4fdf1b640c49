//! From [`Options`] to [`Settings`]: the file read under the flags, the defaults filled in,
//! every setting checked. Errors name settings by their file key (`max_session_age`).

use grantflow_core::token::{ENTRA_ISSUERS, TokenRules};
use grantflow_runtime::help::Shown;
use grantflow_runtime::logging::DEFAULT_LOG_FORMAT;
use grantflow_runtime::store::Naming;

use super::options::{
    DEFAULT_ADMIN_ADDR, DEFAULT_ADMIN_ROLE, DEFAULT_DEV, DEFAULT_DYNAMIC_METADATA,
    DEFAULT_GRPC_ADDR, DEFAULT_JWKS_MIN_REFETCH_INTERVAL, DEFAULT_JWKS_REFRESH_INTERVAL,
    DEFAULT_REQUIRE_SID, DEFAULT_SIGN_IN_URL, DEFAULT_STORE, DEFAULT_STORE_TIMEOUT,
    DEFAULT_TENANT_CLAIM, DEFAULT_TOKEN_LEEWAY, DEFAULT_TRUSTED_PROXY_HOPS,
    MIN_WATERMARK_RETENTION, default_admin_scope, read_file,
};
use super::{
    AdminSettings, ConfigError, DEV_AUDIENCE, DashboardSignIn, KeySource, Options, Settings,
    SignalSettings, SsfSettings,
};

impl Settings {
    /// Resolves flags and environment (`cli`) over the file they name over the defaults.
    pub fn resolve(cli: Options) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => Options::default(),
        };
        Self::from_options(cli.or(file))
    }

    pub fn from_options(o: Options) -> Result<Self, ConfigError> {
        let dev = o.dev.unwrap_or(DEFAULT_DEV);
        let keys = match (o.jwks_url, o.oidc_discovery_url, dev) {
            (Some(url), None, _) => KeySource::Jwks(url),
            (None, Some(url), _) => KeySource::Discovery(url),
            (None, None, true) => KeySource::Dev,
            (Some(_), Some(_), _) => {
                return Err(ConfigError::Invalid(
                    "set either jwks_url or oidc_discovery_url, not both".into(),
                ));
            }
            (None, None, false) => {
                return Err(ConfigError::Invalid(
                    "no token issuer keys: set jwks_url or oidc_discovery_url (or run with --dev \
                     to try GrantFlow with a built-in development issuer)"
                        .into(),
                ));
            }
        };
        match &keys {
            KeySource::Jwks(url) => check_key_url("jwks_url", url, dev)?,
            KeySource::Discovery(url) => check_key_url("oidc_discovery_url", url, dev)?,
            KeySource::Dev => {}
        }
        let grpc_addr = o.grpc_addr.unwrap_or(DEFAULT_GRPC_ADDR);
        let admin_addr = o.admin_addr.unwrap_or(DEFAULT_ADMIN_ADDR);
        if dev {
            for (name, addr) in [("grpc_addr", grpc_addr), ("admin_addr", admin_addr)] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::Invalid(format!(
                        "development mode listens on loopback addresses only (it hands out \
                         tokens at /dev/token): {name} {addr} is not one; use 127.0.0.1 or \
                         [::1], or run without --dev"
                    )));
                }
            }
        }
        let mut audiences = o.audiences.unwrap_or_default();
        audiences.retain(|a| !a.trim().is_empty());
        if audiences.is_empty() {
            if keys == KeySource::Dev {
                audiences.push(DEV_AUDIENCE.into());
            } else {
                return Err(ConfigError::Invalid(
                    "set at least one accepted token audience (audiences)".into(),
                ));
            }
        }
        let limits = o
            .store_args
            .limits(Naming::FileKey)
            .map_err(ConfigError::Invalid)?;
        let mut token = TokenRules::entra(audiences);
        token.issuers = o
            .issuers
            .unwrap_or_else(|| ENTRA_ISSUERS.iter().map(|s| s.to_string()).collect());
        token.allowed_tenants = o.allowed_tenants.unwrap_or_default();
        token.tenant_claim = o
            .tenant_claim
            .unwrap_or_else(|| DEFAULT_TENANT_CLAIM.into());
        token.leeway = o.token_leeway.unwrap_or(DEFAULT_TOKEN_LEEWAY);
        token.require_sid = o.require_sid.unwrap_or(DEFAULT_REQUIRE_SID);
        if token.issuers.is_empty() {
            return Err(ConfigError::Invalid(
                "set at least one accepted issuer".into(),
            ));
        }
        let store_timeout = o.store_timeout.unwrap_or(DEFAULT_STORE_TIMEOUT);
        if store_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "store_timeout must be more than zero".into(),
            ));
        }
        if limits.watermark_retention < MIN_WATERMARK_RETENTION {
            return Err(ConfigError::Invalid(format!(
                "watermark_retention must be at least {} (it must outlive the tokens issued before a revoke-all)",
                Shown(MIN_WATERMARK_RETENTION)
            )));
        }
        let store = o
            .store_args
            .store_config(
                o.store.unwrap_or(DEFAULT_STORE),
                o.data_dir,
                store_timeout,
                Naming::FileKey,
            )
            .map_err(ConfigError::Invalid)?;
        let admin = admin_settings(
            o.admin_role,
            o.admin_oidc_authority,
            o.admin_client_id,
            o.admin_scope,
            &token.audiences[0],
        )?;
        let signals = signal_settings(
            o.backchannel_logout_audience,
            o.ssf_issuer,
            o.ssf_jwks_url,
            o.ssf_audience,
            dev,
        )?;
        Ok(Self {
            grpc_addr,
            admin_addr,
            store,
            store_timeout,
            limits,
            keys,
            token,
            jwks_refresh_interval: o
                .jwks_refresh_interval
                .unwrap_or(DEFAULT_JWKS_REFRESH_INTERVAL),
            jwks_min_refetch_interval: o
                .jwks_min_refetch_interval
                .unwrap_or(DEFAULT_JWKS_MIN_REFETCH_INTERVAL),
            sign_in_url: o.sign_in_url.unwrap_or_else(|| DEFAULT_SIGN_IN_URL.into()),
            dynamic_metadata: o.dynamic_metadata.unwrap_or(DEFAULT_DYNAMIC_METADATA),
            trusted_proxy_hops: o.trusted_proxy_hops.unwrap_or(DEFAULT_TRUSTED_PROXY_HOPS),
            log_format: o.log_format.unwrap_or(DEFAULT_LOG_FORMAT),
            admin,
            signals,
            dev,
        })
    }
}

/// The issuer's keys come over `https://`, or plain `http://` from a loopback host or in
/// development mode.
fn check_key_url(name: &str, url: &str, dev: bool) -> Result<(), ConfigError> {
    grantflow_core::jwks::check_url(url, dev)
        .map(drop)
        .map_err(|reason| ConfigError::Invalid(format!("{name}: {reason}")))
}

/// Back-channel logout is on with at least one client id; the Shared Signals receiver with
/// all three of its settings (some but not all is an error).
fn signal_settings(
    backchannel: Option<Vec<String>>,
    ssf_issuer: Option<String>,
    ssf_jwks_url: Option<String>,
    ssf_audience: Option<Vec<String>>,
    dev: bool,
) -> Result<SignalSettings, ConfigError> {
    let clean = |list: Option<Vec<String>>| -> Vec<String> {
        let mut list = list.unwrap_or_default();
        list.iter_mut()
            .for_each(|value| *value = value.trim().to_owned());
        list.retain(|value| !value.is_empty());
        list
    };
    let backchannel_audiences = clean(backchannel);
    let ssf_issuer = ssf_issuer.filter(|issuer| !issuer.trim().is_empty());
    let ssf_audience = clean(ssf_audience);
    let ssf = match (ssf_issuer, ssf_jwks_url, ssf_audience.is_empty()) {
        (None, None, true) => None,
        (Some(issuer), Some(jwks_url), false) => {
            check_key_url("ssf_jwks_url", &jwks_url, dev)?;
            Some(SsfSettings {
                issuer,
                jwks_url,
                audiences: ssf_audience,
            })
        }
        _ => {
            return Err(ConfigError::Invalid(
                "set all of ssf_issuer, ssf_jwks_url and ssf_audience for the Shared Signals \
                 receiver, or none"
                    .into(),
            ));
        }
    };
    Ok(SignalSettings {
        backchannel_audiences,
        ssf,
    })
}

fn admin_settings(
    role: Option<String>,
    authority: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    first_audience: &str,
) -> Result<AdminSettings, ConfigError> {
    let role = role.unwrap_or_else(|| DEFAULT_ADMIN_ROLE.into());
    if role.trim().is_empty() {
        return Err(ConfigError::Invalid("admin_role must not be empty".into()));
    }
    let sign_in = match (authority, client_id) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError::Invalid(
                "set both admin_oidc_authority and admin_client_id for the dashboard sign-in"
                    .into(),
            ));
        }
        (Some(authority), Some(client_id)) => {
            let authority = authority.trim_end_matches('/').to_owned();
            let authority_origin = origin(&authority).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "admin_oidc_authority must be an http(s) URL, not `{authority}`"
                ))
            })?;
            if client_id.trim().is_empty() || client_id.chars().any(char::is_control) {
                return Err(ConfigError::Invalid(
                    "admin_client_id must not be empty".into(),
                ));
            }
            let scope =
                scope.unwrap_or_else(|| default_admin_scope(first_audience.trim_end_matches('/')));
            Some(DashboardSignIn {
                authority,
                authority_origin,
                client_id,
                scope,
            })
        }
    };
    Ok(AdminSettings { role, sign_in })
}

/// `scheme://host[:port]` of an http(s) URL whose host part is plain (letters, digits, `.`,
/// `-`, `:`, `[`, `]`), so it is safe inside a Content-Security-Policy header.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    let plain = !host.is_empty()
        && !host.contains('@')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plain.then(|| format!("{scheme}://{}", host.to_ascii_lowercase()))
}
