//! The protected app: answers every request with the request headers it received, as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Json;
use axum::http::HeaderMap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let addr = listener.local_addr().expect("bound");
        let app = axum::Router::new().fallback(|headers: HeaderMap| async move {
            let seen: BTreeMap<String, Vec<String>> = headers
                .keys()
                .map(|name| {
                    let values = headers
                        .get_all(name)
                        .iter()
                        .map(|v| v.to_str().unwrap_or("<binary>").to_owned())
                        .collect();
                    (name.as_str().to_owned(), values)
                })
                .collect();
            Json(seen)
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
