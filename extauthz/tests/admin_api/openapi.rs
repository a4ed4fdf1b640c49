//! The OpenAPI document against the router: the same routes both ways, and 429 with
//! `Retry-After` documented on every write.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use grantflow_extauthz::admin::{self, API_ROUTES, OPENAPI_JSON};
use serde_json::{Value, json};

use crate::support::{CONTOSO, harness};

#[tokio::test]
async fn the_openapi_document_matches_the_routes_both_ways() {
    let h = harness();
    let (status, doc) = h.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, serde_json::from_str::<Value>(OPENAPI_JSON).unwrap());
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().unwrap().keys();
            methods.map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    // The signal endpoints are documented too; `signals` probes them.
    let listed: BTreeSet<(String, String)> = API_ROUTES
        .iter()
        .chain(admin::SIGNAL_ROUTES)
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, listed,
        "the OpenAPI document and API_ROUTES differ"
    );

    // Every listed operation is routed (the router answers neither 405 nor its own empty 404),
    // and answers a status its operation documents.
    let admin = h.admin(CONTOSO, "admin-ann");
    for (method, path) in API_ROUTES {
        let uri = path.replace("{id}", "sid-x").replace("{user}", "user-x");
        let body = (*method != "get")
            .then(|| json!({"reason": "route probe", "maxSessionAgeSeconds": 900}))
            .filter(|_| !path.contains("/sessions/"));
        let body = body.or_else(|| (*method != "get").then(|| json!({"reason": "route probe"})));
        let response = h
            .call(&method.to_uppercase(), &uri, Some(&admin), body, &[])
            .await;
        let status = response.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if status == StatusCode::NOT_FOUND {
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await;
            assert!(!bytes.unwrap().is_empty(), "{method} {path} is not routed");
        }
        let responses = doc["paths"][*path][*method]["responses"]
            .as_object()
            .unwrap();
        assert!(
            responses.contains_key(status.as_str()),
            "{method} {path} answered {status}, which the document does not list"
        );
    }
    // Operations that are not listed are not served.
    let response = h
        .call("DELETE", "/api/v1/policy", Some(&admin), None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn the_openapi_document_lists_429_with_retry_after_on_every_write_and_the_event_stream() {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    for (method, path) in API_ROUTES {
        let responses = &doc["paths"][*path][*method]["responses"];
        let write = admin::WRITE_OPERATIONS
            .iter()
            .any(|op| op.method == *method && op.path == *path);
        assert_eq!(write, *method != "get", "{method} {path}");
        // The event stream is held to a number of streams per administrator.
        let limited = write || *path == "/api/v1/events";
        assert_eq!(
            responses.get("429").is_some(),
            limited,
            "{method} {path}: 429 is documented on the writes and the event stream only"
        );
        if limited {
            assert_eq!(
                responses["429"]["headers"]["Retry-After"]["schema"]["type"], "integer",
                "{method} {path}"
            );
        }
    }
}
