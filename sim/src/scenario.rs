//! Drill scenarios: the mesh shape, the workload, the fault timeline and the expectations,
//! as TOML files under `drills/` (format: docs/drills.md) or built from a seed.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A scenario that does not hold together; names the field and the rule.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The TOML did not parse (the message names the key).
    #[error("{0}")]
    Parse(String),
    /// A field breaks a rule.
    #[error("{field}: {rule}")]
    Invalid {
        /// Dotted path of the field, e.g. `faults[2].node`.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        rule: rule.into(),
    }
}

/// Which harness a scenario may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ModeSupport {
    /// Both in-process and multi-process.
    #[default]
    Both,
    /// Simulated or in-process, not multi-process (`modes = "in-process"`).
    InProcess,
    /// Multi-process only.
    MultiProcess,
    /// In-process or multi-process, not simulated (`modes = "real-time"`): real sockets.
    RealTime,
}

impl ModeSupport {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            ModeSupport::Both => "both",
            ModeSupport::InProcess => "in-process",
            ModeSupport::MultiProcess => "multi-process",
            ModeSupport::RealTime => "real-time",
        }
    }
}

/// A drill: what to build, what to run, what to break, what to expect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in reports.
    pub name: String,
    /// What the drill rehearses.
    #[serde(default)]
    pub description: String,
    /// Harnesses it suits.
    #[serde(default)]
    pub modes: ModeSupport,
    /// The mesh.
    #[serde(default)]
    pub mesh: MeshShape,
    /// The load while faults happen.
    #[serde(default)]
    pub workload: Workload,
    /// The fault timeline.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// What must hold besides the invariants.
    #[serde(default)]
    pub expect: Expect,
}

/// Plants, nodes, spares and agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshShape {
    /// Plants (taken from the sample fleet; beyond its three, copies of them).
    pub plants: usize,
    /// Plant nodes `node-1`..: plant i prefers node ((i - 1) mod nodes) + 1. Default: one per plant.
    pub nodes: Option<usize>,
    /// Spare nodes `spare-1`.. (prefer no plant).
    pub spares: usize,
    /// Agent kinds per plant; empty keeps the sample fleet's.
    pub agents: Vec<String>,
    /// Node heartbeat interval, ms.
    pub heartbeat_interval_ms: u64,
    /// Node lease (the failure-detection deadline), ms.
    pub lease_ms: u64,
    /// Agent restarts tolerated within `restart_window_ms` before the plant escalates.
    pub max_restarts: u32,
    /// Restart-intensity window, ms.
    pub restart_window_ms: u64,
    /// Task attempts before a task fails for good.
    pub max_attempts: u32,
}

impl Default for MeshShape {
    fn default() -> Self {
        MeshShape {
            plants: 3,
            nodes: None,
            spares: 1,
            agents: Vec::new(),
            heartbeat_interval_ms: 100,
            lease_ms: 600,
            max_restarts: 5,
            restart_window_ms: 10_000,
            max_attempts: 10,
        }
    }
}

impl MeshShape {
    /// Plant ids, `Plant-001`...
    pub fn plant_ids(&self) -> Vec<String> {
        (1..=self.plants).map(|i| format!("Plant-{i:03}")).collect()
    }

    /// Node ids with the plants each prefers, spares last.
    pub fn node_ids(&self) -> Vec<(String, Vec<String>)> {
        let n = self.nodes.unwrap_or(self.plants).max(1);
        let plants = self.plant_ids();
        let mut out: Vec<(String, Vec<String>)> = (1..=n)
            .map(|i| {
                let prefs = plants
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| k % n == i - 1)
                    .map(|(_, p)| p.clone())
                    .collect();
                (format!("node-{i}"), prefs)
            })
            .collect();
        out.extend((1..=self.spares).map(|i| (format!("spare-{i}"), Vec::new())));
        out
    }
}

/// The load: tasks at a rate with a kind mix, and optimizations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Tasks per second at full rate.
    pub rate: f64,
    /// Linear ramp from zero to `rate`, ms.
    pub ramp_up_ms: u64,
    /// How long tasks are submitted, ms (the fault timeline runs inside it).
    pub duration_ms: u64,
    /// Fleet heat-distribution runs per minute (OptimizationService).
    pub optimizations_per_minute: f64,
    /// Relative weights of agent kinds, e.g. `{ "GL-009" = 3, "GL-002" = 1 }`; empty: every
    /// calculation kind the plants run, equally.
    pub mix: BTreeMap<String, u32>,
    /// How long to wait after the workload for every accepted task to finish, ms.
    pub settle_timeout_ms: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            rate: 150.0,
            ramp_up_ms: 300,
            duration_ms: 5_000,
            optimizations_per_minute: 60.0,
            mix: BTreeMap::new(),
            settle_timeout_ms: 30_000,
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// SIGKILL a node (multi-process) or drop it and its actors at once (in-process).
    KillNode,
    /// Start a killed node again under the same id.
    RestartNode,
    /// Kill the master; with `duration_ms`, restart it that much later.
    CrashMaster,
    /// Start the master again on the same ledger.
    RestartMaster,
    /// Cut a node's path to the master (`direction`: both, to-master, from-master).
    Partition,
    /// Heal a node's path (cuts, delay and jitter).
    Heal,
    /// Delay (and jitter) every frame on a node's path.
    Delay,
    /// Make an agent panic on its next `panics` tasks.
    PanicAgent,
    /// Make an agent take `delay_ms` longer per task (0 disarms).
    SlowAgent,
    /// Kill a node and start it again: one step of a rolling restart.
    RestartNodeRolling,
    /// Fill the master's disk: the ledger refuses every write (in-process: its free-space
    /// watch sees none; simulated: the in-memory ledger's disk); with `duration_ms`, free it
    /// that much later.
    DiskFull,
    /// Free the master's disk again.
    FreeDisk,
    /// Stop the master process (SIGSTOP), as a machine that stalls would; with
    /// `duration_ms`, resume it that much later. Multi-process only.
    StallMaster,
    /// Resume a stalled master (SIGCONT).
    ResumeMaster,
    /// Open `connections` idle TCP connections to the master's gRPC port that never speak
    /// HTTP/2; with `duration_ms`, close them that much later. Real-time modes only.
    ConnectionFlood,
    /// Close a flood's connections.
    EndFlood,
}

impl Action {
    /// The name used in files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::KillNode => "kill-node",
            Action::RestartNode => "restart-node",
            Action::CrashMaster => "crash-master",
            Action::RestartMaster => "restart-master",
            Action::Partition => "partition",
            Action::Heal => "heal",
            Action::Delay => "delay",
            Action::PanicAgent => "panic-agent",
            Action::SlowAgent => "slow-agent",
            Action::RestartNodeRolling => "restart-node-rolling",
            Action::DiskFull => "disk-full",
            Action::FreeDisk => "free-disk",
            Action::StallMaster => "stall-master",
            Action::ResumeMaster => "resume-master",
            Action::ConnectionFlood => "connection-flood",
            Action::EndFlood => "end-flood",
        }
    }

    fn needs_node(self) -> bool {
        matches!(
            self,
            Action::KillNode
                | Action::RestartNode
                | Action::Partition
                | Action::Heal
                | Action::Delay
                | Action::RestartNodeRolling
        )
    }
}

/// Which way a partition cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Nothing passes.
    #[default]
    Both,
    /// The node's frames do not reach the master.
    ToMaster,
    /// The master's frames do not reach the node.
    FromMaster,
}

/// One step of the fault timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, from the start of the workload, ms.
    pub at_ms: u64,
    /// What.
    pub action: Action,
    /// Target node id (node actions).
    #[serde(default)]
    pub node: Option<String>,
    /// Target plant (agent actions).
    #[serde(default)]
    pub plant: Option<String>,
    /// Target agent kind (agent actions).
    #[serde(default)]
    pub kind: Option<String>,
    /// Partition direction.
    #[serde(default)]
    pub direction: Direction,
    /// Undo after this long: heal a partition or delay, restart a killed node or master,
    /// disarm a slow agent.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Delay per frame (delay) or per task (slow-agent), ms.
    #[serde(default)]
    pub delay_ms: u64,
    /// Jitter per frame, ms.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Panics to arm (panic-agent); above the restart intensity it is a crash loop.
    #[serde(default)]
    pub panics: u32,
    /// Idle connections to open (connection-flood).
    #[serde(default)]
    pub connections: u32,
    /// crash-master: bytes of an interrupted write left at the end of the newest log
    /// segment, as a crash in the middle of a write leaves them (multi-process only). The
    /// restarted master must cut them and start with everything acknowledged.
    #[serde(default)]
    pub torn_bytes: u32,
}

/// What must hold besides the invariants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// Every acknowledged task must end completed (not only terminal).
    pub all_completed: bool,
    /// An orphaned task must be dispatched again within this long of its orphaning, not
    /// counting time when no node could run its plant, ms.
    pub redispatch_within_ms: u64,
    /// A lost node must be noticed within its lease plus this much, ms.
    pub detection_slack_ms: u64,
    /// Plant-down escalations the drill must cause at least (agent crash loops).
    pub min_plant_escalations: u64,
    /// Stale results the master must have rejected at least (partitions with late results).
    pub min_stale_rejected: u64,
    /// Tasks that may be orphaned at most (a fault that must not cost any node its lease).
    pub max_orphaned: Option<u64>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            all_completed: true,
            redispatch_within_ms: 2_000,
            detection_slack_ms: 1_500,
            min_plant_escalations: 0,
            min_stale_rejected: 0,
            max_orphaned: None,
        }
    }
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// The scenario as TOML (what `--print` shows and what a replay file holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every rule; the error names the field.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let m = &self.mesh;
        if m.plants == 0 || m.plants > 50 {
            return Err(invalid("mesh.plants", "must be 1 to 50"));
        }
        if let Some(n) = m.nodes
            && (n == 0 || n > m.plants)
        {
            return Err(invalid("mesh.nodes", "must be 1 to mesh.plants"));
        }
        if m.heartbeat_interval_ms == 0 || m.lease_ms <= m.heartbeat_interval_ms {
            return Err(invalid(
                "mesh.lease_ms",
                "must exceed mesh.heartbeat_interval_ms (> 0)",
            ));
        }
        if m.max_attempts == 0 {
            return Err(invalid("mesh.max_attempts", "must be at least 1"));
        }
        for (i, k) in m.agents.iter().enumerate() {
            if heatmesh_agents::registry::lookup(k).is_none() {
                return Err(invalid(
                    format!("mesh.agents[{i}]"),
                    format!("unknown agent kind {k}"),
                ));
            }
        }
        let w = &self.workload;
        if !(w.rate.is_finite() && w.rate >= 0.0 && w.rate <= 100_000.0) {
            return Err(invalid(
                "workload.rate",
                "must be 0 to 100000 tasks per second",
            ));
        }
        if !(w.optimizations_per_minute.is_finite()
            && (0.0..=6_000.0).contains(&w.optimizations_per_minute))
        {
            return Err(invalid(
                "workload.optimizations_per_minute",
                "must be 0 to 6000",
            ));
        }
        if w.duration_ms == 0 {
            return Err(invalid("workload.duration_ms", "must be positive"));
        }
        for k in w.mix.keys() {
            if heatmesh_agents::registry::lookup(k).is_none() {
                return Err(invalid(format!("workload.mix.{k}"), "unknown agent kind"));
            }
        }
        let nodes: Vec<String> = m.node_ids().into_iter().map(|(n, _)| n).collect();
        let plants = m.plant_ids();
        for (i, f) in self.faults.iter().enumerate() {
            let field = |name: &str| format!("faults[{i}].{name}");
            if f.at_ms > w.duration_ms {
                return Err(invalid(
                    field("at_ms"),
                    "must fall inside workload.duration_ms",
                ));
            }
            if f.action.needs_node() {
                match &f.node {
                    None => {
                        return Err(invalid(
                            field("node"),
                            format!("required for {}", f.action.as_str()),
                        ));
                    }
                    Some(n) if !nodes.contains(n) => {
                        return Err(invalid(
                            field("node"),
                            format!("no node {n}; nodes are {}", nodes.join(", ")),
                        ));
                    }
                    _ => {}
                }
            }
            if matches!(f.action, Action::PanicAgent | Action::SlowAgent) {
                match &f.plant {
                    Some(p) if plants.contains(p) => {}
                    Some(p) => return Err(invalid(field("plant"), format!("no plant {p}"))),
                    None => return Err(invalid(field("plant"), "required for agent faults")),
                }
                if f.kind
                    .as_deref()
                    .and_then(heatmesh_agents::registry::lookup)
                    .is_none()
                {
                    return Err(invalid(field("kind"), "required: a known agent kind"));
                }
            }
            // Faults only some harnesses can make: said at once, not when the step comes.
            let needs = match f.action {
                Action::DiskFull | Action::FreeDisk => Some(ModeSupport::InProcess),
                Action::StallMaster | Action::ResumeMaster => Some(ModeSupport::MultiProcess),
                Action::ConnectionFlood | Action::EndFlood => Some(ModeSupport::RealTime),
                _ => None,
            };
            if let Some(m) = needs
                && self.modes != m
            {
                return Err(invalid(
                    field("action"),
                    format!(
                        "{} needs modes = \"{}\" (the other harnesses cannot make it)",
                        f.action.as_str(),
                        m.as_str()
                    ),
                ));
            }
            if f.torn_bytes > 0 {
                if f.action != Action::CrashMaster {
                    return Err(invalid(field("torn_bytes"), "only for crash-master"));
                }
                if self.modes != ModeSupport::MultiProcess {
                    return Err(invalid(
                        field("torn_bytes"),
                        "needs modes = \"multi-process\" (a killed process leaves the log to be torn)",
                    ));
                }
                if f.torn_bytes > 65_536 {
                    return Err(invalid(field("torn_bytes"), "must be at most 65536"));
                }
            }
            if f.action == Action::ConnectionFlood && !(1..=20_000).contains(&f.connections) {
                return Err(invalid(field("connections"), "must be 1 to 20000"));
            }
            if f.action == Action::PanicAgent && f.panics == 0 {
                return Err(invalid(field("panics"), "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The fault timeline with every `duration_ms` expanded into its undo step, by time.
    pub fn timeline(&self) -> Vec<Fault> {
        let mut out = Vec::new();
        for f in &self.faults {
            out.push(f.clone());
            if let Some(d) = f.duration_ms {
                let undo = match f.action {
                    Action::KillNode => Some(Action::RestartNode),
                    Action::CrashMaster => Some(Action::RestartMaster),
                    Action::Partition | Action::Delay => Some(Action::Heal),
                    Action::SlowAgent => Some(Action::SlowAgent),
                    Action::DiskFull => Some(Action::FreeDisk),
                    Action::StallMaster => Some(Action::ResumeMaster),
                    Action::ConnectionFlood => Some(Action::EndFlood),
                    _ => None,
                };
                if let Some(a) = undo {
                    let mut u = f.clone();
                    u.at_ms = f.at_ms + d;
                    u.action = a;
                    u.duration_ms = None;
                    if a == Action::SlowAgent {
                        u.delay_ms = 0;
                    }
                    out.push(u);
                }
            }
        }
        out.sort_by_key(|f| f.at_ms);
        out
    }

    /// A random drill for `seed`: shape, load and a fault timeline that always ends with the
    /// mesh whole again (every node back, every path healed), so every accepted task can
    /// finish. The same seed builds the same scenario.
    pub fn random(seed: u64) -> Scenario {
        let mut r = Rng::new(seed);
        let plants = r.range(1, 3) as usize;
        let nodes = r.range(1, plants as u64) as usize;
        let spares = r.range(0, 1) as usize;
        let mesh = MeshShape {
            plants,
            nodes: Some(nodes),
            spares,
            max_restarts: r.range(2, 5) as u32,
            ..MeshShape::default()
        };
        let duration_ms = r.range(3_000, 5_000);
        let workload = Workload {
            rate: r.range(80, 250) as f64,
            ramp_up_ms: r.range(0, 500),
            duration_ms,
            optimizations_per_minute: [0.0, 30.0, 120.0][r.range(0, 2) as usize],
            ..Workload::default()
        };
        let hosting = mesh.node_ids();
        let node_ids: Vec<String> = hosting.iter().map(|(n, _)| n.clone()).collect();
        let plant_ids = mesh.plant_ids();
        let kinds = ["GL-009", "GL-002", "GL-012"];
        let mut faults = Vec::new();
        let n_faults = r.range(1, 4);
        for _ in 0..n_faults {
            let at_ms = r.range(300, duration_ms.saturating_sub(1_200));
            let node = node_ids[r.range(0, node_ids.len() as u64 - 1) as usize].clone();
            let plant = plant_ids[r.range(0, plant_ids.len() as u64 - 1) as usize].clone();
            let kind = kinds[r.range(0, 2) as usize].to_string();
            let base = Fault {
                at_ms,
                ..base_fault()
            };
            let f = match r.weighted(&[4, 4, 2, 2, 2, 2, 1]).unwrap_or(0) {
                0 => Fault {
                    action: Action::KillNode,
                    node: Some(node),
                    duration_ms: Some(r.range(200, 1_500)),
                    ..base
                },
                1 => Fault {
                    action: Action::Partition,
                    node: Some(node),
                    direction: [Direction::Both, Direction::ToMaster, Direction::FromMaster]
                        [r.range(0, 2) as usize],
                    duration_ms: Some(r.range(300, 2_000)),
                    ..base
                },
                2 => Fault {
                    action: Action::Delay,
                    node: Some(node),
                    delay_ms: r.range(5, 80),
                    jitter_ms: r.range(0, 40),
                    duration_ms: Some(r.range(300, 1_500)),
                    ..base
                },
                3 => Fault {
                    action: Action::PanicAgent,
                    plant: Some(plant),
                    kind: Some(kind),
                    panics: r.range(1, 8) as u32,
                    ..base
                },
                4 => Fault {
                    action: Action::SlowAgent,
                    plant: Some(plant),
                    kind: Some(kind),
                    delay_ms: r.range(20, 200),
                    duration_ms: Some(r.range(300, 1_500)),
                    ..base
                },
                5 => Fault {
                    action: Action::RestartNodeRolling,
                    node: Some(node),
                    ..base
                },
                _ => Fault {
                    action: Action::CrashMaster,
                    duration_ms: Some(r.range(100, 800)),
                    ..base
                },
            };
            // Half the node losses start while a plant on that node is slow, so work is in
            // flight when the link goes: its results then arrive late, after fencing, which
            // is what the stale-result and orphan checks need to see.
            let prefs = f
                .node
                .as_ref()
                .and_then(|n| hosting.iter().find(|h| &h.0 == n));
            if let (Action::KillNode | Action::Partition, Some((_, prefs))) = (f.action, prefs)
                && !prefs.is_empty()
                && r.chance(0.5)
            {
                let lead = r.range(50, 300);
                faults.push(Fault {
                    at_ms: f.at_ms.saturating_sub(lead),
                    action: Action::SlowAgent,
                    node: None,
                    plant: Some(prefs[r.range(0, prefs.len() as u64 - 1) as usize].clone()),
                    kind: Some(kinds[r.range(0, 2) as usize].to_string()),
                    delay_ms: r.range(100, 300),
                    duration_ms: Some(lead + f.duration_ms.unwrap_or(0) + 300),
                    ..base_fault()
                });
            }
            faults.push(f);
        }
        faults.sort_by_key(|f| f.at_ms);
        Scenario {
            name: format!("random-{seed}"),
            description: format!("random drill from seed {seed}"),
            modes: ModeSupport::InProcess,
            mesh,
            workload,
            faults,
            expect: Expect::default(),
        }
    }
}

/// A fault with every optional part empty, for `Scenario::random` to fill in.
fn base_fault() -> Fault {
    Fault {
        at_ms: 0,
        action: Action::Heal,
        node: None,
        plant: None,
        kind: None,
        direction: Direction::Both,
        duration_ms: None,
        delay_ms: 0,
        jitter_ms: 0,
        panics: 0,
        connections: 0,
        torn_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_reproducible_and_valid() {
        for seed in 0..300 {
            let a = Scenario::random(seed);
            a.validate().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let b = Scenario::random(seed);
            assert_eq!(a.to_toml(), b.to_toml());
            let back = Scenario::from_toml(&a.to_toml()).unwrap();
            assert_eq!(back.to_toml(), a.to_toml());
        }
        assert_ne!(Scenario::random(1).to_toml(), Scenario::random(2).to_toml());
    }

    #[test]
    fn random_node_losses_sometimes_come_with_a_slow_plant_on_that_node() {
        let (mut losses, mut compound) = (0, 0);
        for seed in 0..300 {
            let s = Scenario::random(seed);
            let hosting = s.mesh.node_ids();
            for f in &s.faults {
                if !matches!(f.action, Action::KillNode | Action::Partition) {
                    continue;
                }
                let node = f.node.as_deref().unwrap();
                let prefs = &hosting.iter().find(|h| h.0 == node).unwrap().1;
                if prefs.is_empty() {
                    continue;
                }
                losses += 1;
                let slow = s.faults.iter().any(|g| {
                    g.action == Action::SlowAgent
                        && g.at_ms <= f.at_ms
                        && f.at_ms - g.at_ms <= 300
                        && prefs.contains(g.plant.as_ref().unwrap())
                        && g.at_ms + g.duration_ms.unwrap() >= f.at_ms + f.duration_ms.unwrap()
                });
                compound += slow as u32;
            }
        }
        // Half, drawn: well inside 35-65 % over this many losses.
        assert!(losses > 200, "{losses}");
        let share = compound as f64 / losses as f64;
        assert!((0.35..0.65).contains(&share), "{compound} of {losses}");
    }

    #[test]
    fn errors_name_the_field() {
        let bad = "name = \"x\"\n[mesh]\nplants = 2\nnodes = 3\n";
        let e = Scenario::from_toml(bad).unwrap_err().to_string();
        assert_eq!(e, "mesh.nodes: must be 1 to mesh.plants");
        let bad =
            "name = \"x\"\n[[faults]]\nat_ms = 10\naction = \"kill-node\"\nnode = \"node-9\"\n";
        let e = Scenario::from_toml(bad).unwrap_err().to_string();
        assert!(e.starts_with("faults[0].node: no node node-9"), "{e}");
        let bad = "name = \"x\"\n[[faults]]\nat_ms = 10\naction = \"melt\"\n";
        let e = Scenario::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("melt"), "{e}");
        let bad = "name = \"x\"\n[workload]\nrate = -1.0\n";
        let e = Scenario::from_toml(bad).unwrap_err().to_string();
        assert!(e.starts_with("workload.rate:"), "{e}");
        // A step the scenario's harnesses cannot make is refused when read.
        let bad = "name = \"x\"\n[[faults]]\nat_ms = 10\naction = \"stall-master\"\n";
        let e = Scenario::from_toml(bad).unwrap_err().to_string();
        assert!(
            e.starts_with("faults[0].action: stall-master needs modes = \"multi-process\""),
            "{e}"
        );
        let bad = "name = \"x\"\nmodes = \"multi-process\"\n[[faults]]\nat_ms = 10\naction = \"disk-full\"\n";
        let e = Scenario::from_toml(bad).unwrap_err().to_string();
        assert!(
            e.starts_with("faults[0].action: disk-full needs modes = \"in-process\""),
            "{e}"
        );
        let bad =
            "name = \"x\"\n[[faults]]\nat_ms = 10\naction = \"crash-master\"\ntorn_bytes = 100\n";
        let e = Scenario::from_toml(bad).unwrap_err().to_string();
        assert!(e.starts_with("faults[0].torn_bytes: needs modes"), "{e}");
    }

    #[test]
    fn timeline_expands_undo_steps_and_node_preferences() {
        let s = Scenario::from_toml(
            "name = \"x\"\n[mesh]\nplants = 3\nnodes = 2\n[[faults]]\nat_ms = 100\naction = \"partition\"\nnode = \"node-1\"\nduration_ms = 400\n",
        )
        .unwrap();
        let t = s.timeline();
        assert_eq!(t.len(), 2);
        assert_eq!((t[1].at_ms, t[1].action), (500, Action::Heal));
        let nodes = s.mesh.node_ids();
        assert_eq!(
            nodes[0],
            (
                "node-1".into(),
                vec!["Plant-001".into(), "Plant-003".into()]
            )
        );
        assert_eq!(nodes[1], ("node-2".into(), vec!["Plant-002".into()]));
        assert_eq!(nodes[2], ("spare-1".into(), vec![]));
    }
}
