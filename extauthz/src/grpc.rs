//! The ext_authz v3 gRPC service: CheckRequest → plain request → authorizer → CheckResponse.
//! A refusal is an answer (`Ok(CheckResponse)` with a denied status and page), never a gRPC
//! error; with `failure_mode_allow: false` Envoy also refuses when this server is unreachable.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::authorize::Authorizer;
use crate::request::read_check_request;
use crate::response::check_response;

pub struct CheckService {
    pub authorizer: Arc<Authorizer>,
    pub sign_in_url: Arc<str>,
    /// Whether answers carry Envoy dynamic metadata (`--dynamic-metadata`).
    pub dynamic_metadata: bool,
    pub trusted_proxy_hops: usize,
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let http = read_check_request(request.get_ref(), self.trusted_proxy_hops);
        let outcome = self.authorizer.authorize(&http).await;
        Ok(Response::new(check_response(
            &outcome,
            &http,
            &self.sign_in_url,
            self.dynamic_metadata,
        )))
    }
}
