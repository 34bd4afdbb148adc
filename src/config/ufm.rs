//! UFM connection settings: ib-kubernetes' secret keys, our additions (token, CA file, client
//! certificate, explicit insecure mode), and a secret directory that is re-read when it changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{ConfigError, Secret, parse_duration};

/// Which subnet-manager backend to drive (`DAEMON_SM_PLUGIN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmPlugin {
    /// NVIDIA UFM over REST.
    Ufm,
    /// Allocate GUIDs, touch no fabric (as ib-kubernetes' noop plugin).
    Noop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UfmScheme {
    Http,
    Https,
}

impl UfmScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            UfmScheme::Http => "http",
            UfmScheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            UfmScheme::Http => 80,
            UfmScheme::Https => 443,
        }
    }
}

/// The secret keys, as ib-kubernetes' UFM Secret names them (plus `UFM_TOKEN`).
const SECRET_KEYS: [&str; 7] =
    ["UFM_USERNAME", "UFM_PASSWORD", "UFM_TOKEN", "UFM_ADDRESS", "UFM_HTTP_SCHEMA", "UFM_PORT", "UFM_CERTIFICATE"];

/// UFM flags and environment. Values given in `--ufm-secret-dir` files win over the environment,
/// because a mounted Secret is updated in place when rotated while env vars are not.
#[derive(clap::Args, Clone, Debug)]
pub struct UfmArgs {
    /// Subnet-manager backend: `ufm` or `noop`.
    #[arg(long = "sm-plugin", env = "DAEMON_SM_PLUGIN", default_value = "ufm")]
    pub sm_plugin: String,
    /// Accepted for ib-kubernetes compatibility and ignored (plugins are built in).
    #[arg(long = "sm-plugin-path", env = "DAEMON_SM_PLUGIN_PATH", hide = true)]
    pub sm_plugin_path: Option<String>,
    /// UFM host name or IP address.
    #[arg(long = "ufm-address", env = "UFM_ADDRESS")]
    pub address: Option<String>,
    /// `https` (default) or `http`.
    #[arg(long = "ufm-http-schema", env = "UFM_HTTP_SCHEMA")]
    pub scheme: Option<String>,
    /// UFM port; 0 or unset means 443 for https, 80 for http.
    #[arg(long = "ufm-port", env = "UFM_PORT")]
    pub port: Option<String>,
    /// User for basic auth on /ufmRest.
    #[arg(long = "ufm-username", env = "UFM_USERNAME")]
    pub username: Option<String>,
    /// Password for basic auth.
    #[arg(long = "ufm-password", env = "UFM_PASSWORD", hide_env_values = true)]
    pub password: Option<Secret>,
    /// Access token for /ufmRestV3 (preferred over basic auth when set).
    #[arg(long = "ufm-token", env = "UFM_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// PEM of the CA that signed UFM's certificate (ib-kubernetes' key).
    #[arg(long = "ufm-certificate", env = "UFM_CERTIFICATE", hide_env_values = true)]
    pub certificate: Option<String>,
    /// File with the PEM of the CA that signed UFM's certificate.
    #[arg(long = "ufm-ca-file", env = "UFM_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS on /ufmRest.
    #[arg(long = "ufm-client-cert", env = "UFM_CLIENT_CERT_FILE")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(long = "ufm-client-key", env = "UFM_CLIENT_KEY_FILE")]
    pub client_key: Option<PathBuf>,
    /// Skip TLS verification of UFM (never the default; logs a warning).
    #[arg(long = "ufm-insecure-skip-verify", env = "UFM_INSECURE_SKIP_VERIFY", default_value = "false")]
    pub insecure_skip_verify: String,
    /// Directory of a mounted UFM Secret (files named UFM_USERNAME, UFM_PASSWORD, …), re-read on change.
    #[arg(long = "ufm-secret-dir", env = "UFM_SECRET_DIR")]
    pub secret_dir: Option<PathBuf>,
    /// TCP+TLS connect timeout.
    #[arg(long = "ufm-connect-timeout", env = "UFM_CONNECT_TIMEOUT", default_value = "5s")]
    pub connect_timeout: String,
    /// Timeout of each UFM request.
    #[arg(long = "ufm-request-timeout", env = "UFM_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,
    /// Attempts per UFM request for transient failures (timeouts, connection errors, 5xx, 429), including the first.
    #[arg(long = "ufm-max-attempts", env = "UFM_MAX_ATTEMPTS", default_value = "4")]
    pub max_attempts: String,
    /// Largest number of GUIDs in one UFM request; larger changes are split.
    #[arg(long = "ufm-max-guids-per-request", env = "UFM_MAX_GUIDS_PER_REQUEST", default_value = "2000")]
    pub max_guids_per_request: String,
}

/// The values clap gives when nothing is set (for code that builds settings without a command line).
impl Default for UfmArgs {
    fn default() -> UfmArgs {
        UfmArgs {
            sm_plugin: "ufm".into(),
            sm_plugin_path: None,
            address: None,
            scheme: None,
            port: None,
            username: None,
            password: None,
            token: None,
            certificate: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            insecure_skip_verify: "false".into(),
            secret_dir: None,
            connect_timeout: "5s".into(),
            request_timeout: "30s".into(),
            max_attempts: "4".into(),
            max_guids_per_request: "2000".into(),
        }
    }
}

/// How fabric-sync proves who it is to UFM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UfmAuth {
    Basic {
        username: String,
        password: Secret,
    },
    /// `/ufmRestV3` with `Authorization: Basic <token>`.
    Token(Secret),
    /// Client certificate only, on `/ufmRest`.
    ClientCertificate,
}

/// The parts of the UFM settings that can change at run time (rotated Secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub auth: UfmAuth,
}

/// Validated UFM settings. `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct UfmSettings {
    pub plugin: SmPlugin,
    pub scheme: UfmScheme,
    pub address: String,
    pub port: u16,
    /// PEM text of the CA bundle to trust (from `UFM_CERTIFICATE` or `UFM_CA_FILE`); `None` = system roots.
    pub ca_pem: Option<String>,
    pub insecure_skip_verify: bool,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_attempts: usize,
    pub max_guids_per_request: usize,
    pub credentials: CredentialSource,
    /// Things accepted but worth telling the operator about (e.g. ignored settings).
    pub warnings: Vec<String>,
}

impl UfmSettings {
    /// `scheme://address:port`, with IPv6 literals bracketed.
    pub fn base_url(&self) -> String {
        let host = if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        };
        format!("{}://{}:{}", self.scheme.as_str(), host, self.port)
    }

    pub fn from_args(args: &UfmArgs) -> Result<UfmSettings, ConfigError> {
        let mut warnings = Vec::new();
        let plugin = match args.sm_plugin.trim().to_ascii_lowercase().as_str() {
            "ufm" => SmPlugin::Ufm,
            "noop" => SmPlugin::Noop,
            other => {
                return Err(ConfigError::new(
                    "DAEMON_SM_PLUGIN",
                    "sm-plugin",
                    format!("{other:?} is not a known plugin: use \"ufm\" or \"noop\""),
                ));
            }
        };
        if args.sm_plugin_path.as_deref().is_some_and(|p| !p.is_empty()) {
            warnings.push("DAEMON_SM_PLUGIN_PATH is ignored: fabric-sync has its plugins built in".to_string());
        }
        let files = match &args.secret_dir {
            Some(dir) => read_secret_dir(dir)?,
            None => BTreeMap::new(),
        };
        let value = |key: &str, env: Option<&str>| -> Option<String> {
            files
                .get(key)
                .map(|s| s.expose().to_string())
                .or_else(|| env.map(str::to_string))
                .filter(|v| !v.trim().is_empty())
        };
        let scheme = match value("UFM_HTTP_SCHEMA", args.scheme.as_deref()).map(|s| s.trim().to_ascii_lowercase()) {
            None => UfmScheme::Https,
            Some(s) if s == "https" => UfmScheme::Https,
            Some(s) if s == "http" => UfmScheme::Http,
            Some(s) => {
                return Err(ConfigError::new(
                    "UFM_HTTP_SCHEMA",
                    "ufm-http-schema",
                    format!("{s:?} is neither \"https\" nor \"http\""),
                ));
            }
        };
        let port = match value("UFM_PORT", args.port.as_deref()) {
            None => scheme.default_port(),
            Some(p) => match p.trim().parse::<u16>() {
                Ok(0) => scheme.default_port(),
                Ok(n) => n,
                Err(_) => {
                    return Err(ConfigError::new(
                        "UFM_PORT",
                        "ufm-port",
                        format!("{p:?} is not a port number (1-65535)"),
                    ));
                }
            },
        };
        let address = value("UFM_ADDRESS", args.address.as_deref()).unwrap_or_default().trim().to_string();
        if plugin == SmPlugin::Ufm {
            if address.is_empty() {
                return Err(ConfigError::new(
                    "UFM_ADDRESS",
                    "ufm-address",
                    "is required with DAEMON_SM_PLUGIN=ufm: set the UFM host name or IP",
                ));
            }
            check_address(&address).map_err(|detail| ConfigError::new("UFM_ADDRESS", "ufm-address", detail))?;
        }
        let insecure_skip_verify =
            parse_bool_setting("UFM_INSECURE_SKIP_VERIFY", "ufm-insecure-skip-verify", &args.insecure_skip_verify)?;
        let ca_pem = match (value("UFM_CERTIFICATE", args.certificate.as_deref()), &args.ca_file) {
            (Some(pem), _) => Some(check_pem("UFM_CERTIFICATE", "ufm-certificate", pem)?),
            (None, Some(path)) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new("UFM_CA_FILE", "ufm-ca-file", format!("cannot read {}: {e}", path.display()))
                })?;
                Some(check_pem("UFM_CA_FILE", "ufm-ca-file", pem)?)
            }
            (None, None) => None,
        };
        let client_cert = match (&args.client_cert, &args.client_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "UFM_CLIENT_KEY_FILE",
                    "ufm-client-key",
                    "is required with UFM_CLIENT_CERT_FILE",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "UFM_CLIENT_CERT_FILE",
                    "ufm-client-cert",
                    "is required with UFM_CLIENT_KEY_FILE",
                ));
            }
        };
        let static_creds = StaticCredentials {
            username: args.username.clone().filter(|u| !u.is_empty()),
            password: args.password.clone().filter(|p| !p.is_empty()),
            token: args.token.clone().filter(|t| !t.is_empty()),
            client_cert: client_cert.is_some(),
        };
        let credentials = CredentialSource::new(static_creds, args.secret_dir.clone());
        if plugin == SmPlugin::Ufm {
            credentials.resolve(&files)?;
        }
        let duration = |env: &str, flag: &str, v: &str| {
            parse_duration(v, false)
                .map_err(|e| ConfigError::new(env, flag, e))
                .and_then(|d| if d.is_zero() { Err(ConfigError::new(env, flag, "must be more than 0")) } else { Ok(d) })
        };
        let count = |env: &str, flag: &str, v: &str, max: usize| match v.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::new(env, flag, format!("{v:?} must be a whole number from 1 to {max}"))),
        };
        Ok(UfmSettings {
            plugin,
            scheme,
            address,
            port,
            ca_pem,
            insecure_skip_verify,
            client_cert,
            connect_timeout: duration("UFM_CONNECT_TIMEOUT", "ufm-connect-timeout", &args.connect_timeout)?,
            request_timeout: duration("UFM_REQUEST_TIMEOUT", "ufm-request-timeout", &args.request_timeout)?,
            max_attempts: count("UFM_MAX_ATTEMPTS", "ufm-max-attempts", &args.max_attempts, 20)?,
            max_guids_per_request: count(
                "UFM_MAX_GUIDS_PER_REQUEST",
                "ufm-max-guids-per-request",
                &args.max_guids_per_request,
                100_000,
            )?,
            credentials,
            warnings,
        })
    }
}

/// Checks that `UFM_ADDRESS` is a bare host name, IPv4 address or IPv6 address (bracketed or
/// not). A URL, a port, a path or credentials in it are refused with the settings to use
/// instead: left in, they become part of the host and every request fails.
fn check_address(address: &str) -> Result<(), String> {
    use std::net::Ipv6Addr;
    // Take the value apart the way a person meant it, to say where each part goes.
    let (scheme, rest) = match address.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, address),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    // A password written into the address must not be echoed.
    let quoted = match userinfo {
        Some(u) => format!("{:?}", address.replacen(&format!("{u}@"), "<redacted>@", 1)),
        None => format!("{address:?}"),
    };
    let bare = |why: &str, fix: String| format!("{quoted} must be a bare host name or IP address ({why}): set {fix}");
    let (host, port) = split_port(hostport);
    let mut fix = vec![format!("UFM_ADDRESS={host}")];
    let mut why = Vec::new();
    if let Some(s) = scheme {
        why.push("it holds a scheme");
        fix.push(format!("UFM_HTTP_SCHEMA={}", s.to_ascii_lowercase()));
    }
    if let Some(p) = port {
        why.push("it holds a port");
        fix.push(format!("UFM_PORT={p}"));
    }
    if userinfo.is_some() {
        why.push("it holds credentials");
        fix.push("the user in UFM_USERNAME and the password in UFM_PASSWORD".to_string());
    }
    if path.is_some_and(|p| p != "/") {
        why.push("it holds a path; fabric-sync adds /ufmRest itself");
    } else if path.is_some() {
        why.push("it ends in a slash");
    }
    if !why.is_empty() {
        return Err(bare(&why.join(", "), fix.join(", ")));
    }
    // Now a bare value: a bracketed or plain IPv6 address, or a host name / IPv4 address.
    if let Some(inner) = address.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        return match inner.parse::<Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("{quoted} is not a valid IPv6 address in brackets")),
        };
    }
    if address.contains(':') {
        return match address.parse::<Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "{quoted} is neither a host name nor an IP address: write an IPv6 address as fd00::1 or [fd00::1], and put a port in UFM_PORT"
            )),
        };
    }
    match address.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        Some(c) => Err(format!("{quoted} holds {c:?}, which no host name or IP address contains")),
        None if address.starts_with(['.', '-']) || address.ends_with('-') || address.contains("..") => {
            Err(format!("{quoted} is not a valid host name"))
        }
        None => Ok(()),
    }
}

/// `host:port` → (`host`, `Some(port)`) when the part after the last colon is a port number
/// and what comes before is not itself an IPv6 address (`fd00::1` is an address, not
/// `fd00:` and port 1). `[v6]:port` gives the address in brackets.
fn split_port(hostport: &str) -> (&str, Option<&str>) {
    let is_port = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(close) = hostport.strip_prefix('[').and_then(|r| r.find(']')) {
        let host = &hostport[..close + 2];
        return match hostport[close + 2..].strip_prefix(':') {
            Some(p) if is_port(p) => (host, Some(p)),
            _ => (hostport, None),
        };
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if is_port(p) && !h.contains(':') => (h, Some(p)),
        _ => (hostport, None),
    }
}

pub(crate) fn parse_bool_setting(env: &str, flag: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(ConfigError::new(env, flag, format!("{v:?} is not true or false"))),
    }
}

/// Checks that the text holds at least one PEM certificate, every one of which parses.
fn check_pem(env: &str, flag: &str, pem: String) -> Result<String, ConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        cert.map_err(|e| ConfigError::new(env, flag, format!("holds a PEM block that does not parse ({e})")))?;
        n += 1;
    }
    if n == 0 {
        return Err(ConfigError::new(
            env,
            flag,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----): put the CA's PEM text here, not base64 of it or a path",
        ));
    }
    Ok(pem)
}

/// Reads the files of a mounted Secret directory (only the known keys; Kubernetes adds `..data` links).
fn read_secret_dir(dir: &Path) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let meta = std::fs::metadata(dir);
    if !meta.as_ref().is_ok_and(|m| m.is_dir()) {
        return Err(ConfigError::new(
            "UFM_SECRET_DIR",
            "ufm-secret-dir",
            format!("{} is not a readable directory", dir.display()),
        ));
    }
    let mut out = BTreeMap::new();
    for key in SECRET_KEYS {
        let path = dir.join(key);
        match std::fs::read_to_string(&path) {
            Ok(v) => {
                // Secrets created with `echo` carry a trailing newline; certificates keep theirs.
                let v = if key == "UFM_CERTIFICATE" { v } else { v.trim_end_matches(['\n', '\r']).to_string() };
                out.insert(key.to_string(), Secret::new(v));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError::new(
                    "UFM_SECRET_DIR",
                    "ufm-secret-dir",
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, Default)]
struct StaticCredentials {
    username: Option<String>,
    password: Option<Secret>,
    token: Option<Secret>,
    client_cert: bool,
}

/// Credentials from flags/env, overridden by a Secret directory that is re-read whenever one
/// of its files changes (Kubernetes swaps the `..data` link on rotation).
#[derive(Debug)]
pub struct CredentialSource {
    fixed: StaticCredentials,
    dir: Option<PathBuf>,
    cache: Mutex<Option<(Vec<Option<SystemTime>>, Credentials)>>,
}

impl Clone for CredentialSource {
    fn clone(&self) -> CredentialSource {
        CredentialSource::new(self.fixed.clone(), self.dir.clone())
    }
}

impl CredentialSource {
    fn new(fixed: StaticCredentials, dir: Option<PathBuf>) -> CredentialSource {
        CredentialSource { fixed, dir, cache: Mutex::new(None) }
    }

    /// Fixed credentials (tests, the `ufm` commands with flags).
    pub fn basic(username: &str, password: &str) -> CredentialSource {
        CredentialSource::new(
            StaticCredentials {
                username: Some(username.to_string()),
                password: Some(Secret::new(password)),
                ..StaticCredentials::default()
            },
            None,
        )
    }

    /// The credentials in force now; re-reads the Secret directory if it changed.
    pub fn current(&self) -> Result<Credentials, ConfigError> {
        let Some(dir) = &self.dir else {
            return self.resolve(&BTreeMap::new());
        };
        let stamps: Vec<Option<SystemTime>> =
            SECRET_KEYS.iter().map(|k| std::fs::metadata(dir.join(k)).and_then(|m| m.modified()).ok()).collect();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, creds)) = cache.as_ref() {
            if *seen == stamps {
                return Ok(creds.clone());
            }
        }
        let creds = self.resolve(&read_secret_dir(dir)?)?;
        *cache = Some((stamps, creds.clone()));
        Ok(creds)
    }

    fn resolve(&self, files: &BTreeMap<String, Secret>) -> Result<Credentials, ConfigError> {
        let token = files.get("UFM_TOKEN").cloned().or_else(|| self.fixed.token.clone()).filter(|t| !t.is_empty());
        let username = files
            .get("UFM_USERNAME")
            .map(|s| s.expose().to_string())
            .or_else(|| self.fixed.username.clone())
            .filter(|u| !u.is_empty());
        let password =
            files.get("UFM_PASSWORD").cloned().or_else(|| self.fixed.password.clone()).filter(|p| !p.is_empty());
        let auth = match (token, username, password) {
            (Some(t), _, _) => UfmAuth::Token(t),
            (None, Some(username), Some(password)) => UfmAuth::Basic { username, password },
            (None, Some(_), None) => {
                return Err(ConfigError::new("UFM_PASSWORD", "ufm-password", "is required with UFM_USERNAME"));
            }
            (None, None, Some(_)) => {
                return Err(ConfigError::new("UFM_USERNAME", "ufm-username", "is required with UFM_PASSWORD"));
            }
            (None, None, None) if self.fixed.client_cert => UfmAuth::ClientCertificate,
            (None, None, None) => {
                return Err(ConfigError::new(
                    "UFM_USERNAME",
                    "ufm-username",
                    "no UFM credentials: set UFM_USERNAME and UFM_PASSWORD, or UFM_TOKEN, or a client certificate",
                ));
            }
        };
        Ok(Credentials { auth })
    }
}

#[cfg(test)]
#[path = "ufm_tests.rs"]
mod tests;
