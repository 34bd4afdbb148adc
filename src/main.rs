//! The `fabric-sync` command line: controller, node agent, demo, simulator and UFM tools.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use fabric_sync::config::LogFormat;

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
    Controller(Box<fabric_sync::controller::ControllerCmd>),
    /// Node agent: inventory, VF GUID verification and programming.
    Agent(Box<fabric_sync::agent::cli::AgentCmd>),
    /// A friendly fixed scenario on the embedded mock UFM (`--fabrics N`: N fabrics, N mock UFMs).
    Demo(fabric_sync::sim::demo::DemoCmd),
    /// Drive the engine against an in-memory cluster and mock UFM, and check every invariant.
    Simulate(Box<fabric_sync::sim::cli::SimulateCmd>),
    /// Check and inspect a UFM with the controller's settings.
    Ufm(Box<fabric_sync::ufm::cli::UfmCmd>),
    /// The ownership ledger (GuidClaims): `ledger release --all` before uninstalling.
    Ledger(Box<fabric_sync::kube::release::LedgerCmd>),
    /// Read-only comparison of the cluster and the ledger with UFM (exit 0 clean, 1 drift, 2 could not look).
    Audit(Box<fabric_sync::audit::cli::AuditCmd>),
    /// Print the version and git commit.
    Version,
    /// Every flag of every subcommand as JSON (long name, env var, default), for the tests that
    /// keep deploy/ true to the binary.
    #[command(hide = true)]
    ConfigSchema,
}

fn main() -> ExitCode {
    fabric_sync::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        // The audit reports on stdout and stderr itself; logs only when RUST_LOG asks.
        Command::Audit(_) => fabric_sync::ops::init_tracing_with(cli.log_format, "off"),
        _ => fabric_sync::ops::init_tracing(cli.log_format),
    }
    match cli.command {
        Command::Version => {
            println!("{}", fabric_sync::version_string());
            ExitCode::SUCCESS
        }
        Command::ConfigSchema => {
            println!("{}", config_schema());
            ExitCode::SUCCESS
        }
        Command::Controller(cmd) => fabric_sync::controller::main(*cmd),
        Command::Agent(cmd) => fabric_sync::agent::cli::main(*cmd),
        Command::Demo(cmd) => fabric_sync::sim::demo::main(cmd),
        Command::Simulate(cmd) => fabric_sync::sim::cli::main(*cmd),
        Command::Ufm(cmd) => fabric_sync::ufm::cli::main(*cmd),
        Command::Ledger(cmd) => fabric_sync::kube::release::main(*cmd),
        Command::Audit(cmd) => fabric_sync::audit::cli::main(*cmd),
    }
}

/// `{"<subcommand path>": [{"long", "env", "default"}]}` for every (sub)command, walked from clap's
/// own definition so that it cannot drift from the flags the binary accepts.
fn config_schema() -> serde_json::Value {
    fn walk(cmd: &clap::Command, path: String, out: &mut serde_json::Map<String, serde_json::Value>) {
        let args: Vec<serde_json::Value> = cmd
            .get_arguments()
            .filter(|a| !matches!(a.get_action(), clap::ArgAction::Help | clap::ArgAction::Version))
            .filter(|a| a.get_long().is_some() || a.get_env().is_some())
            .map(|a| {
                let default: Vec<String> =
                    a.get_default_values().iter().map(|d| d.to_string_lossy().into_owned()).collect();
                serde_json::json!({
                    "long": a.get_long(),
                    "env": a.get_env().map(|e| e.to_string_lossy().into_owned()),
                    "default": (!default.is_empty()).then(|| default.join(",")),
                })
            })
            .collect();
        out.insert(path.clone(), args.into());
        // clap's generated `help` subcommands take no settings.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub, format!("{path} {}", sub.get_name()), out);
        }
    }
    let mut cmd = Cli::command();
    // Propagates global flags (e.g. --log-format) into every subcommand.
    cmd.build();
    let mut out = serde_json::Map::new();
    walk(&cmd, cmd.get_name().to_string(), &mut out);
    out.into()
}
