//! Denial pages: the bodies Envoy returns to the browser or API client when
//! GrantFlow refuses a request.
//!
//! API clients get an RFC 9457 `application/problem+json` document; browsers
//! get a small, self-contained HTML page (inline CSS and SVG only, no scripts,
//! no network resources, light and dark themes). Bodies are fixed per
//! [`Denial`]: the only variable parts are the operator-configured sign-in URL,
//! which is restricted to http(s) or a relative path and escaped, and for a
//! lock ([`Denial::Locked`]) its end and the administrator's message (cleaned
//! text, HTML-escaped in the page, JSON-escaped in the problem). Nothing from
//! the request, and no internal error text, ever reaches the body.

use serde_json::{Map, Value};

use crate::outcome::{Denial, LockNotice};

/// A rendered refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";
const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
const PROBLEM_BASE: &str = "https://grantflow.io/problems/";
/// Longest sign-in URL we put in a page; anything longer falls back to "/".
const MAX_URL_LEN: usize = 2048;

/// Fixed wording for one denial.
struct Wording<'a> {
    slug: &'a str,
    title: &'a str,
    what: &'a str,
    next: &'a str,
    detail: &'a str,
    icon: &'a str,
}

const ICON_LOCK: &str =
    r#"<rect x="5" y="11" width="14" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 8 0v4"/>"#;
const ICON_CLOCK: &str = r#"<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>"#;
const ICON_BAN: &str = r#"<circle cx="12" cy="12" r="9"/><path d="M5.6 5.6l12.8 12.8"/>"#;
const ICON_ALERT: &str = r#"<path d="M12 3 2 20h20z"/><path d="M12 10v4m0 3v.01"/>"#;

fn wording(denial: Denial) -> Wording<'static> {
    match denial {
        Denial::MissingToken => Wording {
            slug: "missing-token",
            title: "Sign-in required",
            what: "This resource is protected for privileged access, and no active session was found.",
            next: "Sign in again to continue.",
            detail: "This resource requires privileged access and no active session was found. Sign in again to continue.",
            icon: ICON_LOCK,
        },
        Denial::InvalidToken => Wording {
            slug: "invalid-token",
            title: "Sign-in required",
            what: "Your session could not be verified, so access was refused.",
            next: "Sign in again to continue. If this keeps happening, contact your security team.",
            detail: "Your session could not be verified, so access was refused. Sign in again to continue.",
            icon: ICON_LOCK,
        },
        Denial::SessionExpired => Wording {
            slug: "session-expired",
            title: "Session expired",
            what: "Your session has expired. Sessions for privileged access last a limited time, set by your administrator.",
            next: "Sign in again to continue.",
            detail: "Your session has expired. Sessions for privileged access last a limited time, set by your administrator. Sign in again to continue.",
            icon: ICON_CLOCK,
        },
        Denial::SessionRevoked => Wording {
            slug: "session-revoked",
            title: "Your session was ended",
            what: "Your session was ended before its time: by an administrator, by a sign-out at your organization\u{2019}s sign-in service, or to make room for a newer session of yours.",
            next: "Sign in again to continue. If you didn\u{2019}t expect this, contact your security team.",
            detail: "Your session was ended before its time: by an administrator, by a sign-out at your organization's sign-in service, or to make room for a newer session of yours. Sign in again to continue. If you didn't expect this, contact your security team.",
            icon: ICON_BAN,
        },
        Denial::SignInAgain => Wording {
            slug: "sign-in-again",
            title: "Sign in again",
            what: "All of your sessions were ended, by an administrator or by your organization\u{2019}s sign-in service. A refreshed token is not enough to continue.",
            next: "Sign out, then sign in again with your password or security key. If that does not help, contact your security team.",
            detail: "All of your sessions were ended, by an administrator or by your organization's sign-in service. Sign out, then sign in again with your password or security key (a refreshed token is not enough). If that does not help, contact your security team.",
            icon: ICON_BAN,
        },
        Denial::TooManySessions => Wording {
            slug: "too-many-sessions",
            title: "Too many sessions",
            what: "You already have as many active sessions as one person may hold, so a new one was not started. Your other sessions still work.",
            next: "Sign out of privileged access in another browser or device, then try again. If you cannot, ask an administrator to end your old sessions.",
            detail: "You already have as many active sessions as one person may hold, so a new one was not started. Sign out of privileged access in another browser or device, then try again, or ask an administrator to end your old sessions.",
            icon: ICON_ALERT,
        },
        Denial::Locked => Wording {
            slug: "user-locked",
            title: "Access locked",
            what: "An administrator locked your access.",
            next: "You can sign in again once the lock ends. If you didn\u{2019}t expect this, contact your security team.",
            detail: "An administrator locked your access. You can sign in again once the lock ends. If you didn't expect this, contact your security team.",
            icon: ICON_LOCK,
        },
        Denial::SessionIdle { .. } => Wording {
            slug: "session-idle",
            title: "Session expired",
            what: "Your session ended after a period without activity. Sessions for privileged access end when unused for a time set by your administrator.",
            next: "Sign in again to continue.",
            detail: "Your session ended after a period without activity. Sign in again to continue.",
            icon: ICON_CLOCK,
        },
        Denial::SessionLimit { .. } => Wording {
            slug: "session-limit",
            title: "Session limit reached",
            what: "You already have as many active sessions as your administrator allows, so a new one was not started. Your other sessions still work.",
            next: "Sign out of privileged access in another browser or device, then try again. If you cannot, ask an administrator to end one of your sessions.",
            detail: "You already have as many active sessions as your administrator allows, so a new one was not started. Sign out of privileged access in another browser or device, then try again, or ask an administrator to end one of your sessions.",
            icon: ICON_ALERT,
        },
        Denial::Unavailable => Wording {
            slug: "unavailable",
            title: "Temporarily unavailable",
            what: "We could not verify your session, so access is refused for safety.",
            next: "This is usually temporary. Try again in a moment.",
            detail: "We could not verify your session, so access is refused for safety. Try again in a moment.",
            icon: ICON_ALERT,
        },
    }
}

fn status(denial: Denial) -> u16 {
    match denial {
        Denial::MissingToken
        | Denial::InvalidToken
        | Denial::SessionExpired
        | Denial::SessionRevoked
        | Denial::SignInAgain
        | Denial::SessionIdle { .. } => 401,
        Denial::TooManySessions => 429,
        Denial::SessionLimit { .. } => 403,
        Denial::Unavailable => 503,
        Denial::Locked => 403,
    }
}

/// "Your access is locked until 2026-11-28 14:00 UTC: INC-2041" (seconds shown only when
/// the lock does not end on a whole minute).
fn lock_sentence(lock: &LockNotice) -> String {
    let stamp = grantflow_core::clock::rfc3339(lock.until);
    // "2026-11-28T14:00:00.000Z"
    let (date, time) = stamp.split_once('T').unwrap_or((stamp.as_str(), ""));
    let time = time.get(..8).unwrap_or(time);
    let time = time.strip_suffix(":00").unwrap_or(time);
    match &lock.message {
        Some(message) => format!("Your access is locked until {date} {time} UTC: {message}"),
        None => format!("Your access is locked until {date} {time} UTC."),
    }
}

/// [`render`], with a lock's end and message when the denial is a lock.
pub fn render_with(
    denial: Denial,
    html: bool,
    sign_in_url: &str,
    lock: Option<&LockNotice>,
) -> Page {
    let Some(lock) = lock.filter(|_| denial == Denial::Locked) else {
        return render(denial, html, sign_in_url);
    };
    let url = safe_url(sign_in_url);
    let sentence = lock_sentence(lock);
    let body = if html {
        render_html_saying(denial, url, Some(&sentence))
    } else {
        let mut doc: Map<String, Value> =
            serde_json::from_str(&render_problem(denial, url)).expect("our own JSON");
        let detail = format!(
            "{sentence} {}",
            wording(denial).next.replace('\u{2019}', "'")
        );
        doc.insert("detail".into(), detail.into());
        doc.insert(
            "locked_until".into(),
            grantflow_core::clock::rfc3339(lock.until).into(),
        );
        if let Some(message) = &lock.message {
            doc.insert("message".into(), message.as_str().into());
        }
        Value::Object(doc).to_string()
    };
    Page {
        status: status(denial),
        content_type: if html {
            HTML_CONTENT_TYPE
        } else {
            PROBLEM_CONTENT_TYPE
        },
        body,
    }
}

/// Whether the client prefers HTML: true when the Accept header lists text/html (or application/xhtml+xml) with q>0 and ranks it at least as high as application/json / application/problem+json; false for missing Accept, */* only, or JSON-first.
///
/// HTML must be named explicitly (`text/*` or `*/*` do not count), while JSON
/// may be reached through a wildcard; each type takes the q-value of its most
/// specific matching range (RFC 9110 §12.5.1). Malformed q-values count as 0.
pub fn wants_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let html = [("text", "html"), ("application", "xhtml+xml")]
        .into_iter()
        .filter_map(|t| match preference(accept, t) {
            Some((Specificity::Exact, q)) => Some(q),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let json = [("application", "json"), ("application", "problem+json")]
        .into_iter()
        .filter_map(|t| preference(accept, t).map(|(_, q)| q))
        .max()
        .unwrap_or(0);
    html > 0 && html >= json
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    Any,
    Type,
    Exact,
}

/// The q-value (in thousandths) of the most specific range in `accept` that
/// matches `target`, with that specificity; `None` if no range matches.
fn preference(accept: &str, target: (&str, &str)) -> Option<(Specificity, u16)> {
    let mut best: Option<(Specificity, u16)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let Some((ty, sub)) = parts.next().and_then(|m| m.trim().split_once('/')) else {
            continue;
        };
        let (ty, sub) = (ty.trim(), sub.trim());
        let specificity = if ty == "*" && sub == "*" {
            Specificity::Any
        } else if ty.eq_ignore_ascii_case(target.0) && sub == "*" {
            Specificity::Type
        } else if ty.eq_ignore_ascii_case(target.0) && sub.eq_ignore_ascii_case(target.1) {
            Specificity::Exact
        } else {
            continue;
        };
        let q = parts
            .find_map(|p| {
                let (name, value) = p.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| parse_q(value.trim()))
            })
            .unwrap_or(1000);
        best = match best {
            Some((s, _)) if s < specificity => Some((specificity, q)),
            Some((s, old)) if s == specificity => Some((s, old.max(q))),
            Some(kept) => Some(kept),
            None => Some((specificity, q)),
        };
    }
    best
}

/// Parses an RFC 9110 qvalue into thousandths; anything malformed is 0.
fn parse_q(value: &str) -> u16 {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let frac_thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match int {
        "0" => frac_thousandths,
        "1" if frac_thousandths == 0 => 1000,
        _ => 0,
    }
}

/// `sign_in_url` is operator-configured (escape it for HTML attributes; only allow http/https or a relative path starting with '/', otherwise fall back to "/").
pub fn render(denial: Denial, html: bool, sign_in_url: &str) -> Page {
    let url = safe_url(sign_in_url);
    if html {
        Page {
            status: status(denial),
            content_type: HTML_CONTENT_TYPE,
            body: render_html(denial, url),
        }
    } else {
        Page {
            status: status(denial),
            content_type: PROBLEM_CONTENT_TYPE,
            body: render_problem(denial, url),
        }
    }
}

/// Keeps `raw` (trimmed) if it is an http(s) URL or a relative path starting
/// with a single '/', has no whitespace or control characters and is not
/// overly long; otherwise returns "/". Scheme-relative `//host` and `/\host`
/// are refused because browsers treat them as another origin.
fn safe_url(raw: &str) -> &str {
    let url = raw.trim();
    let clean = !url.is_empty()
        && url.len() <= MAX_URL_LEN
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    let relative = url.starts_with('/') && !url.starts_with("//") && !url.starts_with("/\\");
    let absolute = ["http://", "https://"].iter().any(|scheme| {
        url.len() > scheme.len()
            && url
                .get(..scheme.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
    });
    if clean && (relative || absolute) {
        url
    } else {
        "/"
    }
}

/// The sentences of the denials that name a number from the tenant's policy (not from the
/// request): (what, detail).
fn numbered(denial: Denial) -> Option<(String, String)> {
    match denial {
        Denial::SessionIdle {
            idle_seconds: Some(seconds),
        } => {
            let idle = if seconds % 60 == 0 {
                match seconds / 60 {
                    1 => "1 minute".to_owned(),
                    minutes => format!("{minutes} minutes"),
                }
            } else {
                humantime::format_duration(std::time::Duration::from_secs(seconds)).to_string()
            };
            Some((
                format!(
                    "Your session ended after {idle} without activity. Sessions for privileged access end when unused for a time set by your administrator."
                ),
                format!(
                    "Your session ended after {idle} without activity. Sign in again to continue."
                ),
            ))
        }
        Denial::SessionLimit { limit } => {
            let sessions = if limit == 1 { "session" } else { "sessions" };
            Some((
                format!(
                    "You already have {limit} active {sessions}, the most your administrator allows, so a new one was not started. Your other sessions still work."
                ),
                format!(
                    "You already have {limit} active {sessions}, the most your administrator allows, so a new one was not started. Sign out of privileged access in another browser or device, then try again, or ask an administrator to end one of your sessions."
                ),
            ))
        }
        _ => None,
    }
}

fn render_problem(denial: Denial, url: &str) -> String {
    let numbered = numbered(denial);
    let mut c: Wording<'_> = wording(denial);
    if let Some((_, detail)) = &numbered {
        c.detail = detail;
    }
    let status = status(denial);
    let mut doc = Map::new();
    doc.insert("type".into(), format!("{PROBLEM_BASE}{}", c.slug).into());
    doc.insert("title".into(), c.title.into());
    doc.insert("status".into(), status.into());
    doc.insert("detail".into(), c.detail.into());
    if status == 401 || denial == Denial::Locked {
        doc.insert("sign_in".into(), url.into());
    }
    Value::Object(doc).to_string()
}

const CSS: &str = "\
:root{color-scheme:light dark;--bg:#f3f4f6;--card:#fff;--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--accent:#1f4fd1;--on-accent:#fff}\
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b22;--fg:#e6edf3;--muted:#9da7b3;--line:#30363d;--accent:#79a8ff;--on-accent:#0d1117}}\
*{box-sizing:border-box}\
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;padding:1rem;background:var(--bg);color:var(--fg);\
font:1.0625rem/1.55 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",Arial,sans-serif}\
main{width:100%;max-width:32rem;background:var(--card);border:1px solid var(--line);border-radius:12px;padding:2rem 1.75rem}\
svg{width:2.5rem;height:2.5rem;color:var(--accent)}\
h1{font-size:1.625rem;line-height:1.25;margin:.75rem 0 1rem}\
p{margin:0 0 1rem}\
a.btn{display:inline-block;margin-top:.5rem;padding:.75rem 1.5rem;min-height:44px;border-radius:8px;background:var(--accent);color:var(--on-accent);font-weight:600;text-decoration:none}\
a.btn:hover{text-decoration:underline}\
a.btn:focus-visible{outline:3px solid var(--fg);outline-offset:3px}\
.ref{margin:1.5rem 0 0;font-size:.875rem;color:var(--muted)}\
@media (max-width:30rem){body{align-items:flex-start;padding:.75rem}main{padding:1.5rem 1.25rem}a.btn{display:block;text-align:center}}";

fn render_html(denial: Denial, url: &str) -> String {
    render_html_saying(denial, url, None)
}

/// The page, with `said` in place of the denial's fixed sentence (escaped here).
fn render_html_saying(denial: Denial, url: &str, said: Option<&str>) -> String {
    let numbered = numbered(denial);
    let mut c: Wording<'_> = wording(denial);
    if let Some((what, _)) = &numbered {
        c.what = what;
    }
    if let Some(said) = said {
        c.what = said;
    }
    // 429 and 503: "Try again" reloads the page that was refused (an empty
    // href is the current document); 401s and a lock (which ends in a sign-in)
    // send the person to sign in.
    let (href, action) = if status(denial) == 401 || denial == Denial::Locked {
        (escape_html(url), "Sign in again")
    } else {
        (String::new(), "Try again")
    };
    let (title, what, next) = (
        escape_html(c.title),
        escape_html(c.what),
        escape_html(c.next),
    );
    let (slug, icon) = (c.slug, c.icon);
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"color-scheme\" content=\"light dark\">\n\
<meta name=\"robots\" content=\"noindex\">\n\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'\">\n\
<title>{title} \u{b7} GrantFlow</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n\
<svg viewBox=\"0 0 24 24\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\" stroke-linecap=\"round\" stroke-linejoin=\"round\" aria-hidden=\"true\" focusable=\"false\">{icon}</svg>\n\
<h1>{title}</h1>\n<p>{what}</p>\n<p>{next}</p>\n\
<a class=\"btn\" href=\"{href}\">{action}</a>\n\
<p class=\"ref\">Reference: {slug}</p>\n</main>\n</body>\n</html>\n"
    )
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests;

/// The lock page's tests.
#[cfg(test)]
mod lock_tests;
