//! `grantflow-operator`: parse the settings, connect to Kubernetes and the store, serve until
//! Ctrl-C/SIGTERM, then stop gracefully (release the Lease, finish open requests).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use grantflow_core::clock::SystemClock;
use grantflow_operator::config::{Options, Settings};
use grantflow_operator::server;
use grantflow_runtime::{init_tracing, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_options(Options::parse()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(settings.log_format);
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot configure the Kubernetes client");
            return ExitCode::from(1);
        }
    };
    let clock = Arc::new(SystemClock);
    let store = match settings.store.open(settings.limits, clock.clone()) {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(%error, "cannot open the session store");
            return ExitCode::from(1);
        }
    };
    let running = match server::start(&settings, client, store, clock).await {
        Ok(running) => running,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::from(1);
        }
    };
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    ExitCode::SUCCESS
}
