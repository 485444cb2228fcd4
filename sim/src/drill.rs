//! Runs one drill: starts the workload, plays the fault timeline against a [`DrillMesh`],
//! makes the mesh whole, waits for every accepted task to finish, then judges the
//! invariants and measures detection, recovery and latency.

use crate::check::{self, Blackouts, Inputs, Verdict};
use crate::harness::DrillMesh;
use crate::scenario::{Action, Direction, Scenario};
use crate::workload::{self, Outcome, Progress};
use heatmesh_master::task::Status;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A fault as it was injected.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    /// Offset from the workload start, ms.
    pub at_ms: u64,
    /// What was done.
    pub action: &'static str,
    /// Node, plant/kind, direction as applicable.
    pub target: String,
    /// Time until the master acted on it (fenced the node, failed the attempt), ms.
    pub detected_ms: Option<f64>,
    /// Time until the work it disturbed was running again, ms.
    pub recovered_ms: Option<f64>,
    /// Why it could not be applied, if it could not.
    pub error: Option<String>,
    /// Why detection and recovery were not timed, if they were not: a partition or kill of a
    /// node that was already down, or not attached, has no loss of its own to detect.
    pub untimed: Option<String>,
    #[serde(skip)]
    pub(crate) at_us: u64,
    /// When a kill or partition stopped being in force: the node started again or healed,
    /// or the master crashed (its successor starts without the loss in view).
    #[serde(skip)]
    pub(crate) ends_us: u64,
    #[serde(skip)]
    pub(crate) step: crate::scenario::Fault,
}

/// p50 / p99 / max of a set of durations, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    /// How many samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `xs` (any order).
    pub fn of(mut xs: Vec<f64>) -> Spread {
        xs.retain(|x| x.is_finite());
        if xs.is_empty() {
            return Spread::default();
        }
        xs.sort_by(f64::total_cmp);
        let at = |q: f64| xs[((xs.len() as f64 - 1.0) * q).round() as usize];
        Spread {
            n: xs.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: xs[xs.len() - 1],
        }
    }
}

/// Task figures of a drill.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tasks {
    /// Submits started.
    pub submitted: u64,
    /// Acknowledged (durable).
    pub acked: u64,
    /// Refused by the master.
    pub refused: u64,
    /// No answer within the retry window.
    pub unanswered: u64,
    /// Completed.
    pub completed: u64,
    /// Failed for good (attempts exhausted).
    pub failed: u64,
    /// Dispatched more than once.
    pub retried: u64,
    /// Orphaned at least once.
    pub orphaned: u64,
    /// Late results the master rejected (fenced or superseded dispatches).
    pub stale_rejected: Option<u64>,
}

/// The outcome of one drill.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed (jitter, kind choice; for random drills also the timeline).
    pub seed: u64,
    /// in-process or multi-process.
    pub mode: String,
    /// Wall time of the whole drill, s.
    pub wall_s: f64,
    /// Faults injected.
    pub faults: Vec<Injected>,
    /// Detection times over the faults that have one.
    pub detection_ms: Spread,
    /// Recovery times over the faults that have one.
    pub recovery_ms: Spread,
    /// Task figures.
    pub tasks: Tasks,
    /// Submit-to-terminal latency of tasks submitted inside fault windows, ms.
    pub latency_in_fault_ms: Spread,
    /// The same outside fault windows, ms.
    pub latency_outside_fault_ms: Spread,
    /// Fleet optimizations: ok, failed, latency.
    pub optimizations_ok: u64,
    /// Failed optimizations.
    pub optimizations_failed: u64,
    /// Optimization latency, ms.
    pub optimization_ms: Spread,
    /// Plant-down escalations seen.
    pub plant_escalations: Option<u64>,
    /// Every invariant's verdict, then the scenario's expectations.
    pub verdicts: Vec<Verdict>,
    /// All verdicts held.
    pub passed: bool,
    /// A problem that stopped the drill before it could be judged.
    pub error: Option<String>,
    /// Simulated drills: the hash of the event trace (16 hex digits); the same seed gives
    /// the same hash on every run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_hash: Option<String>,
}

impl Report {
    /// An empty report, not passed, for a drill about to run.
    pub fn new(scenario: &str, seed: u64, mode: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            seed,
            mode: mode.to_string(),
            wall_s: 0.0,
            faults: Vec::new(),
            detection_ms: Spread::default(),
            recovery_ms: Spread::default(),
            tasks: Tasks::default(),
            latency_in_fault_ms: Spread::default(),
            latency_outside_fault_ms: Spread::default(),
            optimizations_ok: 0,
            optimizations_failed: 0,
            optimization_ms: Spread::default(),
            plant_escalations: None,
            verdicts: Vec::new(),
            passed: false,
            error: None,
            trace_hash: None,
        }
    }
}

/// Runs `s` against `mesh`; `progress` receives live counters.
pub async fn run(
    s: &Scenario,
    seed: u64,
    mut mesh: Box<dyn DrillMesh>,
    progress: Arc<Progress>,
) -> Report {
    let started = Instant::now();
    let mut report = Report::new(&s.name, seed, mesh.mode());
    if let Err(e) = judge(s, seed, mesh.as_mut(), progress, &mut report).await {
        report.error = Some(e);
        report.passed = false;
    }
    mesh.stop().await;
    report.wall_s = started.elapsed().as_secs_f64();
    report
}

async fn judge(
    s: &Scenario,
    seed: u64,
    mesh: &mut dyn DrillMesh,
    progress: Arc<Progress>,
    report: &mut Report,
) -> Result<(), String> {
    mesh.wait_ready(Duration::from_secs(30)).await?;
    let net_origin = (Instant::now(), workload::now_us());
    let plants: Vec<(String, Vec<String>)> =
        crate::harness::drill_config(s, std::path::Path::new("."))?
            .plants
            .iter()
            .map(|p| (p.id.clone(), p.agents.clone()))
            .collect();
    let (watcher, seen) = watch_master(mesh.grpc_uri());
    let t0 = Instant::now();
    let t0_us = workload::now_us();
    let load = tokio::spawn(workload::run(
        mesh.grpc_uri(),
        format!("{}-{seed}", s.name),
        s.workload.clone(),
        plants,
        seed,
        progress,
    ));
    // Nodes killed and not yet started again, and whether the master is down, by the timeline.
    let mut down = std::collections::BTreeSet::new();
    let mut master_down = false;
    for step in s.timeline() {
        tokio::time::sleep_until((t0 + Duration::from_millis(step.at_ms)).into()).await;
        let at_us = workload::now_us();
        let error = mesh.apply(&step).await.err();
        let node = step.node.clone().unwrap_or_default();
        let untimed = match step.action {
            Action::KillNode | Action::Partition if down.contains(&node) => {
                Some(format!("{node} was already down"))
            }
            // The restarted master finds the node missing or present; there was no loss in
            // its view to detect.
            Action::KillNode | Action::Partition if master_down => {
                Some("the master was down".to_string())
            }
            _ => None,
        };
        match step.action {
            Action::CrashMaster if error.is_none() => master_down = true,
            Action::RestartMaster => master_down = false,
            Action::KillNode if error.is_none() => {
                down.insert(node);
            }
            Action::RestartNode | Action::RestartNodeRolling => {
                down.remove(&node);
            }
            _ => {}
        }
        report.faults.push(Injected {
            at_ms: (at_us - t0_us) / 1000,
            action: step.action.as_str(),
            target: target(&step),
            detected_ms: None,
            recovered_ms: None,
            error,
            untimed,
            at_us,
            ends_us: u64::MAX,
            step,
        });
    }
    fault_ends(&mut report.faults);
    let log = load.await.map_err(|e| format!("workload: {e}"))?;
    // Long enough for the last fault's recovery to show.
    tokio::time::sleep(Duration::from_millis(s.mesh.lease_ms * 2)).await;
    let whole_us = workload::now_us();
    mesh.make_whole().await?;
    mesh.wait_ready(Duration::from_secs(30)).await?;
    settle(
        &mesh.grpc_uri(),
        Duration::from_millis(s.workload.settle_timeout_ms),
    )
    .await?;
    wait_stable(&mesh.grpc_uri(), s.mesh.lease_ms).await?;
    let end = mesh.end_state().await?;
    watcher.abort();
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    conclude(s, report, &log, &end, whole_us, net_origin, &seen)
}

/// Judges a finished drill: reads the ledger, checks the invariants and the scenario's
/// expectations, and fills the report's figures. `seen` is the master's view over time.
pub(crate) fn conclude(
    s: &Scenario,
    report: &mut Report,
    log: &workload::Log,
    end: &crate::harness::EndState,
    whole_us: u64,
    net_origin: (Instant, u64),
    seen: &[(u64, u64, Seen)],
) -> Result<(), String> {
    let tasks = check::read_ledger(end.ledger.as_ref())?;
    let placements = end.ledger.placements().map_err(|e| e.to_string())?;
    let keepalive_us = s.mesh.lease_ms * 3 / 2 * 1000;
    let blackouts = blackouts(s, &report.faults, whole_us, keepalive_us);
    let inputs = Inputs {
        log,
        tasks: &tasks,
        end,
        redispatch_bound_us: s.expect.redispatch_within_ms * 1000,
        blackouts: &blackouts,
        placements: &placements,
        net_origin: Some(net_origin),
    };
    let mut verdicts = check::check(&inputs);
    let stale = end.stale_rejected.or_else(|| check::stale_results(&inputs));
    time_from_view(&mut report.faults, seen);
    measure_faults(s, &mut report.faults, &tasks);
    verdicts.push(detection_verdict(s, &report.faults));
    let escalations = Some(escalations(&tasks));
    verdicts.extend(expectations(s, log, &tasks, stale, escalations));
    report.detection_ms = Spread::of(report.faults.iter().filter_map(|f| f.detected_ms).collect());
    report.recovery_ms = Spread::of(
        report
            .faults
            .iter()
            .filter_map(|f| f.recovered_ms)
            .collect(),
    );
    report.tasks = task_figures(log, &tasks, stale);
    let (inside, outside) = latencies(log, &tasks, &report.faults);
    report.latency_in_fault_ms = Spread::of(inside);
    report.latency_outside_fault_ms = Spread::of(outside);
    report.optimizations_ok = log.optimized.iter().filter(|o| o.error.is_none()).count() as u64;
    report.optimizations_failed = log.optimized.len() as u64 - report.optimizations_ok;
    report.optimization_ms = Spread::of(
        log.optimized
            .iter()
            .filter_map(|o| o.took_us.map(|t| t as f64 / 1000.0))
            .collect(),
    );
    report.plant_escalations = escalations;
    // An agent fault can miss its moment (the plant is being re-placed, the master is down):
    // reported, not a failure. A node or master fault the harness could not apply is.
    report.passed = verdicts.iter().all(|v| v.ok)
        && report.faults.iter().all(|f| {
            f.error.is_none() || matches!(f.step.action, Action::PanicAgent | Action::SlowAgent)
        });
    report.verdicts = verdicts;
    Ok(())
}

pub(crate) fn target(f: &crate::scenario::Fault) -> String {
    match f.action {
        Action::PanicAgent => format!(
            "{}/{} x{}",
            f.plant.as_deref().unwrap_or("?"),
            f.kind.as_deref().unwrap_or("?"),
            f.panics
        ),
        Action::SlowAgent => format!(
            "{}/{} +{} ms",
            f.plant.as_deref().unwrap_or("?"),
            f.kind.as_deref().unwrap_or("?"),
            f.delay_ms
        ),
        Action::Partition => format!(
            "{} ({})",
            f.node.as_deref().unwrap_or("?"),
            match f.direction {
                Direction::Both => "both ways",
                Direction::ToMaster => "node to master",
                Direction::FromMaster => "master to node",
            }
        ),
        Action::Delay => format!(
            "{} +{} ms ±{} ms",
            f.node.as_deref().unwrap_or("?"),
            f.delay_ms,
            f.jitter_ms
        ),
        Action::CrashMaster
        | Action::RestartMaster
        | Action::StallMaster
        | Action::ResumeMaster => "master".into(),
        Action::DiskFull | Action::FreeDisk => "master's disk".into(),
        Action::ConnectionFlood => format!("master, {} idle connections", f.connections),
        Action::EndFlood => "master".into(),
        _ => f.node.clone().unwrap_or_default(),
    }
}

/// Waits until no task is pending, dispatched or orphaned.
async fn settle(uri: &str, timeout: Duration) -> Result<(), String> {
    use heatmesh_proto::v1 as pb;
    let mut c = pb::task_service_client::TaskServiceClient::connect(uri.to_string())
        .await
        .map_err(|e| format!("connect {uri}: {e}"))?;
    let end = Instant::now() + timeout;
    loop {
        let open = c
            .list_tasks(pb::ListTasksRequest {
                status: vec![
                    pb::TaskStatus::Pending as i32,
                    pb::TaskStatus::Dispatched as i32,
                    pb::TaskStatus::Orphaned as i32,
                ],
                page_size: 3,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("list tasks: {}", e.message()))?
            .into_inner();
        if open.tasks.is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            // Not an error of the harness: the checker reports the unfinished tasks.
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the master showed at one moment: nodes (id, connected, node epoch) and plants (id,
/// node, epoch, status).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Seen {
    pub(crate) nodes: Vec<(String, bool, u64)>,
    pub(crate) plants: Vec<(String, String, u64, String)>,
}

/// The master's views over time: when each was asked for and when it was answered (unix
/// µs), and what it showed.
type Views = Arc<std::sync::Mutex<Vec<(u64, u64, Seen)>>>;

/// Polls the master every 10 ms and keeps each change with its time (unix µs): the
/// operator's view, from which detection and recovery are timed even when no task was in
/// flight on the failed node.
fn watch_master(uri: String) -> (tokio::task::JoinHandle<()>, Views) {
    use heatmesh_proto::v1 as pb;
    let seen: Views = Arc::default();
    let out = seen.clone();
    let h = tokio::spawn(async move {
        let Ok(ep) = tonic::transport::Endpoint::from_shared(uri) else {
            return;
        };
        let ch = ep
            .connect_timeout(Duration::from_millis(200))
            .timeout(Duration::from_millis(500))
            .connect_lazy();
        let mut c = pb::mesh_service_client::MeshServiceClient::new(ch);
        loop {
            // Stamped when asked: the answer shows a state at least this recent, and the
            // reply's own latency (the master busy recovering) does not count as detection.
            let asked = workload::now_us();
            let nodes = c.list_nodes(pb::ListNodesRequest {}).await;
            let plants = c.list_plants(pb::ListPlantsRequest {}).await;
            if let (Ok(n), Ok(p)) = (nodes, plants) {
                let mut now = Seen {
                    nodes: n
                        .into_inner()
                        .nodes
                        .into_iter()
                        .map(|n| (n.id, n.status == "connected", n.epoch))
                        .collect(),
                    plants: p
                        .into_inner()
                        .plants
                        .into_iter()
                        .map(|p| (p.id, p.node, p.epoch, p.status))
                        .collect(),
                };
                now.nodes.sort();
                now.plants.sort();
                let mut log = out.lock().unwrap_or_else(|e| e.into_inner());
                if log.last().is_none_or(|(_, _, last)| *last != now) {
                    log.push((asked, workload::now_us(), now));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (h, seen)
}

/// Sets when each kill and partition stopped being in force (`Injected::ends_us`).
pub(crate) fn fault_ends(faults: &mut [Injected]) {
    let marks: Vec<(u64, Action, Option<String>)> = faults
        .iter()
        .map(|f| (f.at_us, f.step.action, f.step.node.clone()))
        .collect();
    for f in faults.iter_mut() {
        let ended_by = |a: Action| match f.step.action {
            Action::KillNode => matches!(a, Action::RestartNode | Action::RestartNodeRolling),
            Action::Partition => a == Action::Heal,
            _ => false,
        };
        f.ends_us = marks
            .iter()
            .filter(|(at, a, n)| {
                *at > f.at_us && (*a == Action::CrashMaster || (ended_by(*a) && *n == f.step.node))
            })
            .map(|m| m.0)
            .min()
            .unwrap_or(u64::MAX);
    }
}

/// Whether a kill or partition's loss shows at `at`: after the fault, and for a kill or
/// partition before it ended (a later re-attachment is the node coming back, not detection).
fn in_force(f: &Injected, at: u64) -> bool {
    at >= f.at_us
        && (!matches!(f.step.action, Action::KillNode | Action::Partition) || at <= f.ends_us)
}

/// Times each node and master fault from the master's observed view: detection when the node
/// shows disconnected or re-attached under a newer node epoch, recovery when every plant it
/// ran has been seen running again under a newer epoch; for a master crash, recovery when
/// the restarted master shows every plant running.
fn time_from_view(faults: &mut [Injected], seen: &[(u64, u64, Seen)]) {
    // The state before a fault: a view answered before it (one asked before but answered
    // after may already show the fault's effect).
    let before = |t: u64| {
        seen.iter()
            .rev()
            .find(|(_, answered, _)| *answered <= t)
            .map(|(_, _, s)| s)
    };
    for f in faults.iter_mut().filter(|f| f.untimed.is_none()) {
        match f.step.action {
            Action::KillNode | Action::Partition | Action::RestartNodeRolling => {
                let node = f.step.node.clone().unwrap_or_default();
                let Some(base) = before(f.at_us) else {
                    continue;
                };
                // Not attached just before nor just after the fault (the view is polled).
                let attached = |s: &Seen| s.nodes.iter().any(|n| n.0 == node && n.1);
                let after = seen
                    .iter()
                    .find(|(at, _, _)| *at >= f.at_us)
                    .map(|(_, _, s)| s);
                if !attached(base)
                    && !after.is_some_and(attached)
                    && f.step.action != Action::RestartNodeRolling
                {
                    // Still re-attaching after an earlier fault: it holds no work the master
                    // could lose, so there is no loss to detect.
                    f.untimed = Some(format!("{node} was not attached"));
                    continue;
                }
                let epoch0 = base.nodes.iter().find(|n| n.0 == node).map_or(0, |n| n.2);
                let hosted: Vec<(String, u64)> = base
                    .plants
                    .iter()
                    .filter(|p| p.1 == node)
                    .map(|p| (p.0.clone(), p.2))
                    .collect();
                // Whichever the view shows first: the node disconnected or back under a newer
                // node epoch, or a plant it ran placed again (the master acted on the loss).
                let detected = seen.iter().find(|(at, _, s)| {
                    in_force(f, *at)
                        && (s
                            .nodes
                            .iter()
                            .any(|n| n.0 == node && (!n.1 || n.2 > epoch0))
                            || hosted
                                .iter()
                                .any(|(p, e)| s.plants.iter().any(|q| &q.0 == p && q.2 > *e)))
                });
                let Some((d_at, _, _)) = detected else {
                    continue;
                };
                if f.detected_ms.is_none() {
                    f.detected_ms = Some((*d_at - f.at_us) as f64 / 1000.0);
                }
                // Each plant on its own: the first poll showing it running under a newer
                // epoch. A plant re-placed and then handed back to its returning node may
                // never be running in the same poll as its neighbour.
                let back: Option<Vec<u64>> = hosted
                    .iter()
                    .map(|(p, e)| {
                        seen.iter()
                            .find(|(at, _, s)| {
                                *at >= *d_at
                                    && s.plants
                                        .iter()
                                        .any(|q| &q.0 == p && q.2 > *e && q.3 == "running")
                            })
                            .map(|(at, _, _)| *at)
                    })
                    .collect();
                if let Some(r_at) = back.and_then(|b| b.into_iter().max()) {
                    f.recovered_ms = Some((r_at - f.at_us) as f64 / 1000.0);
                }
            }
            Action::CrashMaster => {
                let back = seen.iter().find(|(at, _, s)| {
                    *at > f.at_us + 1_000 && s.plants.iter().all(|p| p.3 == "running")
                });
                if let Some((at, _, _)) = back {
                    f.recovered_ms = Some((*at - f.at_us) as f64 / 1000.0);
                }
            }
            _ => {}
        }
    }
}

/// Waits until the placement stops changing: returning nodes take their plants back once the
/// plants are idle, and stale incarnations are stopped, a little after the mesh is whole.
async fn wait_stable(uri: &str, lease_ms: u64) -> Result<(), String> {
    let quiet = Duration::from_millis((2 * lease_ms).max(500));
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let a = crate::harness::master_view(uri).await?;
        tokio::time::sleep(quiet).await;
        let b = crate::harness::master_view(uri).await?;
        if a == b && b.iter().all(|p| p.3 == "running") {
            return Ok(());
        }
        if Instant::now() > end {
            // The checker reports the disagreement.
            return Ok(());
        }
    }
}

/// Spans in which no node could run work: the master down, or every node down or cut off,
/// each extended by the time a node needs to notice and re-attach.
pub(crate) fn blackouts(
    s: &Scenario,
    faults: &[Injected],
    whole_us: u64,
    keepalive_us: u64,
) -> Blackouts {
    let reattach = keepalive_us + 1_000_000;
    let nodes: Vec<String> = s.mesh.node_ids().into_iter().map(|(n, _)| n).collect();
    let mut down: Vec<(String, u64, u64)> = Vec::new();
    let mut master: Vec<(u64, u64)> = Vec::new();
    let close = |faults: &[Injected], k: usize, undo: &[Action], node: Option<&str>| {
        faults[k + 1..]
            .iter()
            .find(|g| {
                undo.contains(&g.step.action) && (node.is_none() || g.step.node.as_deref() == node)
            })
            .map_or(whole_us, |g| g.at_us)
    };
    for (k, f) in faults.iter().enumerate() {
        let node = f.step.node.clone().unwrap_or_default();
        match f.step.action {
            Action::KillNode => {
                let e = close(
                    faults,
                    k,
                    &[Action::RestartNode, Action::RestartNodeRolling],
                    Some(&node),
                );
                down.push((node, f.at_us, e + reattach));
            }
            Action::RestartNodeRolling => down.push((node, f.at_us, f.at_us + reattach)),
            Action::Partition => {
                let e = close(faults, k, &[Action::Heal], Some(&node));
                down.push((node, f.at_us, e + reattach));
            }
            Action::CrashMaster => {
                let e = close(faults, k, &[Action::RestartMaster], None);
                master.push((f.at_us, e + reattach));
            }
            _ => {}
        }
    }
    // Sweep in 10 ms steps: fine enough against second-scale bounds, and simple.
    let (Some(first), last) = (faults.first(), whole_us + reattach) else {
        return Vec::new();
    };
    let mut out: Blackouts = Vec::new();
    let mut t = first.at_us;
    while t < last {
        let all_nodes_out = nodes
            .iter()
            .all(|n| down.iter().any(|(d, s, e)| d == n && *s <= t && t < *e));
        let master_out = master.iter().any(|(s, e)| *s <= t && t < *e);
        if all_nodes_out || master_out {
            match out.last_mut() {
                Some(last) if last.1 == t => last.1 = t + 10_000,
                _ => out.push((t, t + 10_000)),
            }
        }
        t += 10_000;
    }
    out
}

/// Fills each fault's detection and recovery time from the journal.
fn measure_faults(s: &Scenario, faults: &mut [Injected], tasks: &[check::TaskHistory]) {
    let horizon = 10_000_000;
    for f in faults.iter_mut().filter(|f| f.untimed.is_none()) {
        let window = |at: u64| at >= f.at_us && at < f.at_us + horizon;
        match f.step.action {
            Action::KillNode | Action::Partition | Action::RestartNodeRolling => {
                let node = f.step.node.clone().unwrap_or_default();
                // The master's reaction: tasks on that node orphaned after the fault.
                let mut orphaned: Vec<(u64, u64)> = Vec::new(); // (orphaned at, redispatched at)
                for t in tasks {
                    for (k, x) in t.journal.iter().enumerate() {
                        if x.to == Status::Orphaned
                            && x.node == node
                            && window(x.at_us)
                            && in_force(f, x.at_us)
                        {
                            let again = t.journal[k + 1..]
                                .iter()
                                .find(|y| y.to == Status::Dispatched)
                                .map_or(u64::MAX, |y| y.at_us);
                            orphaned.push((x.at_us, again));
                        }
                    }
                }
                // The earlier of the master's view and the journal's first orphaning (exact,
                // but only when work was in flight); orphanings long after the view saw the
                // loss belong to later events.
                let view = f.detected_ms.map(|d| f.at_us + (d * 1000.0) as u64);
                let first = orphaned
                    .iter()
                    .map(|o| o.0)
                    .filter(|o| view.is_none_or(|v| *o <= v + 100_000))
                    .min();
                if let Some(first) = first {
                    let journal = (first - f.at_us) as f64 / 1000.0;
                    f.detected_ms = Some(f.detected_ms.map_or(journal, |v| v.min(journal)));
                    // The fault's own orphans: those fenced with the first detection.
                    let batch: Vec<u64> = orphaned
                        .iter()
                        .filter(|o| o.0 <= first + 50_000)
                        .map(|o| o.1)
                        .collect();
                    if batch.iter().all(|a| *a != u64::MAX) {
                        f.recovered_ms = batch.iter().max().map(|a| (a - f.at_us) as f64 / 1000.0);
                    }
                }
            }
            Action::CrashMaster => {
                let first = tasks
                    .iter()
                    .flat_map(|t| t.journal.iter())
                    .filter(|x| x.to == Status::Dispatched && window(x.at_us))
                    .map(|x| x.at_us)
                    .min();
                f.recovered_ms = first.map(|a| (a - f.at_us) as f64 / 1000.0);
            }
            Action::PanicAgent => {
                let (plant, kind) = (f.step.plant.clone(), f.step.kind.clone());
                let mut best: Option<(u64, u64)> = None;
                for t in tasks.iter().filter(|t| {
                    Some(&t.rec.plant_id) == plant.as_ref()
                        && Some(&t.rec.agent_kind) == kind.as_ref()
                }) {
                    for (k, x) in t.journal.iter().enumerate() {
                        let failed = x.from == Some(Status::Dispatched)
                            && matches!(x.to, Status::Pending | Status::Failed | Status::Orphaned);
                        if failed && window(x.at_us) && best.is_none_or(|b| x.at_us < b.0) {
                            let again = t.journal[k + 1..]
                                .iter()
                                .find(|y| y.to == Status::Dispatched)
                                .map_or(u64::MAX, |y| y.at_us);
                            best = Some((x.at_us, again));
                        }
                    }
                }
                if let Some((d, r)) = best {
                    f.detected_ms = Some((d - f.at_us) as f64 / 1000.0);
                    f.recovered_ms = (r != u64::MAX).then(|| (r - f.at_us) as f64 / 1000.0);
                }
            }
            _ => {}
        }
    }
    let _ = s;
}

/// Plant incarnations that went down because an agent exceeded its restart intensity, as
/// the journal of the tasks they orphaned tells.
fn escalations(tasks: &[check::TaskHistory]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        for x in &t.journal {
            if x.to == Status::Orphaned
                && (x.detail.contains("escalated") || x.detail.contains("exceeded"))
            {
                seen.insert((t.rec.plant_id.clone(), x.epoch));
            }
        }
    }
    seen.len() as u64
}

fn detection_verdict(s: &Scenario, faults: &[Injected]) -> Verdict {
    let bound = (s.mesh.lease_ms * 3 / 2 + s.expect.detection_slack_ms) as f64;
    let mut v = Verdict {
        name: "failures_detected",
        rule: "a lost node's work is recovered (fenced and orphaned) within 1.5 x lease + the detection slack",
        ok: true,
        checked: 0,
        violations: 0,
        examples: Vec::new(),
    };
    for f in faults
        .iter()
        .filter(|f| f.untimed.is_none() && f.error.is_none())
    {
        if !matches!(f.step.action, Action::KillNode | Action::Partition) {
            continue;
        }
        let lasted_ms = f.ends_us.saturating_sub(f.at_us) as f64 / 1000.0;
        let late = match f.detected_ms {
            Some(d) => (d > bound).then(|| format!("detected after {d:.0} ms")),
            // Ridden out when it ended before the bound; otherwise the master missed it.
            None => (lasted_ms > bound)
                .then(|| format!("not detected while it lasted ({lasted_ms:.0} ms)")),
        };
        if f.detected_ms.is_some() || lasted_ms > bound {
            v.checked += 1;
        }
        if let Some(late) = late {
            v.violations += 1;
            v.ok = false;
            v.examples.push(format!(
                "{} {} at {} ms: {late} (bound {bound:.0} ms)",
                f.action, f.target, f.at_ms
            ));
        }
    }
    v
}

fn expectations(
    s: &Scenario,
    log: &workload::Log,
    tasks: &[check::TaskHistory],
    stale: Option<u64>,
    escalations: Option<u64>,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    let verdict = |name, rule, ok: bool, checked, examples: Vec<String>| Verdict {
        name,
        rule,
        ok,
        checked,
        violations: (!ok) as u64,
        examples,
    };
    if s.expect.all_completed {
        let by_id: std::collections::HashMap<u64, &check::TaskHistory> =
            tasks.iter().map(|t| (t.rec.id, t)).collect();
        let mut bad = Vec::new();
        let mut n = 0;
        for x in &log.sent {
            if let Outcome::Acked { id, .. } = x.outcome {
                n += 1;
                let st = by_id.get(&id).map(|t| t.rec.status);
                if st != Some(Status::Completed) && bad.len() < 5 {
                    bad.push(format!(
                        "task {id}: {}",
                        st.map_or("missing", |s| s.as_str())
                    ));
                }
            }
        }
        // A drill that fills the disk expects its submits refused meanwhile, as promised
        // (RESOURCE_EXHAUSTED, nothing accepted); no other refusal is.
        let fills_disk = s.faults.iter().any(|f| f.action == Action::DiskFull);
        let refused: Vec<String> = log
            .sent
            .iter()
            .filter_map(|x| match &x.outcome {
                Outcome::Refused(e) if fills_disk && e.contains("ledger disk full") => None,
                Outcome::Refused(e) | Outcome::Unknown(e) => Some(format!("{}: {e}", x.key)),
                _ => None,
            })
            .take(5)
            .collect();
        out.push(verdict(
            "expect_all_completed",
            "every submit is acknowledged and every acknowledged task completes",
            bad.is_empty() && refused.is_empty(),
            n,
            bad.into_iter().chain(refused).collect(),
        ));
    }
    if s.expect.min_plant_escalations > 0 {
        let got = escalations.unwrap_or(0);
        out.push(verdict(
            "expect_plant_escalations",
            "the drill causes at least the expected plant escalations",
            got >= s.expect.min_plant_escalations,
            1,
            vec![format!(
                "{got} seen, {} expected",
                s.expect.min_plant_escalations
            )],
        ));
    }
    if let Some(max) = s.expect.max_orphaned {
        let orphaned: Vec<&check::TaskHistory> = tasks
            .iter()
            .filter(|t| t.journal.iter().any(|x| x.to == Status::Orphaned))
            .collect();
        out.push(verdict(
            "expect_max_orphaned",
            "no more tasks are orphaned than the drill allows (no healthy node loses its lease)",
            orphaned.len() as u64 <= max,
            tasks.len() as u64,
            orphaned
                .iter()
                .take(5)
                .map(|t| {
                    let why = t.journal.iter().find(|x| x.to == Status::Orphaned);
                    format!(
                        "task {}: orphaned on {} ({})",
                        t.rec.id,
                        why.map_or("", |x| x.node.as_str()),
                        why.map_or("", |x| x.detail.as_str())
                    )
                })
                .collect(),
        ));
    }
    if s.expect.min_stale_rejected > 0 {
        let got = stale.unwrap_or(0);
        out.push(verdict(
            "expect_stale_rejected",
            "late results from fenced dispatches are rejected at least as often as expected",
            got >= s.expect.min_stale_rejected,
            1,
            vec![format!(
                "{got} rejected, {} expected",
                s.expect.min_stale_rejected
            )],
        ));
    }
    out
}

fn task_figures(log: &workload::Log, tasks: &[check::TaskHistory], stale: Option<u64>) -> Tasks {
    let count = |st: Status| tasks.iter().filter(|t| t.rec.status == st).count() as u64;
    Tasks {
        submitted: log.sent.len() as u64,
        acked: log
            .sent
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Acked { .. }))
            .count() as u64,
        refused: log
            .sent
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Refused(_)))
            .count() as u64,
        unanswered: log
            .sent
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Unknown(_)))
            .count() as u64,
        completed: count(Status::Completed),
        failed: count(Status::Failed),
        retried: tasks
            .iter()
            .filter(|t| {
                t.journal
                    .iter()
                    .filter(|x| x.to == Status::Dispatched)
                    .count()
                    > 1
            })
            .count() as u64,
        orphaned: tasks
            .iter()
            .filter(|t| t.journal.iter().any(|x| x.to == Status::Orphaned))
            .count() as u64,
        stale_rejected: stale,
    }
}

/// Submit-to-terminal latencies, split by whether the submit fell inside a fault window (from
/// the fault to its undo step, or to its recovery when it has none).
fn latencies(
    log: &workload::Log,
    tasks: &[check::TaskHistory],
    faults: &[Injected],
) -> (Vec<f64>, Vec<f64>) {
    let windows: Vec<(u64, u64)> = faults
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            !matches!(
                f.step.action,
                Action::Heal
                    | Action::RestartNode
                    | Action::RestartMaster
                    | Action::FreeDisk
                    | Action::ResumeMaster
                    | Action::EndFlood
            )
        })
        .map(|(k, f)| {
            let undo = faults[k + 1..].iter().find(|g| {
                matches!(
                    g.step.action,
                    Action::Heal
                        | Action::RestartNode
                        | Action::RestartMaster
                        | Action::SlowAgent
                        | Action::FreeDisk
                        | Action::ResumeMaster
                        | Action::EndFlood
                ) && g.step.node == f.step.node
                    && g.step.plant == f.step.plant
            });
            let rec = f.recovered_ms.map(|r| f.at_us + (r * 1000.0) as u64);
            let end = undo
                .map(|g| g.at_us)
                .into_iter()
                .chain(rec)
                .max()
                .unwrap_or(f.at_us + 1_000_000);
            (f.at_us, end)
        })
        .collect();
    let by_id: std::collections::HashMap<u64, &check::TaskHistory> =
        tasks.iter().map(|t| (t.rec.id, t)).collect();
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for s in &log.sent {
        let Outcome::Acked { id, .. } = s.outcome else {
            continue;
        };
        let Some(t) = by_id.get(&id) else { continue };
        if !t.rec.status.is_terminal() {
            continue;
        }
        let ms = t.rec.updated_us.saturating_sub(s.sent_us) as f64 / 1000.0;
        if windows
            .iter()
            .any(|(a, b)| s.sent_us >= *a && s.sent_us <= *b)
        {
            inside.push(ms);
        } else {
            outside.push(ms);
        }
    }
    (inside, outside)
}
