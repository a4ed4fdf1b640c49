//! The pages' tests: status, problem+json and HTML of every denial, wording, Accept
//! negotiation, sign-in URL safety.

use super::*;

const ALL: [Denial; Denial::EVERY.len()] = Denial::EVERY;
const URL: &str = "https://auth.example.com/sign-in?return=%2Fconsole&app=ops";
const URL_HTML: &str = "https://auth.example.com/sign-in?return=%2Fconsole&amp;app=ops";

fn problem(denial: Denial, url: &str) -> Value {
    let page = render(denial, false, url);
    assert_eq!(page.content_type, "application/problem+json");
    serde_json::from_str(&page.body).expect("problem body is JSON")
}

fn h1(body: &str) -> &str {
    let start = body.find("<h1>").expect("has <h1>") + 4;
    let end = body.find("</h1>").expect("has </h1>");
    &body[start..end]
}

#[test]
fn statuses() {
    for d in ALL {
        let expected = match d {
            Denial::Unavailable => 503,
            Denial::TooManySessions => 429,
            Denial::SessionLimit { .. } | Denial::Locked => 403,
            _ => 401,
        };
        assert_eq!(render(d, true, URL).status, expected, "{d:?} html");
        assert_eq!(render(d, false, URL).status, expected, "{d:?} json");
    }
}

#[test]
fn problem_json_for_every_denial() {
    for d in ALL {
        let v = problem(d, URL);
        let page = render(d, false, URL);
        assert_eq!(v["status"], u64::from(page.status), "{d:?}");
        let ty = v["type"].as_str().unwrap();
        assert!(ty.starts_with("https://grantflow.io/problems/"), "{ty}");
        assert!(!v["title"].as_str().unwrap().is_empty());
        assert!(v["detail"].as_str().unwrap().len() > 20);
        if page.status == 401 || d == Denial::Locked {
            assert_eq!(v["sign_in"], URL, "{d:?}");
        } else {
            assert!(v.get("sign_in").is_none(), "{d:?}");
        }
    }
    assert_eq!(
        problem(Denial::SessionExpired, URL)["type"],
        "https://grantflow.io/problems/session-expired"
    );
    assert_eq!(
        problem(Denial::SessionRevoked, URL)["type"],
        "https://grantflow.io/problems/session-revoked"
    );
    assert_eq!(
        problem(Denial::SignInAgain, URL)["type"],
        "https://grantflow.io/problems/sign-in-again"
    );
    assert_eq!(
        problem(Denial::TooManySessions, URL)["type"],
        "https://grantflow.io/problems/too-many-sessions"
    );
    assert!(
        problem(Denial::TooManySessions, URL)["detail"]
            .as_str()
            .unwrap()
            .contains("ask an administrator to end your old sessions")
    );
    assert!(
        problem(Denial::SignInAgain, URL)["detail"]
            .as_str()
            .unwrap()
            .contains("a refreshed token is not enough")
    );
}

#[test]
fn problem_types_are_distinct() {
    let mut types: Vec<String> = ALL
        .iter()
        .map(|&d| problem(d, URL)["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    types.dedup();
    assert_eq!(types.len(), ALL.len());
}

#[test]
fn html_for_every_denial() {
    for d in ALL {
        let page = render(d, true, URL);
        let body = &page.body;
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert!(body.starts_with("<!doctype html>"), "{d:?}");
        assert!(body.contains("<html lang=\"en\">"));
        assert!(body.contains("<meta name=\"viewport\""));
        assert!(body.contains("<title>"));
        assert!(body.contains("prefers-color-scheme:dark"));
        assert!(body.contains("system-ui"));
        assert_eq!(body.matches("<main>").count(), 1, "{d:?}");
        assert_eq!(body.matches("<h1>").count(), 1, "{d:?}");
        assert!(!body.contains("<script"), "{d:?}");
        assert!(!body.contains("http://") && !body.contains("src="), "{d:?}");
        assert!(body.len() < 4096, "{d:?} is {} bytes", body.len());
        if page.status == 401 || d == Denial::Locked {
            let link = format!("<a class=\"btn\" href=\"{URL_HTML}\">Sign in again</a>");
            assert!(body.contains(&link), "{d:?}");
        } else {
            assert!(body.contains("<a class=\"btn\" href=\"\">Try again</a>"));
        }
    }
}

#[test]
fn html_headings_and_wording() {
    let text = |d| render(d, true, URL).body;
    assert_eq!(h1(&text(Denial::SessionExpired)), "Session expired");
    assert_eq!(h1(&text(Denial::SessionRevoked)), "Your session was ended");
    assert_eq!(h1(&text(Denial::MissingToken)), "Sign-in required");
    assert_eq!(h1(&text(Denial::InvalidToken)), "Sign-in required");
    assert_eq!(h1(&text(Denial::Unavailable)), "Temporarily unavailable");
    assert_eq!(h1(&text(Denial::SignInAgain)), "Sign in again");
    assert_eq!(h1(&text(Denial::TooManySessions)), "Too many sessions");
    assert!(text(Denial::TooManySessions).contains("Sign out of privileged access in another"));
    assert!(text(Denial::SignInAgain).contains("password or security key"));
    assert!(text(Denial::SignInAgain).contains("A refreshed token is not enough"));
    assert!(text(Denial::SessionExpired).contains("set by your administrator"));
    assert!(text(Denial::SessionRevoked).contains("contact your security team"));
    assert!(text(Denial::Unavailable).contains("refused for safety"));
    assert!(text(Denial::Unavailable).contains("Try again in a moment"));
}

#[test]
fn body_is_fixed_per_denial_and_url() {
    for d in ALL {
        for html in [true, false] {
            assert_eq!(render(d, html, URL), render(d, html, URL));
        }
    }
}

#[test]
fn sign_in_url_is_escaped() {
    let evil = "/login?next=\"><script>alert(1)</script>&x='y'";
    let body = render(Denial::SessionExpired, true, evil).body;
    assert!(!body.contains("<script"));
    assert!(!body.contains("\"><script"));
    assert!(body.contains(
        "href=\"/login?next=&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;x=&#39;y&#39;\""
    ));
    // JSON keeps the URL verbatim; the serializer handles quoting.
    assert_eq!(problem(Denial::SessionExpired, evil)["sign_in"], evil);
}

#[test]
fn unsafe_sign_in_urls_fall_back_to_root() {
    for bad in [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "//evil.example/login",
        "/\\evil.example/login",
        "https://",
        "http:/x",
        "ftp://files.example/",
        "sign-in",
        "/login\nSet-Cookie: x",
        "/log in",
        "",
        "   ",
    ] {
        assert_eq!(safe_url(bad), "/", "{bad:?}");
        let body = render(Denial::SessionExpired, true, bad).body;
        assert!(body.contains("href=\"/\""), "{bad:?}");
        assert!(
            !body.to_ascii_lowercase().contains("javascript:"),
            "{bad:?}"
        );
        assert_eq!(
            problem(Denial::InvalidToken, bad)["sign_in"],
            "/",
            "{bad:?}"
        );
    }
    let long = format!("/{}", "a".repeat(MAX_URL_LEN));
    assert_eq!(safe_url(&long), "/");
}

#[test]
fn safe_sign_in_urls_are_kept() {
    for good in [
        "/",
        "/auth/sign-in?return=%2F",
        "https://auth.example.com/sign-in",
        "HTTPS://auth.example.com/",
        "http://localhost:8080/login",
    ] {
        assert_eq!(safe_url(good), good);
    }
    assert_eq!(safe_url("  /login\n"), "/login");
}

#[test]
fn wants_html_required_cases() {
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    assert!(wants_html(Some(browser)));
    assert!(!wants_html(Some("application/json")));
    assert!(!wants_html(None));
    assert!(!wants_html(Some("*/*")));
    assert!(!wants_html(Some("text/html;q=0")));
    assert!(!wants_html(Some("application/json, text/html;q=0.5")));
}

#[test]
fn wants_html_more_cases() {
    assert!(wants_html(Some("text/html")));
    assert!(wants_html(Some("application/xhtml+xml")));
    assert!(wants_html(Some("TEXT/HTML; Q=0.7")));
    assert!(wants_html(Some("text/html, application/json")));
    assert!(wants_html(Some("application/json;q=0.5, text/html")));
    assert!(wants_html(Some("text/html;level=1;q=0.9, */*;q=0.1")));
    assert!(!wants_html(Some("")));
    assert!(!wants_html(Some("text/*")));
    assert!(!wants_html(Some("text/plain")));
    assert!(!wants_html(Some(
        "application/problem+json, text/html;q=0.9"
    )));
    assert!(!wants_html(Some("text/html;q=0.5, */*")));
    assert!(!wants_html(Some(
        "text/html;q=0.000, application/xhtml+xml;q=0"
    )));
    assert!(!wants_html(Some("text/html;q=banana")));
    assert!(!wants_html(Some("text/html;q=1.5")));
    assert!(!wants_html(Some(",;,/,=;q")));
}

#[test]
fn q_values() {
    assert_eq!(parse_q("1"), 1000);
    assert_eq!(parse_q("1.000"), 1000);
    assert_eq!(parse_q("0.8"), 800);
    assert_eq!(parse_q("0.05"), 50);
    assert_eq!(parse_q("0"), 0);
    assert_eq!(parse_q("1.5"), 0);
    assert_eq!(parse_q("0.1234"), 0);
    assert_eq!(parse_q("-1"), 0);
    assert_eq!(parse_q(""), 0);
}

/// The session rules' denials name the tenant's number; nothing else varies.
#[test]
fn idle_and_session_limit_pages_name_the_number() {
    let idle = |secs| Denial::SessionIdle {
        idle_seconds: Some(secs),
    };
    let page = render(idle(300), true, URL);
    assert_eq!(page.status, 401);
    assert_eq!(h1(&page.body), "Session expired");
    assert!(
        page.body
            .contains("Your session ended after 5 minutes without activity.")
    );
    assert!(page.body.contains("Sign in again</a>"));
    assert!(
        render(idle(60), true, URL)
            .body
            .contains("after 1 minute without")
    );
    assert!(
        render(idle(90), true, URL)
            .body
            .contains("after 1m 30s without")
    );
    let unknown = render(Denial::SessionIdle { idle_seconds: None }, true, URL);
    assert!(unknown.body.contains("after a period without activity"));
    let doc = problem(idle(600), URL);
    assert_eq!(doc["type"], "https://grantflow.io/problems/session-idle");
    assert_eq!(doc["status"], 401);
    assert_eq!(doc["sign_in"], URL);
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .contains("after 10 minutes without activity")
    );

    let limit = |limit| Denial::SessionLimit { limit };
    let page = render(limit(3), true, URL);
    assert_eq!(page.status, 403);
    assert_eq!(h1(&page.body), "Session limit reached");
    assert!(
        page.body
            .contains("You already have 3 active sessions, the most your administrator allows")
    );
    assert!(
        page.body
            .contains("ask an administrator to end one of your sessions")
    );
    assert!(page.body.contains("Try again</a>"));
    assert!(
        render(limit(1), true, URL)
            .body
            .contains("1 active session, the most")
    );
    let doc = problem(limit(3), URL);
    assert_eq!(doc["type"], "https://grantflow.io/problems/session-limit");
    assert_eq!(doc["status"], 403);
    assert!(doc.get("sign_in").is_none());
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .contains("3 active sessions")
    );
}
