//! Beyond the chart: the Istio and Envoy examples fail closed and match the chart, and the
//! Dockerfiles build distroless non-root images.

use grantflow_e2e::chart::{self, NAMESPACE};
use grantflow_e2e::repo_root;

use crate::support::EXTAUTHZ;

#[test]
fn the_istio_and_envoy_examples_fail_closed_and_match_the_chart() {
    let mesh = chart::yaml_file(&repo_root().join("examples/istio/meshconfig.yaml"));
    let mesh_config = mesh
        .iter()
        .find_map(|doc| {
            let m = &doc["meshConfig"];
            (!m.is_null()).then_some(m)
        })
        .expect("a meshConfig");
    let providers = mesh_config["extensionProviders"].as_array().unwrap();
    let values = chart::yaml_file(&chart::chart_dir().join("values.yaml"));
    let provider = providers
        .iter()
        .find(|p| p["name"] == values[0]["istio"]["extensionProviderName"])
        .expect("the provider the chart's AuthorizationPolicies name");
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert_eq!(
        grpc["service"],
        format!("{EXTAUTHZ}.{NAMESPACE}.svc.cluster.local"),
        "the release of docs/install.md"
    );
    assert_eq!(grpc["port"], values[0]["extauthz"]["ports"]["grpc"]);
    assert_eq!(grpc["failOpen"], false, "fail closed");
    assert_eq!(grpc["statusOnError"], "503");
    assert!(grpc["timeout"].is_string());
    // The same snippet as IstioOperator and as istiod Helm values.
    let operator = chart::yaml_file(&repo_root().join("examples/istio/istiooperator.yaml"));
    assert_eq!(operator[0]["kind"], "IstioOperator");
    assert_eq!(
        operator[0]["spec"]["meshConfig"]["extensionProviders"], mesh_config["extensionProviders"],
        "istiooperator.yaml and meshconfig.yaml agree"
    );
    let policy = chart::yaml_file(&repo_root().join("examples/istio/authorizationpolicy.yaml"));
    let policy = &policy[0];
    assert_eq!(policy["kind"], "AuthorizationPolicy");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
    assert!(!policy["spec"]["rules"].as_array().unwrap().is_empty());
    // The chart values of the Istio walkthrough render.
    let example = repo_root().join("examples/istio/values-istio.yaml");
    let rendered = chart::render(&[&example], None).expect("values-istio.yaml renders");
    assert!(!rendered.of_kind("AuthorizationPolicy").is_empty());
    // Plain Envoy: the example bootstrap fails closed.
    let envoy = chart::yaml_file(&repo_root().join("examples/envoy/envoy.yaml"));
    let text = envoy[0].to_string();
    assert!(text.contains("\"failure_mode_allow\":false"), "{text}");
}

#[test]
fn dockerfiles_build_distroless_nonroot_images() {
    for binary in ["extauthz", "operator"] {
        let path = repo_root().join(binary).join("Dockerfile");
        let text = std::fs::read_to_string(&path).expect("a Dockerfile");
        assert!(
            text.contains("FROM rust:1.95-bookworm AS build"),
            "{binary}"
        );
        assert!(
            text.contains("--locked"),
            "{binary}: reproducible dependencies"
        );
        assert!(!text.contains("cargo install"), "{binary}");
        assert!(
            text.contains("FROM gcr.io/distroless/cc-debian12:nonroot"),
            "{binary}: distroless runtime"
        );
        assert!(text.contains("USER 65532:65532"), "{binary}: non-root");
        assert!(
            text.contains(&format!(
                "ENTRYPOINT [\"/usr/local/bin/grantflow-{binary}\"]"
            )),
            "{binary}: exec form, no shell"
        );
    }
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    for entry in ["target", ".venv", "node_modules", ".git"] {
        assert!(
            ignore.lines().any(|l| l.contains(entry)),
            "{entry} is not sent to the builder"
        );
    }
    assert!(
        !ignore.lines().any(|l| l.trim() == "Cargo.lock"),
        "--locked needs Cargo.lock"
    );
}
