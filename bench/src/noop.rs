//! The baseline: a bare tonic ext_authz server in this process that allows everything, the
//! floor any ext_authz server pays.

use std::net::{Ipv4Addr, SocketAddr};

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use tonic::transport::server::TcpIncoming;

use crate::BoxError;

/// Name of the threads of the in-process no-op server (their CPU is its CPU).
pub const NOOP_THREADS: &str = "noop-authz";

/// Allows every request and says nothing more.
struct NoopAuthorization;

#[tonic::async_trait]
impl Authorization for NoopAuthorization {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: None,
        }))
    }
}

pub struct NoopServer {
    pub addr: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl NoopServer {
    pub fn start() -> Result<NoopServer, BoxError> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(NOOP_THREADS.into())
            .spawn(move || {
                // As many workers as extauthz has by default: one per core.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .thread_name(NOOP_THREADS)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    let served = tonic::transport::Server::builder()
                        .add_service(AuthorizationServer::new(NoopAuthorization))
                        .serve_with_incoming_shutdown(
                            TcpIncoming::from(listener).with_nodelay(Some(true)),
                            async {
                                let _ = stopped.await;
                            },
                        )
                        .await;
                    if let Err(error) = served {
                        eprintln!("no-op server failed: {error}");
                    }
                });
            })?;
        Ok(NoopServer {
            addr,
            shutdown,
            thread,
        })
    }

    pub fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.thread.join();
    }
}
