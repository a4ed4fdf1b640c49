//! Token parsing and validation (`grantflow_core::token::TokenValidator`) against a static
//! JWKS: arbitrary token strings, valid tokens spliced with arbitrary bytes, and tokens built
//! from arbitrary headers and claims, signed by the test key (or not). An oracle written from
//! the rules says whether each built token is acceptable: a token it calls invalid must never
//! validate, one it calls valid must, and a second validation (the cache) must agree.
#![no_main]

use std::sync::{Arc, LazyLock};

use arbitrary::Arbitrary;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantflow_core::identity::{is_guid, is_safe_id};
use grantflow_core::jwks::KeySet;
use grantflow_fuzz::{AUDIENCE, Issuer, Json, KID, NOW, OTHER_TENANT, TENANT};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

struct World {
    runtime: tokio::runtime::Runtime,
    issuer: Issuer,
    other: Issuer,
    keys: Arc<KeySet>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let runtime = grantflow_fuzz::runtime();
    let issuer = Issuer::new();
    let keys = issuer.key_set(&runtime);
    World {
        runtime,
        issuer,
        other: Issuer::new(),
        keys,
    }
});

/// Leeway of `TokenRules::entra`.
const LEEWAY: i64 = 60;

/// Claims the validator decodes into fields of its own (`core::token`'s `Claims`); each
/// counts toward the claim bound only when present.
const NAMED: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "nbf",
    "iat",
    "auth_time",
    "oid",
    "sid",
    "uti",
    "jti",
    "preferred_username",
    "upn",
    "name",
    "roles",
];

/// Further claims the validator reads (from its map of other claims).
const READ: &[&str] = &["tid", "nonce", "idtyp", "ver", "scp", "azp"];

/// Whether the validator reads `name`: extra claims with these names are dropped.
fn known(name: &str) -> bool {
    NAMED.contains(&name) || READ.contains(&name)
}

/// Header fields the JWT library decodes into typed fields.
const LIBRARY_HEADER: &[&str] = &[
    "cty", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "enc", "zip", "b64", "url", "nonce",
];

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any string as the token.
    Raw(String),
    /// A valid token with bytes inserted, replaced or removed.
    Spliced {
        at: usize,
        remove: u8,
        insert: String,
    },
    /// A token built from parts.
    Built(Box<Built>),
}

#[derive(Arbitrary, Debug)]
enum Alg {
    Es256,
    Rs256,
    Hs256,
    None,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Kid {
    Known,
    Absent,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Signature {
    Valid,
    /// Signed by another P-256 key.
    OtherKey,
    /// HMAC-SHA256 keyed with the public key (algorithm confusion).
    HmacWithPublicKey,
    Empty,
    /// The valid signature with one byte changed.
    Flipped {
        at: usize,
        xor: u8,
    },
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Text {
    Good,
    Absent,
    Any(String),
    NotAString(Json),
}

#[derive(Arbitrary, Debug)]
enum Iss {
    V1,
    V2,
    V2OtherTenant,
    Absent,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Aud {
    Ours,
    Among(Vec<String>, usize),
    Any(String),
    Many(Vec<String>),
    Absent,
    NotAString(Json),
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// Relative to now.
    Near(i16),
    Any(i64),
    Absent,
    NotAnInteger(Json),
}

#[derive(Arbitrary, Debug)]
struct Built {
    alg: Alg,
    kid: Kid,
    crit: Option<Vec<String>>,
    typ: Option<String>,
    header_extra: Vec<(String, Json)>,
    signature: Signature,
    iss: Iss,
    aud: Aud,
    exp: Time,
    nbf: Time,
    iat: Option<i64>,
    auth_time: Option<i64>,
    tid: Text,
    oid: Text,
    sid: Option<String>,
    uti: Option<String>,
    jti: Option<String>,
    names: [Option<String>; 3],
    roles: Option<Vec<String>>,
    nonce: Option<Json>,
    idtyp: Option<String>,
    ver: Option<String>,
    scp: Option<String>,
    azp: Option<String>,
    extra: Vec<(String, Json)>,
}

fn time(value: &Time) -> Option<Value> {
    match value {
        Time::Near(delta) => Some(json!(NOW + i64::from(*delta))),
        Time::Any(t) => Some(json!(t)),
        Time::Absent => None,
        Time::NotAnInteger(j) => Some(j.to_value()),
    }
}

/// The claims object and the oracle's verdict on them (`Err(why)` for an invalid token).
fn claims(b: &Built) -> (Value, Result<(), String>) {
    let mut c = Map::new();
    let mut verdict: Result<(), String> = Ok(());
    let mut refuse = |why: &str| {
        if verdict.is_ok() {
            verdict = Err(why.to_owned());
        }
    };

    let tid = match &b.tid {
        Text::Good => Some(json!(TENANT)),
        Text::Absent => None,
        Text::Any(s) => Some(json!(s)),
        Text::NotAString(j) => Some(j.to_value()),
    };
    let tid_str = tid.as_ref().and_then(Value::as_str).map(str::to_owned);
    if let Some(t) = tid {
        c.insert("tid".into(), t);
    }
    let iss = match &b.iss {
        Iss::V1 => Some(format!(
            "https://sts.windows.net/{}/",
            tid_str.as_deref().unwrap_or(TENANT)
        )),
        Iss::V2 => Some(format!(
            "https://login.microsoftonline.com/{}/v2.0",
            tid_str.as_deref().unwrap_or(TENANT)
        )),
        Iss::V2OtherTenant => Some(format!(
            "https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
        )),
        Iss::Absent => None,
        Iss::Any(s) => Some(s.clone()),
    };
    if let Some(iss) = &iss {
        c.insert("iss".into(), json!(iss));
    }
    let aud = match &b.aud {
        Aud::Ours => Some(json!(AUDIENCE)),
        Aud::Among(list, at) => {
            let mut list = list.clone();
            list.insert(at % (list.len() + 1), AUDIENCE.into());
            Some(json!(list))
        }
        Aud::Any(s) => Some(json!(s)),
        Aud::Many(list) => Some(json!(list)),
        Aud::Absent => None,
        Aud::NotAString(j) => Some(j.to_value()),
    };
    // `null` reads as an absent claim (the claims are `Option`s).
    let exp = time(&b.exp);
    let nbf = time(&b.nbf);
    let present = |v: &Option<Value>| v.as_ref().filter(|v| !v.is_null()).cloned();
    if let Some(v) = &exp {
        c.insert("exp".into(), v.clone());
    }
    if let Some(v) = &nbf {
        c.insert("nbf".into(), v.clone());
    }
    if let Some(v) = b.iat {
        c.insert("iat".into(), json!(v));
    }
    if let Some(v) = b.auth_time {
        c.insert("auth_time".into(), json!(v));
    }
    let oid = match &b.oid {
        Text::Good => Some(json!("user-1")),
        Text::Absent => None,
        Text::Any(s) => Some(json!(s)),
        Text::NotAString(j) => Some(j.to_value()),
    };
    if let Some(v) = &oid {
        c.insert("oid".into(), v.clone());
    }
    for (name, value) in [("sid", &b.sid), ("uti", &b.uti), ("jti", &b.jti)] {
        if let Some(v) = value {
            c.insert(name.into(), json!(v));
        }
    }
    for (name, value) in ["preferred_username", "upn", "name"].iter().zip(&b.names) {
        if let Some(v) = value {
            c.insert((*name).into(), json!(v));
        }
    }
    if let Some(roles) = &b.roles {
        c.insert("roles".into(), json!(roles));
    }
    if let Some(nonce) = &b.nonce {
        c.insert("nonce".into(), nonce.to_value());
    }
    for (name, value) in [
        ("idtyp", &b.idtyp),
        ("ver", &b.ver),
        ("scp", &b.scp),
        ("azp", &b.azp),
    ] {
        if let Some(v) = value {
            c.insert(name.into(), json!(v));
        }
    }
    for (name, value) in &b.extra {
        if !known(name) {
            c.insert(name.clone(), value.to_value());
        }
    }

    // Shapes: a field of the wrong JSON type makes the claims undecodable.
    let int_or_absent = |v: &Option<Value>| present(v).is_none_or(|v| v.as_i64().is_some());
    if !int_or_absent(&exp) || !int_or_absent(&nbf) {
        refuse("exp/nbf not an integer");
    }
    if present(&oid).is_some_and(|v| !v.is_string()) {
        refuse("oid not a string");
    }
    let aud_ok = match &aud {
        None => false,
        Some(Value::String(s)) => s == AUDIENCE,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().any(|v| v == AUDIENCE)
        }
        // Untagged: anything else is the `None` variant, i.e. no accepted audience.
        Some(_) => false,
    };
    if let Some(a) = aud {
        c.insert("aud".into(), a);
    }

    // The rules, in the validator's order where it matters only for the error.
    match exp.as_ref().and_then(Value::as_i64) {
        None => refuse("no exp"),
        Some(exp) if exp.saturating_add(LEEWAY) <= NOW => refuse("expired"),
        Some(_) => {}
    }
    if let Some(nbf) = nbf.as_ref().and_then(Value::as_i64)
        && nbf.saturating_sub(LEEWAY) > NOW
    {
        refuse("not yet valid");
    }
    if !aud_ok {
        refuse("audience");
    }
    if b.nonce.is_some() {
        refuse("nonce");
    }
    if let Some(idtyp) = &b.idtyp
        && idtyp != "user"
        && idtyp != "app"
    {
        refuse("idtyp");
    }
    if b.ver.as_deref() == Some("2.0") {
        let present = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        let roles = b
            .roles
            .as_ref()
            .is_some_and(|r| r.iter().any(|r| !r.is_empty()));
        if !(present(&b.scp) || roles && present(&b.azp)) {
            refuse("v2 without scp");
        }
    }
    match &tid_str {
        None => refuse("no tenant"),
        Some(tid) => {
            let v1 = format!("https://sts.windows.net/{tid}/");
            let v2 = format!("https://login.microsoftonline.com/{tid}/v2.0");
            if !iss.as_ref().is_some_and(|i| *i == v1 || *i == v2) || !is_guid(tid) {
                refuse("issuer");
            }
            if !is_safe_id(tid) {
                refuse("tenant");
            }
        }
    }
    match oid.as_ref().and_then(Value::as_str) {
        Some(oid) if is_safe_id(oid) => {}
        _ => refuse("oid"),
    }
    if b.sid.as_deref().is_some_and(|sid| !is_safe_id(sid)) {
        refuse("sid");
    }
    // Bounds (`core::token::check_claim_bounds`): at most 256 claims — a named claim counts
    // when present (`null` is absent; `aud` only as a string or a list of strings; `roles`
    // only when not empty), any other claim always — and at most 256 roles or scopes, each
    // of at most 256 characters.
    let counted = c
        .iter()
        .filter(|(name, value)| match name.as_str() {
            "aud" => {
                value.is_string()
                    || value
                        .as_array()
                        .is_some_and(|items| items.iter().all(Value::is_string))
            }
            "roles" => value.as_array().is_some_and(|items| !items.is_empty()),
            named if NAMED.contains(&named) => !value.is_null(),
            _ => true,
        })
        .count();
    if counted > 256 {
        refuse("too many claims");
    }
    let bounded = |entries: Vec<&str>| {
        entries.len() <= 256 && entries.iter().all(|e| e.chars().count() <= 256)
    };
    if let Some(roles) = &b.roles
        && !bounded(roles.iter().map(String::as_str).collect())
    {
        refuse("roles bound");
    }
    if let Some(scp) = &b.scp
        && !bounded(scp.split(' ').filter(|s| !s.is_empty()).collect())
    {
        refuse("scp bound");
    }
    (Value::Object(c), verdict)
}

fn build(w: &World, b: &Built) -> (String, Result<(), String>) {
    let (claims, mut verdict) = claims(b);
    let mut refuse = |why: &str| {
        if verdict.is_ok() {
            verdict = Err(why.to_owned());
        }
    };
    let mut header = Map::new();
    for (name, value) in &b.header_extra {
        if !matches!(name.as_str(), "alg" | "kid" | "crit" | "typ") {
            header.insert(name.clone(), value.to_value());
        }
    }
    let alg = match &b.alg {
        Alg::Es256 => "ES256".to_owned(),
        Alg::Rs256 => "RS256".to_owned(),
        Alg::Hs256 => "HS256".to_owned(),
        Alg::None => "none".to_owned(),
        Alg::Other(s) => s.clone(),
    };
    if alg != "ES256" {
        refuse("alg");
    }
    header.insert("alg".into(), json!(alg));
    match &b.kid {
        Kid::Known => {
            header.insert("kid".into(), json!(KID));
        }
        Kid::Absent => refuse("no kid"),
        Kid::Other(k) => {
            if k != KID {
                refuse("kid");
            }
            header.insert("kid".into(), json!(k));
        }
    }
    if let Some(crit) = &b.crit {
        refuse("crit");
        header.insert("crit".into(), json!(crit));
    }
    if let Some(typ) = &b.typ {
        header.insert("typ".into(), json!(typ));
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match &b.signature {
        Signature::Valid => w.issuer.signature(input.as_bytes()),
        Signature::OtherKey => {
            refuse("other key");
            w.other.signature(input.as_bytes())
        }
        Signature::HmacWithPublicKey => {
            refuse("hmac");
            let key = hmac::Key::new(hmac::HMAC_SHA256, &w.issuer.public_point);
            hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
        }
        Signature::Empty => {
            refuse("empty signature");
            Vec::new()
        }
        Signature::Flipped { at, xor } => {
            refuse("flipped signature");
            let mut s = w.issuer.signature(input.as_bytes());
            let at = at % s.len();
            s[at] ^= xor | 1;
            s
        }
        Signature::Bytes(bytes) => {
            refuse("arbitrary signature");
            bytes.clone()
        }
    };
    (
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)),
        verdict,
    )
}

fuzz_target!(|input: Input| {
    let w = &*WORLD;
    // Built tokens whose extra header fields name ones the JWT library reads (`jwk`, `x5c`, …)
    // may be refused for their shape: only "invalid never validates" is checked for them.
    let mut strict = true;
    let (token, verdict) = match &input {
        Input::Raw(s) => (s.clone(), Err("an arbitrary string".to_owned())),
        Input::Spliced { at, remove, insert } => {
            let valid = w.issuer.sign(&w.issuer.claims("user-1", false));
            let mut at = at % (valid.len() + 1);
            while !valid.is_char_boundary(at) {
                at -= 1;
            }
            let end = (at + usize::from(*remove)).min(valid.len());
            let spliced = format!("{}{insert}{}", &valid[..at], &valid[end..]);
            if spliced == valid {
                return;
            }
            (spliced, Err("a spliced token".to_owned()))
        }
        Input::Built(b) => {
            // JSON nested past serde_json's recursion limit (128) is refused as malformed:
            // so is a token carrying it, whatever the oracle says of its fields.
            let shallow = |j: &Json| j.depth() < 100;
            strict = b
                .header_extra
                .iter()
                .all(|(name, j)| !LIBRARY_HEADER.contains(&name.as_str()) && shallow(j))
                && b.extra.iter().all(|(_, j)| shallow(j))
                && b.nonce.as_ref().is_none_or(shallow);
            build(w, b)
        }
    };
    // A fresh validator (its cache) per input, the loaded keys shared.
    let validator = grantflow_fuzz::validator(w.keys.clone(), &grantflow_fuzz::clock());
    let first = w.runtime.block_on(validator.validate(&token));
    let second = w.runtime.block_on(validator.validate(&token));
    if std::env::var_os("GRANTFLOW_FUZZ_DEBUG").is_some() {
        eprintln!("oracle {verdict:?} (strict {strict}), validator {first:?}: {token}");
    }
    match (&first, &verdict) {
        (Ok(identity), Err(why)) => {
            panic!("an invalid token ({why}) validated: {token:?} → {identity:?}")
        }
        (Err(error), Ok(())) if strict => {
            panic!("a valid token was refused ({error}): {token:?}")
        }
        _ => {}
    }
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the cached identity differs"),
        (Err(a), Err(b)) => assert_eq!(a, b, "the second refusal differs"),
        _ => panic!("validating twice disagreed: {first:?} then {second:?}"),
    }
    if let (Ok(identity), Input::Built(b)) = (&first, &input) {
        assert!(is_guid(&identity.tenant) && is_safe_id(&identity.user));
        if matches!(b.tid, Text::Good) {
            assert_eq!(identity.tenant, TENANT);
        }
        if matches!(b.oid, Text::Good) {
            assert_eq!(identity.user, "user-1");
        }
        assert_eq!(identity.roles, b.roles.clone().unwrap_or_default());
        if let Some(name) = &identity.display_name {
            assert!(!name.is_empty() && !name.chars().any(char::is_control));
        }
    }
});
