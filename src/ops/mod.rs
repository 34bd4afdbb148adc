//! Operations plumbing: tracing setup now; the admin HTTP server and metrics registry later.

mod telemetry;

pub use telemetry::init_tracing;
