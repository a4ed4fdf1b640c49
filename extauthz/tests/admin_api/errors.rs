//! Every API error is a problem document with fixed wording.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::support::{CONTOSO, detail, harness};

/// Every error of the API is a problem document with fixed wording: unknown addresses (404),
/// wrong methods (405, with `Allow`), bodies too large (413); what a parser said about a bad
/// body is kept apart in `parser`, never in `detail`.
#[tokio::test]
async fn every_api_error_is_a_problem_document_with_fixed_wording() {
    let h = harness();
    let admin = h.admin(CONTOSO, "admin-ann");
    let problem_of = |response: Response<Body>| async move {
        let status = response.status();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let problem: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!("{status}: not JSON: {:?}", String::from_utf8_lossy(&bytes))
        });
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{status}"
        );
        (status, allow, problem)
    };

    let (status, _, problem) =
        problem_of(h.call("GET", "/api/v1/nope", Some(&admin), None, &[]).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["type"], "https://grantflow.io/problems/not-found");
    let (status, _, _) = problem_of(h.call("GET", "/nothing-here", None, None, &[]).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, allow, problem) = problem_of(
        h.call("DELETE", "/api/v1/policy", Some(&admin), None, &[])
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        problem["type"],
        "https://grantflow.io/problems/method-not-allowed"
    );
    let allow = allow.expect("an Allow header");
    assert!(allow.contains("GET") && allow.contains("PUT"), "{allow}");

    // A bad body: fixed wording, the parser's words apart (and never reflected in `detail`).
    let evil = "<script>alert(1)</script>";
    let (status, problem) = h
        .send(
            "PUT",
            "/api/v1/policy",
            &admin,
            json!({ evil: 1, "reason": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!detail(&problem).contains(evil), "{problem}");
    assert!(
        problem["parser"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{problem}"
    );

    // A body over the API's limit (64 KiB), far over it, and just under it (then judged on
    // its content: a reason that long is a 400, not a 413).
    for (size, refused) in [(3 << 20, true), (70 * 1024, true), (60 * 1024, false)] {
        let huge = "x".repeat(size);
        let response = h
            .call(
                "PUT",
                "/api/v1/policy",
                Some(&admin),
                Some(json!({ "reason": huge })),
                &[],
            )
            .await;
        let (status, _, problem) = problem_of(response).await;
        if refused {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{size} bytes");
            assert_eq!(
                problem["type"],
                "https://grantflow.io/problems/body-too-large"
            );
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{size} bytes: {problem}");
        }
    }
}
