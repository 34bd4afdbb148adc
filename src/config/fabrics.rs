//! The fabrics file (`--fabrics-file` / `FABRIC_SYNC_FABRICS_FILE`): several InfiniBand fabrics,
//! each with its own UFM, node selector, GUID pool and resource names (issue 17). Read and
//! validated at start; every error names the field path (`fabrics[1].guidPool.end`). Without a
//! fabrics file the single-UFM settings make one fabric named `default` ([`FabricsSettings::single`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, UfmArgs, UfmSettings};
use crate::alloc::GuidRange;
use crate::ib::Guid;

/// The name of the one fabric made from the single-UFM settings, and of the fabric of old
/// ledger claims that record none.
pub const DEFAULT_FABRIC: &str = "default";

const ENV: &str = "FABRIC_SYNC_FABRICS_FILE";
const FLAG: &str = "fabrics-file";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    fabrics: Vec<RawFabric>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFabric {
    name: String,
    ufm: RawUfm,
    #[serde(default)]
    node_selector: Option<RawSelector>,
    guid_pool: RawPool,
    #[serde(default)]
    resource_names: Vec<String>,
    #[serde(default)]
    hcas: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawUfm {
    address: String,
    #[serde(default)]
    port: Option<u16>,
    secret_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    start: String,
    end: String,
}

/// One validated fabric.
#[derive(Clone, Debug)]
pub struct FabricSettings {
    /// A DNS label, unique in the file.
    pub name: String,
    pub ufm: UfmSettings,
    /// Labels a node must carry to be on this fabric (`matchLabels`); empty = every node.
    pub node_selector: BTreeMap<String, String>,
    pub guid_range: GuidRange,
    /// Device-plugin resource names (`k8s.v1.cni.cncf.io/resourceName` of a NAD) of this fabric.
    pub resource_names: Vec<String>,
    /// The node HCAs (RDMA device names, e.g. `mlx5_0`) cabled to this fabric: its pkey budget
    /// on a node is the smallest of their tables in the agent's inventory; empty = the node's
    /// smallest table.
    pub hcas: Vec<String>,
}

/// All fabrics the controller drives, in file order.
#[derive(Clone, Debug)]
pub struct FabricsSettings {
    pub fabrics: Vec<FabricSettings>,
    /// The file they came from; `None` = the single-UFM settings (one `default` fabric).
    pub file: Option<PathBuf>,
}

impl FabricsSettings {
    /// Drop-in compatibility: the single-UFM settings and `GUID_POOL_RANGE_*` as one fabric
    /// named `default` that every node is on.
    pub fn single(ufm: UfmSettings, guid_range: GuidRange) -> FabricsSettings {
        let fabric = FabricSettings {
            name: DEFAULT_FABRIC.to_string(),
            ufm,
            node_selector: BTreeMap::new(),
            guid_range,
            resource_names: Vec::new(),
            hcas: Vec::new(),
        };
        FabricsSettings { fabrics: vec![fabric], file: None }
    }

    /// The engine's view of the fabrics: routing rules and pools, in the file's order.
    pub fn engine_specs(&self) -> Vec<crate::engine::FabricSpec> {
        self.fabrics
            .iter()
            .map(|f| crate::engine::FabricSpec {
                route: crate::engine::FabricRoute {
                    name: f.name.clone(),
                    node_selector: f.node_selector.clone(),
                    resource_names: f.resource_names.clone(),
                },
                guid_range: f.guid_range,
                hcas: f.hcas.clone(),
            })
            .collect()
    }

    /// Reads and validates a fabrics file. `base` gives the UFM settings the file does not set
    /// per fabric (timeouts, attempts, batch size); its single-UFM connection settings must be
    /// unset, or the error names the conflict.
    pub fn from_file(path: &Path, base: &UfmArgs) -> Result<FabricsSettings, ConfigError> {
        check_no_single_ufm(base)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(ENV, FLAG, format!("cannot read {}: {e}", path.display())))?;
        let mut settings = parse(&text, base)?;
        settings.file = Some(path.to_path_buf());
        Ok(settings)
    }

    /// The fabric of this name.
    pub fn get(&self, name: &str) -> Option<&FabricSettings> {
        self.fabrics.iter().find(|f| f.name == name)
    }

    /// `ufm …` commands: the named fabric, or without a name the only one (or `default`).
    pub fn pick(&self, name: Option<&str>) -> Result<&FabricSettings, String> {
        let names = || self.fabrics.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ");
        match name {
            Some(n) => {
                self.get(n).ok_or_else(|| format!("--fabric {n:?}: no such fabric (the fabrics are: {})", names()))
            }
            None if self.fabrics.len() == 1 => Ok(&self.fabrics[0]),
            None => self
                .get(DEFAULT_FABRIC)
                .ok_or_else(|| format!("--fabric is required with several fabrics: choose one of {}", names())),
        }
    }
}

/// The single-UFM connection settings that a fabrics file replaces: set together, which one
/// wins would be a guess, so it is an error naming both.
fn check_no_single_ufm(base: &UfmArgs) -> Result<(), ConfigError> {
    let set = |o: Option<&str>| o.is_some_and(|v| !v.trim().is_empty());
    let conflicts = [
        ("UFM_ADDRESS (--ufm-address)", set(base.address.as_deref())),
        ("UFM_PORT (--ufm-port)", set(base.port.as_deref())),
        ("UFM_HTTP_SCHEMA (--ufm-http-schema)", set(base.scheme.as_deref())),
        ("UFM_USERNAME (--ufm-username)", set(base.username.as_deref())),
        ("UFM_PASSWORD (--ufm-password)", base.password.as_ref().is_some_and(|p| !p.is_empty())),
        ("UFM_TOKEN (--ufm-token)", base.token.as_ref().is_some_and(|p| !p.is_empty())),
        ("UFM_CERTIFICATE (--ufm-certificate)", set(base.certificate.as_deref())),
        ("UFM_CA_FILE (--ufm-ca-file)", base.ca_file.is_some()),
        ("UFM_CLIENT_CERT_FILE (--ufm-client-cert)", base.client_cert.is_some()),
        ("UFM_CLIENT_KEY_FILE (--ufm-client-key)", base.client_key.is_some()),
        ("UFM_SECRET_DIR (--ufm-secret-dir)", base.secret_dir.is_some()),
    ];
    let named: Vec<&str> = conflicts.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
    if named.is_empty() {
        return Ok(());
    }
    Err(ConfigError::new(
        ENV,
        FLAG,
        format!(
            "cannot be combined with the single-UFM setting(s) {}: with a fabrics file each fabric's UFM is set \
             in the file (ufm.address, ufm.port, ufm.secretDir); unset them",
            named.join(", ")
        ),
    ))
}

fn err(detail: impl Into<String>) -> ConfigError {
    ConfigError::new(ENV, FLAG, detail)
}

/// Parses and validates the file's text (the pure part of [`FabricsSettings::from_file`]
/// except for the secret directories, which [`UfmSettings::from_args`] reads).
fn parse(text: &str, base: &UfmArgs) -> Result<FabricsSettings, ConfigError> {
    let raw: RawFile = serde_norway::from_str(text).map_err(|e| err(format!("not a valid fabrics file: {e}")))?;
    if raw.fabrics.is_empty() {
        return Err(err("fabrics: lists no fabric; add at least one, or drop the file to use the UFM_* settings"));
    }
    let mut names = BTreeSet::new();
    let mut resources: BTreeMap<String, usize> = BTreeMap::new();
    let mut hcas: BTreeMap<String, usize> = BTreeMap::new();
    let mut fabrics = Vec::with_capacity(raw.fabrics.len());
    for (i, f) in raw.fabrics.into_iter().enumerate() {
        let at = |field: &str| format!("fabrics[{i}].{field}");
        check_dns_label(&f.name).map_err(|d| err(format!("{}: {d}", at("name"))))?;
        if !names.insert(f.name.clone()) {
            return Err(err(format!(
                "{}: {:?} is used by an earlier fabric; names must be unique",
                at("name"),
                f.name
            )));
        }
        let guid = |field: &str, v: &str| v.parse::<Guid>().map_err(|e| err(format!("{}: {e}", at(field))));
        let start = guid("guidPool.start", &f.guid_pool.start)?;
        let end = guid("guidPool.end", &f.guid_pool.end)?;
        let guid_range = GuidRange::new(start, end).map_err(|e| err(format!("{}: {e}", at("guidPool.end"))))?;
        let mut node_selector = BTreeMap::new();
        for (k, v) in f.node_selector.map(|s| s.match_labels).unwrap_or_default() {
            if k.trim().is_empty() {
                return Err(err(format!("{}: a label key is empty", at("nodeSelector.matchLabels"))));
            }
            node_selector.insert(k, v);
        }
        for (j, r) in f.resource_names.iter().enumerate() {
            if r.trim().is_empty() {
                return Err(err(format!("{}: is empty", at(&format!("resourceNames[{j}]")))));
            }
            if let Some(other) = resources.insert(r.clone(), i) {
                return Err(err(format!(
                    "{}: {r:?} is also a resource name of fabrics[{other}]; a resource name belongs to one fabric",
                    at(&format!("resourceNames[{j}]"))
                )));
            }
        }
        for (j, h) in f.hcas.iter().enumerate() {
            let field = at(&format!("hcas[{j}]"));
            if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(err(format!(
                    "{field}: {h:?} is not an RDMA device name; write the name under /sys/class/infiniband, e.g. \"mlx5_0\""
                )));
            }
            if let Some(other) = hcas.insert(h.clone(), i) {
                return Err(err(format!(
                    "{field}: {h:?} is also an HCA of fabrics[{other}]; an HCA is cabled to one fabric"
                )));
            }
        }
        let args = UfmArgs {
            address: Some(f.ufm.address.clone()),
            port: f.ufm.port.map(|p| p.to_string()),
            secret_dir: Some(f.ufm.secret_dir.clone()),
            ..base.clone()
        };
        let ufm = UfmSettings::from_args(&args).map_err(|e| err(format!("{}: {}", ufm_field(i, &e), e.detail)))?;
        fabrics.push(FabricSettings {
            name: f.name,
            ufm,
            node_selector,
            guid_range,
            resource_names: f.resource_names,
            hcas: f.hcas,
        });
    }
    check_pools_apart(&fabrics)?;
    Ok(FabricsSettings { fabrics, file: None })
}

/// Which field of the file (or key of the fabric's secret directory) a UFM settings error is about.
fn ufm_field(i: usize, e: &ConfigError) -> String {
    let key = e.setting.split_whitespace().next().unwrap_or_default();
    match key {
        "UFM_ADDRESS" => format!("fabrics[{i}].ufm.address"),
        "UFM_PORT" => format!("fabrics[{i}].ufm.port"),
        "UFM_SECRET_DIR" => format!("fabrics[{i}].ufm.secretDir"),
        k if k.starts_with("UFM_") => format!("fabrics[{i}].ufm.secretDir ({k})"),
        _ => format!("fabrics[{i}].ufm ({})", e.setting),
    }
}

/// Two fabrics sharing GUIDs would let one GUID be handed out twice, once per fabric.
fn check_pools_apart(fabrics: &[FabricSettings]) -> Result<(), ConfigError> {
    let mut by_start: Vec<(usize, GuidRange)> = fabrics.iter().map(|f| f.guid_range).enumerate().collect();
    by_start.sort_by_key(|(_, r)| r.start());
    for w in by_start.windows(2) {
        let ((a, ra), (b, rb)) = (w[0], w[1]);
        if rb.start() <= ra.end() {
            let (first, second) = (a.min(b), a.max(b));
            return Err(err(format!(
                "fabrics[{second}].guidPool: {} overlaps fabrics[{first}].guidPool {}; the pools of two fabrics must not share a GUID",
                fabrics[second].guid_range, fabrics[first].guid_range
            )));
        }
    }
    Ok(())
}

fn check_dns_label(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 63 || !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "{name:?} is not a DNS label: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "fabrics_tests.rs"]
mod tests;
