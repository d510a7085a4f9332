//! Logging set-up: one subscriber for the whole process, text or JSON.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogConfig;

/// Installs the global subscriber. Calling it again is harmless (tests start
/// several nodes in one process).
pub fn init(config: &LogConfig) {
    let filter: Targets = config.level.parse().unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if config.format == "json" {
        registry.with(tracing_subscriber::fmt::layer().json().with_current_span(false)).try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer().with_target(true)).try_init()
    };
}
