//! Wiring: settings + Kubernetes client + store → the admin server, the webhook server, and
//! the controllers (run while this replica leads). One shutdown signal stops them all.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use grantflow_core::clock::Clock;
use grantflow_core::store::SessionStore;
use grantflow_crds::{Revocation, SessionPolicy};
use grantflow_runtime::{BindError, bind};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::config::Settings;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::tls::{self, TlsError};
use crate::webhook;
use crate::{MANAGER, leader, policy, revocation};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
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
            let tls = tls::tls_from_files(&files.cert, &files.key, tls::CERT_RECHECK)?;
            let listener = bind(settings.webhook_addr).await?;
            let addr = listener.local_addr().expect("bound socket");
            let router = webhook::router(metrics.clone());
            tasks.push(tokio::spawn(tls::serve_tls(
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
        let policy_controller = policy_controller
            // Another policy of the same tenant appearing, changing or going away can change
            // who owns the tenant.
            .watches(policies, watcher::Config::default(), move |changed| {
                policy::same_tenant(&peers, &changed)
            })
            .graceful_shutdown_on(stopped(stop.clone()));
        let policy_run =
            policy_controller.run(policy::reconcile, policy::error_policy, ctx.clone());
        let revocation_controller =
            Controller::new(self.api::<Revocation>(), watcher::Config::default())
                .graceful_shutdown_on(stopped(stop.clone()));
        let revocation_cache = revocation_controller.store();
        let revocation_run =
            revocation_controller.run(revocation::reconcile, revocation::error_policy, ctx);
        futures::join!(
            drain(policy_run, cache, stop.clone()),
            drain(revocation_run, revocation_cache, stop),
        );
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    crate::until(&mut stop, true).await;
}

/// Drives a controller until it ends. After `stop`, a controller whose cache never filled is
/// dropped rather than drained: kube holds every reconcile until the cache is ready, so none
/// ran, and its graceful shutdown would wait for that readiness forever (kube-runtime 5).
async fn drain<S, K>(run: S, cache: Store<K>, mut stop: watch::Receiver<bool>)
where
    S: futures::Stream,
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let run = run.for_each(|_| std::future::ready(()));
    let abandon = async {
        crate::until(&mut stop, true).await;
        if cache.wait_until_ready().now_or_never().is_none() {
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = run => {}
        _ = abandon => tracing::info!("stopped a controller before its cache filled"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use super::*;

    #[tokio::test]
    async fn a_controller_whose_cache_never_filled_is_dropped_on_stop() {
        // The hang this guards against: a watch that has not listed yet, then a shutdown.
        let (cache, _writer) = reflector::store::<Revocation>();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(drain(futures::stream::pending::<()>(), cache, stopped));
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stopped without waiting for the cache")
            .unwrap();
    }

    #[tokio::test]
    async fn a_controller_with_a_filled_cache_is_drained_to_its_end() {
        let (cache, mut writer) = reflector::store::<Revocation>();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        let (stop, stopped) = watch::channel(false);
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        // A controller still finishing a reconcile after the stop signal.
        let run = futures::stream::once(async move {
            let _ = finished.await;
        });
        let task = tokio::spawn(drain(run, cache, stopped));
        stop.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished(), "it waits for the in-flight work");
        finish.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("drained")
            .unwrap();
    }
}
