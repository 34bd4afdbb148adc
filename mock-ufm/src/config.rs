//! Every knob of the mock in one place: [`Config`] for in-process use and [`Cli`] (flags with
//! `MOCK_UFM_*` environment variables) for the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};

use crate::clock::TimeFormat;
use crate::faults::FaultRule;
use crate::ports::{Port, seed_ports};
use crate::state::RATE_LIMITS;
use crate::tls::ClientAuth;

/// Why the command line could not become a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("--viewer wants USER:PASSWORD, got {0:?}")]
    Viewer(String),
    #[error("--client-ca needs TLS (not --http)")]
    ClientCaWithoutTls,
}

/// How the server speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// A fresh CA signs a server certificate for `sans` (DNS names or IPs). With `write_dir`,
    /// `ca.pem`, `server.pem` and `server-key.pem` are written there.
    SelfSigned { sans: Vec<String>, write_dir: Option<PathBuf> },
    /// Use this chain and key; `ca_pem` (if known) is what [`crate::MockUfm::ca_pem`] returns.
    Pem { cert_chain_pem: String, key_pem: String, ca_pem: Option<String> },
    /// Plain HTTP.
    Plain,
}

impl TlsMode {
    /// Self-signed for `localhost` and `127.0.0.1`.
    pub fn self_signed() -> TlsMode {
        TlsMode::SelfSigned { sans: default_sans(), write_dir: None }
    }
}

fn default_sans() -> Vec<String> {
    vec!["localhost".to_string(), "127.0.0.1".to_string()]
}

/// Everything the mock needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Default `127.0.0.1:0` (any free port).
    pub listen: SocketAddr,
    pub tls: TlsMode,
    /// Accept (or require) client certificates signed by this CA on `/ufmRest`.
    pub client_auth: Option<ClientAuth>,
    /// The system_admin user for Basic auth (default `admin` / `123456`, UFM's factory default).
    pub username: String,
    pub password: String,
    /// Read-only users (`GET` only; writes and token creation answer 403).
    pub viewers: Vec<(String, String)>,
    /// Access tokens valid on `/ufmRestV3` from the start.
    pub tokens: Vec<String>,
    /// What `GET /app/ufm_version` reports.
    pub ufm_version: String,
    /// Delay before an accepted change becomes visible (OpenSM applies asynchronously).
    pub apply_delay: Duration,
    /// Answer 404 for an unknown pkey instead of UFM's usual `200 {}`.
    pub unknown_pkey_404: bool,
    pub last_updated_format: TimeFormat,
    /// Ports `GET /resources/ports` lists.
    pub ports: Vec<Port>,
    /// Load the pkey table (and tokens) from here at start, save after each applied change.
    pub state_file: Option<PathBuf>,
    /// How many requests the log keeps.
    pub log_capacity: usize,
    /// Fault rules installed at start.
    pub faults: Vec<FaultRule>,
    /// Seed for fault randomness (probabilities, latency ranges); random if unset.
    pub fault_seed: Option<u64>,
    /// The `rate_limit` values (Gb/s) pkey creation and QoS updates accept; anything else is
    /// answered 400 as UFM does. Default: every rate UFM knows ([`RATE_LIMITS`]); a shorter
    /// list plays a UFM (or fabric) that supports fewer.
    pub rate_limits: Vec<f64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: TlsMode::self_signed(),
            client_auth: None,
            username: "admin".to_string(),
            password: "123456".to_string(),
            viewers: Vec::new(),
            tokens: Vec::new(),
            ufm_version: "6.19.0-7".to_string(),
            apply_delay: Duration::ZERO,
            unknown_pkey_404: false,
            last_updated_format: TimeFormat::DayFirst,
            ports: seed_ports(),
            state_file: None,
            log_capacity: 10_000,
            faults: Vec::new(),
            fault_seed: None,
            rate_limits: RATE_LIMITS.to_vec(),
        }
    }
}

/// A stateful NVIDIA UFM REST simulator with TLS, auth and fault injection.
#[derive(Debug, Parser)]
#[command(name = "mock-ufm", version)]
#[command(group(ArgGroup::new("transport").required(true).args(["tls_cert", "self_signed_dir", "http"])))]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "MOCK_UFM_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Server certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "MOCK_UFM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "MOCK_UFM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Generate a CA and server certificate; write ca.pem (to trust), server.pem, server-key.pem here.
    #[arg(long, env = "MOCK_UFM_SELF_SIGNED_DIR")]
    pub self_signed_dir: Option<PathBuf>,
    /// Subject alternative names for --self-signed-dir (repeatable).
    #[arg(long = "san", env = "MOCK_UFM_SAN", value_delimiter = ',', default_values_t = default_sans())]
    pub sans: Vec<String>,
    /// Serve plain HTTP.
    #[arg(long, env = "MOCK_UFM_HTTP")]
    pub http: bool,
    /// Accept client certificates signed by this CA (PEM) as authentication on /ufmRest.
    #[arg(long, env = "MOCK_UFM_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Refuse TLS handshakes without a client certificate (with --client-ca).
    #[arg(long, env = "MOCK_UFM_REQUIRE_CLIENT_CERT", requires = "client_ca")]
    pub require_client_cert: bool,
    /// Basic-auth user (system_admin).
    #[arg(long, env = "MOCK_UFM_USERNAME", default_value = "admin")]
    pub username: String,
    /// Basic-auth password.
    #[arg(long, env = "MOCK_UFM_PASSWORD", default_value = "123456")]
    pub password: String,
    /// Read-only user as USER:PASSWORD (repeatable).
    #[arg(long = "viewer", env = "MOCK_UFM_VIEWERS", value_delimiter = ',')]
    pub viewers: Vec<String>,
    /// Access token accepted on /ufmRestV3 (repeatable).
    #[arg(long = "token", env = "MOCK_UFM_TOKENS", value_delimiter = ',')]
    pub tokens: Vec<String>,
    /// Version reported by /app/ufm_version.
    #[arg(long, env = "MOCK_UFM_VERSION", default_value = "6.19.0-7")]
    pub ufm_version: String,
    /// Milliseconds before an accepted change is visible in reads and last_updated.
    #[arg(long, env = "MOCK_UFM_APPLY_DELAY_MS", default_value_t = 0)]
    pub apply_delay_ms: u64,
    /// Answer 404 (not 200 {}) for GET of an unknown pkey.
    #[arg(long, env = "MOCK_UFM_UNKNOWN_PKEY_404")]
    pub unknown_pkey_404: bool,
    /// Timestamp format of /resources/pkeys/last_updated.
    #[arg(long, env = "MOCK_UFM_LAST_UPDATED_FORMAT", value_enum, default_value_t = TimeFormat::DayFirst)]
    pub last_updated_format: TimeFormat,
    /// Load state from this JSON file at start (if present) and save after each change.
    #[arg(long = "state", env = "MOCK_UFM_STATE")]
    pub state: Option<PathBuf>,
    /// Number of requests kept in the request log.
    #[arg(long, env = "MOCK_UFM_LOG_CAPACITY", default_value_t = 10_000)]
    pub log_capacity: usize,
    /// Seed for fault randomness.
    #[arg(long, env = "MOCK_UFM_FAULT_SEED")]
    pub fault_seed: Option<u64>,
    /// Rate limits (Gb/s) accepted in pkey creation and QoS updates (default: all of UFM's).
    #[arg(long = "rate-limits", env = "MOCK_UFM_RATE_LIMITS", value_delimiter = ',')]
    pub rate_limits: Vec<f64>,
    /// Log format on stderr (level from RUST_LOG, default info).
    #[arg(long, env = "MOCK_UFM_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn read(path: &PathBuf) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })
}

impl Cli {
    /// Reads the files the flags name and builds the [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let tls = match (&self.tls_cert, &self.tls_key, &self.self_signed_dir) {
            (Some(cert), Some(key), _) => {
                TlsMode::Pem { cert_chain_pem: read(cert)?, key_pem: read(key)?, ca_pem: None }
            }
            (_, _, Some(dir)) => TlsMode::SelfSigned { sans: self.sans.clone(), write_dir: Some(dir.clone()) },
            _ => TlsMode::Plain,
        };
        let client_auth = match &self.client_ca {
            Some(_) if tls == TlsMode::Plain => return Err(ConfigError::ClientCaWithoutTls),
            Some(path) => Some(ClientAuth { ca_pem: read(path)?, required: self.require_client_cert }),
            None => None,
        };
        let viewers = self
            .viewers
            .iter()
            .map(|v| {
                v.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .ok_or_else(|| ConfigError::Viewer(v.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            listen: self.listen,
            tls,
            client_auth,
            username: self.username,
            password: self.password,
            viewers,
            tokens: self.tokens,
            ufm_version: self.ufm_version,
            apply_delay: Duration::from_millis(self.apply_delay_ms),
            unknown_pkey_404: self.unknown_pkey_404,
            last_updated_format: self.last_updated_format,
            ports: seed_ports(),
            state_file: self.state,
            log_capacity: self.log_capacity,
            faults: Vec::new(),
            fault_seed: self.fault_seed,
            rate_limits: if self.rate_limits.is_empty() { RATE_LIMITS.to_vec() } else { self.rate_limits },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_transport_is_required() {
        assert!(Cli::try_parse_from(["mock-ufm"]).is_err());
        assert!(Cli::try_parse_from(["mock-ufm", "--http", "--self-signed-dir", "/tmp/x"]).is_err());
        assert!(Cli::try_parse_from(["mock-ufm", "--tls-cert", "c.pem"]).is_err());
    }

    #[test]
    fn flags_become_config() {
        let cli = Cli::try_parse_from([
            "mock-ufm",
            "--http",
            "--listen",
            "127.0.0.1:9000",
            "--token",
            "t1",
            "--token",
            "t2",
            "--viewer",
            "guest:guest",
            "--apply-delay-ms",
            "250",
            "--last-updated-format",
            "ctime",
            "--rate-limits",
            "2.5,100,200",
        ])
        .unwrap();
        let c = cli.into_config().unwrap();
        assert_eq!(c.tls, TlsMode::Plain);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.tokens, vec!["t1", "t2"]);
        assert_eq!(c.viewers, vec![("guest".to_string(), "guest".to_string())]);
        assert_eq!(c.apply_delay, Duration::from_millis(250));
        assert_eq!(c.last_updated_format, TimeFormat::Ctime);
        assert_eq!(c.rate_limits, vec![2.5, 100.0, 200.0]);
        let all = Cli::try_parse_from(["mock-ufm", "--http"]).unwrap().into_config().unwrap();
        assert_eq!(all.rate_limits, RATE_LIMITS.to_vec());
    }

    #[test]
    fn self_signed_dir_uses_default_sans_and_bad_viewer_is_refused() {
        let cli = Cli::try_parse_from(["mock-ufm", "--self-signed-dir", "/tmp/pki"]).unwrap();
        match cli.into_config().unwrap().tls {
            TlsMode::SelfSigned { sans, write_dir } => {
                assert_eq!(sans, vec!["localhost", "127.0.0.1"]);
                assert_eq!(write_dir, Some(PathBuf::from("/tmp/pki")));
            }
            other => panic!("{other:?}"),
        }
        let bad = Cli::try_parse_from(["mock-ufm", "--http", "--viewer", "nopass"]).unwrap();
        assert!(matches!(bad.into_config(), Err(ConfigError::Viewer(_))));
    }
}
