//! Tracing setup: `RUST_LOG` filter (default `info`), text or JSON lines on stderr. Text carries
//! ANSI colours only when stderr is a terminal (never in a file or a container log).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,mock_ufm=warn";

/// Installs the global subscriber. Safe to call twice (the second call is a no-op).
pub fn init_tracing(format: LogFormat) {
    init_tracing_with(format, DEFAULT_FILTER);
}

/// Like [`init_tracing`] with another default filter (one-shot commands that report on stdout
/// and stderr themselves log only when `RUST_LOG` asks for it).
pub fn init_tracing_with(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}
