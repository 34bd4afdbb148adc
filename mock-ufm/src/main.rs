//! The `mock-ufm` binary: parse flags, start the mock, print `listening on <url>`, run until
//! Ctrl-C or SIGTERM.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One crypto provider for the whole process; fine if someone installed it already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = mock_ufm::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }

    let config = cli.into_config().context("invalid configuration")?;
    let ufm = mock_ufm::MockUfm::start(config).await.context("starting mock UFM")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", ufm.url())?;
    out.flush()?;
    drop(out);

    wait_for_signal().await?;
    tracing::info!("shutting down");
    ufm.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}
