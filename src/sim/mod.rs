//! The simulator: an in-memory cluster and an in-process mock UFM over TLS, driving the real
//! engine and UFM client for `fabric-sync simulate` and `fabric-sync demo`.

pub mod cli;
mod cluster;
pub mod demo;
mod fabrics;
mod recording;
mod report;
mod scenario;

pub use cluster::{ApiCounts, SimCluster, SimPod};
pub use recording::{Accepted, RecordingFabric};
pub use report::{Invariants, Report, peak_rss_mb};
pub use scenario::{FaultProfile, Progress, Scenario, SimError, run};

#[cfg(test)]
mod tests;
