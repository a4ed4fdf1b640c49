//! The Helm chart `charts/grantflow-session`, rendered by Helm's own template engine
//! (helm-python-sdk) for its defaults and the value combinations in `ci/`:
//!
//! - lint clean, schema rejects typos and values that do not fit together;
//! - every manifest passes `kubernetes-validate --strict` (except the kinds of third-party
//!   CRDs, which the tool has no schema for — those get structural checks here instead);
//! - the chart's CRDs are the generated ones;
//! - a TLS Redis (`rediss://`) with a private CA: the CA Secret is mounted into extauthz and the
//!   operator, GRANTFLOW_REDIS_CA_FILE names it, and the chart refuses it without TLS;
//! - every combination applies with real `kubectl` to a real API server (etcd and
//!   kube-apiserver, `grantflow_e2e::control_plane`) with the server's strict field
//!   validation, twice (the second apply changes nothing);
//! - extauthz starts in this process from the exact file the chart's ConfigMap holds (only
//!   listen addresses and the Redis address rewritten) and serves real Envoy traffic, on the
//!   in-chart Redis (URL and password from the chart's Secret), a plain external URL, a
//!   Redis Cluster and a Redis over TLS with a private CA (the file GRANTFLOW_REDIS_CA_FILE
//!   names, found through the Secret the Deployment mounts there);
//! - the operator binary starts with the exact arguments and environment of the chart's
//!   Deployment against a real API server (as the chart's ServiceAccount, with the chart's
//!   RBAC) and a real Redis, wins the chart's Lease, and answers an
//!   AdmissionReview over TLS with the chart-generated certificate, for the very host name and
//!   path the MutatingWebhookConfiguration names;
//! - the PrometheusRule alerts pass the real `promtool check rules` and fire (and stay quiet)
//!   in `promtool test rules`; the Grafana dashboard's queries parse; every metric both read
//!   is one the binaries expose.
//!
//! One test binary (link time on 2 cores), a module per subject: [`lint_and_schema`],
//! [`combinations`] (checked against [`shape`]), [`examples_and_images`], [`kubectl`],
//! [`extauthz_on_rendered_config`], [`operator_on_rendered_deployment`], [`alert_rules`],
//! [`dashboard`], [`metric_names`] (with [`promtool`]); what they share is in [`support`].

mod alert_rules;
mod combinations;
mod dashboard;
mod examples_and_images;
mod extauthz_on_rendered_config;
mod kubectl;
mod lint_and_schema;
mod metric_names;
mod operator_on_rendered_deployment;
mod promtool;
mod shape;
mod support;
