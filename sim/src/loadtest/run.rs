//! Running a load test: the mesh under test, the open-loop senders, the tracker that follows
//! every task to its terminal state, and the `/proc` sampler.

use super::report::{
    CoordinationReport, KindFigures, Latency, MachineFigures, MeshInfo, OptimizationReport,
    ProcFigures, ProcessReport, Report, SetpointReport, Verdict,
};
use super::{LoadtestError, RateSchedule, Scenario, generate_fleet};
use crate::cluster::Cluster;
use hdrhistogram::Histogram;
use heatmesh_agents::registry;
use heatmesh_master::procstat::{self, Sample};
use heatmesh_proto::v1 as pb;
use pb::TaskStatus;
use pb::mesh_service_client::MeshServiceClient;
use pb::optimization_service_client::OptimizationServiceClient;
use pb::task_service_client::TaskServiceClient;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::transport::Channel;

/// Errors kept verbatim in the report, per class.
const ERROR_SAMPLES: usize = 5;
/// A task open this long is looked up with GetTask in case the event feed missed it.
const POLL_AFTER: Duration = Duration::from_secs(10);
/// Per-call timeout of SubmitTask and RunHeatDistribution.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How a load test runs, besides its scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `heatmesh` executable started as master and nodes.
    pub bin: PathBuf,
    /// A running master (`HOST:PORT` or a URL) to load instead of starting a mesh.
    pub master: Option<String>,
    /// With `master`: the master's metrics address (`HOST:PORT`, its `metrics_listen`),
    /// whose `/metrics` page gives the master's CPU and memory for the report.
    pub master_metrics: Option<String>,
    /// Keep the directory with the logs, the ledger and the generated configuration.
    pub keep_logs: bool,
    /// How often [`Event::Progress`] is emitted.
    pub progress_every: Duration,
    /// How long to wait after the schedule for open tasks and runs to finish.
    pub drain_timeout: Duration,
    /// Open work is bounded by what this much time at the target rate sends (at least 16
    /// tasks, 4 runs); a task due beyond that is dropped and counted.
    pub outstanding_window: Duration,
}

impl RunOptions {
    /// Defaults: start a mesh of `bin`, progress every 5 s, 30 s drain, 10 s window.
    pub fn new(bin: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            bin: bin.into(),
            master: None,
            master_metrics: None,
            keep_logs: false,
            progress_every: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            outstanding_window: Duration::from_secs(10),
        }
    }
}

/// What a running load test reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// The mesh's processes are starting; their logs go to `dir`.
    Starting {
        /// Plants (one node process each).
        plants: usize,
        /// Where logs, ledger and configuration live.
        dir: &'a Path,
    },
    /// The mesh serves every plant; the load begins.
    Ready {
        /// The master's gRPC address.
        master: &'a str,
        /// Plants and sub-agents found through MeshService.
        plants: usize,
        /// Sub-agents.
        sub_agents: usize,
        /// Seconds the mesh took to start (`None` for a running mesh).
        ready_s: Option<f64>,
    },
    /// Figures so far, every `progress_every`.
    Progress(&'a Progress),
}

/// A progress snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Seconds since the load began.
    pub elapsed_s: f64,
    /// `ramp`, `steady` or `drain`.
    pub phase: &'static str,
    /// The schedule's coordination rate now, per second.
    pub target_per_s: f64,
    /// Tasks accepted per second since the last snapshot.
    pub accepted_per_s: f64,
    /// Tasks completed so far.
    pub completed: u64,
    /// Tasks failed so far.
    pub failed: u64,
    /// Submits refused so far.
    pub refused: u64,
    /// Tasks dropped so far (too many open).
    pub dropped: u64,
    /// Tasks open now.
    pub open: u64,
    /// Submit-to-completed p95 so far, ms.
    pub p95_ms: Option<f64>,
    /// The schedule's optimization rate now, per minute.
    pub target_per_min: f64,
    /// Fleet runs answered per minute since the last snapshot.
    pub runs_per_min: f64,
    /// Fleet runs answered with an error so far.
    pub run_errors: u64,
}

// ---------------------------------------------------------------------------------------
// The mesh under test.

/// A sub-agent that receives coordination tasks.
#[derive(Debug, Clone)]
struct Target {
    plant: String,
    kind: &'static str,
    payload: &'static str,
}

/// What the load is sent to.
struct Mesh {
    channel: Channel,
    uri: String,
    plants: usize,
    sub_agents: usize,
    targets: Vec<Target>,
    setpoints: bool,
}

/// Processes started for the run.
struct Started {
    cluster: Cluster,
    ready_s: f64,
}

fn mesh_err(what: impl Into<String>) -> LoadtestError {
    LoadtestError::Mesh(what.into())
}

async fn connect(uri: &str) -> Result<Channel, String> {
    Channel::from_shared(uri.to_string())
        .map_err(|e| format!("invalid address {uri}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            // tonic's message is only "transport error"; the cause is in the source chain.
            let mut msg = format!("connecting to {uri}: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                msg.push_str(&format!(": {c}"));
                src = c.source();
            }
            msg
        })
}

fn uri_of(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl Started {
    /// Writes the generated configuration, starts `heatmesh master` and one
    /// `heatmesh node --plant P` per plant, and waits until every plant runs on its node.
    async fn start(
        s: &Scenario,
        bin: &Path,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(Started, SocketAddr), LoadtestError> {
        let fleet = generate_fleet(s.plants as usize, s.sub_agents as usize)?;
        let dir = tempfile::Builder::new()
            .prefix("heatmesh-loadtest-")
            .tempdir()
            .map_err(|e| LoadtestError::io("creating the run directory", e))?;
        let mut cluster = Cluster::in_dir(dir, bin)
            .map_err(|e| LoadtestError::io("writing the cluster cookie", e))?;
        let path = cluster.dir.path().to_path_buf();
        let config = path.join("fleet.toml");
        std::fs::write(&config, &fleet.toml)
            .map_err(|e| LoadtestError::io(format!("writing {}", config.display()), e))?;
        // The load test measures the master as configured: no drill settings.
        cluster.master_env.clear();
        cluster.fault_injection = false;
        cluster.master_args = vec!["--config".into(), config.display().to_string()];
        on_event(Event::Starting {
            plants: fleet.plants.len(),
            dir: &path,
        });
        let t0 = Instant::now();
        cluster
            .spawn_master()
            .map_err(|e| LoadtestError::io(format!("starting {} master", bin.display()), e))?;
        cluster
            .reach_master(Duration::from_secs(30))
            .await
            .map_err(mesh_err)?;
        let mut want = Vec::new();
        for (i, p) in fleet.plants.iter().enumerate() {
            let id = format!("node-{:03}", i + 1);
            cluster
                .spawn_node(&id, &[p.id.as_str()], cluster.grpc)
                .map_err(|e| LoadtestError::io(format!("starting node {id}"), e))?;
            want.push((p.id.clone(), id));
        }
        // Generous for a small machine: every process is starting at once.
        let limit = Duration::from_secs(60) + Duration::from_secs(2) * want.len() as u32;
        cluster.wait_running(&want, limit).await.map_err(mesh_err)?;
        let grpc = cluster.grpc;
        let started = Started {
            cluster,
            ready_s: t0.elapsed().as_secs_f64(),
        };
        Ok((started, grpc))
    }
}

/// Finds the plants and sub-agents through MeshService, and checks the mesh can take the
/// scenario's load.
async fn discover(uri: &str, s: &Scenario) -> Result<Mesh, LoadtestError> {
    let channel = connect(uri).await.map_err(mesh_err)?;
    let mut mesh = MeshServiceClient::new(channel.clone());
    let plants = mesh
        .list_plants(pb::ListPlantsRequest {})
        .await
        .map_err(|e| LoadtestError::rpc("MeshService.ListPlants", e))?
        .into_inner()
        .plants;
    let agents = mesh
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .map_err(|e| LoadtestError::rpc("MeshService.ListAgents", e))?
        .into_inner()
        .agents;
    let mut targets = Vec::new();
    let mut setpoints = false;
    let mut seen = BTreeSet::new();
    for a in &agents {
        let Some(kind) = registry::lookup(&a.kind) else {
            continue;
        };
        if !seen.insert((a.plant_id.clone(), kind.id)) {
            continue;
        }
        if kind.accepts_setpoints {
            // Its requests come from the fleet runs' setpoints, not from the load.
            setpoints = true;
            continue;
        }
        if let Some(payload) = crate::workload::example_payload(kind.id) {
            targets.push(Target {
                plant: a.plant_id.clone(),
                kind: kind.id,
                payload,
            });
        }
    }
    if s.agent_coordination_events_per_second > 0.0 && targets.is_empty() {
        return Err(mesh_err(format!(
            "no sub-agent at {uri} takes coordination tasks ({} agents, all setpoint consumers \
             or of unknown kinds)",
            agents.len()
        )));
    }
    if s.heat_optimization_requests_per_minute > 0.0 {
        let st = OptimizationServiceClient::new(channel.clone())
            .get_status(pb::GetOptimizerStatusRequest {})
            .await
            .map_err(|e| LoadtestError::rpc("OptimizationService.GetStatus", e))?
            .into_inner();
        if !st.fleet_configured {
            return Err(mesh_err(format!(
                "the master at {uri} has no [plants.heat] data, so fleet heat-distribution runs \
                 cannot work; set heat_optimization_requests_per_minute to 0 for it"
            )));
        }
    }
    Ok(Mesh {
        channel,
        uri: uri.to_string(),
        plants: plants.len(),
        sub_agents: seen.len(),
        targets,
        setpoints,
    })
}

// ---------------------------------------------------------------------------------------
// Following tasks.

fn hist() -> Histogram<u64> {
    // Microseconds, 3 significant digits, auto-resizing: latencies of any length fit.
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = d.as_micros().clamp(1, u64::MAX as u128) as u64;
    // `record` grows the auto-resizing histogram; should growing fail, the sample is kept
    // clamped to the current range rather than dropped.
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

#[derive(Clone, Copy)]
enum Class {
    Coord { target: usize, steady: bool },
    Setpoint,
}

struct Open {
    start: Instant,
    class: Class,
}

struct KindStats {
    accepted: u64,
    completed: u64,
    failed: u64,
    latency: Histogram<u64>,
}

struct CoordStats {
    scheduled: u64,
    dropped: u64,
    refused: u64,
    accepted: u64,
    accepted_steady: u64,
    completed: u64,
    completed_steady: u64,
    failed: u64,
    polled: u64,
    /// Sent and not yet refused or terminal.
    open: u64,
    all: Histogram<u64>,
    steady: Histogram<u64>,
    lag: Histogram<u64>,
    by_kind: BTreeMap<&'static str, KindStats>,
    errors: Vec<String>,
}

struct OptStats {
    scheduled: u64,
    dropped: u64,
    completed: u64,
    completed_steady: u64,
    errors: u64,
    open: u64,
    all: Histogram<u64>,
    steady: Histogram<u64>,
    optimizer: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    setpoints_sent: u64,
    setpoints_completed: u64,
    setpoints_failed: u64,
    setpoint_latency: Histogram<u64>,
}

struct State {
    open: HashMap<u64, Open>,
    /// Terminal events that arrived before their SubmitTask answer (or for other clients'
    /// tasks on a shared master), with their arrival time.
    early: HashMap<u64, (Instant, i32)>,
    coord: CoordStats,
    opt: OptStats,
    feed_restarts: u64,
}

struct Shared {
    state: Mutex<State>,
    targets: Vec<Target>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A task was accepted: settle it now if its terminal event already came.
    fn register(&self, id: u64, o: Open) -> Option<(u64, String)> {
        let mut st = self.lock();
        if let Class::Coord { target, steady } = o.class {
            st.coord.accepted += 1;
            st.coord.accepted_steady += u64::from(steady);
            st.coord.kind(self.targets[target].kind).accepted += 1;
        }
        match st.early.remove(&id) {
            Some((at, status)) => self.settle(&mut st, id, o, status, at, false),
            None => {
                st.open.insert(id, o);
                None
            }
        }
    }

    /// A terminal state arrived for `id`. Returns a failed coordination task's id and label
    /// when its error should be fetched for the report.
    fn terminal(&self, id: u64, status: i32, at: Instant, polled: bool) -> Option<(u64, String)> {
        let mut st = self.lock();
        match st.open.remove(&id) {
            Some(o) => self.settle(&mut st, id, o, status, at, polled),
            None => {
                st.early.insert(id, (at, status));
                None
            }
        }
    }

    fn settle(
        &self,
        st: &mut State,
        id: u64,
        o: Open,
        status: i32,
        at: Instant,
        polled: bool,
    ) -> Option<(u64, String)> {
        let ok = status == TaskStatus::Completed as i32;
        let took = at.saturating_duration_since(o.start);
        match o.class {
            Class::Coord { target, steady } => {
                let c = &mut st.coord;
                c.open = c.open.saturating_sub(1);
                c.polled += u64::from(polled);
                let t = &self.targets[target];
                if ok {
                    c.completed += 1;
                    c.completed_steady += u64::from(steady);
                    record(&mut c.all, took);
                    if steady {
                        record(&mut c.steady, took);
                    }
                    let k = c.kind(t.kind);
                    k.completed += 1;
                    record(&mut k.latency, took);
                    None
                } else {
                    c.failed += 1;
                    c.kind(t.kind).failed += 1;
                    (c.errors.len() < ERROR_SAMPLES).then(|| {
                        let name = TaskStatus::try_from(status)
                            .map(|s| s.as_str_name().to_string())
                            .unwrap_or_else(|_| status.to_string());
                        (id, format!("task {id} ({} {}) {name}", t.plant, t.kind))
                    })
                }
            }
            Class::Setpoint => {
                let o = &mut st.opt;
                if ok {
                    o.setpoints_completed += 1;
                    record(&mut o.setpoint_latency, took);
                } else {
                    o.setpoints_failed += 1;
                }
                None
            }
        }
    }
}

impl CoordStats {
    fn kind(&mut self, kind: &'static str) -> &mut KindStats {
        self.by_kind.entry(kind).or_insert_with(|| KindStats {
            accepted: 0,
            completed: 0,
            failed: 0,
            latency: hist(),
        })
    }
}

impl State {
    fn new() -> State {
        State {
            open: HashMap::new(),
            early: HashMap::new(),
            coord: CoordStats {
                scheduled: 0,
                dropped: 0,
                refused: 0,
                accepted: 0,
                accepted_steady: 0,
                completed: 0,
                completed_steady: 0,
                failed: 0,
                polled: 0,
                open: 0,
                all: hist(),
                steady: hist(),
                lag: hist(),
                by_kind: BTreeMap::new(),
                errors: Vec::new(),
            },
            opt: OptStats {
                scheduled: 0,
                dropped: 0,
                completed: 0,
                completed_steady: 0,
                errors: 0,
                open: 0,
                all: hist(),
                steady: hist(),
                optimizer: hist(),
                statuses: BTreeMap::new(),
                error_samples: Vec::new(),
                setpoints_sent: 0,
                setpoints_completed: 0,
                setpoints_failed: 0,
                setpoint_latency: hist(),
            },
            feed_restarts: 0,
        }
    }

    /// Tasks still open, as (coordination, setpoint) counts.
    fn unfinished(&self) -> (u64, u64) {
        let coord = self
            .open
            .values()
            .filter(|o| matches!(o.class, Class::Coord { .. }))
            .count() as u64;
        (coord, self.open.len() as u64 - coord)
    }

    fn coordination_report(&self, sched: &RateSchedule, max_open: u64) -> CoordinationReport {
        let c = &self.coord;
        let steady_s = sched.duration_s - sched.ramp_s;
        let per_steady = |n: u64| (steady_s > 0.0).then(|| n as f64 / steady_s);
        let success = (c.scheduled > 0).then(|| c.completed as f64 / c.scheduled as f64 * 100.0);
        CoordinationReport {
            target_per_s: sched.target_per_s,
            planned: sched.total(),
            scheduled: c.scheduled,
            dropped: c.dropped,
            submit_errors: c.refused,
            accepted: c.accepted,
            completed: c.completed,
            failed: c.failed,
            unfinished: self.unfinished().0,
            resolved_by_polling: c.polled,
            success_rate_pct: success,
            error_pct: success.map(|p| 100.0 - p),
            max_outstanding: max_open,
            accepted_per_s_steady: per_steady(c.accepted_steady),
            completed_per_s_steady: per_steady(c.completed_steady),
            accepted_per_s_whole: c.accepted as f64 / sched.duration_s,
            latency_steady: Latency::from_us(&c.steady),
            latency_all: Latency::from_us(&c.all),
            send_lag: Latency::from_us(&c.lag),
            by_kind: c
                .by_kind
                .iter()
                .map(|(k, v)| {
                    let f = KindFigures {
                        accepted: v.accepted,
                        completed: v.completed,
                        failed: v.failed,
                        p95_ms: Latency::from_us(&v.latency).p95_ms,
                    };
                    (k.to_string(), f)
                })
                .collect(),
            error_samples: c.errors.clone(),
            event_feed_restarts: self.feed_restarts,
        }
    }

    fn optimization_report(
        &self,
        sched: &RateSchedule,
        max_open: u64,
        setpoints: bool,
    ) -> OptimizationReport {
        let o = &self.opt;
        let steady_s = sched.duration_s - sched.ramp_s;
        OptimizationReport {
            target_per_min: sched.target_per_s * 60.0,
            planned: sched.total(),
            scheduled: o.scheduled,
            dropped: o.dropped,
            completed: o.completed,
            errors: o.errors,
            max_outstanding: max_open,
            dispatch_setpoints: setpoints,
            completed_per_min_steady: (steady_s > 0.0)
                .then(|| o.completed_steady as f64 / steady_s * 60.0),
            completed_per_min_whole: o.completed as f64 / sched.duration_s * 60.0,
            latency_steady: Latency::from_us(&o.steady),
            latency_all: Latency::from_us(&o.all),
            optimizer_time: Latency::from_us(&o.optimizer),
            statuses: o.statuses.clone(),
            setpoints: SetpointReport {
                submitted: o.setpoints_sent,
                completed: o.setpoints_completed,
                failed: o.setpoints_failed,
                unfinished: self.unfinished().1,
                run_to_acknowledged: Latency::from_us(&o.setpoint_latency),
            },
            error_samples: o.error_samples.clone(),
        }
    }
}

/// Adds a failed task's error text to the report's samples.
fn fetch_error(shared: &Arc<Shared>, channel: &Channel, id: u64, label: String) {
    let (shared, mut c) = (shared.clone(), TaskServiceClient::new(channel.clone()));
    tokio::spawn(async move {
        let why = match c.get_task(pb::GetTaskRequest { id: id.to_string() }).await {
            Ok(t) => t.into_inner().error,
            Err(e) => format!("(GetTask: {})", e.message()),
        };
        let mut st = shared.lock();
        if st.coord.errors.len() < ERROR_SAMPLES {
            st.coord.errors.push(format!("{label}: {why}"));
        }
    });
}

async fn subscribe(uri: &str) -> Result<tonic::Streaming<pb::TaskEvent>, String> {
    let ch = connect(uri).await?;
    let s = TaskServiceClient::new(ch)
        .stream_events(pb::StreamEventsRequest {
            terminal_only: true,
            resume_after_seq: None,
        })
        .await
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
        .into_inner();
    Ok(s)
}

/// Follows the terminal-event feed, resubscribing when it ends (the sweeper covers events
/// lost in between).
async fn follow(
    mut feed: tonic::Streaming<pb::TaskEvent>,
    uri: String,
    channel: Channel,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        loop {
            let msg = tokio::select! {
                _ = stop.changed() => return,
                m = feed.message() => m,
            };
            match msg {
                Ok(Some(ev)) => {
                    let Ok(id) = ev.task_id.parse::<u64>() else {
                        continue;
                    };
                    if let Some((id, label)) = shared.terminal(id, ev.status, Instant::now(), false)
                    {
                        fetch_error(&shared, &channel, id, label);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        loop {
            if *stop.borrow() {
                return;
            }
            shared.lock().feed_restarts += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(f) = subscribe(&uri).await {
                feed = f;
                break;
            }
        }
    }
}

/// Looks up tasks open for long with GetTask (a missed event leaves them open forever), and
/// forgets early events no task of this run claimed.
async fn sweep(channel: Channel, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut c = TaskServiceClient::new(channel.clone());
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let now = Instant::now();
        let stale: Vec<u64> = {
            let mut st = shared.lock();
            st.early
                .retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(120));
            st.open
                .iter()
                .filter(|(_, o)| now.duration_since(o.start) > POLL_AFTER)
                .map(|(id, _)| *id)
                .take(200)
                .collect()
        };
        for id in stale {
            let Ok(t) = c.get_task(pb::GetTaskRequest { id: id.to_string() }).await else {
                continue;
            };
            let status = t.into_inner().status;
            let terminal = [
                TaskStatus::Completed,
                TaskStatus::Failed,
                TaskStatus::Cancelled,
            ]
            .iter()
            .any(|s| *s as i32 == status);
            // Only still-open tasks: the feed may have settled it meanwhile.
            if terminal
                && shared.lock().open.contains_key(&id)
                && let Some((id, label)) = shared.terminal(id, status, Instant::now(), true)
            {
                fetch_error(&shared, &channel, id, label);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sending.

fn with_timeout<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(CALL_TIMEOUT);
    r
}

fn submit_request(t: &Target) -> pb::SubmitTaskRequest {
    pb::SubmitTaskRequest {
        plant_id: t.plant.clone(),
        payload: Some(pb::TaskPayload {
            request: Some(pb::task_payload::Request::Json(pb::JsonRequest {
                agent_kind: t.kind.to_string(),
                json: t.payload.to_string(),
            })),
        }),
        ..Default::default()
    }
}

/// Sends sub-agent tasks at their due times, whatever the answers (open loop).
async fn send_coordination(
    channel: Channel,
    shared: Arc<Shared>,
    sched: RateSchedule,
    t0: Instant,
    max_open: u64,
    seed: u64,
) {
    let mut rng = heatmesh_base::Rng::new(seed);
    let mut k = 1;
    while let Some(t) = sched.time_of(k) {
        k += 1;
        let due = t0 + Duration::from_secs_f64(t);
        tokio::time::sleep_until(due.into()).await;
        let steady = t >= sched.ramp_s;
        let target = rng.below(shared.targets.len());
        {
            let mut st = shared.lock();
            let c = &mut st.coord;
            c.scheduled += 1;
            if c.open >= max_open {
                c.dropped += 1;
                continue;
            }
            c.open += 1;
            record(&mut c.lag, due.elapsed());
        }
        let (shared, channel) = (shared.clone(), channel.clone());
        let mut client = TaskServiceClient::new(channel.clone());
        let req = submit_request(&shared.targets[target]);
        tokio::spawn(async move {
            let start = Instant::now();
            let answer = client.submit_task(with_timeout(req)).await;
            let id = answer.map_err(|e| format!("{:?}: {}", e.code(), e.message()));
            let id = id.and_then(|r| {
                r.into_inner()
                    .task
                    .and_then(|t| t.id.parse::<u64>().ok())
                    .ok_or_else(|| "answer without a task id".to_string())
            });
            match id {
                Ok(id) => {
                    let open = Open {
                        start,
                        class: Class::Coord { target, steady },
                    };
                    if let Some((id, label)) = shared.register(id, open) {
                        fetch_error(&shared, &channel, id, label);
                    }
                }
                Err(e) => {
                    let mut st = shared.lock();
                    let c = &mut st.coord;
                    c.refused += 1;
                    c.open = c.open.saturating_sub(1);
                    if c.errors.len() < ERROR_SAMPLES {
                        let t = &shared.targets[target];
                        c.errors
                            .push(format!("SubmitTask {} {}: {e}", t.plant, t.kind));
                    }
                }
            }
        });
    }
}

/// Requests fleet heat-distribution runs at their due times (open loop).
async fn send_optimization(
    channel: Channel,
    shared: Arc<Shared>,
    sched: RateSchedule,
    t0: Instant,
    max_open: u64,
    setpoints: bool,
) {
    let mut k = 1;
    while let Some(t) = sched.time_of(k) {
        k += 1;
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(t)).into()).await;
        let steady = t >= sched.ramp_s;
        {
            let mut st = shared.lock();
            let o = &mut st.opt;
            o.scheduled += 1;
            if o.open >= max_open {
                o.dropped += 1;
                continue;
            }
            o.open += 1;
        }
        let (shared, mut client) = (
            shared.clone(),
            OptimizationServiceClient::new(channel.clone()),
        );
        tokio::spawn(async move {
            let start = Instant::now();
            let answer = client
                .run_heat_distribution(with_timeout(pb::RunHeatDistributionRequest {
                    use_fleet: true,
                    dispatch_setpoints: setpoints,
                    ..Default::default()
                }))
                .await;
            let took = start.elapsed();
            let ids = match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    let mut st = shared.lock();
                    let o = &mut st.opt;
                    o.open = o.open.saturating_sub(1);
                    o.completed += 1;
                    o.completed_steady += u64::from(steady);
                    record(&mut o.all, took);
                    if steady {
                        record(&mut o.steady, took);
                    }
                    if let Some(d) = &r.result {
                        record(
                            &mut o.optimizer,
                            Duration::from_secs_f64(d.total_time_ms.max(0.0) / 1000.0),
                        );
                        *o.statuses.entry(d.status.clone()).or_default() += 1;
                    }
                    o.setpoints_sent += r.setpoint_task_ids.len() as u64;
                    r.setpoint_task_ids
                }
                Err(e) => {
                    let mut st = shared.lock();
                    let o = &mut st.opt;
                    o.open = o.open.saturating_sub(1);
                    o.errors += 1;
                    if o.error_samples.len() < ERROR_SAMPLES {
                        o.error_samples.push(format!(
                            "RunHeatDistribution: {:?}: {}",
                            e.code(),
                            e.message()
                        ));
                    }
                    return;
                }
            };
            for id in ids.iter().filter_map(|i| i.parse::<u64>().ok()) {
                shared.register(
                    id,
                    Open {
                        start,
                        class: Class::Setpoint,
                    },
                );
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// Process sampling.

#[derive(Default)]
struct Series {
    /// (time, summed CPU seconds, summed RSS bytes, processes sampled)
    points: Vec<(Instant, f64, u64, usize)>,
}

impl Series {
    fn push(&mut self, at: Instant, samples: &[Sample]) {
        if samples.is_empty() {
            return;
        }
        let cpu = samples.iter().map(|s| s.cpu_s).sum();
        let rss = samples.iter().map(|s| s.rss_bytes).sum();
        self.points.push((at, cpu, rss, samples.len()));
    }

    fn figures(&self, mem_total: Option<u64>) -> Option<ProcFigures> {
        let (first, last) = (self.points.first()?, self.points.last()?);
        let wall = last.0.duration_since(first.0).as_secs_f64();
        let mib = |b: f64| b / 1048576.0;
        let peak_rss = self.points.iter().map(|p| p.2).max().unwrap_or(0);
        let mean_rss =
            self.points.iter().map(|p| p.2 as f64).sum::<f64>() / self.points.len() as f64;
        let cpu_peak = self
            .points
            .windows(2)
            .filter_map(|w| {
                let dt = w[1].0.duration_since(w[0].0).as_secs_f64();
                // CPU times count in clock ticks (10 ms): a short interval would magnify one
                // tick into a spike.
                (dt >= 0.5).then(|| (w[1].1 - w[0].1).max(0.0) / dt * 100.0)
            })
            .fold(0.0, f64::max);
        Some(ProcFigures {
            processes: self.points.iter().map(|p| p.3).max().unwrap_or(0),
            cpu_pct_mean: if wall > 0.0 {
                (last.1 - first.1).max(0.0) / wall * 100.0
            } else {
                0.0
            },
            cpu_pct_peak: cpu_peak,
            rss_mib_mean: mib(mean_rss),
            rss_mib_peak: mib(peak_rss as f64),
            rss_mib_start: mib(first.2 as f64),
            rss_mib_end: mib(last.2 as f64),
            memory_pct_peak: mem_total
                .filter(|m| *m > 0)
                .map_or(0.0, |m| peak_rss as f64 / m as f64 * 100.0),
            samples: self.points.len(),
        })
    }
}

#[derive(Default)]
struct ProcSeries {
    /// Whether the master runs on this machine (started here); a remote one's CPU is not
    /// part of this machine's.
    master_local: bool,
    master: Series,
    nodes: Series,
    me: Series,
    machine: Series,
}

impl ProcSeries {
    fn machine(&self) -> Option<MachineFigures> {
        let m = self.machine.figures(None)?;
        let master = self.master_local.then_some(&self.master);
        let mine: f64 = [master, Some(&self.nodes), Some(&self.me)]
            .into_iter()
            .flatten()
            .filter_map(|s| s.figures(None))
            .map(|f| f.cpu_pct_mean)
            .sum();
        Some(MachineFigures {
            cpu_pct_mean: m.cpu_pct_mean,
            cpu_pct_peak: m.cpu_pct_peak,
            other_cpu_pct_mean: (m.cpu_pct_mean - mine).max(0.0),
            mem_used_mib_peak: m.rss_mib_peak,
        })
    }
}

/// Where the master's CPU and memory are read.
enum MasterProbe {
    /// A process started here.
    Pid(u32),
    /// The `/metrics` page of a master elsewhere (`HOST:PORT`).
    Metrics(String),
    /// Not measured.
    None,
}

/// The two process series of the master's `/metrics` page at `addr`; `None` when it cannot
/// be read within half a second.
async fn scrape_master(addr: &str) -> Option<Sample> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut c = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        c.write_all(req.as_bytes()).await.ok()?;
        let mut page = Vec::new();
        c.read_to_end(&mut page).await.ok()?;
        procstat::from_prometheus(&String::from_utf8_lossy(&page))
    };
    tokio::time::timeout(Duration::from_millis(500), fetch)
        .await
        .ok()
        .flatten()
}

/// Samples CPU and RSS once a second until `stop`, and once more then, so the window ends
/// at the stop.
async fn sample_processes(
    master: MasterProbe,
    nodes: Vec<u32>,
    mut stop: watch::Receiver<bool>,
) -> ProcSeries {
    let mut out = ProcSeries {
        master_local: matches!(master, MasterProbe::Pid(_)),
        ..ProcSeries::default()
    };
    let me = std::process::id();
    let take = async |out: &mut ProcSeries| {
        let at = Instant::now();
        let one = |pid: u32| procstat::sample(pid).into_iter().collect::<Vec<_>>();
        match &master {
            MasterProbe::Pid(m) => out.master.push(at, &one(*m)),
            MasterProbe::Metrics(addr) => {
                let s = scrape_master(addr).await;
                out.master
                    .push(Instant::now(), &s.into_iter().collect::<Vec<_>>());
            }
            MasterProbe::None => {}
        }
        let ns: Vec<Sample> = nodes.iter().filter_map(|p| procstat::sample(*p)).collect();
        out.nodes.push(at, &ns);
        out.me.push(at, &one(me));
        out.machine
            .push(at, &procstat::machine().into_iter().collect::<Vec<_>>());
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        take(&mut out).await;
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {
                take(&mut out).await;
                return out;
            }
        }
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// The run.

fn progress(
    st: &State,
    s: &Scenario,
    elapsed: f64,
    phase: &'static str,
    last: &mut (f64, u64, u64),
) -> Progress {
    let (t, acc, runs) = *last;
    let dt = (elapsed - t).max(1e-9);
    let p = Progress {
        elapsed_s: elapsed,
        phase,
        target_per_s: s.coordination_schedule().rate_at(elapsed),
        accepted_per_s: (st.coord.accepted - acc) as f64 / dt,
        completed: st.coord.completed,
        failed: st.coord.failed,
        refused: st.coord.refused,
        dropped: st.coord.dropped,
        open: st.coord.open,
        p95_ms: (!st.coord.all.is_empty())
            .then(|| st.coord.all.value_at_quantile(0.95) as f64 / 1000.0),
        target_per_min: s.optimization_schedule().rate_at(elapsed) * 60.0,
        runs_per_min: (st.opt.completed - runs) as f64 / dt * 60.0,
        run_errors: st.opt.errors,
    };
    *last = (elapsed, st.coord.accepted, st.opt.completed);
    p
}

fn window(rate_per_s: f64, w: Duration, floor: u64) -> u64 {
    ((rate_per_s * w.as_secs_f64()).ceil() as u64).max(floor)
}

/// Runs the scenario: starts the mesh (or reaches `opts.master`), sends the load for the
/// scenario's duration, drains, and reports. `on_event` hears start-up and progress.
pub async fn run(
    s: &Scenario,
    opts: RunOptions,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<Report, LoadtestError> {
    s.validate()?;
    let (mut started, uri) = match &opts.master {
        Some(addr) => (None, uri_of(addr)),
        None => {
            let (st, grpc) = Started::start(s, &opts.bin, &mut on_event).await?;
            (Some(st), format!("http://{grpc}"))
        }
    };
    let mesh = discover(&uri, s).await?;
    // A wrong metrics address would otherwise only show as missing figures after the run.
    if let (None, Some(addr)) = (&started, &opts.master_metrics)
        && scrape_master(addr).await.is_none()
    {
        return Err(mesh_err(format!(
            "--master-metrics {addr}: no process_cpu_seconds_total and \
             process_resident_memory_bytes at http://{addr}/metrics (give the master's \
             metrics_listen)"
        )));
    }
    let ready_s = started.as_ref().map(|st| st.ready_s);
    on_event(Event::Ready {
        master: &mesh.uri,
        plants: mesh.plants,
        sub_agents: mesh.sub_agents,
        ready_s,
    });

    let coord_sched = s.coordination_schedule();
    let opt_sched = s.optimization_schedule();
    let max_coord = window(coord_sched.target_per_s, opts.outstanding_window, 16);
    let max_opt = window(opt_sched.target_per_s, opts.outstanding_window, 4);
    let shared = Arc::new(Shared {
        state: Mutex::new(State::new()),
        targets: mesh.targets.clone(),
    });
    // Subscribed before the first send, so no completion can be missed.
    let feed = subscribe(&mesh.uri)
        .await
        .map_err(|e| mesh_err(format!("TaskService.StreamEvents at {}: {e}", mesh.uri)))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let follower = tokio::spawn(follow(
        feed,
        mesh.uri.clone(),
        mesh.channel.clone(),
        shared.clone(),
        stop_rx.clone(),
    ));
    let sweeper = tokio::spawn(sweep(mesh.channel.clone(), shared.clone(), stop_rx.clone()));
    let (sample_stop, sample_rx) = watch::channel(false);
    let probe = match (
        started
            .as_ref()
            .and_then(|st| st.cluster.master.as_ref()?.pid()),
        &opts.master_metrics,
    ) {
        (Some(pid), _) => MasterProbe::Pid(pid),
        (None, Some(addr)) => MasterProbe::Metrics(addr.clone()),
        (None, None) => MasterProbe::None,
    };
    let sampler = tokio::spawn(sample_processes(
        probe,
        started
            .as_ref()
            .map(|st| st.cluster.nodes.values().filter_map(|p| p.pid()).collect())
            .unwrap_or_default(),
        sample_rx,
    ));

    let t0 = Instant::now();
    let senders = [
        tokio::spawn(send_coordination(
            mesh.channel.clone(),
            shared.clone(),
            coord_sched,
            t0,
            max_coord,
            s.seed,
        )),
        tokio::spawn(send_optimization(
            mesh.channel.clone(),
            shared.clone(),
            opt_sched,
            t0,
            max_opt,
            mesh.setpoints,
        )),
    ];
    let duration = s.duration();
    let ramp_s = s.ramp_up_minutes * 60.0;
    let mut last = (0.0, 0, 0);
    let mut next = t0 + opts.progress_every;
    while t0.elapsed() < duration {
        tokio::time::sleep_until(next.min(t0 + duration).into()).await;
        if Instant::now() >= next {
            let e = t0.elapsed().as_secs_f64();
            let phase = if e < ramp_s { "ramp" } else { "steady" };
            let p = progress(&shared.lock(), s, e, phase, &mut last);
            on_event(Event::Progress(&p));
            next += opts.progress_every;
        }
    }
    for h in senders {
        let _ = h.await;
    }
    let _ = sample_stop.send(true);
    let series = sampler.await.unwrap_or_default();

    let drain_start = Instant::now();
    loop {
        let idle = {
            let st = shared.lock();
            st.coord.open == 0 && st.opt.open == 0 && st.open.is_empty()
        };
        if idle || drain_start.elapsed() >= opts.drain_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if Instant::now() >= next {
            let p = progress(
                &shared.lock(),
                s,
                t0.elapsed().as_secs_f64(),
                "drain",
                &mut last,
            );
            on_event(Event::Progress(&p));
            next += opts.progress_every;
        }
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    let elapsed_s = t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = follower.await;
    let _ = sweeper.await;
    // Error texts being fetched for the report.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mem_total = procstat::mem_total_bytes();
    let mut exited = Vec::new();
    let mut ledger_bytes = None;
    let mut logs = None;
    if let Some(st) = started.as_mut() {
        exited = st.cluster.exited();
        ledger_bytes = Some(dir_size(&st.cluster.dir.path().join("data")));
    }
    let processes = ProcessReport {
        // A remote master's share of this machine's memory means nothing.
        master: series
            .master
            .figures(mem_total.filter(|_| series.master_local)),
        nodes: started
            .as_ref()
            .and_then(|_| series.nodes.figures(mem_total)),
        loadtest: series.me.figures(mem_total),
        machine: series.machine(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total_mib: mem_total.map(|m| m as f64 / 1048576.0),
        exited,
        ledger_bytes,
    };
    let nodes = started.as_ref().map_or(0, |st| st.cluster.nodes.len());
    if let Some(st) = started.take() {
        // Stop the mesh before its directory goes (or is kept).
        let Cluster {
            dir,
            mut master,
            mut nodes,
            ..
        } = st.cluster;
        // Master first, so it does not re-place the plants of nodes going away.
        if let Some(m) = master.as_mut() {
            m.kill9();
        }
        for n in nodes.values_mut() {
            n.kill9();
        }
        if opts.keep_logs {
            logs = Some(dir.keep().display().to_string());
        }
    }

    let st = shared.lock();
    let coordination = st.coordination_report(&coord_sched, max_coord);
    let optimization = st.optimization_report(&opt_sched, max_opt, mesh.setpoints);
    let verdict = Verdict::judge(&coordination, &optimization);
    Ok(Report {
        test_name: s.test_name.clone(),
        duration_minutes: s.duration_minutes,
        ramp_up_minutes: s.ramp_up_minutes,
        ignored_keys: s.ignored_keys.clone(),
        elapsed_s,
        drain_s,
        mesh: MeshInfo {
            mode: if opts.master.is_some() {
                "running".into()
            } else {
                "started".into()
            },
            master: mesh.uri.clone(),
            plants: mesh.plants,
            sub_agents: mesh.sub_agents,
            nodes,
            ready_s,
            logs,
        },
        coordination,
        optimization,
        processes,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_an_example_that_validates() {
        for k in registry::KINDS {
            let payload = crate::workload::example_payload(k.id)
                .unwrap_or_else(|| panic!("no example for {}", k.id));
            (k.validate_json)(payload.as_bytes()).unwrap();
        }
    }

    #[test]
    fn latencies_of_any_length_are_recorded() {
        let mut h = hist();
        for ms in [3, 40, 2_500, 600_000] {
            record(&mut h, Duration::from_millis(ms));
        }
        let l = Latency::from_us(&h);
        assert_eq!(l.count, 4);
        assert!((l.p50_ms.unwrap() - 40.0).abs() < 0.1, "{l:?}");
        assert!((l.max_ms.unwrap() - 600_000.0).abs() < 600.0, "{l:?}");
    }

    #[test]
    fn splitmix_spreads_over_targets() {
        let mut r = heatmesh_base::Rng::new(7);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            seen[r.below(6)] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }

    #[test]
    fn series_figures() {
        let t = Instant::now();
        let mut s = Series::default();
        let mib = 1048576;
        s.push(
            t,
            &[Sample {
                cpu_s: 10.0,
                rss_bytes: 10 * mib,
            }],
        );
        s.push(
            t + Duration::from_secs(1),
            &[Sample {
                cpu_s: 10.5,
                rss_bytes: 30 * mib,
            }],
        );
        s.push(
            t + Duration::from_secs(2),
            &[Sample {
                cpu_s: 11.0,
                rss_bytes: 20 * mib,
            }],
        );
        let f = s.figures(Some(100 * mib)).unwrap();
        assert!((f.cpu_pct_mean - 50.0).abs() < 1e-9);
        assert!((f.cpu_pct_peak - 50.0).abs() < 1e-9);
        assert!((f.rss_mib_mean - 20.0).abs() < 1e-9);
        assert!((f.rss_mib_peak - 30.0).abs() < 1e-9);
        assert!((f.memory_pct_peak - 30.0).abs() < 1e-9);
        assert_eq!((f.rss_mib_start, f.rss_mib_end), (10.0, 20.0));
        assert_eq!((f.samples, f.processes), (3, 1));
    }
}
