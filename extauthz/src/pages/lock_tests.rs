//! The lock page: its end and the administrator's message, escaped.

use super::*;

const URL: &str = "https://auth.example.com/sign-in";
// 2026-11-28T14:00:00Z
const UNTIL: i64 = 1_795_874_400_000;

fn notice(message: Option<&str>) -> LockNotice {
    LockNotice {
        until: UNTIL,
        message: message.map(str::to_owned),
    }
}

#[test]
fn a_lock_is_a_403_page_with_its_end_and_escaped_message() {
    let lock = notice(Some("INC-2041 <script>alert(1)</script> & \"more\""));
    let page = render_with(Denial::Locked, true, URL, Some(&lock));
    assert_eq!(page.status, 403);
    assert_eq!(page.content_type, HTML_CONTENT_TYPE);
    assert!(
        page.body.contains(
            "<p>Your access is locked until 2026-11-28 14:00 UTC: INC-2041 \
             &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;more&quot;</p>"
        ),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"));
    assert!(page.body.contains("<h1>Access locked</h1>"));
    assert!(page.body.contains(&format!("href=\"{URL}\"")));
}

#[test]
fn a_lock_problem_carries_until_and_message() {
    let lock = notice(Some("INC-2041 <b> & co"));
    let page = render_with(Denial::Locked, false, URL, Some(&lock));
    assert_eq!(page.status, 403);
    assert_eq!(page.content_type, PROBLEM_CONTENT_TYPE);
    let doc: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(doc["type"], "https://grantflow.io/problems/user-locked");
    assert_eq!(doc["status"], 403);
    assert_eq!(doc["locked_until"], "2026-11-28T14:00:00.000Z");
    assert_eq!(doc["message"], "INC-2041 <b> & co");
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .starts_with("Your access is locked until 2026-11-28 14:00 UTC: INC-2041 <b> & co "),
        "{doc}"
    );
    assert_eq!(doc["sign_in"], URL);
}

#[test]
fn a_lock_without_a_message_or_on_a_second_says_so() {
    let mut lock = notice(None);
    lock.until += 30_000;
    let doc: Value =
        serde_json::from_str(&render_with(Denial::Locked, false, URL, Some(&lock)).body).unwrap();
    assert!(doc.get("message").is_none());
    assert!(
        doc["detail"]
            .as_str()
            .unwrap()
            .starts_with("Your access is locked until 2026-11-28 14:00:30 UTC. "),
        "{doc}"
    );
    // Without its notice a lock still renders (the fixed wording).
    let page = render_with(Denial::Locked, true, URL, None);
    assert_eq!(page.status, 403);
    assert!(page.body.contains("An administrator locked your access."));
}
