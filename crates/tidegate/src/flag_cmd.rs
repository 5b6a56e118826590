//! `tidegate flag get|set|list|delete`: flags of a running gateway, through its admin API.

use std::path::PathBuf;

use anyhow::Context;

/// Where the admin API is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// Base URL of the gateway.
    #[arg(
        long,
        env = "TIDEGATE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Admin bearer token (default: read from `<data-dir>/admin-token`).
    #[arg(
        long,
        env = "TIDEGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Data directory holding `admin-token`.
    #[arg(long, default_value = ".tidegate", global = true)]
    data_dir: PathBuf,
}

/// The flag subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum FlagCommand {
    /// List every key with its size.
    List,
    /// Print one flag's value.
    Get {
        /// Key, e.g. `tier`.
        key: String,
    },
    /// Set a flag, e.g. `tidegate flag set tier economy`.
    Set {
        /// Key.
        key: String,
        /// Value (use `--file` for a value from a file).
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Remove a flag.
    Delete {
        /// Key.
        key: String,
    },
}

impl AdminArgs {
    fn token(&self) -> anyhow::Result<String> {
        Ok(match &self.token {
            Some(t) => t.clone(),
            None => {
                let p = self.data_dir.join("admin-token");
                std::fs::read_to_string(&p)
                    .with_context(|| {
                        format!(
                        "no --token given and {} is not readable (is the gateway running here?)",
                        p.display()
                    )
                    })?
                    .trim()
                    .to_owned()
            }
        })
    }
}

/// Calls the admin API of a running gateway; the body of a 2xx reply, else an error.
pub async fn admin_request(
    admin: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<String> {
    let base = admin.url.trim_end_matches('/');
    let resp = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .body(body)
        .bearer_auth(admin.token()?)
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {base}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{status}: {text}");
    }
    Ok(text)
}

/// Runs a flag subcommand.
pub async fn run(admin: AdminArgs, cmd: FlagCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let (method, path, body) = match &cmd {
        FlagCommand::List => (Method::GET, "/admin/flags".to_owned(), Vec::new()),
        FlagCommand::Get { key } => (Method::GET, format!("/admin/flags/{key}"), Vec::new()),
        FlagCommand::Set { key, value, file } => {
            let body = match (value, file) {
                (Some(v), None) => v.clone().into_bytes(),
                (None, Some(f)) => {
                    std::fs::read(f).with_context(|| format!("reading {}", f.display()))?
                }
                _ => anyhow::bail!("give either a value or --file"),
            };
            (Method::PUT, format!("/admin/flags/{key}"), body)
        }
        FlagCommand::Delete { key } => (Method::DELETE, format!("/admin/flags/{key}"), Vec::new()),
    };
    let text = admin_request(&admin, method, &path, body).await?;
    match cmd {
        FlagCommand::Set { key, .. } => println!("set {key}"),
        FlagCommand::Delete { key } => println!("deleted {key}"),
        _ => println!("{text}"),
    }
    Ok(())
}
