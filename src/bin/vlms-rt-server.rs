//! The server binary: load the guideline profile, bind, serve until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use vlms_rt::config::ServerConfig;
use vlms_rt::{guideline, startup, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = ServerConfig::parse();
    telemetry::init(config.log_format);

    let profile = match &config.guideline {
        Some(path) => guideline::from_path(path),
        None => guideline::embedded(),
    };
    let profile = match profile {
        Ok(profile) => Arc::new(profile),
        Err(error) => {
            eprintln!("vlms-rt-server: {error}");
            tracing::error!(%error, "refusing to start");
            return ExitCode::from(2);
        }
    };

    let listener = match startup::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("vlms-rt-server: {error}");
            return ExitCode::from(1);
        }
    };
    let local_addr = listener
        .local_addr()
        .map_or_else(|_| config.listen.to_string(), |addr| addr.to_string());
    let routes = match startup::routes(profile.clone()).await {
        Ok(routes) => routes,
        Err(error) => {
            eprintln!("vlms-rt-server: {error}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        listen = %local_addr,
        guideline_version = profile.version(),
        guideline_sha256 = profile.sha256(),
        "serving vlms.rt.v1.RecommendationService"
    );
    if let Err(error) = startup::serve(listener, routes, shutdown_signal()).await {
        eprintln!("vlms-rt-server: {error}");
        return ExitCode::from(1);
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining calls");
}
