//! The admission webhook: an AdmissionReview in, a JSONPatch out — in process and over TLS
//! with a freshly made certificate, as the API server calls it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use grantflow_operator::metrics::Metrics;
use grantflow_operator::webhook;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

const ANNOTATION: &str = "session.grantflow.io/requested-by";

fn revocation(annotations: Option<Value>) -> Value {
    let mut metadata = json!({ "name": "inc-2041", "namespace": "team" });
    if let Some(a) = annotations {
        metadata["annotations"] = a;
    }
    json!({
        "apiVersion": "session.grantflow.io/v1alpha1",
        "kind": "Revocation",
        "metadata": metadata,
        "spec": {
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "target": { "userId": "user-mallory" },
            "reason": "INC-2041",
        },
    })
}

/// An AdmissionReview as the API server sends it.
fn review(operation: &str, user: Option<&str>, object: Value, old: Option<Value>) -> Value {
    let mut user_info = json!({ "groups": ["system:authenticated"] });
    if let Some(user) = user {
        user_info["username"] = user.into();
    }
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "session.grantflow.io", "version": "v1alpha1", "kind": "Revocation" },
            "resource": { "group": "session.grantflow.io", "version": "v1alpha1", "resource": "revocations" },
            "requestKind": { "group": "session.grantflow.io", "version": "v1alpha1", "kind": "Revocation" },
            "requestResource": { "group": "session.grantflow.io", "version": "v1alpha1", "resource": "revocations" },
            "name": "inc-2041",
            "namespace": "team",
            "operation": operation,
            "userInfo": user_info,
            "object": object,
            "oldObject": old,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" },
        },
    })
}

/// Runs a review through the webhook; returns (allowed, decoded JSONPatch or Null, response).
fn run(review: Value) -> (bool, Value, Value) {
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review).unwrap();
    let (response, _) = webhook::answer(review);
    decode(webhook::to_wire(response.into_review()))
}

fn decode(answered: Value) -> (bool, Value, Value) {
    let response = answered["response"].clone();
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    // `patch` is base64 (Go's encoding of []byte), as the API server reads it.
    let bytes: Option<Vec<u8>> = response["patch"].as_str().map(|encoded| {
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap()
    });
    let patch = match bytes {
        Some(bytes) => {
            assert_eq!(response["patchType"], "JSONPatch");
            serde_json::from_slice(&bytes).unwrap()
        }
        None => Value::Null,
    };
    (response["allowed"] == true, patch, response)
}

#[test]
fn create_records_the_requesting_user() {
    let (allowed, patch, _) = run(review(
        "CREATE",
        Some("alice@contoso.com"),
        revocation(None),
        None,
    ));
    assert!(allowed);
    assert_eq!(
        patch,
        json!([{ "op": "add", "path": "/metadata/annotations", "value": { ANNOTATION: "alice@contoso.com" } }])
    );
}

#[test]
fn a_requester_supplied_annotation_is_overwritten() {
    let forged = revocation(Some(
        json!({ ANNOTATION: "ceo@contoso.com", "team": "red" }),
    ));
    let (allowed, patch, _) = run(review(
        "CREATE",
        Some("system:serviceaccount:ops:incident-bot"),
        forged.clone(),
        None,
    ));
    assert!(allowed);
    assert_eq!(
        patch,
        json!([{ "op": "add", "path": "/metadata/annotations/session.grantflow.io~1requested-by",
                 "value": "system:serviceaccount:ops:incident-bot" }])
    );
    // Applied as the API server would: the forged value is gone, the rest stays.
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    let mut object = forged;
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(
        object["metadata"]["annotations"],
        json!({ ANNOTATION: "system:serviceaccount:ops:incident-bot", "team": "red" })
    );
}

#[test]
fn an_update_cannot_change_or_add_the_annotation() {
    let recorded = revocation(Some(json!({ ANNOTATION: "alice@contoso.com" })));
    let edited = revocation(Some(json!({ ANNOTATION: "bob@contoso.com" })));
    let (allowed, patch, _) = run(review(
        "UPDATE",
        Some("bob@contoso.com"),
        edited,
        Some(recorded.clone()),
    ));
    assert!(allowed);
    assert_eq!(
        patch,
        json!([{ "op": "add", "path": "/metadata/annotations/session.grantflow.io~1requested-by", "value": "alice@contoso.com" }])
    );

    let (_, patch, _) = run(review(
        "UPDATE",
        Some("bob@contoso.com"),
        revocation(Some(json!({ ANNOTATION: "bob@contoso.com" }))),
        Some(revocation(None)),
    ));
    assert_eq!(
        patch,
        json!([{ "op": "remove", "path": "/metadata/annotations/session.grantflow.io~1requested-by" }])
    );

    // Untouched: nothing to patch.
    let (allowed, patch, _) = run(review(
        "UPDATE",
        Some("bob@contoso.com"),
        recorded.clone(),
        Some(recorded),
    ));
    assert!(allowed);
    assert_eq!(patch, Value::Null);
}

#[test]
fn a_nameless_requester_is_refused() {
    let (allowed, patch, response) = run(review("CREATE", None, revocation(None), None));
    assert!(!allowed);
    assert_eq!(patch, Value::Null);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no name")
    );
}

#[tokio::test]
async fn served_over_tls_as_the_api_server_calls_it() {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let tls = webhook::tls_from_pem(
        generated.cert.pem().as_bytes(),
        generated.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(webhook::serve_tls(
        listener,
        tls,
        webhook::router(metrics.clone()),
        stopped,
    ));

    let ca = reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let answered: Value = http
        .post(format!("https://{addr}{}", webhook::PATH))
        .json(&review(
            "CREATE",
            Some("alice@contoso.com"),
            revocation(Some(json!({ ANNOTATION: "mallory" }))),
            None,
        ))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answered["kind"], "AdmissionReview");
    assert_eq!(answered["apiVersion"], "admission.k8s.io/v1");
    let (allowed, patch, _) = decode(answered);
    assert!(allowed);
    assert_eq!(patch[0]["value"], "alice@contoso.com");

    // Plain HTTP is not served.
    let plain = reqwest::Client::new()
        .post(format!("http://{addr}{}", webhook::PATH))
        .timeout(Duration::from_secs(5))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // A body that is no AdmissionReview is refused by the framework, and counted.
    let refused = http
        .post(format!("https://{addr}{}", webhook::PATH))
        .json(&json!({"kind": "Pod"}))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the webhook stops")
        .unwrap();
    assert!(
        metrics
            .render()
            .contains(r#"grantflow_operator_admission_reviews_total{result="patched"} 1"#)
    );
    assert!(
        metrics
            .render()
            .contains(r#"grantflow_operator_admission_reviews_total{result="rejected"} 1"#)
    );
}

/// A certificate rotated in place (as cert-manager renews a mounted Secret) is served without
/// a restart; a half-written rotation keeps the old one.
#[tokio::test]
async fn a_rotated_certificate_is_picked_up() {
    let dir =
        std::env::temp_dir().join(format!("grantflow-webhook-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    let write = |generated: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        std::fs::write(&cert_file, generated.cert.pem()).unwrap();
        std::fs::write(&key_file, generated.signing_key.serialize_pem()).unwrap();
    };
    let first = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let second = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    write(&first);
    let tls = webhook::tls_from_files(&cert_file, &key_file, Duration::ZERO).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(webhook::serve_tls(
        listener,
        tls,
        webhook::router(Arc::new(Metrics::default())),
        stopped,
    ));
    let url = format!("https://{addr}{}", webhook::PATH);
    let review = review("CREATE", Some("alice"), revocation(None), None);
    // A fresh client per request: no pooled connection, no TLS session to resume.
    let served = |trusted: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        let ca = reqwest::Certificate::from_pem(trusted.cert.pem().as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (url, review) = (url.clone(), review.clone());
        async move { client.post(url).json(&review).send().await.is_ok() }
    };
    assert!(served(&first).await);
    assert!(!served(&second).await);

    // Half-written: the new certificate with the old key does not load; the old one stays.
    std::fs::write(&cert_file, second.cert.pem()).unwrap();
    assert!(served(&first).await);

    write(&second);
    assert!(served(&second).await, "the new certificate is served");
    assert!(!served(&first).await);

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    std::fs::remove_dir_all(dir).ok();
}
