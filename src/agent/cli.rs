//! `fabric-sync agent …`: `inventory` (one shot, no cluster) and `run` (the DaemonSet loop), with
//! the agent's settings (flag, environment variable, default, validation naming the setting).
//! Exit codes: 0 success, 1 a failed or unclean `--once` pass (mismatch or error), 2 bad settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::cluster::KubeAgentCluster;
use super::metrics::{AgentMetrics, Health, admin_router};
use super::netlink::NetlinkVfControl;
use super::netlink::add_netlink_guids;
use super::pass::{Agent, AgentMode};
use super::readiness::ReadinessSettings;
use super::scan::scan;
use super::sysfs::Sysfs;
use crate::alloc::GuidRange;
use crate::config::{ConfigError, format_duration, parse_duration};

/// `fabric-sync agent <action>`.
#[derive(Args, Debug)]
pub struct AgentCmd {
    #[command(subcommand)]
    pub action: AgentAction,
}

#[derive(Subcommand, Debug)]
pub enum AgentAction {
    /// Print this node's HCAs, ports, pkey tables and VFs (sysfs only; no cluster needed).
    Inventory {
        /// Where sysfs is mounted.
        #[arg(long = "sysfs-root", env = "FABRIC_SYNC_SYSFS_ROOT", default_value = "/sys")]
        sysfs_root: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also read VF GUIDs over rtnetlink from each PF (meaningful on the real /sys only).
        #[arg(long)]
        netlink: bool,
    },
    /// The DaemonSet loop: Node inventory annotation, VF GUID verification (or programming).
    Run(Box<AgentArgs>),
}

#[derive(Args, Clone, Debug)]
pub struct AgentArgs {
    /// The node this agent runs on (set from the downward API `spec.nodeName`).
    #[arg(long = "node-name", env = "K8S_NODE")]
    pub node_name: Option<String>,
    /// `verify` (read only) or `program` (set assigned GUIDs, reset unheld VFs).
    #[arg(long, env = "FABRIC_SYNC_AGENT_MODE", value_enum, default_value_t = AgentMode::Verify)]
    pub mode: AgentMode,
    /// Run one pass and exit (0 when nothing mismatched and nothing failed).
    #[arg(long, env = "FABRIC_SYNC_AGENT_ONCE")]
    pub once: bool,
    /// Time between passes.
    #[arg(long, env = "FABRIC_SYNC_AGENT_INTERVAL", default_value = "60s")]
    pub interval: String,
    /// Where sysfs is mounted.
    #[arg(long = "sysfs-root", env = "FABRIC_SYNC_SYSFS_ROOT", default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// Address:port of the admin server (/metrics, /healthz), overriding POD_IP and the port.
    /// The agent uses the host network: 0.0.0.0 would put it on every address of the host.
    #[arg(long = "admin-listen", env = "FABRIC_SYNC_AGENT_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Port of the admin server, on POD_IP (127.0.0.1 when POD_IP is unset).
    #[arg(long = "admin-port", env = "FABRIC_SYNC_AGENT_ADMIN_PORT", default_value = "9810")]
    pub admin_port: String,
    /// The pod's IP (downward API `status.podIP`; the node's address with hostNetwork): where
    /// the metrics are scraped.
    #[arg(long = "pod-ip", env = "POD_IP")]
    pub pod_ip: Option<String>,
    /// First GUID of the managed range (the controller's GUID_POOL_RANGE_START).
    #[arg(long = "guid-pool-range-start", env = "GUID_POOL_RANGE_START", default_value = "02:00:00:00:00:00:00:00")]
    pub guid_range_start: String,
    /// Last GUID of the managed range (the controller's GUID_POOL_RANGE_END).
    #[arg(long = "guid-pool-range-end", env = "GUID_POOL_RANGE_END", default_value = "02:FF:FF:FF:FF:FF:FF:FF")]
    pub guid_range_end: String,
    /// How long a configured attachment's pkey may take to appear in its pkey table before the
    /// FabricReadyTimeout condition.
    #[arg(long = "fabric-ready-timeout", env = "FABRIC_SYNC_AGENT_FABRIC_READY_TIMEOUT", default_value = "5m")]
    pub fabric_ready_timeout: String,
    /// How often a waiting pkey table is read again.
    #[arg(long = "fabric-ready-poll", env = "FABRIC_SYNC_AGENT_FABRIC_READY_POLL", default_value = "1s")]
    pub fabric_ready_poll: String,
    /// kubeconfig file; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// Validated [`AgentArgs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSettings {
    pub node_name: String,
    pub mode: AgentMode,
    pub once: bool,
    pub interval: Duration,
    pub sysfs_root: PathBuf,
    pub admin_listen: SocketAddr,
    pub kubeconfig: Option<PathBuf>,
    pub guid_range: GuidRange,
    pub readiness: ReadinessSettings,
}

impl AgentSettings {
    pub fn from_args(a: &AgentArgs) -> Result<AgentSettings, ConfigError> {
        let node_name = match a.node_name.as_deref().map(str::trim) {
            Some(n) if crate::netdef::is_dns1123_subdomain(n) => n.to_string(),
            Some(n) if !n.is_empty() => {
                return Err(ConfigError::new("K8S_NODE", "node-name", format!("{n:?} is not a node name")));
            }
            _ => {
                return Err(ConfigError::new(
                    "K8S_NODE",
                    "node-name",
                    "is required: set it from the downward API (fieldRef spec.nodeName)",
                ));
            }
        };
        let interval = parse_duration(&a.interval, false)
            .map_err(|e| ConfigError::new("FABRIC_SYNC_AGENT_INTERVAL", "interval", e))?;
        if interval < Duration::from_secs(1) {
            return Err(ConfigError::new("FABRIC_SYNC_AGENT_INTERVAL", "interval", "must be at least 1s"));
        }
        check_sysfs_root(&a.sysfs_root)?;
        let admin_listen = admin_listen(a)?;
        let guid_range = crate::config::guid_range(&a.guid_range_start, &a.guid_range_end)?;
        let positive = |env: &str, flag: &str, v: &str| {
            let d = parse_duration(v, false).map_err(|e| ConfigError::new(env, flag, e))?;
            if d.is_zero() {
                return Err(ConfigError::new(env, flag, "must be more than 0"));
            }
            Ok(d)
        };
        let readiness = ReadinessSettings {
            poll: positive("FABRIC_SYNC_AGENT_FABRIC_READY_POLL", "fabric-ready-poll", &a.fabric_ready_poll)?,
            timeout: positive(
                "FABRIC_SYNC_AGENT_FABRIC_READY_TIMEOUT",
                "fabric-ready-timeout",
                &a.fabric_ready_timeout,
            )?,
        };
        Ok(AgentSettings {
            node_name,
            mode: a.mode,
            once: a.once,
            interval,
            sysfs_root: a.sysfs_root.clone(),
            admin_listen,
            kubeconfig: a.kubeconfig.clone(),
            guid_range,
            readiness,
        })
    }

    /// `/healthz` fails once no pass has finished for this long.
    pub fn stale_after(&self) -> Duration {
        self.interval.saturating_mul(3) + Duration::from_secs(60)
    }
}

/// `--admin-listen` when set; else POD_IP (or loopback) on `--admin-port`; never every address
/// of the host unless asked for.
fn admin_listen(a: &AgentArgs) -> Result<SocketAddr, ConfigError> {
    if let Some(text) = a.admin_listen.as_deref().filter(|t| !t.trim().is_empty()) {
        return text.trim().parse().map_err(|_| {
            ConfigError::new(
                "FABRIC_SYNC_AGENT_ADMIN_LISTEN",
                "admin-listen",
                format!("{text:?} is not an address:port such as 10.0.0.5:9810 (or [fd00::5]:9810)"),
            )
        });
    }
    let port: u16 = a.admin_port.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
        ConfigError::new(
            "FABRIC_SYNC_AGENT_ADMIN_PORT",
            "admin-port",
            format!("{:?} is not a port number (1-65535)", a.admin_port),
        )
    })?;
    let ip = match a.pod_ip.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t.parse::<IpAddr>().map_err(|_| {
            ConfigError::new(
                "POD_IP",
                "pod-ip",
                format!("{t:?} is not an IP address: set it from the downward API (fieldRef status.podIP)"),
            )
        })?,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Ok(SocketAddr::new(ip, port))
}

fn check_sysfs_root(root: &std::path::Path) -> Result<(), ConfigError> {
    if root.is_dir() {
        Ok(())
    } else {
        Err(ConfigError::new(
            "FABRIC_SYNC_SYSFS_ROOT",
            "sysfs-root",
            format!("{} is not a directory (mount the host's /sys there)", root.display()),
        ))
    }
}

const USAGE: u8 = 2;

/// Runs the command on a fresh single-threaded runtime.
pub fn main(cmd: AgentCmd) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(cmd)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run(cmd: AgentCmd) -> ExitCode {
    match cmd.action {
        AgentAction::Inventory { sysfs_root, json, netlink } => inventory(sysfs_root, json, netlink).await,
        AgentAction::Run(args) => match AgentSettings::from_args(&args) {
            Ok(settings) => run_agent(settings).await,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(USAGE)
            }
        },
    }
}

async fn inventory(root: PathBuf, json: bool, netlink: bool) -> ExitCode {
    if let Err(e) = check_sysfs_root(&root) {
        eprintln!("{e}");
        return ExitCode::from(USAGE);
    }
    let sys = Sysfs::new(root);
    let mut inv = scan(&sys);
    if netlink {
        match NetlinkVfControl::connect(sys) {
            Ok(vf) => add_netlink_guids(&mut inv, &vf).await,
            Err(e) => inv.warnings.push(e.to_string()),
        }
    }
    if json {
        match serde_json::to_string_pretty(&inv) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("cannot encode the inventory: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", inv.render_table());
    }
    ExitCode::SUCCESS
}

async fn run_agent(s: AgentSettings) -> ExitCode {
    crate::install_crypto_provider();
    let metrics = match AgentMetrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("cannot register metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cluster = match KubeAgentCluster::connect(s.kubeconfig.as_deref(), &s.node_name).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let sys = Sysfs::new(s.sysfs_root.clone());
    let vf = match NetlinkVfControl::connect(sys.clone()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut agent = Agent::new(&s.node_name, s.mode, sys, cluster, vf, metrics.clone())
        .with_guid_range(s.guid_range)
        .with_readiness(s.readiness);
    tracing::info!(
        node = %s.node_name,
        mode = ?s.mode,
        interval = %format_duration(s.interval),
        sysfs_root = %s.sysfs_root.display(),
        "agent starting"
    );
    if s.once {
        let report = agent.pass().await;
        return if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let health = Arc::new(Health::new(Instant::now(), s.stale_after()));
    let listener = match tokio::net::TcpListener::bind(s.admin_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("FABRIC_SYNC_AGENT_ADMIN_LISTEN (--admin-listen): cannot listen on {}: {e}", s.admin_listen);
            return ExitCode::FAILURE;
        }
    };
    let router = admin_router(metrics, health.clone());
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(crate::ops::serve(listener, router, async move {
        // Either a send or the sender dropped ends it.
        admin_stopped.await.ok();
    }));
    let shutdown = crate::ops::shutdown_signal();
    tokio::pin!(shutdown);
    tracing::info!(listen = %s.admin_listen, "admin server listening (/metrics, /healthz)");
    loop {
        // A pass is never cut short: stopping between unbind and bind would strand a VF.
        agent.pass().await;
        health.pass_finished(Instant::now());
        let next = tokio::time::Instant::now() + s.interval;
        tokio::select! {
            // Pkey tables of attachments waiting for fabric readiness are read between passes.
            _ = async { agent.settle(next).await; tokio::time::sleep_until(next).await } => {}
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("agent stopping");
    admin_stop.send(()).ok();
    match admin.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "admin server failed"),
        Err(e) => tracing::error!(error = %e, "admin server task failed"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(root: &std::path::Path) -> AgentArgs {
        AgentArgs {
            node_name: Some("node-1".into()),
            mode: AgentMode::Verify,
            once: false,
            interval: "60s".into(),
            sysfs_root: root.to_path_buf(),
            admin_listen: None,
            admin_port: "9810".into(),
            pod_ip: None,
            guid_range_start: "02:00:00:00:00:00:00:00".into(),
            guid_range_end: "02:FF:FF:FF:FF:FF:FF:FF".into(),
            fabric_ready_timeout: "5m".into(),
            fabric_ready_poll: "1s".into(),
            kubeconfig: None,
        }
    }

    #[test]
    fn defaults_validate() {
        let dir = tempfile::tempdir().unwrap();
        let s = AgentSettings::from_args(&args(dir.path())).unwrap();
        assert_eq!(s.interval, Duration::from_secs(60));
        assert_eq!(s.stale_after(), Duration::from_secs(240));
        assert_eq!(s.admin_listen, "127.0.0.1:9810".parse().unwrap(), "never every address by default");
        assert_eq!(s.readiness, ReadinessSettings { poll: Duration::from_secs(1), timeout: Duration::from_secs(300) });
        let on_pod_ip = AgentSettings::from_args(&AgentArgs { pod_ip: Some("10.0.0.5".into()), ..args(dir.path()) });
        assert_eq!(on_pod_ip.unwrap().admin_listen, "10.0.0.5:9810".parse().unwrap());
        let overridden = AgentArgs {
            admin_listen: Some("0.0.0.0:9900".into()),
            pod_ip: Some("10.0.0.5".into()),
            ..args(dir.path())
        };
        assert_eq!(AgentSettings::from_args(&overridden).unwrap().admin_listen, "0.0.0.0:9900".parse().unwrap());
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let err = |a: AgentArgs| AgentSettings::from_args(&a).unwrap_err().to_string();
        assert!(err(AgentArgs { node_name: None, ..args(dir.path()) }).starts_with("K8S_NODE (--node-name)"));
        assert!(
            err(AgentArgs { interval: "5".into(), ..args(dir.path()) })
                .starts_with("FABRIC_SYNC_AGENT_INTERVAL (--interval)")
        );
        assert!(
            err(AgentArgs { sysfs_root: dir.path().join("nope"), ..args(dir.path()) })
                .starts_with("FABRIC_SYNC_SYSFS_ROOT (--sysfs-root)")
        );
        assert!(
            err(AgentArgs { admin_listen: Some("9810".into()), ..args(dir.path()) })
                .starts_with("FABRIC_SYNC_AGENT_ADMIN_LISTEN (--admin-listen)")
        );
        assert!(err(AgentArgs { pod_ip: Some("node-1".into()), ..args(dir.path()) }).starts_with("POD_IP (--pod-ip)"));
        assert!(
            err(AgentArgs { fabric_ready_timeout: "0s".into(), ..args(dir.path()) })
                .starts_with("FABRIC_SYNC_AGENT_FABRIC_READY_TIMEOUT (--fabric-ready-timeout)")
        );
        assert!(
            err(AgentArgs { guid_range_start: "03:00:00:00:00:00:00:00".into(), ..args(dir.path()) })
                .starts_with("GUID_POOL_RANGE_END (--guid-pool-range-end)")
        );
    }
}
