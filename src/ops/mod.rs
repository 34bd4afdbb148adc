//! Operations plumbing shared by the controller and the node agent: tracing setup, the
//! shutdown signal, the admin HTTP server (one `serve` for both; the controller's router has
//! `/metrics`, `/healthz`, `/readyz`, the agent's `/metrics`, `/healthz`) and the controller's
//! Prometheus registry.

mod admin;
mod metrics;
mod shutdown;
mod telemetry;

pub use admin::{AdminState, readiness, router, serve};
pub use metrics::{METRICS, Metrics};
pub use shutdown::shutdown_signal;
pub use telemetry::{DEFAULT_FILTER, init_tracing, init_tracing_with};
