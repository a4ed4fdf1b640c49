//! Revoke-all and what a later token must prove: not an unseen `sid`, not a token without
//! `sid`, not an old `auth_time`; a new sign-in gets in, also after `kill -9`.

use std::time::Duration;

use grantflow_e2e::process::Stop;

use crate::harness::{Fault, Got, acknowledged, now_ms, now_secs};

/// After a revoke-all (default store: embedded) only a token whose `auth_time` is after the
/// watermark opens a session: not an unseen `sid`, not a token without `sid`, not an old
/// `auth_time`. The same after `kill -9` and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_refuses_unseen_sid_no_sid_and_old_auth_time_and_allows_a_new_sign_in_before_and_after_kill_9()
 {
    let data = grantflow_e2e::temp_dir("data");
    let mut fault = Fault::start(&["--data-dir".into(), data.path().display().to_string()]).await;
    let signed_in = now_secs() - 60;
    let live = fault
        .token("user-dee", Some("sid-dee"), Some(signed_in))
        .await;
    assert_eq!(fault.got(&live).await, Got::Allowed);
    let before_call = now_ms();
    let body = acknowledged(fault.revoke_user("user-dee", None, "INC-6").await).await;
    let after_call = now_ms();
    assert_eq!(body["sessionsRevoked"], 1, "{body}");
    // The watermark W is in [before_call, after_call]. A sign-in proves it came after W
    // when its auth_time (whole seconds) is past W: wait until such a second has begun.
    let new_sign_in = after_call / 1000 + 1;
    while now_secs() < new_sign_in {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cases = [
        ("the revoked session", live.clone(), Got::Revoked),
        (
            "an unseen sid, no auth_time",
            fault.token("user-dee", Some("sid-dee-unseen"), None).await,
            Got::SignInAgain,
        ),
        (
            "no sid, no auth_time",
            fault.token("user-dee", None, None).await,
            Got::SignInAgain,
        ),
        (
            "an unseen sid, auth_time before the revoke-all",
            fault
                .token(
                    "user-dee",
                    Some("sid-dee-old"),
                    Some(before_call / 1000 - 1),
                )
                .await,
            Got::Revoked,
        ),
        (
            "no sid, auth_time before the revoke-all",
            fault
                .token("user-dee", None, Some(before_call / 1000 - 1))
                .await,
            Got::Revoked,
        ),
        (
            "a new sign-in: auth_time after the revoke-all",
            fault
                .token("user-dee", Some("sid-dee-new"), Some(new_sign_in))
                .await,
            Got::Allowed,
        ),
    ];
    let allowed_after = check_cases(&fault, &cases).await;
    // And the same once the process was killed and started again on its data folder.
    fault.extauthz.stop(Stop::Kill).await;
    fault.extauthz.restart().await;
    let new_sign_in_token = &cases[5].1;
    assert_eq!(fault.first_answer(new_sign_in_token).await, Got::Allowed);
    let allowed_after_restart = check_cases(&fault, &cases).await;
    println!(
        "revoke-all: tokens that must be refused, allowed {allowed_after} (before the restart), {allowed_after_restart} (after)"
    );
    assert_eq!(allowed_after + allowed_after_restart, 0);
}

/// Requests each token (3 times, then as a browser); asserts the expected answer and page.
/// How many requests that must be refused were allowed.
async fn check_cases(fault: &Fault, cases: &[(&str, String, Got)]) -> usize {
    let mut refused_allowed = 0;
    for (what, token, expected) in cases {
        for _ in 0..3 {
            let got = fault.got(token).await;
            if got == Got::Allowed && *expected != Got::Allowed {
                refused_allowed += 1;
            }
            assert_eq!(&got, expected, "{what}");
        }
        let heading = fault.page(token).await.1;
        let expected_heading = match expected {
            Got::Allowed => "",
            Got::Revoked => "Your session was ended",
            Got::SignInAgain => "Sign in again",
            other => panic!("no case expects {other:?}"),
        };
        assert_eq!(heading, expected_heading, "{what}");
    }
    refused_allowed
}
