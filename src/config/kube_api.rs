//! The controller's budget on the Kubernetes API server: a client-side token bucket in front of
//! every request (see `kube::ratelimit` and README's Configuration section for the defaults).

use super::ConfigError;

/// Default sustained requests per second: kube-scheduler's default (the other component that
/// writes once per pod in every cluster); a configured pod costs two writes (ledger + pod).
pub const DEFAULT_QPS: &str = "50";
/// Default bucket size: a burst of 50 pods is written without waiting.
pub const DEFAULT_BURST: &str = "100";

#[derive(clap::Args, Clone, Debug)]
pub struct KubeApiArgs {
    /// Kubernetes API requests per second, sustained (client-side token bucket; 0 = no limit).
    #[arg(long = "kube-api-qps", env = "FABRIC_SYNC_KUBE_API_QPS", default_value = DEFAULT_QPS)]
    pub qps: String,
    /// Kubernetes API requests allowed at once above the sustained rate (the bucket's size).
    #[arg(long = "kube-api-burst", env = "FABRIC_SYNC_KUBE_API_BURST", default_value = DEFAULT_BURST)]
    pub burst: String,
}

impl Default for KubeApiArgs {
    fn default() -> KubeApiArgs {
        KubeApiArgs { qps: DEFAULT_QPS.into(), burst: DEFAULT_BURST.into() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KubeApiSettings {
    /// 0: no limit.
    pub qps: f64,
    pub burst: u32,
}

impl KubeApiSettings {
    pub fn from_args(a: &KubeApiArgs) -> Result<KubeApiSettings, ConfigError> {
        let qps_error = || {
            ConfigError::new(
                "FABRIC_SYNC_KUBE_API_QPS",
                "kube-api-qps",
                format!(
                    "{:?} is not a request rate: write a number of requests per second such as 50 or 7.5 (0 = no limit)",
                    a.qps
                ),
            )
        };
        let qps: f64 = a.qps.trim().parse().map_err(|_| qps_error())?;
        if !qps.is_finite() || !(0.0..=100_000.0).contains(&qps) {
            return Err(qps_error());
        }
        let burst: u32 = a.burst.trim().parse().ok().filter(|b| (1..=100_000).contains(b)).ok_or_else(|| {
            ConfigError::new(
                "FABRIC_SYNC_KUBE_API_BURST",
                "kube-api-burst",
                format!("{:?} is not a burst size: write a whole number of requests from 1 to 100000", a.burst),
            )
        })?;
        Ok(KubeApiSettings { qps, burst })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(qps: &str, burst: &str) -> KubeApiArgs {
        KubeApiArgs { qps: qps.into(), burst: burst.into() }
    }

    #[test]
    fn defaults_parse_and_bad_values_name_the_setting() {
        assert_eq!(KubeApiSettings::from_args(&KubeApiArgs::default()), Ok(KubeApiSettings { qps: 50.0, burst: 100 }));
        assert_eq!(KubeApiSettings::from_args(&args("0", "1")), Ok(KubeApiSettings { qps: 0.0, burst: 1 }));
        assert_eq!(KubeApiSettings::from_args(&args("7.5", "10")).map(|s| s.qps), Ok(7.5));
        for bad in ["-1", "fast", "NaN", "inf", ""] {
            let e = KubeApiSettings::from_args(&args(bad, "10")).unwrap_err();
            assert!(e.to_string().starts_with("FABRIC_SYNC_KUBE_API_QPS (--kube-api-qps)"), "{e}");
        }
        for bad in ["0", "-5", "1.5", "lots"] {
            let e = KubeApiSettings::from_args(&args("5", bad)).unwrap_err();
            assert!(e.to_string().starts_with("FABRIC_SYNC_KUBE_API_BURST (--kube-api-burst)"), "{e}");
        }
    }
}
