//! The ext_authz v3 gRPC service: CheckRequest → plain request → authorizer → CheckResponse.
//! A refusal is an answer (`Ok(CheckResponse)` with a denied status and page), never a gRPC
//! error; with `failure_mode_allow: false` Envoy also refuses when this server is unreachable
//! or answers with an error.
//!
//! The service is `envoy.service.auth.v3.Authorization/Check` as `envoy-types` generates it,
//! with one change: the request is decoded as [`crate::check_wire::CheckRequest`] (only what a
//! check reads) instead of the full message. The answer is `envoy-types`' `CheckResponse`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::ext_authz::v3::pb::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::authorization_server;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::authorize::Authorizer;
use crate::check_wire::CheckRequest;
use crate::request::read_check_request;
use crate::response::check_response;

/// The gRPC method path Envoy calls: `/{SERVICE_NAME}/Check`.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

pub struct CheckService {
    pub authorizer: Arc<Authorizer>,
    pub sign_in_url: Arc<str>,
    /// Whether answers carry Envoy dynamic metadata (`--dynamic-metadata`).
    pub dynamic_metadata: bool,
    pub trusted_proxy_hops: usize,
}

impl CheckService {
    /// One check. A request whose headers are not UTF-8 is a gRPC error: Envoy refuses it.
    pub async fn check(&self, request: &CheckRequest) -> Result<CheckResponse, Status> {
        let http = read_check_request(request, self.trusted_proxy_hops)
            .map_err(|_| Status::invalid_argument("a request header is not UTF-8"))?;
        let outcome = self.authorizer.authorize(&http).await;
        Ok(check_response(
            &outcome,
            &http,
            &self.sign_in_url,
            self.dynamic_metadata,
        ))
    }
}

/// The `envoy.service.auth.v3.Authorization` gRPC server for [`CheckService`].
#[derive(Clone)]
pub struct AuthorizationServer {
    service: Arc<CheckService>,
}

impl AuthorizationServer {
    pub fn new(service: CheckService) -> Self {
        Self {
            service: Arc::new(service),
        }
    }
}

impl NamedService for AuthorizationServer {
    const NAME: &'static str = authorization_server::SERVICE_NAME;
}

/// The `Check` method as a unary gRPC service.
struct Check(Arc<CheckService>);

impl UnaryService<CheckRequest> for Check {
    type Response = CheckResponse;
    type Future = BoxFuture<Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<CheckRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.check(request.get_ref()).await.map(Response::new) })
    }
}

impl<B> Service<http::Request<B>> for AuthorizationServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            // What tonic's generated servers answer for a method they do not have.
            return Box::pin(
                async move { Ok(Status::unimplemented("no such method").into_http()) },
            );
        }
        let method = Check(self.service.clone());
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<CheckResponse, CheckRequest>::default();
            Ok(Grpc::new(codec).unary(method, request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_path_is_the_generated_services_method() {
        assert_eq!(
            CHECK_PATH,
            format!("/{}/Check", authorization_server::SERVICE_NAME)
        );
    }
}
