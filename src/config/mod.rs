//! Settings in one place: every knob has a flag, an environment variable (ib-kubernetes' names
//! where it had one), a default, and a validation that names the setting when it fails.

mod engine;
mod fabrics;
mod kube_api;
mod ufm;

pub use engine::{
    AdoptAnnotations, ControllerArgs, ControllerSettings, EngineArgs, EngineSettings, PolicyMode, guid_range,
};
pub use fabrics::{DEFAULT_FABRIC, FabricSettings, FabricsSettings};
pub use kube_api::{KubeApiArgs, KubeApiSettings};
pub use ufm::{CredentialSource, Credentials, SmPlugin, UfmArgs, UfmAuth, UfmScheme, UfmSettings};

use std::fmt;
use std::time::Duration;

/// A configuration problem, naming the setting (env var and flag) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {detail}")]
pub struct ConfigError {
    pub setting: String,
    pub detail: String,
}

impl ConfigError {
    pub(crate) fn new(env: &str, flag: &str, detail: impl Into<String>) -> ConfigError {
        ConfigError { setting: format!("{env} (--{flag})"), detail: detail.into() }
    }

    pub fn reason(&self) -> &'static str {
        "InvalidConfiguration"
    }
}

/// A secret value: usable, never printed. `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "<empty>" } else { "<redacted>" })
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Parses `250ms`, `20s`, `5m`, `1h` (a whole number and a unit). With `bare_seconds`,
/// a bare number counts as seconds (ib-kubernetes' `DAEMON_PERIODIC_UPDATE` is written so).
pub fn parse_duration(text: &str, bare_seconds: bool) -> Result<Duration, String> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write a whole number and a unit, e.g. 20ms, 5s, 1m"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" if bare_seconds => Duration::from_secs(n),
        "" => return Err(format!("{text:?} has no unit: write e.g. {n}ms or {n}s")),
        u => return Err(format!("{text:?} has unknown unit {u:?}: use ms, s, m or h")),
    };
    Ok(d)
}

/// Renders a duration the way [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        format!("{ms}ms")
    } else if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_need_units_unless_bare_seconds_are_allowed() {
        assert_eq!(parse_duration("20ms", false), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("5", true), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5", false).unwrap_err().contains("5ms or 5s"));
        assert!(parse_duration("5 parsecs", false).is_err());
        assert!(parse_duration("-1s", false).is_err());
        assert!(parse_duration("", true).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    proptest! {
        #[test]
        fn formatted_durations_parse_back(ms in 0u64..10_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d), false), Ok(d));
        }
    }
}
