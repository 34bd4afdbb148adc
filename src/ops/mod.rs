//! Operations plumbing: tracing setup, the Prometheus metrics registry and the admin HTTP
//! server (`/metrics`, `/healthz`, `/readyz`).

mod admin;
mod metrics;
mod telemetry;

pub use admin::{AdminState, readiness, router, serve};
pub use metrics::{METRICS, Metrics};
pub use telemetry::{DEFAULT_FILTER, init_tracing, init_tracing_with};
