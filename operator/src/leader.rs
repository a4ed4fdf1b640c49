//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): the controllers
//! run only while this replica holds the Lease, so two replicas never both act. When the lease
//! is lost the controllers are stopped (in-flight reconciles finish); when it is won again they
//! start afresh. On shutdown the lease is released so another replica takes over at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::sync::watch;

use crate::config::LeaseSettings;
use crate::metrics::Metrics;

/// How long stopping controllers may take before they are cancelled.
const DRAIN: Duration = Duration::from_secs(30);

/// Runs `lead(stop)` whenever this replica is the leader, until `shutdown` turns true. `lead`
/// must return once its `stop` receiver turns true.
pub async fn run<F, Fut>(
    client: Client,
    lease: LeaseSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    lead: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // The Lease is made on first use; retry while the API server is unreachable. Each replica
    // keeps the library's own field manager (`kube-lease-manager-<identity>`): exclusivity
    // rests on server-side-apply conflicts between distinct managers.
    let mut delay = Duration::from_millis(500);
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &lease.name)
            .with_namespace(&lease.namespace)
            .with_identity(&lease.identity)
            .with_duration(lease.duration)
            .with_grace(lease.grace)
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .build()
            .await;
        match built {
            Ok(manager) => break manager,
            Err(error) => {
                tracing::warn!(%error, lease = %lease.name, "cannot set up the Lease; retrying");
                tokio::select! {
                    _ = crate::until(&mut shutdown, true) => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let (mut leading, manager_task) = manager.watch().await;
    loop {
        tokio::select! {
            _ = crate::until(&mut shutdown, true) => break,
            alive = crate::until(&mut leading, true) => if !alive { break },
        }
        tracing::info!(identity = %lease.identity, "leading: starting the controllers");
        metrics.set_leader(true);
        let (stop, stopped) = watch::channel(false);
        let mut controllers = tokio::spawn(lead(stopped));
        let finished = tokio::select! {
            _ = crate::until(&mut shutdown, true) => false,
            _ = crate::until(&mut leading, false) => false,
            _ = &mut controllers => true,
        };
        if !finished {
            let _ = stop.send(true);
            // In-flight reconciles finish (each store call has its own deadline); past this
            // bound the rest is cancelled rather than holding up a shutdown.
            if tokio::time::timeout(DRAIN, &mut controllers).await.is_err() {
                tracing::warn!("controllers did not stop in time; cancelling them");
                controllers.abort();
            }
        }
        metrics.set_leader(false);
        tracing::info!(identity = %lease.identity, "no longer leading: controllers stopped");
        if *shutdown.borrow() {
            break;
        }
    }
    // Closing the channel makes the manager release the Lease and end.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(10), manager_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("Lease released"),
        Ok(Ok(Err(error))) => tracing::warn!(%error, "cannot release the Lease"),
        Ok(Err(error)) => tracing::warn!(%error, "the Lease manager failed"),
        Err(_) => tracing::warn!("the Lease was not released in time"),
    }
}
