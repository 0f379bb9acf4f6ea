//! The `storaged` binary: daemon, dev supervisor and admin CLI.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use storaged::cli::{self, BucketCmd, Connection, KeyCmd, LayoutCmd};
use storaged::config::Config;
use storaged::dev::{self, DevOptions};

#[derive(Parser)]
#[command(
    name = "storaged",
    version,
    about = "Geo-distributed S3-compatible object store"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The node's configuration file, as `storaged server` and `storaged repair` take it.
#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(
        short,
        long,
        env = "STORAGED_CONFIG",
        default_value = "/etc/storaged.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the storage daemon.
    Server {
        #[command(flatten)]
        config: ConfigArg,
        /// Stop when the parent process goes away (used by `storaged dev`).
        #[arg(long, hide = true)]
        exit_with_parent: bool,
    },
    /// Set a damaged metadata store aside, so that the node rebuilds it from its peers at
    /// its next start (it keeps its identity). Run it with the daemon stopped.
    Repair {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Start a ready-to-use local instance and write its credentials to dev.env.
    Dev(DevOptions),
    /// Manage access keys.
    Key {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Manage buckets.
    Bucket {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: BucketCmd,
    },
    /// Show or change the cluster layout.
    Layout {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: LayoutCmd,
    },
    /// Nodes and health.
    Status {
        #[command(flatten)]
        conn: Connection,
    },
}

/// Resolves when the parent process is gone (we were re-parented).
async fn parent_gone() {
    let parent = std::os::unix::process::parent_id();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

/// Runs the command; an error is one line on stderr (`storaged: error: …` with its causes,
/// never a backtrace, whatever `RUST_BACKTRACE` says) and exit status 1.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storaged: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Server {
            config: ConfigArg {
                config: config_path,
            },
            exit_with_parent,
        } => {
            let config = Config::load(&config_path)
                .with_context(|| format!("loading {}", config_path.display()))?;
            if let Some(fault) = storaged::util::fault::init().map_err(anyhow::Error::msg)? {
                tracing::warn!(
                    ?fault,
                    "TEST FAULT INJECTION IS ON: this node misbehaves on purpose"
                );
            }
            let stop = async move {
                if exit_with_parent {
                    tokio::select! {
                        () = storaged::server::shutdown_signal() => {}
                        () = parent_gone() => {}
                    }
                } else {
                    storaged::server::shutdown_signal().await;
                }
            };
            let peers = config.replication_factor > 1;
            storaged::server::run(config, stop)
                .await
                .map_err(|e| match e {
                    storaged::Error::MetadataDamaged { .. } => anyhow::anyhow!(
                        "{e}: run `storaged repair -c {}` to set it aside; {}",
                        config_path.display(),
                        if peers {
                            "the node then rebuilds its metadata from its peers"
                        } else {
                            "with replication_factor = 1 no peer holds a copy: the node then \
                             starts empty (restore db.redb from a backup instead, if there is one)"
                        }
                    ),
                    other => other.into(),
                })?;
        }
        Cmd::Repair {
            config: ConfigArg { config: path },
        } => {
            let config =
                Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
            println!("storaged: {}", storaged::server::repair::repair(&config)?);
        }
        Cmd::Dev(opts) => dev::run(opts).await?,
        Cmd::Key { conn, cmd } => cli::key(&conn, cmd).await?,
        Cmd::Bucket { conn, cmd } => cli::bucket(&conn, cmd).await?,
        Cmd::Layout { conn, cmd } => cli::layout(&conn, cmd).await?,
        Cmd::Status { conn } => cli::status(&conn).await?,
    }
    Ok(())
}
