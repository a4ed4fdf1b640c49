//! Wiring: settings + store → the gRPC Check server, the admin HTTP server and the background
//! tasks (JWKS refresh, store housekeeping). Both listeners accept port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use grantflow_core::clock::Clock;
use grantflow_core::jwks::{HttpJwks, JwksLocation, KeySet, StaticJwks};
use grantflow_core::store::SessionStore;
use grantflow_core::token::TokenValidator;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::activity::Activity;
use crate::admin::{self, AdminState};
use crate::authorize::Authorizer;
use crate::config::{KeySource, Settings};
use crate::dev::DevIssuer;
use crate::grpc::{AuthorizationServer, CheckService};
use crate::metrics::Metrics;

/// How often the store's housekeeping runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);
/// Deadline of one JWKS HTTP fetch.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A started server.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub keys: Arc<KeySet>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] grantflow_runtime::BindError),
}

/// Binds both listeners and starts serving.
pub async fn start(
    settings: &Settings,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
) -> Result<Running, StartError> {
    let grpc_listener = grantflow_runtime::bind(settings.grpc_addr).await?;
    let admin_listener = grantflow_runtime::bind(settings.admin_addr).await?;
    let grpc_addr = grpc_listener.local_addr().expect("bound socket");
    let admin_addr = admin_listener.local_addr().expect("bound socket");

    let min_refetch = settings.jwks_min_refetch_interval;
    let (keys, dev) = match &settings.keys {
        KeySource::Jwks(url) => {
            let source = HttpJwks::new(JwksLocation::Jwks(url.clone()), JWKS_FETCH_TIMEOUT)
                .allow_plain_http(settings.dev);
            (KeySet::new(source, min_refetch), None)
        }
        KeySource::Discovery(url) => {
            let source = HttpJwks::new(JwksLocation::Discovery(url.clone()), JWKS_FETCH_TIMEOUT)
                .allow_plain_http(settings.dev);
            (KeySet::new(source, min_refetch), None)
        }
        KeySource::Dev => {
            let issuer = DevIssuer::generate();
            let keys = KeySet::new(StaticJwks::new(issuer.jwks()), min_refetch);
            (keys, Some(Arc::new(issuer)))
        }
    };
    let keys = Arc::new(keys);
    let metrics = Arc::new(Metrics::default());
    let validator = Arc::new(TokenValidator::new(
        settings.token.clone(),
        keys.clone(),
        clock.clone(),
    ));
    let activity = Arc::new(Activity::new(clock.clone()));
    let authorizer = Arc::new(Authorizer {
        validator: validator.clone(),
        store: store.clone(),
        store_timeout: settings.store_timeout,
        metrics: metrics.clone(),
        activity: activity.clone(),
    });

    let (shutdown, signal) = watch::channel(false);
    let stopped = |mut signal: watch::Receiver<bool>| async move {
        let _ = signal.wait_for(|stop| *stop).await;
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthorizationServer>().await;
    let check = CheckService {
        authorizer,
        sign_in_url: settings.sign_in_url.as_str().into(),
        dynamic_metadata: settings.dynamic_metadata,
        trusted_proxy_hops: settings.trusted_proxy_hops,
    };
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(check))
        .serve_with_incoming_shutdown(
            // Envoy sends one small request per check: without TCP_NODELAY, Nagle's algorithm
            // and delayed ACKs add ~40 ms to answers.
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            stopped(signal.clone()),
        );
    let grpc = tokio::spawn(async move {
        if let Err(error) = grpc.await {
            tracing::error!(%error, "gRPC server failed");
        }
    });

    // The Shared Signals transmitter's keys, refreshed like the issuer's.
    let ssf = settings.signals.ssf.as_ref().map(|ssf| admin::SsfReceiver {
        transmitter: grantflow_core::signals::Transmitter {
            issuer: ssf.issuer.clone(),
            audiences: ssf.audiences.clone(),
        },
        keys: Arc::new(KeySet::new(
            HttpJwks::new(JwksLocation::Jwks(ssf.jwks_url.clone()), JWKS_FETCH_TIMEOUT)
                .allow_plain_http(settings.dev),
            min_refetch,
        )),
    });
    let ssf_refresh = ssf.as_ref().map(|ssf| {
        ssf.keys
            .clone()
            .spawn_refresh(settings.jwks_refresh_interval)
    });
    let signals = admin::Signals {
        backchannel_audiences: settings.signals.backchannel_audiences.clone(),
        ssf,
    };
    let admin = AdminState {
        store: store.clone(),
        keys: keys.clone(),
        validator,
        metrics: metrics.clone(),
        store_timeout: settings.store_timeout,
        clock,
        admin: Arc::new(settings.admin.clone()),
        dev,
        activity,
    };
    let admin = admin::router_with_signals(signals, admin);
    let admin_signal = stopped(signal.clone());
    let admin = tokio::spawn(async move {
        // The peer address becomes the client IP of the administrator's own session.
        let served = axum::serve(
            admin_listener,
            admin.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(admin_signal)
        .await;
        if let Err(error) = served {
            tracing::error!(%error, "admin server failed");
        }
    });

    let refreshed = metrics.clone();
    let refresh = keys
        .clone()
        .spawn_refresh_observed(settings.jwks_refresh_interval, move |ok| {
            refreshed.jwks_refreshed(ok)
        });
    let maintenance = tokio::spawn(async move {
        let mut every = tokio::time::interval(MAINTENANCE_INTERVAL);
        loop {
            every.tick().await;
            if let Err(error) = store.maintain().await {
                tracing::warn!(%error, "store housekeeping failed");
            }
        }
    });

    tracing::info!(%grpc_addr, %admin_addr, "serving");
    Ok(Running {
        grpc_addr,
        admin_addr,
        keys,
        shutdown,
        servers: vec![grpc, admin],
        background: [refresh, maintenance]
            .into_iter()
            .chain(ssf_refresh)
            .collect(),
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and stops the background tasks.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        for task in self.background {
            task.abort();
        }
    }
}
