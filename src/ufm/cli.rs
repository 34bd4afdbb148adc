//! `fabric-sync ufm …`: check and inspect a UFM with the controller's own settings (same flags,
//! environment and secret directory). Exit codes: 0 success, 1 UFM failed or refused, 2 bad
//! arguments or settings.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{UfmClient, UfmError, UfmPartition};
use crate::config::{DEFAULT_FABRIC, FabricsSettings, UfmArgs, UfmAuth, UfmScheme, UfmSettings};
use crate::ib::{Guid, Membership, MtuLimit, PKey, PartitionSpec, Qos, RateLimit, ServiceLevel};

/// `fabric-sync ufm <action>`.
#[derive(Args, Debug)]
pub struct UfmCmd {
    #[command(subcommand)]
    pub action: UfmAction,
    /// The controller's fabrics file (docs/fabrics.md); with it, `--fabric` picks the UFM.
    #[arg(long = "fabrics-file", env = "FABRIC_SYNC_FABRICS_FILE", global = true)]
    pub fabrics_file: Option<std::path::PathBuf>,
    /// The fabric whose UFM to talk to (default: the only fabric, or the one named `default`).
    #[arg(long, global = true)]
    pub fabric: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum UfmAction {
    /// Check reachability, TLS, credentials and UFM's version; exit 0 only if all pass.
    Check {
        #[command(flatten)]
        conn: UfmArgs,
    },
    /// List every pkey with its member count (or, with --json, its members).
    Pkeys {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: UfmArgs,
    },
    /// Show one pkey: attributes, QoS and members.
    Show {
        /// The pkey, e.g. 0x5.
        #[arg(value_parser = parse_any_pkey)]
        pkey: PKey,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: UfmArgs,
    },
    /// Make GUIDs members of a pkey (created if absent).
    Add {
        #[arg(value_parser = parse_tenant_pkey)]
        pkey: (PKey, Option<Membership>),
        /// GUIDs in any common form (02:00:00:00:00:00:00:01, 0200000000000001).
        #[arg(required = true)]
        guids: Vec<Guid>,
        /// `full` or `limited` (default full, or the pkey's 0x8000 bit).
        #[arg(long)]
        membership: Option<Membership>,
        /// Put the pkey at index 0 of the members' pkey tables.
        #[arg(long)]
        index0: bool,
        /// Leave the pkey out of the IPoIB multicast group.
        #[arg(long)]
        no_ip_over_ib: bool,
        /// Partition MTU limit: 2 (2048) or 4 (4096).
        #[arg(long)]
        mtu_limit: Option<MtuLimit>,
        /// Service level, 0-15.
        #[arg(long)]
        service_level: Option<ServiceLevel>,
        /// Rate limit in Gb/s, one of UFM's: 2.5, 5, 10, 14, 20, 25, 30, 40, 56, 60, 80, 100, 112, 120, 168, 200, 300.
        #[arg(long)]
        rate_limit: Option<RateLimit>,
        #[command(flatten)]
        conn: UfmArgs,
    },
    /// Remove GUIDs from a pkey (removing the last member deletes the partition in UFM).
    Remove {
        #[arg(value_parser = parse_tenant_pkey)]
        pkey: (PKey, Option<Membership>),
        #[arg(required = true)]
        guids: Vec<Guid>,
        #[command(flatten)]
        conn: UfmArgs,
    },
}

fn parse_any_pkey(s: &str) -> Result<PKey, String> {
    s.parse::<PKey>().map_err(|e| e.to_string())
}

fn parse_tenant_pkey(s: &str) -> Result<(PKey, Option<Membership>), String> {
    PKey::parse_tenant(s).map_err(|e| e.to_string())
}

/// Runs the command on a fresh single-threaded runtime.
pub fn main(cmd: UfmCmd) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(cmd)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: u8 = 2;

pub async fn run(cmd: UfmCmd) -> ExitCode {
    let conn = match &cmd.action {
        UfmAction::Check { conn }
        | UfmAction::Pkeys { conn, .. }
        | UfmAction::Show { conn, .. }
        | UfmAction::Add { conn, .. }
        | UfmAction::Remove { conn, .. } => conn.clone(),
    };
    let check = matches!(cmd.action, UfmAction::Check { .. });
    let (settings, client) = match connect(conn, check, cmd.fabrics_file.as_deref(), cmd.fabric.as_deref()) {
        Ok(x) => x,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(USAGE);
        }
    };
    let result = match cmd.action {
        UfmAction::Check { .. } => return check_ufm(&settings, &client).await,
        UfmAction::Pkeys { json, .. } => pkeys(&client, json).await,
        UfmAction::Show { pkey, json, .. } => show(&client, pkey, json).await,
        UfmAction::Add {
            pkey: (pkey, bit),
            guids,
            membership,
            index0,
            no_ip_over_ib,
            mtu_limit,
            service_level,
            rate_limit,
            ..
        } => {
            let spec = PartitionSpec {
                pkey,
                membership: membership.or(bit).unwrap_or(Membership::Full),
                index0,
                ip_over_ib: !no_ip_over_ib,
                qos: Qos { mtu_limit, service_level, rate_limit },
            };
            client.add_guids(&spec, &guids).await.map(|()| {
                println!(
                    "added {} GUID(s) to {pkey} (membership {}, index0 {}, ip_over_ib {})",
                    guids.len(),
                    spec.membership,
                    spec.index0,
                    spec.ip_over_ib
                );
                true
            })
        }
        UfmAction::Remove { pkey: (pkey, _), guids, .. } => remove(&client, pkey, &guids).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings (always the UFM plugin: these commands exist to talk to UFM) and a client.
fn connect(
    mut args: UfmArgs,
    check: bool,
    fabrics_file: Option<&std::path::Path>,
    fabric: Option<&str>,
) -> Result<(UfmSettings, UfmClient), String> {
    args.sm_plugin = "ufm".into();
    let (mut settings, ca) = match fabrics_file {
        Some(path) => {
            let fabrics = FabricsSettings::from_file(path, &args).map_err(|e| format!("config: {e}"))?;
            let f = fabrics.pick(fabric).map_err(|e| format!("config: {e}"))?;
            (f.ufm.clone(), format!("UFM_CERTIFICATE (fabric {:?})", f.name))
        }
        None => {
            if let Some(name) = fabric.filter(|n| *n != DEFAULT_FABRIC) {
                return Err(format!(
                    "config: --fabric {name:?} needs a fabrics file (FABRIC_SYNC_FABRICS_FILE / --fabrics-file); \
                     without one the UFM_* settings are the one fabric {DEFAULT_FABRIC:?}"
                ));
            }
            (UfmSettings::from_args(&args).map_err(|e| format!("config: {e}"))?, ca_label(&args))
        }
    };
    if check {
        // One attempt: a person is waiting for a diagnosis, not for retries.
        settings.max_attempts = 1;
    }
    let client = UfmClient::new(&settings)
        .map_err(|e| format!("config: {e}"))?
        .with_retry_delays(Duration::from_millis(200), Duration::from_secs(2))
        .with_ca_label(ca);
    Ok((settings, client))
}

/// Which setting the trusted CA came from, for TLS messages.
fn ca_label(args: &UfmArgs) -> String {
    let in_dir = args.secret_dir.as_ref().is_some_and(|d| d.join("UFM_CERTIFICATE").is_file());
    if in_dir || args.certificate.as_deref().is_some_and(|c| !c.trim().is_empty()) {
        "UFM_CERTIFICATE".into()
    } else if let Some(path) = &args.ca_file {
        format!("UFM_CA_FILE ({})", path.display())
    } else {
        "UFM_CERTIFICATE".into()
    }
}

async fn check_ufm(settings: &UfmSettings, client: &UfmClient) -> ExitCode {
    let target = client.target();
    let auth = match settings.credentials.current() {
        Ok(c) => match c.auth {
            UfmAuth::Basic { username, .. } => format!("basic auth as user {username} on /ufmRest"),
            UfmAuth::Token(_) => "access token on /ufmRestV3".into(),
            UfmAuth::ClientCertificate => "client certificate on /ufmRest".into(),
        },
        Err(e) => {
            println!("credentials: FAILED: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("UFM: {} ({auth})", client.base_url());
    match client.version().await {
        Ok(version) => {
            println!("connect: ok ({target})");
            let tls = match (settings.scheme, settings.insecure_skip_verify, &settings.ca_pem) {
                (UfmScheme::Http, _, _) => "not used (http): credentials travel unencrypted".to_string(),
                (UfmScheme::Https, true, _) => "NOT verified (UFM_INSECURE_SKIP_VERIFY=true)".to_string(),
                (UfmScheme::Https, false, Some(_)) => "ok (certificate verified against the configured CA)".into(),
                (UfmScheme::Https, false, None) => "ok (certificate verified against the system trust store)".into(),
            };
            println!("TLS: {tls}");
            println!("auth: ok");
            println!("version: UFM {version}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", diagnose(&e, settings.scheme));
            ExitCode::FAILURE
        }
    }
}

/// One line per step reached, the failed one naming what to do about it. Over plain HTTP
/// there is no TLS step to report as passed.
fn diagnose(e: &UfmError, scheme: UfmScheme) -> String {
    let tls = match scheme {
        UfmScheme::Https => "TLS: ok",
        UfmScheme::Http => "TLS: not used (http)",
    };
    match e {
        UfmError::Connect { detail, .. } => format!("connect: FAILED: {detail}"),
        UfmError::Tls { problem, .. } => format!("connect: ok\nTLS: FAILED: {problem}"),
        UfmError::Timeout { .. } | UfmError::Broken { .. } => format!("request: FAILED: {e}"),
        UfmError::Unauthorized { who, hint, answer, .. } => {
            format!("connect: ok\n{tls}\nauth: FAILED: UFM answered 401 for {who}: {hint} (UFM said: {answer})")
        }
        UfmError::Forbidden { .. } => format!("connect: ok\n{tls}\nauth: FAILED: {e}"),
        UfmError::Credentials(c) => format!("credentials: FAILED: {c}"),
        other => format!("connect: ok\n{tls}\nversion: FAILED: {other}"),
    }
}

/// Removes the GUIDs UFM holds in `pkey` among `guids` and says what it held: UFM takes the
/// removal of a non-member silently, so "removed" alone would claim what did not happen.
async fn remove(client: &UfmClient, pkey: PKey, guids: &[Guid]) -> Result<bool, UfmError> {
    let mut seen = HashSet::new();
    let asked: Vec<Guid> = guids.iter().copied().filter(|g| seen.insert(*g)).collect();
    let partition = client.get_pkey(pkey).await?;
    let held: HashSet<Guid> = partition.iter().flat_map(|p| p.members.iter().map(|m| m.guid)).collect();
    let (members, strangers): (Vec<Guid>, Vec<Guid>) = asked.iter().partition(|g| held.contains(g));
    if !members.is_empty() {
        client.remove_guids(pkey, &members).await?;
    }
    println!("{}", removal_summary(pkey, partition.is_some(), asked.len(), &members, &strangers, held.len()));
    Ok(true)
}

/// `removed 1 of 2 GUID(s) from 0x5; 1 was not a member: 02:00:…`.
fn removal_summary(
    pkey: PKey,
    exists: bool,
    asked: usize,
    removed: &[Guid],
    strangers: &[Guid],
    held: usize,
) -> String {
    const LISTED: usize = 10;
    let mut out = format!("removed {} of {asked} GUID(s) from {pkey}", removed.len());
    if !exists {
        out.push_str(&format!(" (pkey {pkey} does not exist in UFM)"));
    } else if !strangers.is_empty() {
        let mut list: Vec<String> = strangers.iter().take(LISTED).map(Guid::to_string).collect();
        if strangers.len() > LISTED {
            list.push(format!("and {} more", strangers.len() - LISTED));
        }
        let verb = if strangers.len() == 1 { "was not a member" } else { "were not members" };
        out.push_str(&format!("; {} {verb}: {}", strangers.len(), list.join(", ")));
    }
    if exists && !removed.is_empty() && removed.len() == held {
        out.push_str(&format!("; {pkey} has no members left, so UFM deletes the partition"));
    }
    out
}

async fn pkeys(client: &UfmClient, as_json: bool) -> Result<bool, UfmError> {
    let parts = client.list_pkeys().await?;
    if as_json {
        let map: serde_json::Map<String, serde_json::Value> =
            parts.values().map(|p| (p.pkey.to_string(), partition_json(p))).collect();
        println!("{}", serde_json::Value::Object(map));
        return Ok(true);
    }
    println!("{:<8} {:<24} {:<6} MEMBERS", "PKEY", "NAME", "IPOIB");
    for p in parts.values() {
        let ipoib = p.ip_over_ib.map_or("-".to_string(), |b| b.to_string());
        println!("{:<8} {:<24} {:<6} {}", p.pkey.to_string(), p.name.as_deref().unwrap_or("-"), ipoib, p.members.len());
    }
    Ok(true)
}

async fn show(client: &UfmClient, pkey: PKey, as_json: bool) -> Result<bool, UfmError> {
    let Some(p) = client.get_pkey(pkey).await? else {
        if as_json {
            println!("null");
        }
        eprintln!("pkey {pkey} does not exist in UFM");
        return Ok(false);
    };
    if as_json {
        println!("{}", partition_json(&p));
        return Ok(true);
    }
    println!("pkey: {}", p.pkey);
    println!("name: {}", p.name.as_deref().unwrap_or("-"));
    println!("ip_over_ib: {}", p.ip_over_ib.map_or("-".to_string(), |b| b.to_string()));
    if let Some(q) = p.qos {
        let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "qos: mtu_limit={} service_level={} rate_limit={}",
            show(q.mtu_limit.map(|v| v.to_string())),
            show(q.service_level.map(|v| v.to_string())),
            show(q.rate_limit.map(|v| v.to_string()))
        );
    }
    println!("members: {}", p.members.len());
    for m in &p.members {
        println!("  {}  {:<7} {}", m.guid, m.membership, if m.index0 { "index0" } else { "" });
    }
    Ok(true)
}

fn partition_json(p: &UfmPartition) -> serde_json::Value {
    let members: Vec<serde_json::Value> = p
        .members
        .iter()
        .map(|m| json!({"guid": m.guid.to_string(), "membership": m.membership.as_str(), "index0": m.index0}))
        .collect();
    json!({
        "pkey": p.pkey.to_string(),
        "name": p.name,
        "ip_over_ib": p.ip_over_ib,
        "qos": p.qos,
        "members": members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(subcommand)]
        action: UfmAction,
    }

    #[test]
    fn bad_pkeys_and_guids_are_usage_errors() {
        let e = Top::try_parse_from(["ufm", "add", "0x7fff", "0200000000000001"]).err().unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("default (management) partition"), "{e}");
        let e = Top::try_parse_from(["ufm", "remove", "0x5", "02:00:zz"]).err().unwrap();
        assert_eq!(e.exit_code(), 2);
        let e = Top::try_parse_from(["ufm", "add", "0x5"]).err().unwrap();
        assert_eq!(e.exit_code(), 2);
        let ok = Top::try_parse_from(["ufm", "add", "0x8005", "02:00:00:00:00:00:00:01", "--mtu-limit", "4"]).unwrap();
        match ok.action {
            UfmAction::Add { pkey, mtu_limit, index0, .. } => {
                assert_eq!(pkey, (PKey::new(5).unwrap(), Some(Membership::Full)));
                assert_eq!((mtu_limit, index0), (Some(MtuLimit::Mtu4k), false));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn check_never_claims_tls_over_http() {
        let e = UfmError::Unauthorized {
            op: super::super::Op::Version,
            who: "user admin".into(),
            hint: "check UFM_USERNAME/UFM_PASSWORD",
            answer: "no".into(),
        };
        let http = diagnose(&e, UfmScheme::Http);
        assert!(http.contains("TLS: not used (http)") && !http.contains("TLS: ok"), "{http}");
        assert!(diagnose(&e, UfmScheme::Https).contains("TLS: ok"));
        let e = UfmError::Rejected { op: super::super::Op::Version, status: 404, answer: String::new() };
        assert!(diagnose(&e, UfmScheme::Http).contains("TLS: not used (http)"));
    }

    #[test]
    fn removal_summary_says_what_ufm_held() {
        let p = PKey::new(5).unwrap();
        let g = |v| Guid::new(v).unwrap();
        assert_eq!(
            removal_summary(p, true, 2, &[g(1)], &[g(2)], 3),
            "removed 1 of 2 GUID(s) from 0x5; 1 was not a member: 00:00:00:00:00:00:00:02"
        );
        assert_eq!(
            removal_summary(p, true, 1, &[g(1)], &[], 1),
            "removed 1 of 1 GUID(s) from 0x5; 0x5 has no members left, so UFM deletes the partition"
        );
        assert_eq!(
            removal_summary(p, false, 2, &[], &[g(1), g(2)], 0),
            "removed 0 of 2 GUID(s) from 0x5 (pkey 0x5 does not exist in UFM)"
        );
        let many: Vec<Guid> = (1..=12).map(g).collect();
        let s = removal_summary(p, true, 12, &[], &many, 4);
        assert!(
            s.starts_with("removed 0 of 12 GUID(s) from 0x5; 12 were not members: ") && s.ends_with(", and 2 more"),
            "{s}"
        );
    }
}
