//! What a load test measured: the figures (serialisable as the `--json` output), the
//! verdict against the predecessor's thresholds, and the human summary.

use super::{ERROR_THRESHOLD_PCT, LATENCY_THRESHOLD_MS};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Quantiles of a latency histogram, milliseconds; `None` when nothing was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Largest sample.
    pub max_ms: Option<f64>,
}

impl Latency {
    /// The quantiles of a histogram of microseconds.
    pub(super) fn from_us(h: &Histogram<u64>) -> Latency {
        let n = h.len();
        let q = |q: f64| (n > 0).then(|| h.value_at_quantile(q) as f64 / 1000.0);
        Latency {
            count: n,
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            max_ms: (n > 0).then(|| h.max() as f64 / 1000.0),
        }
    }

    fn line(&self) -> String {
        match (self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms) {
            (Some(a), Some(b), Some(c), Some(d)) => format!(
                "p50 {} / p95 {} / p99 {} / max {} ({} samples)",
                ms(a),
                ms(b),
                ms(c),
                ms(d),
                self.count
            ),
            _ => "no samples".into(),
        }
    }
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.2} ms")
    }
}

/// Figures of one agent kind's tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindFigures {
    /// Tasks accepted by the master.
    pub accepted: u64,
    /// Tasks that completed.
    pub completed: u64,
    /// Tasks that failed or were cancelled.
    pub failed: u64,
    /// Submit-to-completed p95, ms.
    pub p95_ms: Option<f64>,
}

/// Agent coordination events: sub-agent tasks submitted and followed to a terminal state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CoordinationReport {
    /// The scenario's rate once ramped up, per second.
    pub target_per_s: f64,
    /// Tasks the schedule holds for the whole run.
    pub planned: u64,
    /// Tasks whose time came (sent, refused or dropped).
    pub scheduled: u64,
    /// Not sent because `max_outstanding` tasks were still open: the mesh fell behind.
    pub dropped: u64,
    /// SubmitTask calls that returned an error.
    pub submit_errors: u64,
    /// Tasks acknowledged (durable) by the master.
    pub accepted: u64,
    /// Accepted tasks that completed.
    pub completed: u64,
    /// Accepted tasks that failed or were cancelled.
    pub failed: u64,
    /// Accepted tasks with no terminal state when the drain ended.
    pub unfinished: u64,
    /// Terminal states learnt by polling GetTask because the event feed missed them (their
    /// latency includes the polling delay).
    pub resolved_by_polling: u64,
    /// completed / scheduled, percent.
    pub success_rate_pct: Option<f64>,
    /// 100 - success rate: everything scheduled that did not complete.
    pub error_pct: Option<f64>,
    /// Bound on open tasks; beyond it a due task is dropped.
    pub max_outstanding: u64,
    /// Accepted tasks per second over the steady phase (after the ramp).
    pub accepted_per_s_steady: Option<f64>,
    /// Completions per second of tasks due in the steady phase.
    pub completed_per_s_steady: Option<f64>,
    /// Accepted tasks per second over the whole run.
    pub accepted_per_s_whole: f64,
    /// Submit-to-completed latency of tasks due in the steady phase.
    pub latency_steady: Latency,
    /// Submit-to-completed latency over the whole run.
    pub latency_all: Latency,
    /// How late sends left against their schedule (a busy client shows here).
    pub send_lag: Latency,
    /// Per agent kind.
    pub by_kind: BTreeMap<String, KindFigures>,
    /// The first few errors, verbatim.
    pub error_samples: Vec<String>,
    /// Times the terminal-event feed ended and was subscribed again.
    pub event_feed_restarts: u64,
}

/// Setpoint tasks that fleet runs sent to the plants' GL-001 agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SetpointReport {
    /// Tasks the runs reported.
    pub submitted: u64,
    /// Of those, completed.
    pub completed: u64,
    /// Failed or cancelled.
    pub failed: u64,
    /// No terminal state when the drain ended.
    pub unfinished: u64,
    /// From sending the fleet run to the plant's agent completing its setpoints.
    pub run_to_acknowledged: Latency,
}

/// Heat optimization requests: RunHeatDistribution on the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OptimizationReport {
    /// The scenario's rate once ramped up, per minute.
    pub target_per_min: f64,
    /// Runs the schedule holds for the whole run.
    pub planned: u64,
    /// Runs whose time came.
    pub scheduled: u64,
    /// Not sent because `max_outstanding` runs were still open.
    pub dropped: u64,
    /// Runs answered with a dispatch.
    pub completed: u64,
    /// Runs answered with an error.
    pub errors: u64,
    /// Bound on open runs.
    pub max_outstanding: u64,
    /// Whether runs sent setpoints to the plants (`dispatch_setpoints`).
    pub dispatch_setpoints: bool,
    /// Answered runs per minute over the steady phase.
    pub completed_per_min_steady: Option<f64>,
    /// Answered runs per minute over the whole run.
    pub completed_per_min_whole: f64,
    /// Request-to-response time of runs due in the steady phase.
    pub latency_steady: Latency,
    /// Request-to-response time over the whole run.
    pub latency_all: Latency,
    /// The master's own figure for the optimizer call (`total_time_ms` of the result).
    pub optimizer_time: Latency,
    /// Result status counts (optimal, feasible, ...).
    pub statuses: BTreeMap<String, u64>,
    /// The setpoint tasks the runs sent.
    pub setpoints: SetpointReport,
    /// The first few errors, verbatim.
    pub error_samples: Vec<String>,
}

/// CPU and memory of one process or a group of processes over the load window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcFigures {
    /// Processes measured.
    pub processes: usize,
    /// CPU time over wall time, percent of one core (200 % = both cores of a 2-core box).
    pub cpu_pct_mean: f64,
    /// Highest one-second CPU figure.
    pub cpu_pct_peak: f64,
    /// Mean resident set (VmRSS; summed over the group), MiB.
    pub rss_mib_mean: f64,
    /// Highest resident set, MiB.
    pub rss_mib_peak: f64,
    /// Resident set at the start and at the end of the window, MiB: growth shows here.
    pub rss_mib_start: f64,
    /// See `rss_mib_start`.
    pub rss_mib_end: f64,
    /// Highest resident set as a percentage of the machine's memory.
    pub memory_pct_peak: f64,
    /// One-second samples taken.
    pub samples: usize,
}

/// The whole machine over the load window: the mesh and the load generator share it with
/// whatever else runs there.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MachineFigures {
    /// Busy CPU time of all cores over wall time, percent of one core.
    pub cpu_pct_mean: f64,
    /// Highest one-second figure.
    pub cpu_pct_peak: f64,
    /// Busy CPU of everything but the mesh and this load generator, percent of one core.
    pub other_cpu_pct_mean: f64,
    /// Highest memory in use (MemTotal - MemAvailable), MiB.
    pub mem_used_mib_peak: f64,
}

/// Process figures of the mesh and of the load generator itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessReport {
    /// The master; against a running mesh (`--master`) only with `--master-metrics`, and
    /// then without `memory_pct_peak` (0).
    pub master: Option<ProcFigures>,
    /// All node processes together; `None` against a running mesh.
    pub nodes: Option<ProcFigures>,
    /// This load generator (it shares the machine with the mesh).
    pub loadtest: Option<ProcFigures>,
    /// The whole machine.
    pub machine: Option<MachineFigures>,
    /// CPU cores of the machine.
    pub cores: usize,
    /// Memory of the machine, MiB.
    pub mem_total_mib: Option<f64>,
    /// Processes of the mesh that exited during the run.
    pub exited: Vec<String>,
    /// Size of the master's data directory (ledger) at the end, bytes.
    pub ledger_bytes: Option<u64>,
}

/// The mesh under test.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeshInfo {
    /// `started` (processes on loopback) or `running` (`--master`).
    pub mode: String,
    /// The master's gRPC address.
    pub master: String,
    /// Plants served.
    pub plants: usize,
    /// Sub-agents running.
    pub sub_agents: usize,
    /// Node processes started.
    pub nodes: usize,
    /// Seconds from starting the processes to every plant running on its node.
    pub ready_s: Option<f64>,
    /// Where the logs and the generated configuration are, when kept.
    pub logs: Option<String>,
}

/// One threshold of the predecessor's scaling table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The predecessor's metric name.
    pub metric: String,
    /// What heatmesh measured for it.
    pub measured_as: String,
    /// The value, `None` when not measured (its rate was 0).
    pub value: Option<f64>,
    /// `ok` below this.
    pub threshold: f64,
    /// `ms` or `%`.
    pub unit: String,
    /// `None` when not measured.
    pub ok: Option<bool>,
}

/// The checks and their conjunction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// One per threshold.
    pub checks: Vec<Check>,
    /// Every measured check is ok and at least one was measured.
    pub pass: bool,
}

/// Everything a load test measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub test_name: String,
    /// Run length (ramp included), minutes, as run.
    pub duration_minutes: f64,
    /// Ramp length, minutes, as run.
    pub ramp_up_minutes: f64,
    /// Scenario keys that were ignored.
    pub ignored_keys: Vec<String>,
    /// Seconds from the first scheduled send to the end of the drain.
    pub elapsed_s: f64,
    /// Seconds spent after the schedule waiting for open work to finish.
    pub drain_s: f64,
    /// The mesh under test.
    pub mesh: MeshInfo,
    /// Agent coordination events.
    pub coordination: CoordinationReport,
    /// Heat optimization requests.
    pub optimization: OptimizationReport,
    /// CPU and memory.
    pub processes: ProcessReport,
    /// Against the predecessor's thresholds.
    pub verdict: Verdict,
}

fn check(metric: &str, as_: &str, value: Option<f64>, threshold: f64, unit: &str) -> Check {
    Check {
        metric: metric.into(),
        measured_as: as_.into(),
        value,
        threshold,
        unit: unit.into(),
        ok: value.map(|v| v < threshold),
    }
}

impl Verdict {
    /// The predecessor's three thresholds: orchestration latency p95 < 2 s, heat optimization
    /// time p95 < 2 s, agent coordination errors < 1 %. The steady phase is judged (the
    /// whole run when there is no steady phase).
    pub(super) fn judge(c: &CoordinationReport, o: &OptimizationReport) -> Verdict {
        let steady_or_all =
            |s: &Latency, a: &Latency| if s.count > 0 { s.p95_ms } else { a.p95_ms };
        let checks = vec![
            check(
                "orchestration_latency_p95",
                "sub-agent task submit-to-completed p95 (steady phase)",
                steady_or_all(&c.latency_steady, &c.latency_all),
                LATENCY_THRESHOLD_MS,
                "ms",
            ),
            check(
                "heat_optimization_time_p95",
                "fleet RunHeatDistribution request-to-response p95 (steady phase)",
                steady_or_all(&o.latency_steady, &o.latency_all),
                LATENCY_THRESHOLD_MS,
                "ms",
            ),
            check(
                "agent_coordination_errors",
                "sub-agent tasks scheduled but not completed (refused, dropped, failed, unfinished)",
                c.error_pct,
                ERROR_THRESHOLD_PCT,
                "%",
            ),
        ];
        let pass =
            checks.iter().any(|c| c.ok.is_some()) && checks.iter().all(|c| c.ok != Some(false));
        Verdict { checks, pass }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn proc_line(name: &str, p: &Option<ProcFigures>) -> Option<String> {
    let p = p.as_ref()?;
    Some(format!(
        "  {name:<9} CPU {:.1} % mean, {:.1} % peak (of one core); RSS {:.1} MiB mean, {:.1} MiB peak{}, {:.1} -> {:.1} MiB start to end{}",
        p.cpu_pct_mean,
        p.cpu_pct_peak,
        p.rss_mib_mean,
        p.rss_mib_peak,
        if p.memory_pct_peak > 0.0 {
            format!(" ({:.2} % of memory)", p.memory_pct_peak)
        } else {
            String::new()
        },
        p.rss_mib_start,
        p.rss_mib_end,
        if p.processes > 1 {
            format!(", {} processes", p.processes)
        } else {
            String::new()
        }
    ))
}

impl Report {
    /// The summary for people: rates, counts, latencies, processes, verdict.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let c = &self.coordination;
        let o = &self.optimization;
        let m = &self.mesh;
        let _ = writeln!(
            s,
            "load test {}: {} min ({} min ramp), {} plants, {} sub-agents, master {} ({}{})",
            self.test_name,
            self.duration_minutes,
            self.ramp_up_minutes,
            m.plants,
            m.sub_agents,
            m.master,
            m.mode,
            if m.nodes > 0 {
                format!(", {} node processes", m.nodes)
            } else {
                String::new()
            }
        );
        if !self.ignored_keys.is_empty() {
            let _ = writeln!(s, "ignored scenario keys: {}", self.ignored_keys.join(", "));
        }
        let _ = writeln!(
            s,
            "\nagent coordination events (sub-agent tasks): target {}/s",
            c.target_per_s
        );
        let _ = writeln!(
            s,
            "  achieved {}/s accepted, {}/s completed in the steady phase; {:.2}/s accepted over the run",
            opt(c.accepted_per_s_steady, 2),
            opt(c.completed_per_s_steady, 2),
            c.accepted_per_s_whole
        );
        let _ = writeln!(
            s,
            "  scheduled {} of {} planned: accepted {}, completed {}, failed {}, unfinished {}, refused {}, dropped {} (max {} open)",
            c.scheduled,
            c.planned,
            c.accepted,
            c.completed,
            c.failed,
            c.unfinished,
            c.submit_errors,
            c.dropped,
            c.max_outstanding
        );
        let _ = writeln!(
            s,
            "  success rate {} %{}",
            opt(c.success_rate_pct, 3),
            if c.resolved_by_polling > 0 {
                format!(
                    " ({} terminal states found by polling)",
                    c.resolved_by_polling
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "  submit-to-completed, steady: {}",
            c.latency_steady.line()
        );
        let _ = writeln!(
            s,
            "  submit-to-completed, whole run: {}",
            c.latency_all.line()
        );
        let _ = writeln!(s, "  send lag behind schedule: {}", c.send_lag.line());
        for (kind, k) in &c.by_kind {
            let _ = writeln!(
                s,
                "    {kind}: {} accepted, {} completed, {} failed, p95 {}",
                k.accepted,
                k.completed,
                k.failed,
                k.p95_ms.map_or_else(|| "-".into(), ms)
            );
        }
        for e in &c.error_samples {
            let _ = writeln!(s, "  error: {e}");
        }
        let _ = writeln!(
            s,
            "\nheat optimization requests (fleet RunHeatDistribution{}): target {}/min",
            if o.dispatch_setpoints {
                " with setpoint dispatch"
            } else {
                ""
            },
            o.target_per_min
        );
        let _ = writeln!(
            s,
            "  achieved {}/min in the steady phase, {:.2}/min over the run; scheduled {} of {} planned: answered {}, errors {}, dropped {}",
            opt(o.completed_per_min_steady, 2),
            o.completed_per_min_whole,
            o.scheduled,
            o.planned,
            o.completed,
            o.errors,
            o.dropped
        );
        let _ = writeln!(
            s,
            "  request-to-response, steady: {}",
            o.latency_steady.line()
        );
        let _ = writeln!(
            s,
            "  request-to-response, whole run: {}",
            o.latency_all.line()
        );
        let _ = writeln!(
            s,
            "  optimizer time in the master: {}",
            o.optimizer_time.line()
        );
        if !o.statuses.is_empty() {
            let st: Vec<String> = o.statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(s, "  result status: {}", st.join(", "));
        }
        if o.dispatch_setpoints {
            let p = &o.setpoints;
            let _ = writeln!(
                s,
                "  setpoint tasks: {} sent, {} completed, {} failed, {} unfinished; run-to-acknowledged {}",
                p.submitted,
                p.completed,
                p.failed,
                p.unfinished,
                p.run_to_acknowledged.line()
            );
        }
        for e in &o.error_samples {
            let _ = writeln!(s, "  error: {e}");
        }
        let p = &self.processes;
        let _ = writeln!(
            s,
            "\nprocesses ({} cores, {} MiB memory), over the load window:",
            p.cores,
            opt(p.mem_total_mib, 0)
        );
        for line in [
            proc_line("master", &p.master),
            proc_line("nodes", &p.nodes),
            proc_line("loadtest", &p.loadtest),
        ]
        .into_iter()
        .flatten()
        {
            let _ = writeln!(s, "{line}");
        }
        if let Some(m) = &p.machine {
            let _ = writeln!(
                s,
                "  machine   CPU {:.1} % mean, {:.1} % peak (all cores; {:.1} % by other processes); memory in use {:.0} MiB peak",
                m.cpu_pct_mean, m.cpu_pct_peak, m.other_cpu_pct_mean, m.mem_used_mib_peak
            );
        }
        if let Some(b) = p.ledger_bytes {
            let _ = writeln!(
                s,
                "  ledger on disk at the end: {:.1} MiB",
                b as f64 / 1048576.0
            );
        }
        if !p.exited.is_empty() {
            let _ = writeln!(s, "  EXITED during the run: {}", p.exited.join(", "));
        }
        let _ = writeln!(s, "\nverdict against the predecessor's thresholds:");
        for ch in &self.verdict.checks {
            let v = match (ch.value, ch.unit.as_str()) {
                (Some(v), "ms") => ms(v),
                (Some(v), u) => format!("{v:.3} {u}"),
                (None, _) => "not measured".into(),
            };
            let t = if ch.unit == "ms" {
                ms(ch.threshold)
            } else {
                format!("{} {}", ch.threshold, ch.unit)
            };
            let mark = match ch.ok {
                Some(true) => "ok",
                Some(false) => "FAIL",
                None => "-",
            };
            let _ = writeln!(s, "  {:<27} {v:>12}  < {t:<8} {mark}", ch.metric);
        }
        let _ = write!(
            s,
            "verdict: {}",
            if self.verdict.pass { "PASS" } else { "FAIL" }
        );
        if let Some(l) = &m.logs {
            let _ = write!(s, "\nlogs and generated configuration kept in {l}");
        }
        s
    }
}
