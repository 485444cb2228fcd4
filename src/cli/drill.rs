//! `heatmesh drill`: failover drills against a mesh this command starts, scripted from
//! drills/*.toml or built from seeds, judged by the invariant checker (docs/drills.md).

use anyhow::{Context, bail};
use heatmesh_master::server::StartOptions;
use heatmesh_sim::drill::{self, Report, Spread};
use heatmesh_sim::dst;
use heatmesh_sim::harness::{DrillMesh, InProcMesh};
use heatmesh_sim::multiproc::ProcMesh;
use heatmesh_sim::scenario::Scenario;
use heatmesh_sim::workload::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Where the mesh runs.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The real master core with simulated nodes, network, client and ledger on one
    /// thread in simulated time: deterministic (one seed replays exactly) and fast.
    Simulated,
    /// Master and nodes in this process, the node protocol over gRPC through a simulated
    /// network, in real time.
    InProcess,
    /// Real `heatmesh master` and `heatmesh node` processes on loopback (kill -9, TCP proxy).
    MultiProcess,
}

/// Arguments of `heatmesh drill`.
#[derive(clap::Args)]
pub struct DrillArgs {
    /// Scenario files (drills/*.toml).
    files: Vec<PathBuf>,
    /// Build fault timelines from seeds instead of files.
    #[arg(long)]
    random: bool,
    /// Seeds for --random: `N` or `A..B` (inclusive).
    #[arg(long, default_value = "1..50")]
    seeds: String,
    /// Drills run at once (--random); default: 2, or one per core when simulated.
    #[arg(long)]
    jobs: Option<usize>,
    /// Where the mesh runs.
    #[arg(long, value_enum, default_value_t = Mode::Simulated)]
    mode: Mode,
    /// Seed for a scripted drill (jitter, task mix).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the scenario(s) as TOML and exit (with --random: the timelines the seeds build).
    #[arg(long)]
    print: bool,
    /// Print the report as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Also write the full JSON report(s) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Switch on a deliberate defect to prove the checker catches it (builds with the
    /// `planted-bugs` feature only): `stale-epoch`.
    #[cfg(feature = "planted-bugs")]
    #[arg(long)]
    planted_bug: Option<String>,
}

fn parse_seeds(s: &str) -> anyhow::Result<Vec<u64>> {
    let bad = || format!("--seeds: expected N or A..B with A <= B, got {s:?}");
    if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a.trim().parse().with_context(bad)?;
        let b: u64 = b.trim_start_matches('=').trim().parse().with_context(bad)?;
        if a > b {
            bail!(bad());
        }
        Ok((a..=b).collect())
    } else {
        Ok(vec![s.trim().parse().with_context(bad)?])
    }
}

/// The simulator's options for the arguments: the planted defect, if any.
fn sim_options(_a: &DrillArgs) -> anyhow::Result<dst::Options> {
    #[allow(unused_mut)]
    let mut o = dst::Options::default();
    #[cfg(feature = "planted-bugs")]
    match _a.planted_bug.as_deref() {
        None => {}
        Some("stale-epoch") => o.tune = Some(|m| m.planted.accept_stale_results = true),
        Some(other) => bail!("--planted-bug: unknown defect {other:?}; known: stale-epoch"),
    }
    Ok(o)
}

fn start_options(_a: &DrillArgs) -> anyhow::Result<StartOptions> {
    #[allow(unused_mut)]
    let mut opts = StartOptions {
        remote_only: true,
        ..Default::default()
    };
    #[cfg(feature = "planted-bugs")]
    match _a.planted_bug.as_deref() {
        None => {}
        Some("stale-epoch") => opts.planted.accept_stale_results = true,
        Some(other) => bail!("--planted-bug: unknown defect {other:?}; known: stale-epoch"),
    }
    Ok(opts)
}

async fn mesh_for(
    s: &Scenario,
    seed: u64,
    mode: Mode,
    opts: StartOptions,
) -> anyhow::Result<Box<dyn DrillMesh>> {
    Ok(match mode {
        Mode::Simulated => bail!("simulated drills run without a mesh"),
        Mode::InProcess => Box::new(
            InProcMesh::start(s, seed, opts)
                .await
                .map_err(anyhow::Error::msg)?,
        ),
        Mode::MultiProcess => {
            let bin = std::env::current_exe().context("locating the heatmesh executable")?;
            Box::new(ProcMesh::start(s, &bin).await.map_err(anyhow::Error::msg)?)
        }
    })
}

/// Runs the drills; fails when any drill fails.
pub async fn run(a: DrillArgs) -> anyhow::Result<()> {
    let opts = start_options(&a)?;
    if a.random {
        if !a.files.is_empty() {
            bail!("give scenario files or --random, not both");
        }
        if a.mode == Mode::MultiProcess {
            bail!("--random runs simulated or in-process (--mode simulated|in-process)");
        }
        return random(&a, opts).await;
    }
    if a.files.is_empty() {
        bail!("no scenario: give drills/*.toml files or --random");
    }
    let mut scenarios = Vec::new();
    for f in &a.files {
        let text = crate::read_input(f)?;
        let s = Scenario::from_toml(&text).with_context(|| format!("scenario {}", f.display()))?;
        use heatmesh_sim::scenario::ModeSupport as M;
        let unsuited = match (s.modes, a.mode) {
            (M::InProcess, Mode::MultiProcess) => Some("simulated or in-process only"),
            (M::MultiProcess, Mode::InProcess | Mode::Simulated) => Some("multi-process only"),
            (M::RealTime, Mode::Simulated) => Some("in-process or multi-process only"),
            _ => None,
        };
        match unsuited {
            // One file asked for by name: say why it cannot run. Among several (a glob), the
            // ones that suit the mode run and the rest are named.
            Some(why) if a.files.len() == 1 => bail!("{}: {why} (its `modes`)", f.display()),
            Some(why) => eprintln!("skipping {}: {why} (its `modes`)", f.display()),
            None => scenarios.push(s),
        }
    }
    if scenarios.is_empty() {
        bail!("none of the scenarios runs in this mode (see each file's `modes`)");
    }
    if a.print {
        for s in &scenarios {
            println!("{}", s.to_toml());
        }
        return Ok(());
    }
    let mut reports = Vec::new();
    for s in &scenarios {
        if a.mode == Mode::Simulated {
            let r = dst::run_with(s, a.seed, sim_options(&a)?).report;
            if !a.json {
                print_report(&r, &replay_scripted(&a, s));
            }
            reports.push(r);
            continue;
        }
        let progress = Arc::new(Progress::default());
        let bar = spinner(&s.name, s.workload.duration_ms);
        let ticker = tick(bar.clone(), progress.clone());
        let mesh = mesh_for(s, a.seed, a.mode, opts).await?;
        let r = drill::run(s, a.seed, mesh, progress).await;
        ticker.abort();
        bar.finish_and_clear();
        if !a.json {
            print_report(&r, &replay_scripted(&a, s));
        }
        reports.push(r);
    }
    write_reports(&a, &serde_json::to_value(&reports)?)?;
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.scenario.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} of {} drills failed: {}",
            failed.len(),
            reports.len(),
            failed.join(", ")
        )
    }
}

fn replay_scripted(a: &DrillArgs, s: &Scenario) -> String {
    let file = a
        .files
        .iter()
        .find(|f| {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|t| Scenario::from_toml(&t).ok())
                .is_some_and(|x| x.name == s.name)
        })
        .map_or("SCENARIO.toml".into(), |f| f.display().to_string());
    let mode = match a.mode {
        Mode::MultiProcess => " --mode multi-process",
        Mode::InProcess => " --mode in-process",
        Mode::Simulated => "",
    };
    format!("heatmesh drill {file} --seed {}{mode}", a.seed)
}

fn replay_random(seed: u64, a: &DrillArgs) -> String {
    let mode = if a.mode == Mode::InProcess {
        " --mode in-process"
    } else {
        ""
    };
    #[cfg(feature = "planted-bugs")]
    if let Some(b) = &a.planted_bug {
        return format!(
            "cargo run --release --features planted-bugs -- drill --random --seeds {seed}{mode} --planted-bug {b}"
        );
    }
    format!("heatmesh drill --random --seeds {seed}{mode}")
}

fn write_reports(a: &DrillArgs, v: &serde_json::Value) -> anyhow::Result<()> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_string_pretty(v)?)
            .with_context(|| format!("writing --report {}", p.display()))?;
        eprintln!("report written to {}", p.display());
    }
    Ok(())
}

fn visible() -> bool {
    std::io::stderr().is_terminal()
}

fn spinner(name: &str, duration_ms: u64) -> ProgressBar {
    let bar = if visible() {
        ProgressBar::new(duration_ms)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("drill {name}"));
    bar
}

fn tick(bar: ProgressBar, p: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    let start = Instant::now();
    tokio::spawn(async move {
        loop {
            bar.set_position(start.elapsed().as_millis() as u64);
            bar.set_message(format!(
                "{:.1} s, {} submitted, {} acknowledged",
                start.elapsed().as_secs_f64(),
                p.submitted.load(Ordering::Relaxed),
                p.acked.load(Ordering::Relaxed)
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn spread(s: &Spread) -> String {
    if s.n == 0 {
        "-".into()
    } else {
        format!("{:.1} / {:.1} / {:.1} ms (n={})", s.p50, s.p99, s.max, s.n)
    }
}

fn print_report(r: &Report, replay: &str) {
    println!(
        "drill {} ({}, seed {}): {} in {:.1} s",
        r.scenario,
        r.mode,
        r.seed,
        if r.passed { "PASSED" } else { "FAILED" },
        r.wall_s
    );
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    if let Some(h) = &r.trace_hash {
        println!("  trace hash: {h}");
    }
    println!("  faults:");
    for f in &r.faults {
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        println!(
            "    {:>6} ms  {:<20} {:<28} detected {:<10} recovered {}{}{}",
            f.at_ms,
            f.action,
            f.target,
            ms(f.detected_ms),
            ms(f.recovered_ms),
            f.error
                .as_ref()
                .map_or(String::new(), |e| format!("  ERROR {e}")),
            f.untimed
                .as_ref()
                .map_or(String::new(), |u| format!("  (not timed: {u})"))
        );
    }
    println!("  detection  p50/p99/max: {}", spread(&r.detection_ms));
    println!("  recovery   p50/p99/max: {}", spread(&r.recovery_ms));
    let t = &r.tasks;
    println!(
        "  tasks: {} submitted, {} acknowledged, {} completed, {} failed, {} retried, {} orphaned, {} stale results rejected, {} refused, {} unanswered",
        t.submitted,
        t.acked,
        t.completed,
        t.failed,
        t.retried,
        t.orphaned,
        t.stale_rejected.map_or("?".into(), |n| n.to_string()),
        t.refused,
        t.unanswered
    );
    println!(
        "  latency in fault windows  p50/p99/max: {}",
        spread(&r.latency_in_fault_ms)
    );
    println!(
        "  latency outside faults    p50/p99/max: {}",
        spread(&r.latency_outside_fault_ms)
    );
    println!(
        "  optimizations: {} ok, {} failed, p50/p99/max {}",
        r.optimizations_ok,
        r.optimizations_failed,
        spread(&r.optimization_ms)
    );
    if let Some(n) = r.plant_escalations {
        println!("  plant escalations: {n}");
    }
    println!("  invariants:");
    for v in &r.verdicts {
        println!(
            "    {} {:<28} {} checked, {} violations: {}",
            if v.ok { "ok  " } else { "FAIL" },
            v.name,
            v.checked,
            v.violations,
            v.rule
        );
        if !v.ok {
            for e in &v.examples {
                println!("         {e}");
            }
        }
    }
    if !r.passed {
        println!("  replay: {replay}");
    }
}

async fn random(a: &DrillArgs, opts: StartOptions) -> anyhow::Result<()> {
    let seeds = parse_seeds(&a.seeds)?;
    if a.print {
        for s in &seeds {
            println!("# seed {s}\n{}", Scenario::random(*s).to_toml());
        }
        return Ok(());
    }
    let started = Instant::now();
    let bar = if visible() {
        ProgressBar::new(seeds.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "random drills [{bar:30}] {pos}/{len} seeds, {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    if a.mode == Mode::Simulated {
        let o = sim_options(a)?;
        let reports = simulate(&seeds, a, o, &bar);
        return finish_random(a, &seeds, reports, started, bar);
    }
    let jobs = a.jobs.unwrap_or(2).max(1);
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for seed in seeds.clone() {
        let permit = sem.clone().acquire_owned().await?;
        let (bar, failed) = (bar.clone(), failed.clone());
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let s = Scenario::random(seed);
            let r = match InProcMesh::start(&s, seed, opts).await {
                Ok(m) => drill::run(&s, seed, Box::new(m), Arc::new(Progress::default())).await,
                Err(e) => failed_start(&s, seed, e),
            };
            if !r.passed {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            bar.inc(1);
            bar.set_message(format!("{} failed", failed.load(Ordering::Relaxed)));
            r
        }));
    }
    let mut reports = Vec::new();
    for h in handles {
        reports.push(h.await?);
    }
    finish_random(a, &seeds, reports, started, bar)
}

/// Runs the seeds' simulated drills on one thread per job, each seed on its own; reports
/// come back in seed order.
fn simulate(seeds: &[u64], a: &DrillArgs, o: dst::Options, bar: &ProgressBar) -> Vec<Report> {
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, seeds.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicU64::new(0);
    let out: Vec<std::sync::Mutex<Option<Report>>> =
        seeds.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(k) else { break };
                    let r = dst::run_with(&Scenario::random(seed), seed, o).report;
                    if !r.passed {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    bar.inc(1);
                    bar.set_message(format!("{} failed", failed.load(Ordering::Relaxed)));
                    *out[k].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    out.into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

fn finish_random(
    a: &DrillArgs,
    _seeds: &[u64],
    reports: Vec<Report>,
    started: Instant,
    bar: ProgressBar,
) -> anyhow::Result<()> {
    bar.finish_and_clear();
    let summary = summarize(&reports, &a.seeds, started.elapsed());
    if !a.json {
        print_random(&summary, &reports, a);
    }
    write_reports(
        a,
        &serde_json::json!({ "summary": summary, "drills": reports }),
    )?;
    if summary.failed > 0 {
        bail!("{} of {} seeds failed", summary.failed, summary.seeds);
    }
    Ok(())
}

fn failed_start(s: &Scenario, seed: u64, e: String) -> Report {
    Report {
        error: Some(format!("starting the mesh: {e}")),
        ..Report::new(&s.name, seed, "in-process")
    }
}

/// Totals over many drills.
#[derive(serde::Serialize)]
struct Summary {
    seeds_arg: String,
    seeds: u64,
    passed: u64,
    failed: u64,
    wall_s: f64,
    faults: BTreeMap<String, u64>,
    detection_ms: Spread,
    recovery_ms: Spread,
    submitted: u64,
    acked: u64,
    completed: u64,
    failed_tasks: u64,
    retried: u64,
    orphaned: u64,
    stale_rejected: u64,
    latency_in_fault_ms: Spread,
    latency_outside_fault_ms: Spread,
    violations: BTreeMap<String, u64>,
    failing_seeds: Vec<u64>,
    /// Simulated drills: one hash over the seeds' trace hashes, in seed order; a replay of
    /// the same seeds prints the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_hash: Option<String>,
}

fn summarize(rs: &[Report], arg: &str, took: Duration) -> Summary {
    let mut faults = BTreeMap::new();
    let mut violations = BTreeMap::new();
    for r in rs {
        for f in &r.faults {
            *faults.entry(f.action.to_string()).or_insert(0) += 1;
        }
        for v in &r.verdicts {
            *violations.entry(v.name.to_string()).or_insert(0) += v.violations;
        }
    }
    let sum = |f: fn(&Report) -> u64| rs.iter().map(f).sum::<u64>();
    // Percentiles over drills' own p50s would hide tails; pool the per-fault samples.
    let pooled = |f: fn(&drill::Injected) -> Option<f64>| {
        Spread::of(
            rs.iter()
                .flat_map(|r| r.faults.iter().filter_map(f))
                .collect(),
        )
    };
    Summary {
        seeds_arg: arg.to_string(),
        seeds: rs.len() as u64,
        passed: rs.iter().filter(|r| r.passed).count() as u64,
        failed: rs.iter().filter(|r| !r.passed).count() as u64,
        wall_s: took.as_secs_f64(),
        faults,
        detection_ms: pooled(|f| f.detected_ms),
        recovery_ms: pooled(|f| f.recovered_ms),
        submitted: sum(|r| r.tasks.submitted),
        acked: sum(|r| r.tasks.acked),
        completed: sum(|r| r.tasks.completed),
        failed_tasks: sum(|r| r.tasks.failed),
        retried: sum(|r| r.tasks.retried),
        orphaned: sum(|r| r.tasks.orphaned),
        stale_rejected: sum(|r| r.tasks.stale_rejected.unwrap_or(0)),
        // Per-drill maxima: the worst latency each drill saw, inside and outside faults.
        latency_in_fault_ms: Spread::of(
            rs.iter()
                .filter(|r| r.latency_in_fault_ms.n > 0)
                .map(|r| r.latency_in_fault_ms.max)
                .collect(),
        ),
        latency_outside_fault_ms: Spread::of(
            rs.iter()
                .filter(|r| r.latency_outside_fault_ms.n > 0)
                .map(|r| r.latency_outside_fault_ms.max)
                .collect(),
        ),
        violations,
        failing_seeds: rs.iter().filter(|r| !r.passed).map(|r| r.seed).collect(),
        trace_hash: rs
            .iter()
            .all(|r| r.trace_hash.is_some())
            .then(|| dst::Trace::combine(rs.iter().filter_map(|r| r.trace_hash.clone()))),
    }
}

fn print_random(s: &Summary, rs: &[Report], a: &DrillArgs) {
    println!(
        "random drills ({}), seeds {}: {} run, {} passed, {} failed in {:.1} s",
        rs.first().map_or("-", |r| r.mode.as_str()),
        s.seeds_arg,
        s.seeds,
        s.passed,
        s.failed,
        s.wall_s
    );
    let faults: Vec<String> = s.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  faults injected: {}", faults.join(", "));
    println!("  detection p50/p99/max: {}", spread(&s.detection_ms));
    println!("  recovery  p50/p99/max: {}", spread(&s.recovery_ms));
    println!(
        "  tasks: {} submitted, {} acknowledged, {} completed, {} failed, {} retried, {} orphaned, {} stale results rejected",
        s.submitted, s.acked, s.completed, s.failed_tasks, s.retried, s.orphaned, s.stale_rejected
    );
    println!(
        "  worst latency per drill, in fault windows  p50/p99/max: {}",
        spread(&s.latency_in_fault_ms)
    );
    println!(
        "  worst latency per drill, outside faults    p50/p99/max: {}",
        spread(&s.latency_outside_fault_ms)
    );
    let total: u64 = s.violations.values().sum();
    println!("  invariant violations: {total}");
    if let Some(h) = &s.trace_hash {
        println!("  trace hash: {h} (the same seeds replay to the same hash)");
    }
    for (k, v) in s.violations.iter().filter(|(_, v)| **v > 0) {
        println!("    {k}: {v}");
    }
    for r in rs.iter().filter(|r| !r.passed) {
        println!();
        print_report(r, &replay_random(r.seed, a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_ranges() {
        assert_eq!(parse_seeds("3").unwrap(), vec![3]);
        assert_eq!(parse_seeds("1..4").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(parse_seeds("1..=2").unwrap(), vec![1, 2]);
        let e = parse_seeds("5..1").unwrap_err().to_string();
        assert!(e.starts_with("--seeds:"), "{e}");
        assert!(parse_seeds("x").is_err());
    }
}
