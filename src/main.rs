//! The `fabric-sync` command line: controller, node agent, demo, simulator and UFM tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fabric_sync::config::{ControllerArgs, EngineArgs, LogFormat, UfmArgs};

#[derive(Parser)]
#[command(
    name = "fabric-sync",
    version,
    about = "Keeps InfiniBand partition membership in NVIDIA UFM in step with Kubernetes pods"
)]
struct Cli {
    /// Log format: text or json (filter with RUST_LOG).
    #[arg(long, env = "FABRIC_SYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (Deployment, leader elected).
    Controller(Box<ControllerCmd>),
    /// Node agent: inventory, VF GUID verification and programming.
    Agent(Box<fabric_sync::agent::cli::AgentCmd>),
    /// A friendly fixed scenario on the embedded mock UFM.
    Demo,
    /// Drive the engine against an in-memory cluster and mock UFM, and check every invariant.
    Simulate(Box<fabric_sync::sim::cli::SimulateCmd>),
    /// Check and inspect a UFM with the controller's settings.
    Ufm(Box<fabric_sync::ufm::cli::UfmCmd>),
    /// Print the version and git commit.
    Version,
}

#[derive(clap::Args)]
struct ControllerCmd {
    #[command(flatten)]
    ufm: UfmArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    controller: ControllerArgs,
}

fn not_built(what: &str) -> ExitCode {
    eprintln!("fabric-sync {what}: not built yet in this version");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    fabric_sync::install_crypto_provider();
    let cli = Cli::parse();
    fabric_sync::ops::init_tracing(cli.log_format);
    match cli.command {
        Command::Version => {
            println!("{}", fabric_sync::version_string());
            ExitCode::SUCCESS
        }
        Command::Controller(_) => not_built("controller"),
        Command::Agent(cmd) => fabric_sync::agent::cli::main(*cmd),
        Command::Demo => fabric_sync::sim::demo::main(),
        Command::Simulate(cmd) => fabric_sync::sim::cli::main(*cmd),
        Command::Ufm(cmd) => fabric_sync::ufm::cli::main(*cmd),
    }
}
