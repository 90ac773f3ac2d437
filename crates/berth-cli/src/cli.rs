//! Argument parsing (Docker's command names and flags) and dispatch.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::backend::{ImageBackend, LocalBackend};
use crate::commands::{self, HistoryOptions, ImagesOptions, ImportArgs, LoginArgs, PullArgs};
use crate::error::CliError;

/// The `berth` command line.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A Docker-compatible container engine",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Work on this data root directly, without a daemon (image commands only); by default
    /// every command goes through berthd.
    #[arg(long, global = true, env = "BERTH_DATA_ROOT", value_name = "PATH")]
    pub data_root: Option<PathBuf>,

    /// Registries (`host[:port]`) that may be reached over plain http or with unverified TLS
    /// (localhost and 127.0.0.1 always may)
    #[arg(
        long = "insecure-registry",
        global = true,
        env = "BERTH_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "REGISTRY"
    )]
    pub insecure_registries: Vec<String>,

    /// Where the daemon is: `-H`, TLS flags (see `endpoint`).
    #[command(flatten)]
    pub connection: crate::endpoint::ConnectionArgs,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List images
    Images(ImagesOptions),
    /// Manage images
    // (Its subcommands listed by name, as Docker's help does.)
    #[command(next_display_order = None)]
    Image {
        /// The image command.
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Remove one or more images
    Rmi(RmiCmd),
    /// Image commands (`pull`, `save`, `tag`, …), also under `image`.
    #[command(flatten)]
    ImageOp(ImageOp),
    /// Log in to a registry
    Login(LoginArgs),
    /// Log out from a registry
    Logout(LogoutCmd),
    /// Container commands (`run`, `exec`, `logs`, …), also under `container`.
    #[command(flatten)]
    ContainerOp(Box<ContainerOp>),
    /// Return low-level information on Berth objects
    Inspect(crate::ctl::InspectCmd),
    /// Get real time events from the server
    Events(crate::system::EventsCmd),
    /// Manage containers
    // (Its subcommands listed by name, as Docker's help does.)
    #[command(next_display_order = None)]
    Container {
        /// The container command.
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// List containers
    Ps(crate::containers::PsCmd),
    /// Remove one or more containers
    Rm(crate::containers::RmCmd),
    /// Show the Berth version information
    Version(crate::system::FormatCmd),
    /// Display system-wide information
    Info(crate::system::FormatCmd),
    /// Manage networks
    Network {
        /// The network command.
        #[command(subcommand)]
        command: crate::network::NetworkCommand,
    },
    /// Berth's own registry server
    Registry {
        /// The registry command.
        #[command(subcommand)]
        command: crate::registry_server::RegistryCommand,
    },
    /// Build an image from a Dockerfile
    Build(crate::build::BuildCmd),
    /// Manage builds
    Builder {
        /// The builder command.
        #[command(subcommand)]
        command: crate::build::BuilderCommand,
    },
    /// Manage volumes
    Volume {
        /// The volume command.
        #[command(subcommand)]
        command: crate::storage::VolumeCommand,
    },
    /// Manage Berth
    System {
        /// The system command.
        #[command(subcommand)]
        command: SystemCommand,
    },
}

/// `image` subcommands (Docker's `docker image …`).
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// The commands that also stand at the top level.
    #[command(flatten)]
    Op(ImageOp),
    /// Build an image from a Dockerfile
    Build(crate::build::BuildCmd),
    /// Display detailed information on one or more images
    Inspect(InspectCmd),
    /// List images
    #[command(visible_alias = "list")]
    Ls(ImagesOptions),
    /// Remove unused images
    Prune(PruneCmd),
    /// Remove one or more images
    #[command(visible_alias = "remove")]
    Rm(RmiCmd),
}

/// The image commands that stand both at the top level and under `image` (`pull` is
/// `image pull`).
#[derive(Debug, Subcommand)]
pub enum ImageOp {
    /// Show the history of an image
    History(HistoryOptions),
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// Load an image from a tar archive or STDIN
    Load(LoadCmd),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushCmd),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(SaveCmd),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagCmd),
}

/// `container` subcommands (Docker's `docker container …`).
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// The commands that also stand at the top level.
    #[command(flatten)]
    Op(Box<ContainerOp>),
    /// Display detailed information on one or more containers
    Inspect(crate::ctl::InspectCmd),
    /// List containers
    #[command(visible_alias = "list", visible_alias = "ps")]
    Ls(crate::containers::PsCmd),
    /// Remove all stopped containers
    Prune(crate::system::PruneCmd),
    /// Remove one or more containers
    #[command(visible_alias = "remove")]
    Rm(crate::containers::RmCmd),
}

/// The container commands that stand both at the top level and under `container` (`run` is
/// `container run`).
#[derive(Debug, Subcommand)]
pub enum ContainerOp {
    /// Attach local standard input, output, and error streams to a running container
    Attach(crate::ctl::AttachCmd),
    /// Create a new image from a container's changes
    Commit(crate::ctl::CommitCmd),
    /// Copy files/folders between a container and the local filesystem
    Cp(crate::cp::CpCmd),
    /// Create a new container
    Create(crate::containers::RunCmd),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(crate::ctl::DiffCmd),
    /// Execute a command in a running container
    Exec(crate::ctl::ExecCmd),
    /// Export a container's filesystem as a tar archive
    Export(crate::ctl::ExportCmd),
    /// Kill one or more running containers
    Kill(crate::ctl::KillCmd),
    /// Fetch the logs of a container
    Logs(crate::containers::LogsCmd),
    /// Pause all processes within one or more containers
    Pause(crate::ctl::NamesCmd),
    /// List port mappings or a specific mapping for the container
    Port(crate::network::PortCmd),
    /// Rename a container
    Rename(crate::ctl::RenameCmd),
    /// Restart one or more containers
    Restart(crate::ctl::RestartCmd),
    /// Create and run a new container from an image
    Run(crate::containers::RunCmd),
    /// Start one or more stopped containers
    Start(crate::ctl::StartCmd),
    /// Display a live stream of container(s) resource usage statistics
    Stats(crate::system::StatsCmd),
    /// Stop one or more running containers
    Stop(crate::containers::StopCmd),
    /// Display the running processes of a container
    Top(crate::ctl::TopCmd),
    /// Unpause all processes within one or more containers
    Unpause(crate::ctl::NamesCmd),
    /// Update configuration of one or more containers
    Update(crate::ctl::UpdateCmd),
    /// Block until one or more containers stop, then print their exit codes
    Wait(crate::containers::WaitCmd),
}

/// `system` subcommands.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage
    Df(crate::system::DfCmd),
    /// Remove unused data
    Prune(crate::system::PruneCmd),
    /// Get real time events from the server
    Events(crate::system::EventsCmd),
    /// Display system-wide information
    Info(crate::system::FormatCmd),
}

/// `rmi` flags.
#[derive(Debug, Args)]
pub struct RmiCmd {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    force: bool,
    /// Do not delete untagged parents
    #[arg(long)]
    no_prune: bool,
    /// Images
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// `tag` arguments.
#[derive(Debug, Args)]
pub struct TagCmd {
    /// SOURCE_IMAGE[:TAG]
    source: String,
    /// TARGET_IMAGE[:TAG]
    target: String,
}

/// `image inspect` flags.
#[derive(Debug, Args)]
pub struct InspectCmd {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Images
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// `save` flags.
#[derive(Debug, Args)]
pub struct SaveCmd {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Images
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// `load` flags.
#[derive(Debug, Args)]
pub struct LoadCmd {
    /// Read from tar archive file, instead of STDIN
    #[arg(short = 'i', long)]
    input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// `push` flags.
#[derive(Debug, Args)]
pub struct PushCmd {
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    quiet: bool,
    /// NAME[:TAG]
    name: String,
}

/// `logout` arguments.
#[derive(Debug, Args)]
pub struct LogoutCmd {
    /// SERVER
    server: Option<String>,
}

/// `image prune` flags.
#[derive(Debug, Args)]
pub struct PruneCmd {
    /// Remove all unused images, not just dangling ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

/// Runs the CLI with `args`; returns the exit status.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            let _ = e.print();
            // Help and version (also `berth` / `berth image` alone, as docker) succeed;
            // usage errors exit 125 like the docker CLI's flag errors.
            return match e.kind() {
                K::DisplayHelp
                | K::DisplayVersion
                | K::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => 125,
            };
        }
    };
    // Not locked: pull and push progress is written from the download threads.
    let mut out = io::BufWriter::new(io::stdout());
    let stderr = io::stderr();
    let mut err = stderr.lock();
    let res = dispatch(&cli, &mut out, &mut err);
    let flushed = out.flush();
    match res {
        Ok(()) => {
            if let Err(e) = flushed {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    let _ = writeln!(err, "Error: {e}");
                    return 1;
                }
            }
            0
        }
        Err(e) => {
            let msg = e.to_string();
            if !msg.is_empty() {
                let _ = writeln!(err, "{msg}");
            }
            e.status()
        }
    }
}

fn backend(cli: &Cli) -> Result<Box<dyn ImageBackend>, CliError> {
    let Some(root) = &cli.data_root else {
        let host = host(cli)?;
        return Ok(Box::new(crate::apibackend::ApiBackend { host }));
    };
    let registry = berth_registry::RegistryConfig {
        insecure_registries: cli
            .insecure_registries
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        ..Default::default()
    };
    LocalBackend::open(root.clone())
        .map(|b| Box::new(b.with_registry_config(registry)) as Box<dyn ImageBackend>)
        .map_err(|e| {
            CliError::Usage(format!(
                "Error: cannot open the Berth data root {}: {e}",
                root.display()
            ))
        })
}

fn host(cli: &Cli) -> Result<crate::api::Host, CliError> {
    crate::api::Host::resolve(&cli.connection, &crate::endpoint::ProcessEnv)
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// Whether a command works on images through [`ImageBackend`] (the daemon, or a data root
/// with `--data-root`); the others need the daemon.
fn is_image_command(cli: &Cli) -> bool {
    match &cli.command {
        Command::Images(_)
        | Command::Rmi(_)
        | Command::ImageOp(_)
        | Command::Login(_)
        | Command::Logout(_) => true,
        Command::Image { command } => !matches!(command, ImageCommand::Build(_)),
        // With a data root, `system df` shows its images.
        Command::System {
            command: SystemCommand::Df(_),
        } => cli.data_root.is_some(),
        _ => false,
    }
}

/// Runs a container command (top-level or under `container`).
fn container_op(
    host: &crate::api::Host,
    op: &ContainerOp,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    use crate::containers as ct;
    use crate::{ctl, system};
    use ContainerOp as O;
    let code = |r: Result<i32, CliError>| match r? {
        0 => Ok(()),
        code => Err(CliError::Exit(code)),
    };
    match op {
        O::Attach(c) => code(ctl::attach(host, c)),
        O::Commit(c) => ctl::commit(host, c, out),
        O::Cp(c) => crate::cp::cp(host, c, out, err),
        O::Create(c) => code(ct::create(host, c, out, err)),
        O::Diff(c) => ctl::diff(host, c, out),
        O::Exec(c) => code(ctl::exec(host, c, err)),
        O::Export(c) => ctl::export(host, c, out),
        O::Kill(c) => ctl::kill(host, c, out, err),
        O::Logs(c) => ct::logs(host, c, out, err),
        O::Pause(c) => ctl::simple_post(host, "pause", c, out, err),
        O::Port(c) => crate::network::port(host, c, out),
        O::Rename(c) => ctl::rename(host, c),
        O::Restart(c) => ctl::restart(host, c, out, err),
        O::Run(c) => code(ct::run(host, c, out, err)),
        O::Start(c) => code(ctl::start(host, c, out, err)),
        O::Stats(c) => system::stats(host, c, out),
        O::Stop(c) => ct::stop(host, c, out, err),
        O::Top(c) => ctl::top(host, c, out),
        O::Unpause(c) => ctl::simple_post(host, "unpause", c, out, err),
        O::Update(c) => ctl::update(host, c, out, err),
        O::Wait(c) => ct::wait(host, c, out, err),
    }
}

/// Runs an image command (top-level or under `image`).
fn image_op(b: &dyn ImageBackend, op: &ImageOp, out: &mut dyn Write) -> Result<(), CliError> {
    match op {
        ImageOp::History(c) => commands::history(b, c, out),
        ImageOp::Import(c) => commands::import(b, c, out),
        ImageOp::Load(c) => {
            let _ = c.quiet;
            commands::load(b, c.input.as_deref(), out)
        }
        ImageOp::Pull(c) => {
            let _ = c.disable_content_trust;
            commands::pull(b, c, out, Box::new(io::stdout()))
        }
        ImageOp::Push(c) => commands::push(b, &c.name, c.quiet, out, Box::new(io::stdout())),
        ImageOp::Save(c) => commands::save(b, &c.images, c.output.as_deref()),
        ImageOp::Tag(c) => commands::tag(b, &c.source, &c.target),
    }
}

fn dispatch(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CliError> {
    use crate::containers as ct;
    use crate::ctl;
    use crate::system;
    use ContainerCommand as C;
    if let Command::Registry { command } = &cli.command {
        return crate::registry_server::run(command, out);
    }
    if !is_image_command(cli) {
        let host = host(cli)?;
        // Standard input is locked only by the commands that read answers from it: the
        // interactive ones read it from a thread of their own.
        let input = || io::stdin().lock();
        return match &cli.command {
            Command::ContainerOp(op) | Command::Container { command: C::Op(op) } => {
                container_op(&host, op, out, err)
            }
            Command::Inspect(c) => ctl::inspect(&host, c, None, out, err),
            Command::Container {
                command: C::Inspect(c),
            } => ctl::inspect(&host, c, Some("container"), out, err),
            Command::Events(c)
            | Command::System {
                command: SystemCommand::Events(c),
            } => system::events(&host, c, out),
            Command::Container {
                command: C::Prune(c),
            } => system::container_prune(&host, c, &mut input(), out),
            Command::System {
                command: SystemCommand::Prune(c),
            } => system::system_prune(&host, c, &mut input(), out),
            Command::System {
                command: SystemCommand::Df(c),
            } => system::df(&host, c, out),
            Command::Ps(c) | Command::Container { command: C::Ls(c) } => ct::ps(&host, c, out),
            Command::Rm(c) | Command::Container { command: C::Rm(c) } => ct::rm(&host, c, out, err),
            Command::Version(c) => system::version(&host, c, out, err),
            Command::Info(c)
            | Command::System {
                command: SystemCommand::Info(c),
            } => system::info(&host, c, out),
            Command::Network { command } => crate::network::network(&host, command, out, err),
            Command::Build(c)
            | Command::Image {
                command: ImageCommand::Build(c),
            } => crate::build::build(&host, c, out, err),
            Command::Builder { command } => crate::build::builder(&host, command, out),
            Command::Volume { command } => {
                crate::storage::volume(&host, command, out, err, &mut input())
            }
            // Image commands are handled below.
            _ => Ok(()),
        };
    }
    let b = backend(cli)?;
    let b: &dyn ImageBackend = b.as_ref();
    match &cli.command {
        Command::ImageOp(op)
        | Command::Image {
            command: ImageCommand::Op(op),
        } => image_op(b, op, out),
        Command::Images(c)
        | Command::Image {
            command: ImageCommand::Ls(c),
        } => commands::images(b, c, out),
        Command::Rmi(c)
        | Command::Image {
            command: ImageCommand::Rm(c),
        } => {
            let _ = c.no_prune;
            commands::rmi(b, &c.images, c.force, out, err)
        }
        Command::Image {
            command: ImageCommand::Inspect(c),
        } => {
            // Through the daemon the docker CLI prints its answer as it is; a data root's
            // documents are encoded as dockerd's Go encoder would.
            let json = if cli.data_root.is_some() {
                commands::InspectJson::GoEncoded
            } else {
                commands::InspectJson::Raw
            };
            commands::inspect(b, &c.images, c.format.as_deref(), json, out, err)
        }
        Command::Image {
            command: ImageCommand::Prune(c),
        } => {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            commands::prune(b, c.all, c.force, &mut input, out)
        }
        Command::Login(c) => {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            commands::login(b, c, &mut input, out, err)
        }
        Command::Logout(c) => commands::logout(b, c.server.as_deref(), out),
        Command::System {
            command: SystemCommand::Df(c),
        } => commands::system_df(b, c.format.as_deref(), out),
        // Daemon commands are handled above, without opening the data root.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries_option() {
        let cli = Cli::try_parse_from([
            "berth",
            "--insecure-registry",
            "a.example:5000,b.example",
            "--insecure-registry=c.example",
            "pull",
            "busybox",
        ])
        .unwrap();
        assert_eq!(
            cli.insecure_registries,
            ["a.example:5000", "b.example", "c.example"]
        );
        match cli.command {
            Command::ImageOp(ImageOp::Pull(c)) => {
                assert_eq!(c.name, "busybox");
                assert!(!c.quiet && !c.all_tags);
            }
            other => panic!("{other:?}"),
        }
        // Also after the command (global).
        let cli = Cli::try_parse_from(["berth", "push", "--insecure-registry", "d.example", "x"])
            .unwrap();
        assert_eq!(cli.insecure_registries, ["d.example"]);
    }

    #[test]
    fn login_flags() {
        let cli = Cli::try_parse_from([
            "berth",
            "login",
            "-u",
            "alice",
            "--password-stdin",
            "127.0.0.1:5000",
        ])
        .unwrap();
        match cli.command {
            Command::Login(c) => {
                assert_eq!(c.username.as_deref(), Some("alice"));
                assert!(c.password_stdin && c.password.is_none());
                assert_eq!(c.server.as_deref(), Some("127.0.0.1:5000"));
            }
            other => panic!("{other:?}"),
        }
    }
}
