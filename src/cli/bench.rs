//! `heatmesh bench`: drives the gRPC API on loopback and prints throughput and latency.
//!
//! Two phases, both against a mesh it starts in this process (or `--target`):
//! a closed-loop throughput run (`--tasks` submitted by `--concurrency` clients as fast as
//! acknowledgements allow) and an open-loop latency run (`--rate` tasks/s for
//! `--duration`). Latency is submit-to-completed: from just before SubmitTask is sent to
//! the moment the completion arrives on the StreamEvents feed. Every task is durable
//! before it is acknowledged, as always.

use super::client::{connect, rpc_err};
use super::mesh::MeshOpts;
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use heatmesh_master::ledger::wal;
use heatmesh_master::server::{self, StartOptions};
use heatmesh_proto::v1 as pb;
use pb::task_service_client::TaskServiceClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Arguments of `heatmesh bench`: the task benchmark by default, or `bench calc`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchWhat>,
    #[command(flatten)]
    tasks: TaskBenchArgs,
}

#[derive(clap::Subcommand)]
enum BenchWhat {
    /// Task throughput and latency through the gRPC API (the default).
    Tasks(TaskBenchArgs),
    /// Single-core throughput of each agent kind's calculation and of IF97 property calls.
    Calc(super::bench_calc::CalcBenchArgs),
    /// Readings made durable through IngestReadings: throughput and send-to-durable latency.
    Readings(super::bench_readings::ReadingsBenchArgs),
    /// A master, three plant nodes and a spare as processes: throughput through the remote
    /// nodes, then kill -9 and partition detection and re-placement times.
    Cluster(super::bench_cluster::ClusterBenchArgs),
    /// A long load with a short retention, as processes: the master's resident memory and
    /// data directory sampled until both are seen flat.
    Soak(super::bench_soak::SoakBenchArgs),
}

/// Arguments of the task benchmark.
#[derive(clap::Args)]
pub struct TaskBenchArgs {
    /// Tasks in the throughput phase (0 skips it).
    #[arg(long, default_value_t = 50_000)]
    pub(crate) tasks: usize,
    /// Concurrent submitters in the throughput phase. Each waits for its task to be durable,
    /// so throughput needs enough of them to fill a group commit.
    #[arg(long, default_value_t = 512)]
    pub(crate) concurrency: usize,
    /// Offered load of the latency phase, tasks/s (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub(crate) rate: u64,
    /// Length of the latency phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) duration: Duration,
    /// Bench a running master at this address instead of starting one.
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Ledger directory for the mesh it starts (default: a temporary directory).
    #[arg(long)]
    pub(crate) data_dir: Option<std::path::PathBuf>,
    /// Run this benchmark with another heatmesh build and with this one, alternately, and
    /// print each run's figures and the ratio of the medians (this build / the other).
    #[arg(long, value_name = "OTHER_BINARY")]
    pub(crate) compare: Option<std::path::PathBuf>,
    /// Runs of each build with --compare.
    #[arg(long, default_value_t = 3, requires = "compare")]
    pub(crate) rounds: usize,
}

type Completions = Arc<Mutex<HashMap<u64, Instant>>>;

fn request(i: usize, plants: &[String]) -> pb::SubmitTaskRequest {
    let fuel = 900.0 + (i % 101) as f64;
    let flow = |name: &str, kwh: f64| pb::EnergyFlow {
        name: name.into(),
        energy_kwh: kwh,
        ..Default::default()
    };
    pb::SubmitTaskRequest {
        plant_id: plants[i % plants.len()].clone(),
        payload: Some(pb::TaskPayload {
            request: Some(pb::task_payload::Request::Gl009HeatBalance(
                pb::HeatBalanceRequest {
                    inputs: vec![flow("fuel", fuel), flow("electricity", 50.0)],
                    outputs: vec![flow("steam", fuel * 0.8)],
                    losses: vec![flow("stack", fuel * 0.1)],
                    ..Default::default()
                },
            )),
        }),
        ..Default::default()
    }
}

/// Follows the terminal-event feed, recording when each task completed.
async fn follow(
    channel: Channel,
    done: Completions,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    follow_terminal(channel, move |ev| {
        if let Ok(id) = ev.task_id.parse::<u64>() {
            done.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Instant::now());
        }
    })
    .await
}

/// Opens the terminal-event feed and hands each event to `on_event` until it ends; an
/// error ending it is printed.
pub(crate) async fn follow_terminal(
    channel: Channel,
    mut on_event: impl FnMut(pb::TaskEvent) + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut feed = TaskServiceClient::new(channel)
        .stream_events(pb::StreamEventsRequest {
            terminal_only: true,
            resume_after_seq: None,
        })
        .await
        .map_err(rpc_err)?
        .into_inner();
    Ok(tokio::spawn(async move {
        loop {
            match feed.message().await {
                Ok(Some(ev)) => on_event(ev),
                Ok(None) => return,
                Err(e) => {
                    eprintln!("bench: event feed ended: {}", e.message());
                    return;
                }
            }
        }
    }))
}

pub(crate) struct Figures {
    completed: usize,
    secs: f64,
    hist: Histogram<u64>,
}

async fn collect(
    started: &[(u64, Instant)],
    done: &Completions,
    wait: Duration,
    t0: Instant,
) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + wait;
    loop {
        let n = {
            let d = done.lock().unwrap_or_else(|e| e.into_inner());
            started.iter().filter(|(id, _)| d.contains_key(id)).count()
        };
        if n == started.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = done.lock().unwrap_or_else(|e| e.into_inner());
    let mut hist = Histogram::<u64>::new(3).context("histogram")?;
    let mut last = t0;
    let mut completed = 0;
    for (id, s) in started {
        if let Some(e) = d.get(id) {
            completed += 1;
            last = last.max(*e);
            hist.record(e.saturating_duration_since(*s).as_micros().max(1) as u64)?;
        }
    }
    Ok(Figures {
        completed,
        secs: last.duration_since(t0).as_secs_f64(),
        hist,
    })
}

pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn print(label: &str, f: &Figures, submitted: usize) {
    println!(
        "{label}: {}/{} completed in {:.2} s = {:.0} tasks/s; submit-to-completed latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f.completed,
        submitted,
        f.secs,
        f.completed as f64 / f.secs.max(1e-9),
        ms(&f.hist, 0.50),
        ms(&f.hist, 0.95),
        ms(&f.hist, 0.99),
        f.hist.max() as f64 / 1000.0
    );
}

/// The figures `compare` reads from one run's output, per phase.
#[derive(Debug, Default, Clone, Copy)]
struct RunFigures {
    throughput: Option<(f64, f64)>,
    latency: Option<(f64, f64)>,
}

/// Picks one phase's (tasks/s, p99 ms) from a run.
type Pick = fn(&RunFigures) -> Option<(f64, f64)>;

/// Reads `= N tasks/s` and `p99 X ms` from the phase lines both builds print.
fn parse_run(out: &str) -> RunFigures {
    let grab = |line: &str| -> Option<(f64, f64)> {
        let rate = line
            .split("= ")
            .nth(1)?
            .split(" tasks/s")
            .next()?
            .parse()
            .ok()?;
        let p99 = line
            .split("p99 ")
            .nth(1)?
            .split(" ms")
            .next()?
            .parse()
            .ok()?;
        Some((rate, p99))
    };
    let mut f = RunFigures::default();
    for line in out.lines() {
        if line.starts_with("throughput:") {
            f.throughput = grab(line);
        } else if line.starts_with("latency at") {
            f.latency = grab(line);
        }
    }
    f
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `--compare`: both builds, alternately, same arguments; prints every run and the ratios.
fn compare(args: &TaskBenchArgs, other: &std::path::Path) -> anyhow::Result<()> {
    let this = std::env::current_exe().context("finding this executable")?;
    let bench_args = [
        "bench".to_string(),
        "--tasks".into(),
        args.tasks.to_string(),
        "--concurrency".into(),
        args.concurrency.to_string(),
        "--rate".into(),
        args.rate.to_string(),
        "--duration".into(),
        humantime::format_duration(args.duration).to_string(),
    ];
    let builds = [("other", other.to_path_buf()), ("this", this)];
    let mut runs: Vec<Vec<RunFigures>> = vec![Vec::new(), Vec::new()];
    for round in 1..=args.rounds.max(1) {
        for (i, (name, exe)) in builds.iter().enumerate() {
            let out = std::process::Command::new(exe)
                .args(&bench_args)
                .output()
                .with_context(|| format!("running {}", exe.display()))?;
            if !out.status.success() {
                bail!(
                    "{} bench failed: {}",
                    exe.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let f = parse_run(&text);
            let show = |p: Option<(f64, f64)>| {
                p.map_or("-".to_string(), |(r, p99)| {
                    format!("{r:.0} tasks/s, p99 {p99:.2} ms")
                })
            };
            println!(
                "round {round} {name:>5}: throughput {}; latency phase {}",
                show(f.throughput),
                show(f.latency)
            );
            runs[i].push(f);
        }
    }
    let med = |i: usize, pick: Pick, part: usize| {
        median(
            runs[i]
                .iter()
                .filter_map(pick)
                .map(|p| if part == 0 { p.0 } else { p.1 })
                .collect(),
        )
    };
    println!("medians over {} rounds (this / other):", args.rounds.max(1));
    let phases: [(&str, Pick); 2] = [
        ("throughput", |f| f.throughput),
        ("latency phase", |f| f.latency),
    ];
    for (label, pick) in phases {
        let (o_rate, t_rate) = (med(0, pick, 0), med(1, pick, 0));
        let (o_p99, t_p99) = (med(0, pick, 1), med(1, pick, 1));
        if o_rate.is_nan() || t_rate.is_nan() {
            continue;
        }
        println!(
            "  {label}: {t_rate:.0} vs {o_rate:.0} tasks/s ({:.2}x); p99 {t_p99:.2} vs {o_p99:.2} ms ({:.2}x)",
            t_rate / o_rate,
            t_p99 / o_p99
        );
    }
    Ok(())
}

/// Prints the ledger's group-commit figures for the phase just run (in-process mesh only).
pub(crate) fn print_ledger(mesh: Option<&server::RunningMesh>) {
    let Some(m) = mesh else { return };
    let st = m.ledger().take_stats();
    if st.groups == 0 {
        return;
    }
    println!(
        "  ledger: {} groups, {:.1} commits/group, {:.1} KiB/group; commit (append + fdatasync) p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; apply to sled p50 {:.3} ms, p99 {:.3} ms",
        st.groups,
        st.commits as f64 / st.groups as f64,
        st.bytes as f64 / st.groups as f64 / 1024.0,
        ms(&st.commit_us, 0.5),
        ms(&st.commit_us, 0.99),
        st.commit_us.max() as f64 / 1000.0,
        ms(&st.apply_us, 0.5),
        ms(&st.apply_us, 0.99),
    );
}

/// Runs the selected benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        None => run_tasks(args.tasks).await,
        Some(BenchWhat::Tasks(t)) => run_tasks(t).await,
        Some(BenchWhat::Calc(c)) => super::bench_calc::run(c),
        Some(BenchWhat::Cluster(c)) => super::bench_cluster::run(c).await,
        Some(BenchWhat::Readings(r)) => super::bench_readings::run(r).await,
        Some(BenchWhat::Soak(s)) => super::bench_soak::run(s).await,
    }
}

/// Runs the task phases and prints one line of figures per phase.
pub(crate) async fn run_tasks(args: TaskBenchArgs) -> anyhow::Result<()> {
    if let Some(other) = &args.compare {
        return compare(&args, other);
    }
    let tmp = tempfile::tempdir().context("creating a temporary data directory")?;
    let (addr, plants, mesh) = match &args.target {
        Some(t) => {
            let ch = connect(t).await?;
            let mut m = pb::mesh_service_client::MeshServiceClient::new(ch);
            let plants = m
                .list_plants(pb::ListPlantsRequest {})
                .await
                .map_err(rpc_err)?
                .into_inner();
            (
                t.clone(),
                plants.plants.into_iter().map(|p| p.id).collect::<Vec<_>>(),
                None,
            )
        }
        None => {
            let opts = MeshOpts {
                config: None,
                data_dir: Some(
                    args.data_dir
                        .clone()
                        .unwrap_or_else(|| tmp.path().to_path_buf()),
                ),
                listen: Some("127.0.0.1:0".parse()?),
                metrics_listen: None,
            };
            let mut cfg = opts.load()?;
            cfg.metrics_listen = None;
            let mesh = server::start(cfg.clone(), StartOptions::default()).await?;
            if !mesh.wait_ready(Duration::from_secs(10)).await {
                bail!("plants were not placed within 10 s");
            }
            let plants = cfg.plants.iter().map(|p| p.id.clone()).collect();
            (mesh.grpc_addr.to_string(), plants, Some(mesh))
        }
    };
    if plants.is_empty() {
        bail!("the target runs no plants");
    }
    println!(
        "heatmesh bench: GL-009 heat balances over gRPC on {addr}, {} plants, {} cores",
        plants.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let Some(m) = &mesh {
        let dir = args.data_dir.as_deref().unwrap_or(tmp.path());
        let mut h = Histogram::<u64>::new(3).context("histogram")?;
        for us in wal::fsync_probe(dir, 300).context("fsync probe of the data directory")? {
            h.record(us.max(1))?;
        }
        println!(
            "disk: 4 KiB append + fdatasync in the data directory, 300 rounds: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(&h, 0.5),
            ms(&h, 0.99),
            h.max() as f64 / 1000.0
        );
        m.ledger().take_stats();
    }
    let channel = connect(&addr).await?;
    let done: Completions = Arc::default();
    let feed = follow(channel.clone(), done.clone()).await?;

    if args.tasks > 0 {
        let per = args.tasks.div_ceil(args.concurrency.max(1));
        let t0 = Instant::now();
        let mut workers = Vec::new();
        for w in 0..args.concurrency.max(1) {
            let mut c = TaskServiceClient::new(channel.clone());
            let plants = plants.clone();
            let n = per.min(args.tasks.saturating_sub(w * per));
            workers.push(tokio::spawn(async move {
                let mut started = Vec::with_capacity(n);
                let mut acks = Vec::with_capacity(n);
                for i in 0..n {
                    let s = Instant::now();
                    let r = c
                        .submit_task(request(w * per + i, &plants))
                        .await?
                        .into_inner();
                    acks.push(s.elapsed().as_micros() as u64);
                    let id = r.task.and_then(|t| t.id.parse().ok()).unwrap_or(0);
                    started.push((id, s));
                }
                Ok::<_, tonic::Status>((started, acks))
            }));
        }
        let mut started = Vec::with_capacity(args.tasks);
        let mut ack = Histogram::<u64>::new(3).context("histogram")?;
        for w in workers {
            let (s, a) = w.await?.map_err(rpc_err)?;
            started.extend(s);
            for us in a {
                ack.record(us.max(1))?;
            }
        }
        let acked = t0.elapsed().as_secs_f64();
        let f = collect(&started, &done, Duration::from_secs(120), t0).await?;
        println!(
            "throughput ({} submitters): {} acknowledged (durable) in {acked:.2} s = {:.0} submits/s; submit-to-acknowledged p50 {:.2} ms, p99 {:.2} ms",
            args.concurrency,
            started.len(),
            started.len() as f64 / acked,
            ms(&ack, 0.5),
            ms(&ack, 0.99),
        );
        print("throughput", &f, started.len());
        print_ledger(mesh.as_ref());
    }

    if args.rate > 0 {
        let total = (args.rate as f64 * args.duration.as_secs_f64()) as usize;
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        let t0 = Instant::now();
        let mut handles = Vec::with_capacity(total);
        for i in 0..total {
            let at = t0 + interval.mul_f64(i as f64);
            tokio::time::sleep_until(at.into()).await;
            let mut c = TaskServiceClient::new(channel.clone());
            let req = request(i, &plants);
            handles.push(tokio::spawn(async move {
                let s = Instant::now();
                let r = c.submit_task(req).await?.into_inner();
                Ok::<_, tonic::Status>((r.task.and_then(|t| t.id.parse().ok()).unwrap_or(0), s))
            }));
        }
        let mut started = Vec::with_capacity(total);
        for h in handles {
            started.push(h.await?.map_err(rpc_err)?);
        }
        let f = collect(&started, &done, Duration::from_secs(60), t0).await?;
        print(
            &format!("latency at {} tasks/s offered", args.rate),
            &f,
            total,
        );
        print_ledger(mesh.as_ref());
    }
    feed.abort();
    if let Some(m) = mesh {
        m.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_reads_the_phase_lines_of_both_builds() {
        let out = "heatmesh bench: GL-009 heat balances over gRPC on 127.0.0.1:1, 3 plants, 2 cores
throughput (512 submitters): 50000 acknowledged (durable) in 6.88 s = 7269 submits/s
throughput: 50000/50000 completed in 6.92 s = 7225 tasks/s; submit-to-completed latency p50 114.88 ms, p95 174.21 ms, p99 195.46 ms, max 218.50 ms
latency at 1000 tasks/s offered: 10000/10000 completed in 10.04 s = 996 tasks/s; submit-to-completed latency p50 2.14 ms, p95 3.70 ms, p99 9.55 ms, max 42.40 ms
";
        let f = parse_run(out);
        assert_eq!(f.throughput, Some((7225.0, 195.46)));
        assert_eq!(f.latency, Some((996.0, 9.55)));
        assert!(parse_run("nothing here").throughput.is_none());
    }
}
