//! `tidegate`: the native gateway and its operator and test tools.

mod admin;
mod drill;
mod flag_cmd;
mod kb;
mod kv;
mod metrics;
mod mock;
mod origin;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tidegate: an edge policy gateway in front of an LLM customer-support origin.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the gateway (OpenAI `/v1/chat/completions` and Dify `/v1/chat-messages`).
    Serve {
        /// Config file (TOML). Without one, built-in defaults and a stand-in origin are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address (overrides `[server].listen`).
        #[arg(long, short)]
        listen: Option<String>,
        /// Data directory for the KV store and admin token (overrides `[server].data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Runtime worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Check a config file and print what is wrong, naming the field.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Read and set KV flags (tier, promo_codes, ...) of a running gateway.
    Flag {
        #[command(flatten)]
        admin: flag_cmd::AdminArgs,
        #[command(subcommand)]
        cmd: flag_cmd::FlagCommand,
    },
    /// Knowledge-base tools: build the artefact, evaluate matching.
    Kb {
        #[command(subcommand)]
        cmd: kb::KbCommand,
    },
    /// Run the stand-in LLM origin (OpenAI and Dify shapes), Turnstile and Chatwoot doubles.
    MockOrigin(mock::MockArgs),
    /// Replay a compressed promo day (or the week-1 baseline) and print the scorecard.
    Drill(drill::DrillArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            workers,
        } => runtime_with(workers)
            .and_then(|rt| rt.block_on(server::serve(config, listen, data_dir))),
        Command::CheckConfig { file } => server::check_config(&file),
        Command::Flag { admin, cmd } => {
            runtime().and_then(|rt| rt.block_on(flag_cmd::run(admin, cmd)))
        }
        Command::Kb { cmd } => kb::run(cmd),
        Command::MockOrigin(args) => runtime().and_then(|rt| rt.block_on(mock::run(args))),
        Command::Drill(args) => runtime().and_then(|rt| rt.block_on(drill::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

fn runtime_with(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n.max(1));
    }
    Ok(b.enable_all().build()?)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TIDEGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TIDEGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
