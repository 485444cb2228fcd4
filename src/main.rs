//! `heatmesh`: the process-heat mesh. Runs the mesh (`up`, `demo`), talks to a running one
//! (`submit`, `task`, `tasks`, `agents`, `plants`, `nodes`), takes plant data in and out
//! (`ingest`, `readings`, `meters`), runs calculations directly
//! (`calc`), runs the GL-001 heat-distribution optimizer (`optimize`), measures it
//! (`bench`) and rehearses failures (`drill`).

mod cli;

// glibc malloc serialises the many small allocations of gRPC, JSON and sled across threads;
// mimalloc keeps them thread-local (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// heatmesh: process-heat actor mesh (GL-001 master, plants, GL-0xx sub-agents).
#[derive(Parser)]
#[command(name = "heatmesh", version, about, propagate_version = true)]
struct Cli {
    /// Master gRPC address for client commands.
    #[arg(
        long,
        global = true,
        env = "HEATMESH_ADDR",
        default_value = "http://127.0.0.1:7400"
    )]
    addr: String,
    /// Log format.
    #[arg(long, global = true, value_enum, env = "HEATMESH_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `heatmesh_master=debug`.
    #[arg(long, global = true, env = "HEATMESH_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start the master and the sample plants in this process, run a sample workload through
    /// the gRPC API, print the results and exit.
    Demo(cli::demo::DemoArgs),
    /// Start the master and its plants in this process and keep serving.
    Up(cli::up::UpArgs),
    /// Start the master alone: plants run on attached nodes (`heatmesh node`).
    Master(cli::up::UpArgs),
    /// Start a plant node that attaches to a master.
    Node(cli::node::NodeArgs),
    /// Submit a task.
    Submit(cli::client::SubmitArgs),
    /// Show one task (with its history); `--watch` follows it until it is terminal.
    Task(cli::client::TaskArgs),
    /// List tasks, or manage them (`retry-failed`, `clear-orphaned`).
    Tasks(cli::client::TasksArgs),
    /// List sub-agents with status and restarts.
    Agents(cli::client::AgentsArgs),
    /// List plants with placement and queue figures.
    Plants(cli::client::JsonFlag),
    /// List nodes.
    Nodes(cli::client::JsonFlag),
    /// Take a consistent online backup of the running master's ledger into one file.
    Backup(cli::backup::BackupArgs),
    /// Rebuild a new data directory from a backup file (`heatmesh backup`).
    Restore(cli::backup::RestoreArgs),
    /// Import historian CSV files (a file or a folder) as a plant's readings.
    Ingest(cli::readings::IngestArgs),
    /// Show one meter's readings over a time window (table, `--csv` or `--json`).
    Readings(cli::readings::ReadingsArgs),
    /// List the configured meters with their source and address.
    Meters(cli::readings::MetersArgs),
    /// Each connector-read meter's health: state, last value and age, errors and their cause.
    Feeds(cli::readings::FeedsArgs),
    /// Serve the fleet's Modbus sources from an energy-conserving plant model (a stand-in
    /// for the plants' SCADA).
    Simulate(cli::simulate::SimulateArgs),
    /// Run a calculation directly (no mesh) and print its JSON result.
    Calc(cli::calc::CalcArgs),
    /// GL-001 heat distribution: solve a scenario file here (`--scenario`), or the running
    /// master's fleet (`--fleet`); steer the master's optimizer (`set-algorithm`, `relax`,
    /// `status`).
    Optimize(cli::optimize::OptimizeArgs),
    /// Drive the gRPC API on loopback and print throughput and latency figures.
    Bench(cli::bench::BenchArgs),
    /// Failover drills: run drills/*.toml scenarios or seeded random fault timelines against
    /// a mesh this command starts, and check the invariants (docs/drills.md).
    Drill(cli::drill::DrillArgs),
    /// Run a load-test scenario (the predecessor's JSON format) against a mesh of real
    /// processes it starts (or `--master`): rates, latencies, CPU, memory and a verdict.
    Loadtest(cli::loadtest::LoadtestArgs),
}

fn init_logging(format: LogFormat, filter: Option<&str>, default: &str) {
    // The OPC UA stack narrates every session at info (and its simulator warns that it trusts
    // any client); the connectors report what matters under heatmesh's own targets.
    let default =
        format!("{default},opcua_server=warn,opcua_client=error,opcua_core=warn,opcua_crypto=warn");
    let default = default.as_str();
    let filter = tracing_subscriber::EnvFilter::try_new(filter.unwrap_or(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Up(_) | Command::Master(_) | Command::Node(_) | Command::Simulate(_) => "info",
        // The drilled mesh runs in this process; its expected warnings (nodes lost, agents
        // panicking) would drown the report.
        Command::Drill(_) => "off",
        _ => "warn",
    };
    init_logging(cli.log_format, cli.log.as_deref(), default_level);
    // Servers hold a descriptor per connection: take the hard limit where it is higher.
    if matches!(
        cli.command,
        Command::Up(_) | Command::Master(_) | Command::Node(_) | Command::Demo(_)
    ) && let Some((before, after)) = heatmesh_master::conn::raise_open_file_limit()
        && after > before
    {
        tracing::info!("open-file limit raised from {before} to {after}");
    }
    // Agent panics are caught and handled by the supervision tree; log them as one line
    // instead of a raw backtrace on stderr.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), "panic: {info}");
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = cli.addr;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(a) => cli::demo::run(a).await,
            Command::Up(a) => cli::up::run(a, false).await,
            Command::Master(a) => cli::up::run(a, true).await,
            Command::Node(a) => cli::node::run(a).await,
            Command::Submit(a) => cli::client::submit(&addr, a).await,
            Command::Task(a) => cli::client::task(&addr, a).await,
            Command::Tasks(a) => cli::client::tasks(&addr, a).await,
            Command::Agents(a) => cli::client::agents(&addr, a).await,
            Command::Plants(a) => cli::client::plants(&addr, a).await,
            Command::Nodes(a) => cli::client::nodes(&addr, a).await,
            Command::Backup(a) => cli::backup::backup(&addr, a).await,
            Command::Restore(a) => cli::backup::restore(a),
            Command::Ingest(a) => cli::readings::ingest(&addr, a).await,
            Command::Readings(a) => cli::readings::readings(&addr, a).await,
            Command::Meters(a) => cli::readings::meters(&addr, a).await,
            Command::Feeds(a) => cli::readings::feeds(&addr, a).await,
            Command::Simulate(a) => cli::simulate::run(a).await,
            Command::Calc(a) => cli::calc::run(a),
            Command::Optimize(a) => cli::optimize::run(&addr, a).await,
            Command::Bench(a) => cli::bench::run(a).await,
            Command::Drill(a) => cli::drill::run(a).await,
            Command::Loadtest(a) => cli::loadtest::run_cli(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where a command reads its input: a path, or `-` for stdin.
pub fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    use anyhow::Context;
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}
