//! Logging set-up: one subscriber for the whole process, text or JSON.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogConfig;

/// Installs the global subscriber. Calling it again is harmless (tests start
/// several nodes in one process).
pub fn init(config: &LogConfig) {
    let filter: Targets = config.level.parse().unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    // A person at a terminal reads text; a file or a log collector gets
    // JSON, unless told otherwise. Colours only ever reach a terminal.
    let terminal = std::io::stdout().is_terminal();
    let json = config.format == "json" || (config.format == "auto" && !terminal);
    let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = if json {
        registry.with(tracing_subscriber::fmt::layer().json().with_current_span(false)).try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer().with_target(true).with_ansi(colour)).try_init()
    };
}
