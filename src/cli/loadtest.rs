//! `heatmesh loadtest FILE`: the predecessor's load-test scenario against a mesh of real
//! processes (docs/loadtest.md). The work is in `heatmesh_sim::loadtest`; this prints.

use anyhow::{Context, bail};
use heatmesh_sim::loadtest::{Event, RunOptions, Scenario, run};
use std::path::PathBuf;

/// Arguments of `heatmesh loadtest`.
#[derive(clap::Args)]
pub struct LoadtestArgs {
    /// Scenario file: the predecessor's JSON (`drills/loadtest/multi-plant.json`), or the
    /// same keys in TOML when the name ends in `.toml`.
    file: PathBuf,
    /// Run length in minutes instead of the file's `duration_minutes` (fractions allowed).
    #[arg(long)]
    duration_minutes: Option<f64>,
    /// Ramp length in minutes instead of the file's `ramp_up_minutes` (fractions allowed).
    #[arg(long)]
    ramp_up_minutes: Option<f64>,
    /// Load a running master (HOST:PORT) instead of starting a mesh; plants and sub-agents
    /// are then the master's own.
    #[arg(long)]
    master: Option<String>,
    /// With --master: the master's metrics address (HOST:PORT, its `metrics_listen`); the
    /// report then includes the master's CPU and memory, read from its /metrics page.
    #[arg(long, requires = "master")]
    master_metrics: Option<String>,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Keep the run directory (process logs, ledger, generated fleet configuration).
    #[arg(long)]
    keep_logs: bool,
}

/// Runs the scenario, prints progress on stderr and the report on stdout. Fails when the
/// verdict does, after printing the report.
pub async fn run_cli(a: LoadtestArgs) -> anyhow::Result<()> {
    let mut s = Scenario::from_path(&a.file)
        .with_context(|| format!("loading the scenario {}", a.file.display()))?;
    if let Some(d) = a.duration_minutes {
        s.duration_minutes = d;
    }
    if let Some(r) = a.ramp_up_minutes {
        s.ramp_up_minutes = r;
    }
    s.validate()
        .context("the scenario with --duration-minutes / --ramp-up-minutes applied")?;
    if !s.ignored_keys.is_empty() {
        eprintln!(
            "loadtest: ignoring scenario keys {}",
            s.ignored_keys.join(", ")
        );
    }
    let bin = std::env::current_exe().context("locating this executable")?;
    let opts = RunOptions {
        master: a.master.clone(),
        master_metrics: a.master_metrics.clone(),
        keep_logs: a.keep_logs,
        ..RunOptions::new(bin)
    };
    let report = run(&s, opts, |ev| match ev {
        Event::Starting { plants, dir } => eprintln!(
            "loadtest {}: starting heatmesh master + {plants} nodes on loopback (logs in {})",
            s.test_name,
            dir.display()
        ),
        Event::Ready {
            master,
            plants,
            sub_agents,
            ready_s,
        } => eprintln!(
            "loadtest {}: {plants} plants, {sub_agents} sub-agents at {master}{}; {} min load, {} min ramp",
            s.test_name,
            ready_s.map_or(String::new(), |r| format!(", ready in {r:.1} s")),
            s.duration_minutes,
            s.ramp_up_minutes
        ),
        Event::Progress(p) => eprintln!(
            "[{:>6.0} s {:<6}] tasks {:.1}/s of {:.1}/s: {} completed, {} failed, {} refused, {} dropped, {} open, p95 {} | fleet runs {:.0}/min of {:.0}/min, {} errors",
            p.elapsed_s,
            p.phase,
            p.accepted_per_s,
            p.target_per_s,
            p.completed,
            p.failed,
            p.refused,
            p.dropped,
            p.open,
            p.p95_ms.map_or("-".to_string(), |v| format!("{v:.1} ms")),
            p.runs_per_min,
            p.target_per_min,
            p.run_errors
        ),
    })
    .await
    .with_context(|| format!("load test {}", a.file.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.human());
    }
    if !report.verdict.pass {
        let missed: Vec<&str> = report
            .verdict
            .checks
            .iter()
            .filter(|c| c.ok == Some(false))
            .map(|c| c.metric.as_str())
            .collect();
        bail!(
            "load test verdict FAIL: {}",
            if missed.is_empty() {
                "nothing was measured".to_string()
            } else {
                missed.join(", ")
            }
        );
    }
    Ok(())
}
