//! Wiring: settings + Kubernetes client + store → the admin server, the webhook server, and
//! the controllers (run while this replica leads). One shutdown signal stops them all.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use grantflow_core::clock::Clock;
use grantflow_core::store::SessionStore;
use grantflow_crds::{Revocation, SessionPolicy};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::config::Settings;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::webhook::{self, TlsError};
use crate::{MANAGER, leader, policy, revocation};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("webhook TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A started operator.
pub struct Running {
    pub admin_addr: SocketAddr,
    /// Where the webhook listens, when it has a certificate.
    pub webhook_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds the listeners and starts serving; the controllers start once the Lease is won.
pub async fn start(
    settings: &Settings,
    client: Client,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
) -> Result<Running, StartError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let metrics = Arc::new(Metrics::default());
    let (shutdown, signal) = watch::channel(false);
    let mut tasks = Vec::new();

    let admin_listener = bind(settings.admin_addr).await?;
    let admin_addr = admin_listener.local_addr().expect("bound socket");
    let admin = admin::router(AdminState {
        store: store.clone(),
        metrics: metrics.clone(),
        store_timeout: settings.store_timeout,
    });
    let mut admin_signal = signal.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(admin_listener, admin)
            .with_graceful_shutdown(async move {
                crate::until(&mut admin_signal, true).await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "admin server failed");
        }
    }));

    let webhook_addr = match &settings.webhook_tls {
        Some(files) => {
            let tls = webhook::tls_from_files(&files.cert, &files.key, webhook::CERT_RECHECK)?;
            let listener = bind(settings.webhook_addr).await?;
            let addr = listener.local_addr().expect("bound socket");
            let router = webhook::router(metrics.clone());
            tasks.push(tokio::spawn(webhook::serve_tls(
                listener,
                tls,
                router,
                signal.clone(),
            )));
            Some(addr)
        }
        None => {
            tracing::warn!(
                "no webhook certificate (--webhook-cert, --webhook-key): the admission webhook is \
                 off, so Revocations cannot record their requester and will not be applied"
            );
            None
        }
    };

    let controllers = Controllers {
        client: client.clone(),
        store,
        clock,
        metrics: metrics.clone(),
        settings: settings.clone(),
    };
    tasks.push(tokio::spawn(leader::run(
        client,
        settings.lease.clone(),
        metrics.clone(),
        signal,
        move |stop| controllers.clone().run(stop),
    )));

    tracing::info!(%admin_addr, ?webhook_addr, "operator serving");
    Ok(Running {
        admin_addr,
        webhook_addr,
        metrics,
        shutdown,
        tasks,
    })
}

impl Running {
    /// Stops the controllers (in-flight reconciles finish), releases the Lease, and stops the
    /// servers after their open requests.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What the controllers are built from, each time this replica starts leading.
#[derive(Clone)]
struct Controllers {
    client: Client,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    settings: Settings,
}

impl Controllers {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.settings.watch_namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// Runs both controllers until `stop` turns true.
    async fn run(self, stop: watch::Receiver<bool>) {
        let stopped = |mut stop: watch::Receiver<bool>| async move {
            crate::until(&mut stop, true).await;
        };
        let policies: Api<SessionPolicy> = self.api();
        let policy_controller = Controller::new(policies.clone(), watcher::Config::default());
        let cache = policy_controller.store();
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(self.settings.lease.identity.clone()),
        };
        let ctx = Arc::new(Context::new(
            self.client.clone(),
            self.store.clone(),
            Recorder::new(self.client.clone(), reporter),
            self.metrics.clone(),
            self.clock.clone(),
            cache.clone(),
            self.settings.store_timeout,
            self.settings.policy_resync,
            self.settings.revocation_retention,
        ));
        let peers = cache.clone();
        let policy_run = policy_controller
            // Another policy of the same tenant appearing, changing or going away can change
            // who owns the tenant.
            .watches(policies, watcher::Config::default(), move |changed| {
                policy::same_tenant(&peers, &changed)
            })
            .graceful_shutdown_on(stopped(stop.clone()))
            .run(policy::reconcile, policy::error_policy, ctx.clone())
            .for_each(|_| std::future::ready(()));
        let revocation_run = Controller::new(self.api::<Revocation>(), watcher::Config::default())
            .graceful_shutdown_on(stopped(stop))
            .run(revocation::reconcile, revocation::error_policy, ctx)
            .for_each(|_| std::future::ready(()));
        futures::join!(policy_run, revocation_run);
    }
}
