//! # grantflow-crds
//!
//! GrantFlow's Kubernetes API, `session.grantflow.io/v1alpha1` (docs/design.md §5): the Rust types
//! are the one source of truth; the CRD YAML under `crds/` (and the chart's `crds/`) is generated
//! from them by `crdgen` and a test fails when the committed files drift.
//!
//! ```text
//! SessionPolicy ── one per tenant: maximum session age ──► operator ──► SessionStore::set_policy
//! Revocation    ── one request to end sessions         ──► operator ──► SessionStore::revoke
//!                  (requester recorded by the operator's admission webhook)
//! ```
//!
//! The schema rejects what the API server can check on its own (GUIDs, duration format and
//! bounds, exactly one revocation target, an immutable Revocation spec); the operator checks
//! the same rules again, because a CRD can be installed without them.

#![forbid(unsafe_code)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "session.grantflow.io";
/// The only version so far.
pub const VERSION: &str = "v1alpha1";

/// The annotation in which the operator's admission webhook records who created a Revocation.
/// The webhook overwrites any value the requester typed.
pub const REQUESTED_BY_ANNOTATION: &str = "session.grantflow.io/requested-by";

/// The canonical GUID form (`8-4-4-4-12` hex digits), as Entra tenant ids are written.
pub const GUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// A session or user id as the session layer stores it: 1–128 of `[A-Za-z0-9._:@-]`.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:@-]{1,128}$";
/// Whole hours, minutes and seconds, e.g. `15m`, `1h30m`, `90s`: a subset that both Go's
/// `time.ParseDuration` (CEL `duration()`) and the operator's parser read the same way.
pub const DURATION_PATTERN: &str = "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$";
/// The default of `SessionPolicy.spec.maxSessionAge`.
pub const DEFAULT_MAX_SESSION_AGE: &str = "15m";

/// A tenant's session policy: how old a session may get before it is refused.
///
/// One per tenant; when two name the same tenant, the one created later is not applied
/// (`Ready=False`, reason `Conflict`). Deleting it returns the tenant to the default.
// Each `printcolumn(..)` repeats `type_ = ..`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "session.grantflow.io",
    version = "v1alpha1",
    kind = "SessionPolicy",
    plural = "sessionpolicies",
    singular = "sessionpolicy",
    shortname = "sesspol",
    category = "grantflow",
    namespaced,
    status = "SessionPolicyStatus",
    doc = "The session policy of one tenant: the maximum age of its sessions.",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantId"),
    printcolumn(name = "Max Age", type_ = "string", json_path = ".spec.maxSessionAge"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.idleTimeout) || duration(self.idleTimeout) <= duration(self.maxSessionAge)").message("idleTimeout must not be longer than maxSessionAge"))]
pub struct SessionPolicySpec {
    /// The tenant (Entra `tid`), a GUID. Cannot be changed: create another policy instead.
    #[schemars(regex(pattern = GUID_PATTERN), length(max = 36))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("tenantId cannot be changed; create a new SessionPolicy"))]
    pub tenant_id: String,

    /// How old a session may get, from 1m to 24h, e.g. `15m`, `1h30m`. Default 15m.
    #[serde(default = "default_max_session_age")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    #[x_kube(validation = Rule::new("self != '' && duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("maxSessionAge must be between 1m and 24h"))]
    pub max_session_age: String,

    /// A session unused this long ends, from 1m up to `maxSessionAge`, e.g. `10m`. Not set:
    /// off (sessions end only at their maximum age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    #[x_kube(validation = Rule::new("self != '' && duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("idleTimeout must be between 1m and 24h (and not longer than maxSessionAge)"))]
    pub idle_timeout: Option<String>,

    /// Most live sessions one user may hold in the tenant at once, 1 to 1000. Not set: no
    /// limit of the tenant's own (the store's bound of 1000 still holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_sessions_per_user: Option<u32>,

    /// What a new session beyond `maxSessionsPerUser` does: `RefuseNew` (the default: it is
    /// refused, the user's other sessions keep working) or `EndOldest` (the user's oldest
    /// session ends and the new one starts).
    #[serde(default)]
    pub on_limit: OnLimit,
}

/// What a new session beyond `maxSessionsPerUser` does.
#[derive(
    Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum OnLimit {
    /// The new session is refused; the user's other sessions keep working.
    #[default]
    RefuseNew,
    /// The user's oldest live session ends, and the new one starts.
    EndOldest,
}

fn default_max_session_age() -> String {
    DEFAULT_MAX_SESSION_AGE.into()
}

/// What the operator last did with a SessionPolicy.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionPolicyStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether the policy is in force for its tenant.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A request to end sessions: one session, or every session of a user (optionally locking
/// the user out until a time). Applied once; its spec cannot change.
// Each `printcolumn(..)` repeats `type_ = ..`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "session.grantflow.io",
    version = "v1alpha1",
    kind = "Revocation",
    plural = "revocations",
    singular = "revocation",
    shortname = "revoc",
    category = "grantflow",
    namespaced,
    status = "RevocationStatus",
    doc = "A request to end one session or every session of a user, applied once.",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantId"),
    printcolumn(name = "User", type_ = "string", json_path = ".spec.target.userId"),
    printcolumn(
        name = "Session",
        type_ = "string",
        json_path = ".spec.target.sessionId"
    ),
    printcolumn(
        name = "Applied",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Applied\")].status"
    ),
    printcolumn(
        name = "Revoked",
        type_ = "integer",
        json_path = ".status.sessionsRevoked"
    ),
    printcolumn(
        name = "Requested By",
        type_ = "string",
        json_path = ".status.requestedBy",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Revocation cannot be changed; create a new one"))]
#[x_kube(validation = Rule::new("!has(self.lockUntil) || has(self.target.userId)").message("lockUntil applies to user targets only"))]
#[x_kube(validation = Rule::new("!has(self.message) || (has(self.lockUntil) && has(self.target.userId))").message("message applies to a lock only: set lockUntil and target.userId"))]
#[serde(rename_all = "camelCase")]
pub struct RevocationSpec {
    /// The tenant (Entra `tid`), a GUID.
    #[schemars(regex(pattern = GUID_PATTERN), length(max = 36))]
    pub tenant_id: String,
    /// What to end: exactly one of `sessionId` and `userId`.
    pub target: RevocationTarget,
    /// Why, for the audit trail (e.g. an incident number). Required, not blank.
    #[schemars(length(min = 1, max = 1024), regex(pattern = "\\S"))]
    pub reason: String,
    /// Only for user targets: no session for the user until this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_until: Option<Time>,
    /// Only with `lockUntil`: shown to the user on the refusal while the lock holds them out
    /// (e.g. "INC-2041: call the security desk"). At most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub message: Option<String>,
}

/// What a Revocation ends.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.sessionId) != has(self.userId)").message("set exactly one of sessionId and userId"))]
#[serde(rename_all = "camelCase")]
pub struct RevocationTarget {
    /// One session, by its id (the `sid` claim, or the id the dashboard shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ID_PATTERN), length(max = 128))]
    pub session_id: Option<String>,
    /// Every session of one user, by object id (`oid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ID_PATTERN), length(max = 128))]
    pub user_id: Option<String>,
}

/// What the operator did with a Revocation.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Applied`: whether the sessions were ended.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the session store acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
    /// How many live sessions it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_revoked: Option<u32>,
    /// The Kubernetes user who created it, as recorded by the admission webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The id of its audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<String>,
}

impl Revocation {
    /// Whether the store has acknowledged this revocation (it must never be applied again).
    pub fn is_applied(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.applied_at.is_some() && s.audit_id.is_some())
    }
}

/// A CRD as the YAML document `crdgen` writes.
pub fn crd_yaml<K: CustomResourceExt>() -> String {
    let crd = K::crd();
    let yaml = serde_yaml::to_string(&crd).expect("a CRD serialises to YAML");
    format!(
        "# Generated by `cargo run -p grantflow-crds --bin crdgen` from crds/src/lib.rs. Do not edit.\n{yaml}"
    )
}

/// Every generated CRD file: `(file name, YAML)`.
pub fn crd_files() -> Vec<(&'static str, String)> {
    vec![
        ("sessionpolicies.yaml", crd_yaml::<SessionPolicy>()),
        ("revocations.yaml", crd_yaml::<Revocation>()),
    ]
}

/// The directories, relative to the repository root, that hold the committed CRD files.
pub const CRD_DIRS: [&str; 2] = ["crds", "charts/grantflow-session/crds"];
