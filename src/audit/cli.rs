//! `fabric-sync audit`: reads the cluster once (kube/snapshot.rs) and lists each fabric's UFM
//! once, with the controller's own settings (kubeconfig, UFM Secret or fabrics file, engine
//! flags), then prints the report. No leadership, no write. Exit 0 clean, 1 drift or hazards,
//! 2 could not look.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{Options, TlsFacts, analyze, render_text};
use crate::config::{EngineArgs, EngineSettings, FabricsSettings, SmPlugin, UfmArgs, UfmScheme, UfmSettings};
use crate::engine::FabricListing;
use crate::ufm::{UfmClient, to_fabric_listing};

/// `fabric-sync audit`
#[derive(clap::Args, Debug)]
pub struct AuditCmd {
    /// The report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also list every GUID with its pod, network, pkey and node.
    #[arg(long)]
    pub owners: bool,
    /// Migration preflight: also flag UFM TLS settings ib-kubernetes accepted (no CA, skipped verification).
    #[arg(long)]
    pub migration: bool,
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub ufm: UfmArgs,
    /// The controller's fabrics file (docs/fabrics.md): every fabric's UFM is listed and the
    /// report is per fabric (a GUID two fabrics' UFMs list is a finding).
    #[arg(long = "fabrics-file", env = "FABRIC_SYNC_FABRICS_FILE")]
    pub fabrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

const COULD_NOT_LOOK: u8 = 2;

pub fn main(cmd: AuditCmd) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(cmd)),
        Err(e) => fail(&format!("cannot start the async runtime: {e}")),
    }
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("fabric-sync audit: could not look: {reason}");
    ExitCode::from(COULD_NOT_LOOK)
}

async fn run(cmd: AuditCmd) -> ExitCode {
    let mut engine = match EngineSettings::from_args(&cmd.engine)
        .map_err(|e| e.to_string())
        .and_then(|s| s.engine_config().map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let fabrics = match &cmd.fabrics_file {
        Some(path) => match FabricsSettings::from_file(path, &cmd.ufm) {
            Ok(f) => f,
            Err(e) => return fail(&e.to_string()),
        },
        None => match UfmSettings::from_args(&cmd.ufm) {
            Ok(s) => FabricsSettings::single(s, engine.guid_range),
            Err(e) => return fail(&e.to_string()),
        },
    };
    if cmd.fabrics_file.is_some() {
        engine.fabrics = fabrics.engine_specs();
    }
    let mut all: Vec<UfmSettings> = fabrics.fabrics.iter().map(|f| f.ufm.clone()).collect();
    if all.iter().any(|s| s.plugin == SmPlugin::Noop) {
        return fail("DAEMON_SM_PLUGIN=noop: there is no UFM to compare the cluster with");
    }
    for s in &mut all {
        // A person is waiting: one retry at most.
        s.max_attempts = s.max_attempts.min(2);
    }
    let tls = TlsFacts {
        https: all.iter().all(|s| s.scheme == UfmScheme::Https),
        ca_configured: all.iter().all(|s| s.ca_pem.is_some()),
        insecure_skip_verify: all.iter().any(|s| s.insecure_skip_verify),
    };
    let client = match crate::kube::client_config(cmd.kubeconfig.as_deref(), "audit").await.and_then(|c| {
        kube::Client::try_from(c)
            .map_err(|e| crate::config::ConfigError::new("KUBECONFIG", "kubeconfig", e.to_string()))
    }) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let tty = std::io::stderr().is_terminal();
    let snapshot = crate::kube::snapshot(&client, |resource, n| progress(tty, resource, n)).await;
    if tty {
        eprint!("\r\x1b[2K");
    }
    let snapshot = match snapshot {
        Ok(s) => s,
        Err(e) => return fail(&format!("Kubernetes API: {e}")),
    };
    for absent in &snapshot.absent {
        eprintln!("fabric-sync audit: the API server does not serve {absent} (CRD not installed); read as empty");
    }
    let mut listings = Vec::with_capacity(all.len());
    for (f, settings) in fabrics.fabrics.iter().zip(&all) {
        match list_ufm(settings).await {
            Ok(l) => listings.push(l),
            Err(e) if cmd.fabrics_file.is_some() => {
                return fail(&format!("UFM of fabric {} at {}: {e}", f.name, settings.base_url()));
            }
            Err(e) => return fail(&format!("UFM at {}: {e}", settings.base_url())),
        }
    }
    let report = analyze(engine, snapshot.events, &listings, &tls, Options { migration: cmd.migration });
    if cmd.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(&format!("encoding the report: {e}")),
        }
    } else {
        print!("{}", render_text(&report, cmd.owners));
    }
    if report.clean { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

async fn list_ufm(settings: &UfmSettings) -> Result<FabricListing, String> {
    let client = UfmClient::new(settings)
        .map_err(|e| e.to_string())?
        .with_retry_delays(Duration::from_millis(200), Duration::from_secs(1));
    let partitions = client.list_pkeys().await.map_err(|e| e.to_string())?;
    Ok(to_fabric_listing(&partitions))
}

/// One progress line on stderr for large lists (rewritten in place on a terminal).
fn progress(tty: bool, resource: &str, n: usize) {
    const LARGE: usize = 2000;
    if n < LARGE {
        return;
    }
    if tty {
        eprint!("\r\x1b[2Klisting {resource}: {n}");
    } else if n % (LARGE * 5) == 0 {
        eprintln!("listing {resource}: {n}");
    }
}
