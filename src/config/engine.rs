//! Engine and controller settings: the GUID pool, batching, drift repair, pkey budget, policy,
//! and the controller's Kubernetes identity.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, parse_duration};
use crate::alloc::{DEFAULT_PKEY_CAPACITY, DEFAULT_RESERVED_SLOTS, GuidRange, PKEY_RANGE_SETTING, PkeyRange};
use crate::engine::{EngineConfig, Policy, PolicyError, Timing};
use crate::ib::Guid;

pub use crate::engine::PolicyMode;

// The engine's enum, parsed from the command line here so that the core knows nothing of clap.
impl clap::ValueEnum for PolicyMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[PolicyMode::Off, PolicyMode::Warn, PolicyMode::Enforce]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            PolicyMode::Off => PossibleValue::new("off").help("No policy (as ib-kubernetes)"),
            PolicyMode::Warn => {
                PossibleValue::new("warn").help("Report violations as Events and metrics, configure anyway")
            }
            PolicyMode::Enforce => PossibleValue::new("enforce").help("Refuse violating attachments"),
        })
    }
}

/// When `configured` annotations are adopted into the ownership ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AdoptAnnotations {
    /// Once, when the ledger is empty at start (migration from ib-kubernetes).
    #[default]
    IfLedgerEmpty,
    /// Never: annotations are output only (set it once the migration is done).
    Never,
}

/// Every engine setting's default, written once: the flags' defaults and `EngineArgs::default`
/// both read these (README's configuration table states them).
pub mod defaults {
    pub const GUID_RANGE_START: &str = "02:00:00:00:00:00:00:00";
    pub const GUID_RANGE_END: &str = "02:FF:FF:FF:FF:FF:FF:FF";
    pub const PERIODIC_UPDATE: &str = "5";
    pub const BATCH_WINDOW: &str = "20ms";
    pub const BATCH_MAX_GUIDS: &str = "2000";
    pub const MAX_PARALLEL_PKEYS: &str = "8";
    pub const PATCH_CONCURRENCY: &str = "16";
    pub const RESYNC_INTERVAL: &str = "60s";
    pub const MASS_REMOVAL_SHARE: &str = "0.5";
    pub const MASS_REMOVAL_MIN: &str = "32";
    pub const RETRY_MAX: &str = "60s";
    pub const MAX_ATTACHMENTS_PER_POD: &str = "32";
}

#[derive(clap::Args, Clone, Debug)]
pub struct EngineArgs {
    /// First GUID of the pool (inclusive).
    #[arg(long = "guid-pool-range-start", env = "GUID_POOL_RANGE_START", default_value = defaults::GUID_RANGE_START)]
    pub guid_range_start: String,
    /// Last GUID of the pool (inclusive).
    #[arg(long = "guid-pool-range-end", env = "GUID_POOL_RANGE_END", default_value = defaults::GUID_RANGE_END)]
    pub guid_range_end: String,
    /// Longest a pending change waits before it is pushed (bare number = seconds, as ib-kubernetes).
    #[arg(long = "periodic-update", env = "DAEMON_PERIODIC_UPDATE", default_value = defaults::PERIODIC_UPDATE)]
    pub periodic_update: String,
    /// How long changes are collected into one batch after the first arrives.
    #[arg(long = "batch-window", env = "FABRIC_SYNC_BATCH_WINDOW", default_value = defaults::BATCH_WINDOW)]
    pub batch_window: String,
    /// A batch closes early once it holds this many GUID changes.
    #[arg(long = "batch-max-guids", env = "FABRIC_SYNC_BATCH_MAX_GUIDS", default_value = defaults::BATCH_MAX_GUIDS)]
    pub batch_max_guids: String,
    /// pkeys changed in parallel (one change in flight per pkey).
    #[arg(long = "max-parallel-pkeys", env = "FABRIC_SYNC_MAX_PARALLEL_PKEYS", default_value = defaults::MAX_PARALLEL_PKEYS)]
    pub max_parallel_pkeys: String,
    /// Pod annotation patches in flight at once.
    #[arg(long = "patch-concurrency", env = "FABRIC_SYNC_PATCH_CONCURRENCY", default_value = defaults::PATCH_CONCURRENCY)]
    pub patch_concurrency: String,
    /// Period of the full drift repair against UFM.
    #[arg(long = "resync-interval", env = "FABRIC_SYNC_RESYNC_INTERVAL", default_value = defaults::RESYNC_INTERVAL)]
    pub resync_interval: String,
    /// pkey-table entries per node when its agent has not reported any.
    #[arg(long = "pkey-capacity", env = "FABRIC_SYNC_PKEY_CAPACITY", default_value_t = DEFAULT_PKEY_CAPACITY)]
    pub pkey_capacity: u16,
    /// pkey-table entries per node kept for the default partition.
    #[arg(long = "pkey-reserved-slots", env = "FABRIC_SYNC_PKEY_RESERVED_SLOTS", default_value_t = DEFAULT_RESERVED_SLOTS)]
    pub pkey_reserved_slots: u16,
    /// Refuse a removal that would take more than this share of a pkey's members at once.
    #[arg(long = "mass-removal-share", env = "FABRIC_SYNC_MASS_REMOVAL_SHARE", default_value = defaults::MASS_REMOVAL_SHARE)]
    pub mass_removal_share: String,
    /// The mass-removal breaker ignores removals of at most this many GUIDs.
    #[arg(long = "mass-removal-min", env = "FABRIC_SYNC_MASS_REMOVAL_MIN", default_value = defaults::MASS_REMOVAL_MIN)]
    pub mass_removal_min: String,
    /// Tenant pkey policy file (YAML).
    #[arg(long = "policy-file", env = "FABRIC_SYNC_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
    /// What the policy does with a violation.
    #[arg(long = "policy-mode", env = "FABRIC_SYNC_POLICY_MODE", value_enum, default_value_t = PolicyMode::Off)]
    pub policy_mode: PolicyMode,
    /// Longest pause between retries of a transient failure (a permanent refusal waits 10 times as long).
    #[arg(long = "retry-max", env = "FABRIC_SYNC_RETRY_MAX", default_value = defaults::RETRY_MAX)]
    pub retry_max: String,
    /// When ib-kubernetes' `configured` annotations are adopted into the ledger.
    #[arg(long = "adopt-annotations", env = "FABRIC_SYNC_ADOPT_ANNOTATIONS", value_enum, default_value_t = AdoptAnnotations::IfLedgerEmpty)]
    pub adopt_annotations: AdoptAnnotations,
    /// Most IB attachments one pod may ask for; a pod over it is refused before any GUID is taken.
    #[arg(long = "max-attachments-per-pod", env = "FABRIC_SYNC_MAX_ATTACHMENTS_PER_POD", default_value = defaults::MAX_ATTACHMENTS_PER_POD)]
    pub max_attachments_per_pod: String,
    /// Managed pkey range for automatic partitions (`0x1000-0x1fff`); unset: the feature is off.
    #[arg(long = "pkey-range", env = "FABRIC_SYNC_PKEY_RANGE")]
    pub pkey_range: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    pub guid_range: GuidRange,
    pub periodic_update: Duration,
    pub batch_window: Duration,
    pub batch_max_guids: usize,
    pub max_parallel_pkeys: usize,
    pub patch_concurrency: usize,
    pub resync_interval: Duration,
    pub pkey_capacity: u16,
    pub pkey_reserved_slots: u16,
    pub mass_removal_share: f64,
    pub mass_removal_min: usize,
    pub policy_file: Option<PathBuf>,
    pub policy_mode: PolicyMode,
    pub retry_max: Duration,
    pub adopt_annotations: AdoptAnnotations,
    pub max_attachments_per_pod: usize,
    /// The managed pkey range (`None`: automatic partitions are off).
    pub pkey_range: Option<PkeyRange>,
}

/// `GUID_POOL_RANGE_START`/`_END` (the controller's and the agent's): both GUIDs, start ≤ end.
pub fn guid_range(start: &str, end: &str) -> Result<GuidRange, ConfigError> {
    let guid =
        |env: &str, flag: &str, v: &str| v.parse::<Guid>().map_err(|e| ConfigError::new(env, flag, e.to_string()));
    let start = guid("GUID_POOL_RANGE_START", "guid-pool-range-start", start)?;
    let end = guid("GUID_POOL_RANGE_END", "guid-pool-range-end", end)?;
    GuidRange::new(start, end)
        .map_err(|e| ConfigError::new("GUID_POOL_RANGE_END", "guid-pool-range-end", e.to_string()))
}

impl EngineSettings {
    /// The engine's own settings, converted once here; reads the tenant policy file when one is
    /// set (the engine never touches the file system) and hands it in as data.
    pub fn engine_config(&self) -> Result<EngineConfig, PolicyError> {
        let policy = match &self.policy_file {
            None => None,
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
                    source_name: name.clone(),
                    detail: format!("cannot read it ({e}); check FABRIC_SYNC_POLICY_FILE"),
                })?;
                Some(Policy::parse(&name, &text)?)
            }
        };
        Ok(EngineConfig {
            guid_range: self.guid_range,
            // Set from the fabrics file by the caller (`Settings::engine_config`); empty: `default`.
            fabrics: Vec::new(),
            pkey_capacity: self.pkey_capacity,
            pkey_reserved_slots: self.pkey_reserved_slots,
            mass_removal_share: self.mass_removal_share,
            mass_removal_min: self.mass_removal_min,
            batch_max_guids: self.batch_max_guids,
            policy,
            policy_mode: self.policy_mode,
            adopt_annotations: self.adopt_annotations == AdoptAnnotations::IfLedgerEmpty,
            max_attachments_per_pod: self.max_attachments_per_pod,
            pkey_range: self.pkey_range,
        })
    }

    /// The engine loop's timing and concurrency.
    pub fn timing(&self) -> Timing {
        Timing {
            batch_window: self.batch_window,
            periodic_update: self.periodic_update,
            resync_interval: self.resync_interval,
            max_parallel_pkeys: self.max_parallel_pkeys,
            patch_concurrency: self.patch_concurrency,
            retry_max: self.retry_max,
        }
    }

    pub fn from_args(a: &EngineArgs) -> Result<EngineSettings, ConfigError> {
        let guid_range = guid_range(&a.guid_range_start, &a.guid_range_end)?;
        let duration = |env: &str, flag: &str, v: &str, bare: bool| {
            let d = parse_duration(v, bare).map_err(|e| ConfigError::new(env, flag, e))?;
            if d.is_zero() {
                return Err(ConfigError::new(env, flag, "must be more than 0"));
            }
            Ok(d)
        };
        let count = |env: &str, flag: &str, v: &str, max: usize| match v.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::new(env, flag, format!("{v:?} must be a whole number from 1 to {max}"))),
        };
        let periodic_update = duration("DAEMON_PERIODIC_UPDATE", "periodic-update", &a.periodic_update, true)?;
        let batch_window = duration("FABRIC_SYNC_BATCH_WINDOW", "batch-window", &a.batch_window, false)?;
        if batch_window > periodic_update {
            return Err(ConfigError::new(
                "FABRIC_SYNC_BATCH_WINDOW",
                "batch-window",
                "is longer than DAEMON_PERIODIC_UPDATE, which bounds how long a change may wait",
            ));
        }
        if a.pkey_capacity == 0 || a.pkey_reserved_slots >= a.pkey_capacity {
            return Err(ConfigError::new(
                "FABRIC_SYNC_PKEY_RESERVED_SLOTS",
                "pkey-reserved-slots",
                format!(
                    "{} reserved of {} pkey-table entries leaves no room for tenants",
                    a.pkey_reserved_slots, a.pkey_capacity
                ),
            ));
        }
        let share: f64 = match a.mass_removal_share.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s <= 1.0 => s,
            _ => {
                return Err(ConfigError::new(
                    "FABRIC_SYNC_MASS_REMOVAL_SHARE",
                    "mass-removal-share",
                    format!(
                        "{:?} must be a fraction above 0 and at most 1 (1 turns the breaker off)",
                        a.mass_removal_share
                    ),
                ));
            }
        };
        let mass_removal_min = match a.mass_removal_min.trim().parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return Err(ConfigError::new(
                    "FABRIC_SYNC_MASS_REMOVAL_MIN",
                    "mass-removal-min",
                    format!("{:?} must be a whole number", a.mass_removal_min),
                ));
            }
        };
        if a.policy_mode != PolicyMode::Off && a.policy_file.is_none() {
            return Err(ConfigError::new(
                "FABRIC_SYNC_POLICY_FILE",
                "policy-file",
                "is required when FABRIC_SYNC_POLICY_MODE is warn or enforce",
            ));
        }
        let pkey_range = match a.pkey_range.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(PkeyRange::parse(text).map_err(|e| {
                // The range's own message names the setting too; say it once.
                let detail = e.to_string();
                let detail = detail.strip_prefix(&format!("{PKEY_RANGE_SETTING}: ")).unwrap_or(&detail).to_string();
                ConfigError::new("FABRIC_SYNC_PKEY_RANGE", "pkey-range", detail)
            })?),
        };
        Ok(EngineSettings {
            pkey_range,
            guid_range,
            periodic_update,
            batch_window,
            batch_max_guids: count("FABRIC_SYNC_BATCH_MAX_GUIDS", "batch-max-guids", &a.batch_max_guids, 1_000_000)?,
            max_parallel_pkeys: count(
                "FABRIC_SYNC_MAX_PARALLEL_PKEYS",
                "max-parallel-pkeys",
                &a.max_parallel_pkeys,
                256,
            )?,
            patch_concurrency: count("FABRIC_SYNC_PATCH_CONCURRENCY", "patch-concurrency", &a.patch_concurrency, 1024)?,
            resync_interval: duration("FABRIC_SYNC_RESYNC_INTERVAL", "resync-interval", &a.resync_interval, false)?,
            pkey_capacity: a.pkey_capacity,
            pkey_reserved_slots: a.pkey_reserved_slots,
            mass_removal_share: share,
            mass_removal_min,
            policy_file: a.policy_file.clone(),
            policy_mode: a.policy_mode,
            retry_max: duration("FABRIC_SYNC_RETRY_MAX", "retry-max", &a.retry_max, false)?,
            adopt_annotations: a.adopt_annotations,
            max_attachments_per_pod: count(
                "FABRIC_SYNC_MAX_ATTACHMENTS_PER_POD",
                "max-attachments-per-pod",
                &a.max_attachments_per_pod,
                4096,
            )?,
        })
    }
}

impl Default for EngineArgs {
    fn default() -> EngineArgs {
        EngineArgs {
            guid_range_start: defaults::GUID_RANGE_START.into(),
            guid_range_end: defaults::GUID_RANGE_END.into(),
            periodic_update: defaults::PERIODIC_UPDATE.into(),
            batch_window: defaults::BATCH_WINDOW.into(),
            batch_max_guids: defaults::BATCH_MAX_GUIDS.into(),
            max_parallel_pkeys: defaults::MAX_PARALLEL_PKEYS.into(),
            patch_concurrency: defaults::PATCH_CONCURRENCY.into(),
            resync_interval: defaults::RESYNC_INTERVAL.into(),
            pkey_capacity: DEFAULT_PKEY_CAPACITY,
            pkey_reserved_slots: DEFAULT_RESERVED_SLOTS,
            mass_removal_share: defaults::MASS_REMOVAL_SHARE.into(),
            mass_removal_min: defaults::MASS_REMOVAL_MIN.into(),
            policy_file: None,
            policy_mode: PolicyMode::Off,
            retry_max: defaults::RETRY_MAX.into(),
            adopt_annotations: AdoptAnnotations::IfLedgerEmpty,
            max_attachments_per_pod: defaults::MAX_ATTACHMENTS_PER_POD.into(),
            pkey_range: None,
        }
    }
}

/// The controller's place in the cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct ControllerArgs {
    /// kubeconfig file; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the leader-election Lease (ib-kubernetes used the pod's namespace).
    #[arg(long = "namespace", env = "POD_NAMESPACE", default_value = "kube-system")]
    pub namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long = "lease-name", env = "FABRIC_SYNC_LEASE_NAME", default_value = "fabric-sync-leader")]
    pub lease_name: String,
    /// Node this replica runs on (part of the leader identity).
    #[arg(long = "node-name", env = "K8S_NODE")]
    pub node_name: Option<String>,
    /// UID of this pod (part of the leader identity).
    #[arg(long = "pod-uid", env = "POD_UID")]
    pub pod_uid: Option<String>,
    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long = "admin-listen", env = "FABRIC_SYNC_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: String,
    /// How long a leader's term lasts without renewal.
    #[arg(long = "lease-duration", env = "FABRIC_SYNC_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,
    /// A leader that could not renew for this long stops writing (must be below the duration).
    #[arg(long = "lease-renew-deadline", env = "FABRIC_SYNC_LEASE_RENEW_DEADLINE", default_value = "10s")]
    pub lease_renew_deadline: String,
    /// Pause between Lease attempts (renewals by the leader, polls by standbys).
    #[arg(long = "lease-retry-period", env = "FABRIC_SYNC_LEASE_RETRY_PERIOD", default_value = "2s")]
    pub lease_retry_period: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerSettings {
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    pub lease_name: String,
    /// `<node>_<pod uid>`, as ib-kubernetes.
    pub identity: String,
    pub admin_listen: SocketAddr,
    pub lease_duration: Duration,
    pub lease_renew_deadline: Duration,
    pub lease_retry_period: Duration,
}

impl ControllerSettings {
    pub fn from_args(a: &ControllerArgs, hostname: &str) -> Result<ControllerSettings, ConfigError> {
        let admin_listen = a.admin_listen.parse().map_err(|_| {
            ConfigError::new(
                "FABRIC_SYNC_ADMIN_LISTEN",
                "admin-listen",
                format!("{:?} is not an address:port such as 0.0.0.0:8080", a.admin_listen),
            )
        })?;
        if !crate::netdef::is_dns1123_label(&a.namespace) {
            return Err(ConfigError::new(
                "POD_NAMESPACE",
                "namespace",
                format!("{:?} is not a namespace name", a.namespace),
            ));
        }
        if !crate::netdef::is_dns1123_subdomain(&a.lease_name) {
            return Err(ConfigError::new(
                "FABRIC_SYNC_LEASE_NAME",
                "lease-name",
                format!("{:?} is not a valid object name", a.lease_name),
            ));
        }
        let lease = |env: &str, flag: &str, v: &str| {
            let d = parse_duration(v, false).map_err(|e| ConfigError::new(env, flag, e))?;
            if d < Duration::from_secs(1) {
                return Err(ConfigError::new(env, flag, "must be at least 1s"));
            }
            Ok(d)
        };
        let lease_duration = lease("FABRIC_SYNC_LEASE_DURATION", "lease-duration", &a.lease_duration)?;
        let lease_renew_deadline =
            lease("FABRIC_SYNC_LEASE_RENEW_DEADLINE", "lease-renew-deadline", &a.lease_renew_deadline)?;
        let lease_retry_period = lease("FABRIC_SYNC_LEASE_RETRY_PERIOD", "lease-retry-period", &a.lease_retry_period)?;
        // The gap between giving up and the term's end is what keeps two leaders from writing.
        if lease_renew_deadline >= lease_duration {
            return Err(ConfigError::new(
                "FABRIC_SYNC_LEASE_RENEW_DEADLINE",
                "lease-renew-deadline",
                "must be below FABRIC_SYNC_LEASE_DURATION: a leader must stop writing before its term can pass to another",
            ));
        }
        if lease_retry_period >= lease_renew_deadline {
            return Err(ConfigError::new(
                "FABRIC_SYNC_LEASE_RETRY_PERIOD",
                "lease-retry-period",
                "must be below FABRIC_SYNC_LEASE_RENEW_DEADLINE, or a single failed renewal ends the term",
            ));
        }
        let node = a.node_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| hostname.to_string());
        let identity = match a.pod_uid.as_deref().filter(|u| !u.is_empty()) {
            Some(uid) => format!("{node}_{uid}"),
            None => node,
        };
        Ok(ControllerSettings {
            kubeconfig: a.kubeconfig.clone(),
            namespace: a.namespace.clone(),
            lease_name: a.lease_name.clone(),
            identity,
            admin_listen,
            lease_duration,
            lease_renew_deadline,
            lease_retry_period,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_own_defaults_are_the_settings_defaults() {
        // `EngineConfig::default()` (tests, simulate, demo) and the controller's defaults must not
        // drift apart: the engine cannot read these constants (it imports nothing of config).
        let from_flags = EngineSettings::from_args(&EngineArgs::default()).unwrap().engine_config().unwrap();
        let engine = EngineConfig::default();
        assert_eq!(from_flags.guid_range, engine.guid_range);
        assert_eq!(from_flags.pkey_capacity, engine.pkey_capacity);
        assert_eq!(from_flags.pkey_reserved_slots, engine.pkey_reserved_slots);
        assert_eq!(from_flags.mass_removal_share, engine.mass_removal_share);
        assert_eq!(from_flags.mass_removal_min, engine.mass_removal_min);
        assert_eq!(from_flags.batch_max_guids, engine.batch_max_guids);
        assert_eq!(from_flags.policy_mode, engine.policy_mode);
        assert_eq!(from_flags.adopt_annotations, engine.adopt_annotations);
        assert_eq!(from_flags.max_attachments_per_pod, engine.max_attachments_per_pod);
    }

    #[test]
    fn the_flags_defaults_are_the_default_args() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            engine: EngineArgs,
        }
        // Parse no arguments with none of the settings' env vars set in this test process.
        let parsed = <Cli as clap::Parser>::try_parse_from(["fabric-sync"]).unwrap().engine;
        let default = EngineArgs::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }

    #[test]
    fn defaults_validate_and_match_ib_kubernetes() {
        let s = EngineSettings::from_args(&EngineArgs::default()).unwrap();
        assert_eq!(s.guid_range, GuidRange::DEFAULT);
        assert_eq!(s.periodic_update, Duration::from_secs(5));
        assert_eq!(s.batch_window, Duration::from_millis(20));
    }

    #[test]
    fn identity_is_node_and_pod_uid() {
        let a = ControllerArgs {
            kubeconfig: None,
            namespace: "kube-system".into(),
            lease_name: "fabric-sync-leader".into(),
            node_name: Some("cp-1".into()),
            pod_uid: Some("1234".into()),
            admin_listen: "0.0.0.0:8080".into(),
            lease_duration: "15s".into(),
            lease_renew_deadline: "10s".into(),
            lease_retry_period: "2s".into(),
        };
        assert_eq!(ControllerSettings::from_args(&a, "host").unwrap().identity, "cp-1_1234");
        let a = ControllerArgs { node_name: None, pod_uid: None, ..a };
        assert_eq!(ControllerSettings::from_args(&a, "host").unwrap().identity, "host");
        let bad = ControllerArgs { lease_renew_deadline: "15s".into(), ..a.clone() };
        let err = ControllerSettings::from_args(&bad, "host").unwrap_err();
        assert!(err.to_string().contains("FABRIC_SYNC_LEASE_RENEW_DEADLINE"), "{err}");
        let bad = ControllerArgs { lease_retry_period: "10s".into(), ..a };
        assert!(ControllerSettings::from_args(&bad, "host").is_err());
    }
}
