//! # grantflow-extauthz
//!
//! Envoy ext_authz v3 gRPC server enforcing GrantFlow sessions, and its admin HTTP side.
//! The request path, one module per step:
//!
//! ```text
//! CheckRequest ─► request::read_check_request ─► authorize::Authorizer
//! (check_wire)    (token, accept, client)          │ token::TokenValidator (grantflow-core)
//!                                                  │ SessionStore::check   (grantflow-core)
//!                                                  ▼
//!              response::check_response ◄── outcome::Outcome
//!              (allow + identity headers | deny + pages::render)
//! ```
//! `server` wires it together with `admin` (health, readiness, metrics) and `config`.

#![forbid(unsafe_code)]

pub mod activity;
pub mod admin;
pub mod authorize;
pub mod check_client;
pub mod check_wire;
pub mod config;
pub mod dev;
pub mod grpc;
pub mod metrics;
pub mod outcome;
pub mod pages;
pub mod request;
pub mod response;
pub mod server;
