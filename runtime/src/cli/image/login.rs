//! `berth image login HOST` / `logout HOST`: credentials in the containers
//! auth file (`--authfile`, `$REGISTRY_AUTH_FILE`, else
//! `/run/containers/<uid>/auth.json`), 0600. The password is read from
//! stdin only (never from argv), checked against the registry (`GET /v2/`
//! through the auth flow) before it is stored.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use berth_images::registry::auth::{self, Credentials, Secret};
use berth_images::registry::client::Client;
use berth_images::registry::config::{self, RegistriesConfig};
use berth_images::registry::name::RemoteRef;
use berth_images::registry::RegistryOptions;

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Registry host[:port].
    pub registry: String,
    #[arg(long, short = 'u')]
    pub username: String,
    /// Read the password from stdin (the only way to give it).
    #[arg(long = "password-stdin", required = true)]
    pub password_stdin: bool,
    #[arg(long = "authfile", env = "REGISTRY_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Plain HTTP.
    #[arg(long)]
    pub insecure: bool,
    #[arg(long = "cert-dir", default_value = config::CERTS_DIR)]
    pub certs_dir: PathBuf,
    #[arg(long = "registries-conf", env = "BERTH_REGISTRIES_CONF", default_value = config::REGISTRIES_CONF)]
    pub registries_conf: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// Registry host[:port].
    pub registry: String,
    #[arg(long = "authfile", env = "REGISTRY_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
}

fn auth_file(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            nix::unistd::geteuid().as_raw()
        ))
    })
}

pub fn login(a: LoginArgs) -> anyhow::Result<i32> {
    let mut password = String::new();
    std::io::stdin()
        .take(64 << 10)
        .read_to_string(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password on stdin");
    }
    let creds = Credentials {
        username: a.username.clone(),
        password: Secret(password),
    };
    let opts = RegistryOptions {
        registries: RegistriesConfig::load(&a.registries_conf)?,
        insecure: a.insecure,
        auth_files: Vec::new(),
        certs_dir: a.certs_dir,
        ..RegistryOptions::default()
    };
    let rr = RemoteRef {
        registry: a.registry.clone(),
        repository: String::new(),
        tag: None,
        digest: None,
    };
    Client::new(&rr, &opts, Arc::new(auth::TokenCache::default()))?
        .with_credentials(creds.clone())
        .ping()
        .with_context(|| format!("logging in to {}", berth_images::escape::text(&a.registry)))?;
    let path = auth_file(a.auth_file);
    auth::store(&path, &a.registry, Some(&creds))?;
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(a: LogoutArgs) -> anyhow::Result<i32> {
    let path = auth_file(a.auth_file);
    if !auth::store(&path, &a.registry, None)? {
        bail!(
            "not logged in to {} (in {})",
            berth_images::escape::text(&a.registry),
            path.display()
        );
    }
    println!("Removed login credentials for {}", a.registry);
    Ok(0)
}
