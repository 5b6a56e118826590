//! `tidegate-scenarios`: runs scenario files against a tidegate host.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use tidegate_scenarios::format::BUILTIN_VARS;
use tidegate_scenarios::{load_file, FlagBackend, Host, Options, Runner, ScenarioFile};

/// Run tidegate scenario files (TOML) against a gateway by base URL.
#[derive(Debug, Parser)]
#[command(name = "tidegate-scenarios", version)]
struct Cli {
    /// The gateway under test, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    base_url: String,
    /// The mock origin (for `mock` steps and `{mock}`).
    #[arg(long, value_name = "URL")]
    mock_url: Option<String>,
    /// The host under test: native, worker or envoy. Scenarios limited to other hosts are
    /// skipped.
    #[arg(long, default_value = "native")]
    host: Host,
    /// A variable for the scenarios, NAME=VALUE (repeatable), e.g. admin_token=...
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Run only scenarios whose name contains this.
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    /// How `flag` steps set flags: `admin` (PUT {base}/admin/flags/{key}) or
    /// `cmd:<shell template with {key} and {value}>`.
    #[arg(long, default_value = "admin")]
    flags: FlagBackend,
    /// Limit for one request, from sending to the end of the body, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    timeout_ms: u64,
    /// Scenario files, or directories searched recursively for *.toml.
    #[arg(required = true, value_name = "FILES_OR_DIRS")]
    paths: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tidegate-scenarios: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(true) when every scenario passed or was skipped.
fn run(cli: Cli) -> Result<bool> {
    let mut vars = Vec::new();
    for v in &cli.vars {
        let (name, value) = v
            .split_once('=')
            .with_context(|| format!("--var {v:?} is not NAME=VALUE"))?;
        if BUILTIN_VARS.contains(&name) {
            bail!("--var {name}: a built-in variable cannot be set");
        }
        vars.push((name.to_owned(), value.to_owned()));
    }
    if cli.jobs == 0 {
        bail!("--jobs is at least 1");
    }
    let mut files = Vec::new();
    for p in &cli.paths {
        collect(p, &mut files)?;
    }
    let loaded: Vec<ScenarioFile> = files.iter().map(|f| load_file(f)).collect::<Result<_>>()?;
    let selected = loaded
        .iter()
        .flat_map(|f| &f.scenarios)
        .filter(|s| {
            cli.filter
                .as_ref()
                .is_none_or(|f| s.name.contains(f.as_str()))
        })
        .count();
    if selected == 0 {
        bail!("no scenario selected");
    }
    let opts = Options {
        base_url: cli.base_url,
        mock_url: cli.mock_url,
        host: cli.host,
        vars,
        jobs: cli.jobs,
        flags: cli.flags,
        timeout: Duration::from_millis(cli.timeout_ms),
        filter: cli.filter,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = runtime.block_on(async {
        let runner = Runner::new(opts)?;
        anyhow::Ok(runner.run_files(&loaded, |r| println!("{r}")).await)
    })?;
    println!("{summary}");
    Ok(summary.failed == 0)
}

/// Adds `path` (a file) or every `*.toml` below it (a directory), sorted.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !path.is_dir() {
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect(&e, out)?;
        } else if e.extension().is_some_and(|x| x == "toml") {
            out.push(e);
        }
    }
    Ok(())
}
