//! `fabric-sync ledger release --all`: the documented way out. With the controller scaled to
//! 0, it removes every GUID the ledger records from UFM (from each pkey a claim names), then
//! drops every claim's finalizer and deletes the claims, so that uninstalling never strands a
//! namespace in `Terminating`. A claim whose UFM removal failed keeps its finalizer. Then the
//! automatic partitions go too (partition_release.rs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use kube::api::{Api, DynamicObject, ListParams};

use super::ledger::{claim_from_object, claim_resource, release_claim};
use super::partition_release::release_partitions;
use crate::config::{SmPlugin, UfmArgs, UfmSettings};
use crate::engine::{Claim, Fabric};
use crate::ib::{Guid, PKey};
use crate::ufm::{NoopFabric, UfmClient};

/// `fabric-sync ledger …`
#[derive(clap::Args, Debug)]
pub struct LedgerCmd {
    #[command(subcommand)]
    pub action: LedgerAction,
}

#[derive(clap::Subcommand, Debug)]
pub enum LedgerAction {
    /// Remove every claimed GUID from UFM, then release (delete) every GuidClaim. Scale the
    /// controller to 0 first: a running controller writes the claims again.
    Release {
        /// Release every claim of the cluster (required: there is no partial release).
        #[arg(long)]
        all: bool,
        /// Print what would be removed and released; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        #[command(flatten)]
        ufm: UfmArgs,
    },
}

pub fn main(cmd: LedgerCmd) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(cmd)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: LedgerCmd) -> ExitCode {
    let LedgerAction::Release { all, dry_run, kubeconfig, ufm } = cmd.action;
    if !all {
        eprintln!("fabric-sync ledger release: pass --all (every claim of the cluster is released)");
        return ExitCode::from(2);
    }
    let settings = match UfmSettings::from_args(&ufm) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fabric-sync ledger release: {e}");
            return ExitCode::from(2);
        }
    };
    let ufm_client = match settings.plugin {
        SmPlugin::Noop => None,
        SmPlugin::Ufm => match UfmClient::new(&settings) {
            Ok(c) => Some(std::sync::Arc::new(c)),
            Err(e) => {
                eprintln!("fabric-sync ledger release: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let client = match super::client_config(kubeconfig.as_deref(), "ledger-release").await.and_then(|c| {
        kube::Client::try_from(c)
            .map_err(|e| crate::config::ConfigError::new("KUBECONFIG", "kubeconfig", e.to_string()))
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fabric-sync ledger release: {e}");
            return ExitCode::from(2);
        }
    };
    let fabric: std::sync::Arc<dyn Fabric> = match &ufm_client {
        Some(c) => c.clone(),
        None => std::sync::Arc::new(NoopFabric),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &claim_resource());
    let claims: Vec<Claim> = match api.list(&ListParams::default()).await {
        Ok(list) => list.items.iter().filter_map(claim_from_object).collect(),
        Err(e) => {
            eprintln!("fabric-sync ledger release: cannot list GuidClaims: {e}");
            return ExitCode::from(2);
        }
    };
    let by_pkey = guids_by_pkey(&claims);
    let guids: usize = by_pkey.values().map(Vec::len).sum();
    println!("{} claims, {guids} GUID memberships in {} pkeys", claims.len(), by_pkey.len());
    if dry_run {
        for (p, gs) in &by_pkey {
            println!("would remove {} GUIDs from pkey {p}", gs.len());
        }
        println!("would release {} claims", claims.len());
        let p = release_partitions(&client, ufm_client.as_deref(), true).await;
        println!(
            "would release {} PartitionClaims and the finalizer of {} NetworkAttachmentDefinitions",
            p.claims_released, p.nads_released
        );
        return ExitCode::SUCCESS;
    }
    let mut failed_pkeys = Vec::new();
    for (p, gs) in &by_pkey {
        match fabric.remove_guids(*p, gs).await {
            Ok(()) => println!("removed {} GUIDs from pkey {p}", gs.len()),
            Err(e) => {
                eprintln!("pkey {p}: UFM refused the removal ({}): {e}", e.reason);
                failed_pkeys.push(*p);
            }
        }
    }
    let mut released = 0usize;
    let mut kept = 0usize;
    for c in &claims {
        let blocked = c.attachments.iter().any(|a| a.pkeys().any(|p| failed_pkeys.contains(&p)));
        if blocked {
            kept += 1;
            continue;
        }
        match release_claim(&client, c).await {
            Ok(_) => released += 1,
            Err(e) => {
                eprintln!("claim {}/{} (pod {}): {e}", c.pod.namespace, c.pod_uid, c.pod.name);
                kept += 1;
            }
        }
    }
    println!("released {released} claims; {kept} kept (their UFM removal or release failed)");
    let p = release_partitions(&client, ufm_client.as_deref(), false).await;
    println!(
        "released {} PartitionClaims ({} partitions deleted from UFM, {} left there) and the finalizer of {} \
         NetworkAttachmentDefinitions",
        p.claims_released, p.deleted, p.left_in_ufm, p.nads_released
    );
    if kept == 0 && p.failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Every (pkey, GUID) membership the claims record, by pkey.
fn guids_by_pkey(claims: &[Claim]) -> BTreeMap<PKey, Vec<Guid>> {
    let mut out: BTreeMap<PKey, Vec<Guid>> = BTreeMap::new();
    for a in claims.iter().flat_map(|c| &c.attachments) {
        for p in a.pkeys() {
            out.entry(p).or_default().push(a.guid);
        }
    }
    for gs in out.values_mut() {
        gs.sort_unstable();
        gs.dedup();
    }
    out
}
