//! `grantflow-extauthz`: parse the configuration, open the store, serve until Ctrl-C/SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use grantflow_core::clock::SystemClock;
use grantflow_extauthz::config::{Cli, Command, Settings};
use grantflow_extauthz::{check_client, server};
use grantflow_runtime::{init_tracing, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => match check_client::run(args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        None => serve(cli.options).await,
    }
}

async fn serve(options: grantflow_extauthz::config::Options) -> ExitCode {
    let settings = match Settings::resolve(options) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(settings.log_format);
    let clock = Arc::new(SystemClock);
    let store = match settings.store.open(settings.limits, clock.clone()) {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(%error, "cannot open the session store");
            return ExitCode::from(1);
        }
    };
    if settings.keys == grantflow_extauthz::config::KeySource::Dev {
        tracing::warn!(
            "development mode: a built-in issuer signs tokens; get one with `curl http://{}/dev/token`. Never use this in production.",
            settings.admin_addr
        );
    }
    let running = match server::start(&settings, store, clock).await {
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
