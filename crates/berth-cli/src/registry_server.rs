//! `berth registry serve`, `berth registry gc` and `berth registry hash-password`: Berth's own
//! registry server (crate `berth-registry-server`).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::commands::CliError;

/// `registry` subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Run a registry server (OCI distribution API, token auth, web page at /ui/)
    Serve(ServeCmd),
    /// Remove blobs no manifest references (safe while the server runs)
    Gc(GcCmd),
    /// Print a bcrypt hash of the password read from STDIN, for the config file
    HashPassword,
}

/// `registry serve` flags.
#[derive(Debug, Args)]
pub struct ServeCmd {
    /// Address to listen on (port 0: any free port; the address is printed)
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: String,
    /// Storage root
    #[arg(long)]
    root: PathBuf,
    /// JSON configuration: users, permissions, admins, limits (without it the registry is open)
    #[arg(long)]
    config: Option<PathBuf>,
    /// PEM certificate chain (with --tls-key: serve HTTPS)
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// `registry gc` flags.
#[derive(Debug, Args)]
pub struct GcCmd {
    /// Storage root
    #[arg(long)]
    root: PathBuf,
    /// Only show what would be removed
    #[arg(long)]
    dry_run: bool,
    /// Spare blobs modified less than this many seconds ago
    #[arg(long, default_value_t = 3600)]
    grace_seconds: u64,
    /// Remove uploads untouched for this many seconds
    #[arg(long, default_value_t = 86400)]
    upload_max_age_seconds: u64,
    /// Also forget manifests no tag reaches (directly, through an index, or as a referrer)
    #[arg(long)]
    delete_untagged: bool,
}

/// Runs a `registry` subcommand.
pub fn run(cmd: &RegistryCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        RegistryCommand::Serve(c) => {
            let opts = berth_registry_server::ServeOptions {
                addr: c.addr.clone(),
                root: c.root.clone(),
                config: c.config.clone(),
                tls: c.tls_cert.clone().zip(c.tls_key.clone()),
            };
            let scheme = if opts.tls.is_some() { "https" } else { "http" };
            berth_registry_server::serve_blocking(&opts, |addr| {
                // The first line of output: tests and scripts read the bound port from it.
                let mut so = std::io::stdout();
                let _ = writeln!(so, "listening on {addr} ({scheme})");
                let _ = so.flush();
            })
            .map_err(|e| CliError::Message(format!("Error: registry: {e}")))
        }
        RegistryCommand::Gc(c) => {
            let opts = berth_registry_server::GcOptions {
                dry_run: c.dry_run,
                grace: Duration::from_secs(c.grace_seconds),
                upload_max_age: Duration::from_secs(c.upload_max_age_seconds),
                delete_untagged: c.delete_untagged,
            };
            let r = berth_registry_server::gc(&c.root, &opts)
                .map_err(|e| CliError::Message(format!("Error: gc: {e}")))?;
            let verb = if c.dry_run { "would remove" } else { "removed" };
            for d in &r.removed {
                let _ = writeln!(out, "{verb} {d}");
            }
            if c.delete_untagged {
                let _ = writeln!(
                    out,
                    "{} untagged manifests {}",
                    r.manifests_pruned,
                    if c.dry_run { "to forget" } else { "forgotten" }
                );
            }
            let _ = writeln!(
                out,
                "{} blobs, {} referenced, {verb} {} ({} bytes), {} unreferenced but younger than the grace period, {} stale uploads {}",
                r.blobs,
                r.marked,
                r.removed.len(),
                r.bytes_freed,
                r.spared_young,
                r.uploads_removed,
                if c.dry_run { "to remove" } else { "removed" }
            );
            Ok(())
        }
        RegistryCommand::HashPassword => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| CliError::Usage(format!("Error: reading STDIN: {e}")))?;
            let pw = line.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                return Err(CliError::Usage("Error: empty password".into()));
            }
            let h = berth_registry_server::auth::hash_password(pw)
                .map_err(|e| CliError::Usage(format!("Error: {e}")))?;
            let _ = writeln!(out, "{h}");
            Ok(())
        }
    }
}
