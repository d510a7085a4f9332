//! The `colink` command: serve any subset of the services, apply
//! migrations, or measure a node under load.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use colink::Node;
use colink_runtime::config::Config;

#[derive(Parser)]
#[command(name = "colink", version, about = "Self-hostable team chat: every service in one binary.")]
struct Cli {
    /// TOML config file (also COLINK_CONFIG). COLINK_* variables override it.
    #[arg(long, global = true, env = "COLINK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the selected services (all by default) until SIGTERM or Ctrl-C.
    Serve {
        /// Comma-separated services to host: auth, users, channels, messaging, realtime, presence, files, search,
        /// admin (or "all").
        #[arg(long)]
        services: Option<String>,
        /// Listen address, e.g. 0.0.0.0:7700.
        #[arg(long)]
        listen: Option<String>,
        /// Directory for the embedded backends' data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply database migrations of the selected services and exit.
    Migrate {
        /// Comma-separated services (default: all).
        #[arg(long)]
        services: Option<String>,
        /// Directory for the embedded backends' data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run benchmark scenarios against a fresh `colink serve` child process.
    Bench {
        /// Comma-separated scenarios (ingest, small-channels, fan-out, big-channel, idle, reconnect,
        /// history, reaction-storm, unread-at-scale, files, search-index, search, retention, room) or
        /// "all".
        #[arg(long, default_value = "all")]
        scenarios: String,
        /// "smoke" (seconds; proves the tool and the paths) or "standard" (the published figures).
        #[arg(long, default_value = "smoke")]
        size: String,
        /// Also run each scenario on PostgreSQL, e.g. postgres://postgres@127.0.0.1:5432 (SQLite always runs).
        #[arg(long)]
        postgres: Option<String>,
        /// Write the results as a Markdown page to this file.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Have the nodes export traces over OTLP, to measure what tracing costs: to a collector at
        /// this URL, or to "sink", a collector in the bench's process that counts spans and keeps
        /// none.
        #[arg(long)]
        traces: Option<String>,
        /// The share of new traces kept with --traces.
        #[arg(long, default_value_t = 1.0)]
        trace_sample_ratio: f64,
        /// The room scenario's people: USERS,STREAMS,SENDERS[,RATE] (no RATE: as fast as answered).
        #[arg(long, default_value = "50,10,5")]
        room: colink::bench::Room,
    },
    /// Look after the search indices of a running node.
    Search {
        #[command(subcommand)]
        command: SearchCommand,
    },
}

#[derive(Subcommand)]
enum SearchCommand {
    /// Rebuild the search indices from the messaging and users services while the node serves, and
    /// wait until the rebuilt index is live.
    Reindex {
        /// The node's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:7700")]
        server: String,
        /// An admin's access token (from Login).
        #[arg(long, env = "COLINK_TOKEN", hide_env_values = true)]
        token: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    let (services, listen, data_dir) = match &cli.command {
        Command::Serve { services, listen, data_dir } => (services.clone(), listen.clone(), data_dir.clone()),
        Command::Migrate { services, data_dir } => (services.clone(), None, data_dir.clone()),
        Command::Bench { scenarios, size, postgres, markdown, traces, trace_sample_ratio, room } => {
            let traces = traces.as_ref().map(|target| colink::bench::Traces {
                target: match target.as_str() {
                    "sink" => colink::bench::TraceTarget::Sink,
                    url => colink::bench::TraceTarget::Collector(url.to_string()),
                },
                sample_ratio: *trace_sample_ratio,
            });
            return bench(scenarios, size, postgres.clone(), markdown.clone(), traces, *room);
        }
        Command::Search { command: SearchCommand::Reindex { server, token } } => return reindex(server, token),
    };
    // Flags win over the environment, which wins over the file.
    if let Some(services) = services {
        env.push(("COLINK_SERVICES".into(), services));
    }
    if let Some(listen) = listen {
        env.push(("COLINK_LISTEN".into(), format!("\"{listen}\"")));
    }
    if let Some(dir) = data_dir {
        env.push(("COLINK_DATA_DIR".into(), format!("\"{}\"", dir.display())));
    }
    let config = match Config::load(cli.config.as_deref(), env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("colink: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("colink: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the trace exporter's connection lives there.
    let telemetry = runtime.block_on(async { colink_runtime::telemetry::init(&config.log, &config.tracing) });
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { .. } => serve(config).await,
            Command::Migrate { .. } => colink::migrate(&config).await,
            // Handled before any configuration is read.
            Command::Bench { .. } | Command::Search { .. } => Ok(()),
        }
    });
    // The runtime's workers still run: the last spans can reach the collector.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "colink stopped");
            eprintln!("colink: {err}");
            ExitCode::FAILURE
        }
    }
}

fn bench(
    scenarios: &str,
    size: &str,
    postgres: Option<String>,
    markdown: Option<PathBuf>,
    traces: Option<colink::bench::Traces>,
    room: colink::bench::Room,
) -> ExitCode {
    use colink::bench::{Options, SCENARIOS, Size};

    let size = match size {
        "smoke" => Size::Smoke,
        "standard" => Size::Standard,
        other => {
            eprintln!("colink bench: --size: {other:?} is neither \"smoke\" nor \"standard\"");
            return ExitCode::from(2);
        }
    };
    let scenarios: Vec<String> = if scenarios == "all" {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        scenarios.split(',').map(|s| s.trim().to_string()).collect()
    };
    if let Some(unknown) = scenarios.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        eprintln!("colink bench: --scenarios: unknown scenario {unknown:?} (known: {})", SCENARIOS.join(", "));
        return ExitCode::from(2);
    }
    if traces.as_ref().is_some_and(|t| !(0.0..=1.0).contains(&t.sample_ratio)) {
        eprintln!("colink bench: --trace-sample-ratio: must be within 0..=1");
        return ExitCode::from(2);
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let options = Options { scenarios, size, postgres, markdown, command, room, traces };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("colink bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The load generator logs warnings and exports no traces of its own.
    let log = colink_runtime::config::LogConfig { level: "warn".into(), format: "text".into() };
    runtime.block_on(async { colink_runtime::telemetry::init(&log, &Default::default()) }).shutdown();
    match runtime.block_on(colink::bench::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("colink bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn reindex(server: &str, token: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("colink search reindex: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(colink::search_cli::reindex(server, token)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("colink search reindex: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), colink::NodeError> {
    let mut node = Node::start(config).await?;
    tokio::select! {
        result = node.wait() => return result,
        _ = shutdown_signal() => {}
    }
    tracing::info!("shutting down; a second signal exits at once");
    tokio::select! {
        result = node.shutdown() => result,
        _ = shutdown_signal() => {
            tracing::warn!("second signal: exiting now");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return interrupt.await.unwrap_or(()),
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
