//! The settings as given: [`Options`] (every flag, each with its environment variable and
//! configuration file key), their defaults as named constants (used by the code and the help
//! text alike), reading the configuration file, and merging flags over the file.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use grantflow_runtime::LogFormat;
use grantflow_runtime::help::{Shown, with_default};
use grantflow_runtime::logging::DEFAULT_LOG_FORMAT;
use grantflow_runtime::store::{StoreArgs, StoreKind};
use serde::Deserialize;

use super::ConfigError;

/// Address of the ext_authz gRPC API when none is given.
pub const DEFAULT_GRPC_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001));
/// Address of the admin HTTP side when none is given.
pub const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// The session store when none is chosen.
pub const DEFAULT_STORE: StoreKind = StoreKind::Embedded;
/// Deadline of every store call when none is given.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// The claim that names the tenant when none is given.
pub const DEFAULT_TENANT_CLAIM: &str = "tid";
/// Clock skew allowed on token `exp` and `nbf` when none is given.
pub const DEFAULT_TOKEN_LEEWAY: Duration = Duration::from_secs(60);
/// Whether tokens without `sid` are refused when not set.
pub const DEFAULT_REQUIRE_SID: bool = false;
/// How often the JWKS is refreshed when not set.
pub const DEFAULT_JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Least time between two JWKS fetches for unknown key ids when not set.
pub const DEFAULT_JWKS_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Where the refusal pages' "Sign in again" link points when not set.
pub const DEFAULT_SIGN_IN_URL: &str = "/";
/// Whether the Check answer carries Envoy dynamic metadata when not set.
pub const DEFAULT_DYNAMIC_METADATA: bool = false;
/// Trusted proxies in front of Envoy when not set.
pub const DEFAULT_TRUSTED_PROXY_HOPS: usize = 0;
/// The default admin app role.
pub const DEFAULT_ADMIN_ROLE: &str = "GrantFlow.SessionAdmin";
/// Whether development mode is on when not set.
pub const DEFAULT_DEV: bool = false;
/// The least watermark retention: it must outlive the tokens issued before a revoke-all.
pub const MIN_WATERMARK_RETENTION: Duration = Duration::from_secs(60 * 60);

/// The scopes the dashboard asks for when none are set.
pub fn default_admin_scope(first_audience: &str) -> String {
    format!("openid profile {first_audience}/.default")
}

/// Every setting, each optional here; [`Settings`](super::Settings) fills in the defaults.
/// A setting with a default is described by its `help`, which shows the default from its
/// `DEFAULT_*` constant ([`with_default`]), the others by their doc comment.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Configuration file (YAML, or TOML when it ends in `.toml`).
    #[arg(long, env = "GRANTFLOW_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    #[arg(
        long,
        env = "GRANTFLOW_GRPC_ADDR",
        value_name = "ADDR",
        help = with_default(
            "Address of the ext_authz gRPC API and gRPC health service.",
            DEFAULT_GRPC_ADDR,
        )
    )]
    pub grpc_addr: Option<SocketAddr>,

    #[arg(
        long,
        env = "GRANTFLOW_ADMIN_ADDR",
        value_name = "ADDR",
        help = with_default(
            "Address of the admin HTTP side: /healthz, /readyz, /metrics, the dashboard \
             (/admin/) and its API (/api/v1/).",
            DEFAULT_ADMIN_ADDR,
        )
    )]
    pub admin_addr: Option<SocketAddr>,

    #[arg(
        long,
        env = "GRANTFLOW_STORE",
        value_enum,
        help = with_default("Session store.", DEFAULT_STORE)
    )]
    pub store: Option<StoreKind>,

    #[arg(
        long,
        env = "GRANTFLOW_DATA_DIR",
        value_name = "DIR",
        help = with_default(
            "Data folder of the embedded store (created when missing; one process per folder).",
            format!("{}, in the working directory", grantflow_runtime::store::DEFAULT_DATA_DIR),
        )
    )]
    pub data_dir: Option<PathBuf>,

    /// The store settings the operator takes too (same flags, environment variables,
    /// defaults): Redis, write deadline, session age and retention.
    #[command(flatten)]
    #[serde(flatten)]
    pub store_args: StoreArgs,

    #[arg(
        long,
        env = "GRANTFLOW_STORE_TIMEOUT",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help = with_default(
            "Deadline of every store call; past it the request is refused with 503.",
            Shown(DEFAULT_STORE_TIMEOUT),
        )
    )]
    #[serde(default, with = "humantime_serde")]
    pub store_timeout: Option<Duration>,

    /// URL of the issuer's JWKS document.
    #[arg(
        long,
        env = "GRANTFLOW_JWKS_URL",
        value_name = "URL",
        conflicts_with = "oidc_discovery_url"
    )]
    pub jwks_url: Option<String>,

    /// URL of the issuer's OpenID Connect discovery document; its `jwks_uri` is used
    /// (e.g. https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration).
    #[arg(long, env = "GRANTFLOW_OIDC_DISCOVERY_URL", value_name = "URL")]
    pub oidc_discovery_url: Option<String>,

    /// Accepted token issuers, comma separated; `{tenantid}` stands for the token's tenant,
    /// which must then be a GUID [default: the Entra ID v1 and v2 issuers].
    #[arg(
        long,
        env = "GRANTFLOW_ISSUERS",
        value_delimiter = ',',
        value_name = "ISSUER"
    )]
    pub issuers: Option<Vec<String>>,

    /// Accepted token audiences, comma separated (required).
    #[arg(
        long,
        env = "GRANTFLOW_AUDIENCES",
        value_delimiter = ',',
        value_name = "AUDIENCE"
    )]
    pub audiences: Option<Vec<String>>,

    /// Only accept these tenants, comma separated [default: every tenant].
    #[arg(
        long,
        env = "GRANTFLOW_ALLOWED_TENANTS",
        value_delimiter = ',',
        value_name = "TENANT"
    )]
    pub allowed_tenants: Option<Vec<String>>,

    #[arg(
        long,
        env = "GRANTFLOW_TENANT_CLAIM",
        value_name = "CLAIM",
        help = with_default("The claim that names the tenant.", DEFAULT_TENANT_CLAIM)
    )]
    pub tenant_claim: Option<String>,

    #[arg(
        long,
        env = "GRANTFLOW_TOKEN_LEEWAY",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help = with_default(
            "Clock skew allowed on token `exp` and `nbf`.",
            Shown(DEFAULT_TOKEN_LEEWAY),
        )
    )]
    #[serde(default, with = "humantime_serde")]
    pub token_leeway: Option<Duration>,

    #[arg(
        long,
        env = "GRANTFLOW_REQUIRE_SID",
        value_name = "BOOL",
        help = with_default(
            "Refuse tokens without a `sid` claim (without it every access token is its own \
             session, so a silent refresh starts a new one).",
            DEFAULT_REQUIRE_SID,
        )
    )]
    pub require_sid: Option<bool>,

    #[arg(
        long,
        env = "GRANTFLOW_JWKS_REFRESH_INTERVAL",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help = with_default(
            "How often the JWKS is refreshed in the background.",
            Shown(DEFAULT_JWKS_REFRESH_INTERVAL),
        )
    )]
    #[serde(default, with = "humantime_serde")]
    pub jwks_refresh_interval: Option<Duration>,

    #[arg(
        long,
        env = "GRANTFLOW_JWKS_MIN_REFETCH_INTERVAL",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help = with_default(
            "Least time between two JWKS fetches caused by unknown key ids.",
            Shown(DEFAULT_JWKS_MIN_REFETCH_INTERVAL),
        )
    )]
    #[serde(default, with = "humantime_serde")]
    pub jwks_min_refetch_interval: Option<Duration>,

    #[arg(
        long,
        env = "GRANTFLOW_SIGN_IN_URL",
        value_name = "URL",
        help = with_default(
            "Where the \"Sign in again\" link of the refusal pages points.",
            DEFAULT_SIGN_IN_URL,
        )
    )]
    pub sign_in_url: Option<String>,

    #[arg(
        long,
        env = "GRANTFLOW_DYNAMIC_METADATA",
        value_name = "BOOL",
        help = with_default(
            "Add Envoy dynamic metadata (`tenant`, `user`, `session`, `session_anchor`, \
             `verdict`) to every Check answer, for access logs \
             (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:user)%`) or later filters; \
             it costs Envoy CPU on every request.",
            DEFAULT_DYNAMIC_METADATA,
        )
    )]
    pub dynamic_metadata: Option<bool>,

    #[arg(
        long,
        env = "GRANTFLOW_TRUSTED_PROXY_HOPS",
        value_name = "N",
        help = with_default(
            "Number of trusted proxies in front of Envoy that append to `x-forwarded-for`; 0 \
             uses the peer address Envoy reports.",
            DEFAULT_TRUSTED_PROXY_HOPS,
        )
    )]
    pub trusted_proxy_hops: Option<usize>,

    #[arg(
        long,
        env = "GRANTFLOW_LOG_FORMAT",
        value_enum,
        help = with_default("Log format.", DEFAULT_LOG_FORMAT)
    )]
    pub log_format: Option<LogFormat>,

    #[arg(
        long,
        env = "GRANTFLOW_ADMIN_ROLE",
        value_name = "ROLE",
        help = with_default(
            "The app role a token must carry to use the admin API and dashboard.",
            DEFAULT_ADMIN_ROLE,
        )
    )]
    pub admin_role: Option<String>,

    /// OpenID Connect authority the dashboard signs administrators in with (authorization
    /// code + PKCE in the browser); its discovery document is
    /// `<authority>/.well-known/openid-configuration`
    /// (e.g. https://login.microsoftonline.com/organizations/v2.0).
    #[arg(long, env = "GRANTFLOW_ADMIN_OIDC_AUTHORITY", value_name = "URL")]
    pub admin_oidc_authority: Option<String>,

    /// Client (application) id of the dashboard's app registration (a single-page app whose
    /// redirect URI is `<admin URL>/admin/`). Required with admin_oidc_authority.
    #[arg(long, env = "GRANTFLOW_ADMIN_CLIENT_ID", value_name = "ID")]
    pub admin_client_id: Option<String>,

    #[arg(
        long,
        env = "GRANTFLOW_ADMIN_SCOPE",
        value_name = "SCOPES",
        help = with_default(
            "Scopes the dashboard asks for; the access token must be for an accepted audience.",
            format!("`{}`", default_admin_scope("<first audience>")),
        )
    )]
    pub admin_scope: Option<String>,

    /// Client ids (the `aud` of logout tokens), comma separated, that turn on OpenID Connect
    /// back-channel logout at `POST /oidc/backchannel-logout` on the admin address; the
    /// tokens come from the access tokens' issuer and keys [default: off].
    #[arg(
        long,
        env = "GRANTFLOW_BACKCHANNEL_LOGOUT_AUDIENCE",
        value_delimiter = ',',
        value_name = "CLIENT_ID"
    )]
    pub backchannel_logout_audience: Option<Vec<String>>,

    /// `iss` of the Shared Signals (CAEP) transmitter whose Security Event Tokens are
    /// received at `POST /ssf/events` on the admin address. Set with ssf_jwks_url and
    /// ssf_audience [default: off].
    #[arg(long, env = "GRANTFLOW_SSF_ISSUER", value_name = "ISSUER")]
    pub ssf_issuer: Option<String>,

    /// JWKS URL of the Shared Signals transmitter's signing keys (https, or http from a
    /// loopback host).
    #[arg(long, env = "GRANTFLOW_SSF_JWKS_URL", value_name = "URL")]
    pub ssf_jwks_url: Option<String>,

    /// The `aud` values, comma separated, the transmitter's SETs are addressed to (this
    /// receiver).
    #[arg(
        long,
        env = "GRANTFLOW_SSF_AUDIENCE",
        value_delimiter = ',',
        value_name = "AUDIENCE"
    )]
    pub ssf_audience: Option<Vec<String>>,

    /// Development mode: a built-in issuer signs tokens with a key made at start-up and
    /// serves them at the admin address (GET /dev/token). Never use in production.
    #[arg(long, env = "GRANTFLOW_DEV", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub dev: Option<bool>,
}

/// `Options` with every field taken from `$flags` when given there, else from `$file`.
///
/// Why an exhaustive destructure and not `figment`: `let Options { a, b, … } = flags;` names
/// every field and has no `..`, so a field added to [`Options`] and not listed here does not
/// compile ("pattern does not mention field"), and the struct literal needs every field too.
/// That is the guarantee asked for, at no run-time cost and without a second configuration
/// library: clap stays the one reader of flags and environment, serde of the file, with
/// today's error messages. (`store_args` merges through [`StoreArgs::or`], which destructures
/// its own fields the same way.)
macro_rules! flags_over_file {
    ($flags:expr, $file:expr, { $($field:ident),+ $(,)? }) => {{
        let Options { $($field),+ } = $flags;
        let file: Options = $file;
        Options { $($field: $field.or(file.$field)),+ }
    }};
}

impl Options {
    /// Fills every setting not given here (flags and environment) from `file`.
    pub(super) fn or(self, file: Options) -> Options {
        flags_over_file!(self, file, {
            config,
            grpc_addr,
            admin_addr,
            store,
            data_dir,
            store_args,
            store_timeout,
            jwks_url,
            oidc_discovery_url,
            issuers,
            audiences,
            allowed_tenants,
            tenant_claim,
            token_leeway,
            require_sid,
            jwks_refresh_interval,
            jwks_min_refetch_interval,
            sign_in_url,
            dynamic_metadata,
            trusted_proxy_hops,
            log_format,
            admin_role,
            admin_oidc_authority,
            admin_client_id,
            admin_scope,
            backchannel_logout_audience,
            ssf_issuer,
            ssf_jwks_url,
            ssf_audience,
            dev,
        })
    }
}

/// Reads a configuration file: TOML when its name ends in `.toml`, else YAML.
pub(super) fn read_file(path: &Path) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let toml = path.extension().is_some_and(|e| e == "toml");
    fn parse<T: serde::de::DeserializeOwned>(text: &str, toml: bool) -> Result<T, String> {
        if toml {
            toml::from_str(text).map_err(|e| e.to_string())
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())
        }
    }
    parse::<Options>(&text, toml).map_err(|message| {
        // Through the flattened `store_args`, serde reports an unknown key only after the
        // whole map, and a bad store value, without their position. Reading the keys alone,
        // then the store settings alone, finds the same mistake where it stands, as serde
        // does without flattening.
        let precise = parse::<FileKeys>(&text, toml)
            .err()
            .or_else(|| parse::<StoreArgs>(&text, toml).err());
        ConfigError::Parse {
            path: path.to_owned(),
            message: precise.unwrap_or(message),
        }
    })
}

/// The file keys [`Options`] takes: its flags' names (`config` aside, which only a flag or
/// the environment sets).
fn file_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        Options::augment_args(clap::Command::new("file"))
            .get_arguments()
            .map(|arg| arg.get_id().as_str())
            .filter(|id| *id != "config")
            .map(|id| &*Box::leak(id.to_owned().into_boxed_str()))
            .collect()
    })
}

/// Checks a configuration file's top-level keys against [`file_keys`], failing at the first
/// unknown one with serde's `unknown field` error. The error is raised while the key itself is
/// read, as a derived `Deserialize` does, so the formats give it the key's position.
struct FileKeys;

impl<'de> Deserialize<'de> for FileKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Options", file_keys(), Keys)
    }
}

struct Keys;

impl<'de> serde::de::Visitor<'de> for Keys {
    type Value = FileKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of settings")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FileKeys, A::Error> {
        while map.next_key_seed(Keys)?.is_some() {
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(FileKeys)
    }
}

/// A key, read as a known one: `Keys` is also the seed of each key.
impl<'de> serde::de::DeserializeSeed<'de> for Keys {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_identifier(Key)
    }
}

struct Key;

impl serde::de::Visitor<'_> for Key {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a setting's name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<(), E> {
        let known = file_keys();
        if known.contains(&key) {
            Ok(())
        } else {
            Err(E::unknown_field(key, known))
        }
    }
}
