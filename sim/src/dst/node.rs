//! Simulated plant nodes: the node side of the node protocol (attach, heartbeats, the
//! outbox kept while detached) and each plant's supervisor with its agents (queues, panics,
//! restarts by the real [`RestartTracker`], escalation), computing real results with the
//! registry's calculations. The links the master holds on them only queue frames; the
//! world carries those over its simulated network.

use heatmesh_agents::fault::Fault;
use heatmesh_agents::supervision::{RestartPolicy, RestartTracker, Verdict};
use heatmesh_agents::{AgentStatus, Assignment, EventSink, Outcome, PlantEvent, PlantSpec};
use heatmesh_base::Backoff;
use heatmesh_ingest::PlantFeeds;
use heatmesh_mesh::{BoxFuture, MeshError, NodeLink, PlantLink};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most frames a detached node keeps for the next session (the real node's outbox bound).
pub const OUTBOX_LIMIT: usize = 10_000;

/// A frame from the master to a node.
#[derive(Debug, Clone)]
pub enum Down {
    /// Run this assignment on the plant.
    Assign(String, Assignment),
    /// Start the plant under this epoch.
    Spawn(Box<PlantSpec>, u64),
    /// Stop this incarnation of the plant.
    Stop(String, u64),
    /// Arm a rehearsal fault on one agent.
    Fault(String, String, Fault),
    /// The master's answer to a heartbeat.
    Ack,
    /// The master ended the session (fenced).
    Fenced,
}

/// A frame from a node to the master.
#[derive(Debug, Clone)]
pub enum Up {
    /// A plant's report.
    Event(PlantEvent),
    /// Still alive.
    Heartbeat,
    /// A spawn's answer: empty when started.
    Started(String, u64, String),
}

/// Frames the master's links queued, with the session they were sent on.
pub type Outgoing = Arc<Mutex<Vec<(String, u64, Down)>>>;

/// The master's link on one node session.
pub struct SimNodeLink {
    /// Node id.
    pub id: String,
    /// The session's node epoch.
    pub node_epoch: u64,
    /// Set when the session ends: sends fail from then on.
    pub fenced: Arc<AtomicBool>,
    /// Where sent frames go.
    pub out: Outgoing,
}

impl SimNodeLink {
    fn send(&self, d: Down) -> Result<(), MeshError> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(MeshError::NodeUnavailable {
                node: self.id.clone(),
                reason: format!("fenced (node epoch {})", self.node_epoch),
            });
        }
        self.out.lock().unwrap_or_else(|e| e.into_inner()).push((
            self.id.clone(),
            self.node_epoch,
            d,
        ));
        Ok(())
    }

    /// The link on a plant placed through this session.
    pub fn plant(self: &Arc<Self>, plant: &str, epoch: u64) -> Arc<dyn PlantLink> {
        Arc::new(SimPlantLink {
            plant: plant.to_string(),
            epoch,
            node: self.clone(),
        })
    }
}

impl NodeLink for SimNodeLink {
    fn id(&self) -> &str {
        &self.id
    }
    fn address(&self) -> String {
        format!("sim://{}", self.id)
    }
    fn stop_stale_plant(&self, plant: &str, epoch: u64) {
        let _ = self.send(Down::Stop(plant.to_string(), epoch));
    }
    fn inject_fault(&self, plant: &str, kind: &str, fault: Fault) -> Result<(), MeshError> {
        self.send(Down::Fault(plant.to_string(), kind.to_string(), fault))
    }
    fn set_feeds(&self, _plant: &str, _feeds: &PlantFeeds) -> Result<(), MeshError> {
        // Simulated plants read no meters; a switch has nothing to restart.
        Ok(())
    }
    fn spawn_plant(
        &self,
        spec: PlantSpec,
        _epoch: u64,
        _sink: EventSink,
    ) -> BoxFuture<'_, Result<Arc<dyn PlantLink>, MeshError>> {
        // The world carries out `Effect::Spawn` itself, over its network; nothing calls this.
        let node = self.id.clone();
        Box::pin(async move {
            Err(MeshError::SpawnFailed {
                plant: spec.id,
                node,
                reason: "simulated nodes are spawned by the simulator".into(),
            })
        })
    }
}

struct SimPlantLink {
    plant: String,
    epoch: u64,
    node: Arc<SimNodeLink>,
}

impl PlantLink for SimPlantLink {
    fn dispatch(&self, a: Assignment) -> Result<(), MeshError> {
        self.node.send(Down::Assign(self.plant.clone(), a))
    }
    fn stop(&self) {
        let _ = self.node.send(Down::Stop(self.plant.clone(), self.epoch));
    }
}

/// What a node asks the world to do after handling something.
#[derive(Debug)]
pub enum NodeAction {
    /// Send this frame to the master on the node's session.
    Send(Up),
    /// Finish the agent's current task after this long (its run number).
    Busy(String, String, u64, Duration),
    /// Restart the agent after this long.
    Restart(String, String, u64, Duration),
    /// The node ended its session (fenced or the master went silent): dial again later.
    Detached,
}

struct Agent {
    up: bool,
    outstanding: VecDeque<Assignment>,
    parked: Vec<Assignment>,
    busy: bool,
    /// Numbers each run, so a finish of a run that a crash ended is ignored.
    run: u64,
    panicking: bool,
    restarts: RestartTracker,
}

/// One plant incarnation on a node.
struct Plant {
    epoch: u64,
    agents: BTreeMap<String, Agent>,
}

/// One simulated node.
pub struct SimNode {
    /// Node id.
    pub id: String,
    /// Plants it prefers.
    pub preferred: Vec<String>,
    /// The process runs.
    pub alive: bool,
    /// Counts process starts; timers of an earlier process are ignored.
    pub incarnation: u32,
    /// The node epoch of its current session, while attached.
    pub session: Option<u64>,
    /// When it last heard from the master (simulated µs).
    pub last_heard: u64,
    /// Frames kept while detached.
    pub outbox: VecDeque<Up>,
    /// Reconnect delays.
    pub backoff: Backoff,
    plants: BTreeMap<String, Plant>,
    faults: BTreeMap<(String, String), Fault>,
    policy: RestartPolicy,
}

impl SimNode {
    /// A node, not started.
    pub fn new(id: &str, preferred: Vec<String>, policy: RestartPolicy) -> SimNode {
        SimNode {
            id: id.to_string(),
            preferred,
            alive: false,
            incarnation: 0,
            session: None,
            last_heard: 0,
            outbox: VecDeque::new(),
            backoff: Self::reconnect(id),
            plants: BTreeMap::new(),
            faults: BTreeMap::new(),
            policy,
        }
    }

    fn reconnect(id: &str) -> Backoff {
        Backoff::named(Duration::from_millis(100), Duration::from_secs(1), id)
    }

    /// Starts the process (again): nothing runs, nothing is attached.
    pub fn start(&mut self) {
        self.alive = true;
        self.incarnation += 1;
        self.session = None;
        self.outbox.clear();
        self.plants.clear();
        self.faults.clear();
        self.backoff = Self::reconnect(&self.id);
    }

    /// SIGKILL: everything in memory is gone.
    pub fn kill(&mut self) {
        self.alive = false;
        self.session = None;
        self.outbox.clear();
        self.plants.clear();
        self.faults.clear();
    }

    /// Disarms every rehearsal fault (the mesh made whole: an undo step that missed its
    /// moment, the plant being re-placed, leaves none standing).
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The plant incarnations running here, sorted by plant.
    pub fn running(&self) -> Vec<(String, u64)> {
        self.plants
            .iter()
            .map(|(p, x)| (p.clone(), x.epoch))
            .collect()
    }

    /// Queues a frame for the master: sent on the session, or kept for the next one.
    pub fn emit(&mut self, up: Up, out: &mut Vec<NodeAction>) {
        if self.session.is_some() {
            out.push(NodeAction::Send(up));
        } else {
            self.outbox.push_back(up);
            if self.outbox.len() > OUTBOX_LIMIT {
                self.outbox.pop_front();
            }
        }
    }

    fn report(
        &mut self,
        plant: &str,
        kind: &str,
        a: &Assignment,
        outcome: Outcome,
        out: &mut Vec<NodeAction>,
    ) {
        let ev = PlantEvent::TaskDone {
            plant: plant.to_string(),
            task_id: a.task_id,
            attempt: a.attempt,
            epoch: a.epoch,
            agent: format!("{plant}/{kind}"),
            outcome,
        };
        self.emit(Up::Event(ev), out);
    }

    fn status(&mut self, plant: &str, kind: &str, status: AgentStatus, out: &mut Vec<NodeAction>) {
        let Some(p) = self.plants.get(plant) else {
            return;
        };
        let ev = PlantEvent::AgentChanged {
            plant: plant.to_string(),
            kind: kind.to_string(),
            status,
            restarts: p.agents.get(kind).map_or(0, |a| a.restarts.total),
            epoch: p.epoch,
        };
        self.emit(Up::Event(ev), out);
    }

    /// A frame from the master arrived on session `node_epoch`. `service` draws how long a
    /// task takes to compute.
    pub fn on_down(
        &mut self,
        node_epoch: u64,
        d: Down,
        now: u64,
        service: &mut dyn FnMut() -> Duration,
    ) -> Vec<NodeAction> {
        let mut out = Vec::new();
        if !self.alive || self.session != Some(node_epoch) {
            return out;
        }
        self.last_heard = now;
        match d {
            Down::Ack => {}
            Down::Fenced => {
                self.session = None;
                out.push(NodeAction::Detached);
            }
            Down::Fault(plant, kind, f) => {
                self.faults.insert((plant, kind), f);
            }
            Down::Stop(plant, epoch) => {
                if self.plants.get(&plant).is_some_and(|p| p.epoch == epoch) {
                    self.plants.remove(&plant);
                }
            }
            Down::Spawn(spec, epoch) => {
                let agents =
                    spec.agents
                        .iter()
                        .map(|k| {
                            let agent = Agent {
                                up: true,
                                outstanding: VecDeque::new(),
                                parked: Vec::new(),
                                busy: false,
                                run: 0,
                                panicking: false,
                                restarts: RestartTracker::seeded(heatmesh_base::name_seed(
                                    &format!("{}/{k}", spec.id),
                                )),
                            };
                            (k.clone(), agent)
                        })
                        .collect();
                // An older incarnation stops first; the master already orphaned its work.
                self.plants.insert(spec.id.clone(), Plant { epoch, agents });
                self.emit(Up::Started(spec.id.clone(), epoch, String::new()), &mut out);
                for k in &spec.agents {
                    self.status(&spec.id, k, AgentStatus::Running, &mut out);
                }
            }
            Down::Assign(plant, a) => self.assign(&plant, a, service, &mut out),
        }
        out
    }

    fn assign(
        &mut self,
        plant: &str,
        a: Assignment,
        service: &mut dyn FnMut() -> Duration,
        out: &mut Vec<NodeAction>,
    ) {
        let kind = a.kind.clone();
        let Some(p) = self.plants.get_mut(plant) else {
            let reason = format!("plant {plant} does not run on node {}", self.id);
            self.report(plant, &kind, &a, Outcome::Orphaned { reason }, out);
            return;
        };
        if p.epoch != a.epoch {
            let reason = format!(
                "plant {plant} is at epoch {}, assignment carries {}",
                p.epoch, a.epoch
            );
            self.report(plant, &kind, &a, Outcome::Orphaned { reason }, out);
            return;
        }
        let Some(agent) = p.agents.get_mut(&kind) else {
            let error = format!("plant {plant} runs no {kind} agent");
            let failed = Outcome::Failed {
                error,
                retryable: false,
            };
            self.report(plant, &kind, &a, failed, out);
            return;
        };
        if agent.up {
            agent.outstanding.push_back(a);
            self.next(plant, &kind, service, out);
        } else {
            agent.parked.push(a);
        }
    }

    /// Starts the agent's next task if it is idle.
    fn next(
        &mut self,
        plant: &str,
        kind: &str,
        service: &mut dyn FnMut() -> Duration,
        out: &mut Vec<NodeAction>,
    ) {
        let fault = self.faults.get_mut(&(plant.to_string(), kind.to_string()));
        let Some(agent) = self
            .plants
            .get_mut(plant)
            .and_then(|p| p.agents.get_mut(kind))
        else {
            return;
        };
        if agent.busy || !agent.up || agent.outstanding.is_empty() {
            return;
        }
        let mut took = service();
        agent.panicking = false;
        if let Some(f) = fault {
            took += f.delay;
            if f.panic_next > 0 {
                f.panic_next -= 1;
                agent.panicking = true;
            }
        }
        agent.busy = true;
        agent.run += 1;
        out.push(NodeAction::Busy(
            plant.to_string(),
            kind.to_string(),
            agent.run,
            took,
        ));
    }

    /// The agent's run `run` ended: it panicked or produced a result.
    pub fn on_done(
        &mut self,
        plant: &str,
        kind: &str,
        run: u64,
        now: std::time::Instant,
        service: &mut dyn FnMut() -> Duration,
    ) -> Vec<NodeAction> {
        let mut out = Vec::new();
        let policy = self.policy;
        let Some(p) = self.plants.get_mut(plant) else {
            return out;
        };
        let epoch = p.epoch;
        let Some(agent) = p.agents.get_mut(kind) else {
            return out;
        };
        if !agent.busy || agent.run != run {
            return out;
        }
        agent.busy = false;
        if !agent.panicking {
            let a = agent
                .outstanding
                .pop_front()
                .expect("a busy agent holds its task");
            let outcome = match heatmesh_agents::registry::lookup(kind) {
                Some(k) => match (k.run_json)(&a.payload) {
                    Ok(bytes) => Outcome::Completed(bytes),
                    Err(e) => Outcome::Failed {
                        error: e.to_string(),
                        retryable: false,
                    },
                },
                None => Outcome::Failed {
                    error: format!("unknown agent kind {kind}"),
                    retryable: false,
                },
            };
            self.report(plant, kind, &a, outcome, &mut out);
            self.next(plant, kind, service, &mut out);
            return out;
        }
        // The agent panicked: its first task failed, the rest queued on it never ran.
        agent.up = false;
        let lost: Vec<Assignment> = agent.outstanding.drain(..).collect();
        let verdict = agent.restarts.on_failure(&policy, now);
        let name = format!("{plant}/{kind}");
        for (i, a) in lost.iter().enumerate() {
            let outcome = if i == 0 {
                Outcome::Failed {
                    error: format!("agent {name} panicked: injected fault"),
                    retryable: true,
                }
            } else {
                Outcome::Orphaned {
                    reason: format!("agent {name} died before running it"),
                }
            };
            self.report(plant, kind, a, outcome, &mut out);
        }
        match verdict {
            Verdict::Restart(delay) => {
                self.status(plant, kind, AgentStatus::Restarting, &mut out);
                out.push(NodeAction::Restart(
                    plant.to_string(),
                    kind.to_string(),
                    epoch,
                    delay,
                ));
            }
            Verdict::Escalate => {
                self.status(plant, kind, AgentStatus::Failed, &mut out);
                let p = self.plants.remove(plant).expect("looked up above");
                for (k, a) in p.agents {
                    for x in a.parked.iter().chain(a.outstanding.iter()) {
                        let reason = format!("plant {plant} supervisor escalated");
                        self.report(plant, &k, x, Outcome::Orphaned { reason }, &mut out);
                    }
                }
                let reason = format!(
                    "agent {name} exceeded {} restarts in {} ms",
                    policy.max_restarts, policy.window_ms
                );
                let down = PlantEvent::PlantDown {
                    plant: plant.to_string(),
                    epoch,
                    reason,
                };
                self.emit(Up::Event(down), &mut out);
            }
        }
        out
    }

    /// The agent's restart delay passed: it serves again, parked work first.
    pub fn on_restart(
        &mut self,
        plant: &str,
        kind: &str,
        epoch: u64,
        service: &mut dyn FnMut() -> Duration,
    ) -> Vec<NodeAction> {
        let mut out = Vec::new();
        let Some(agent) = self
            .plants
            .get_mut(plant)
            .filter(|p| p.epoch == epoch)
            .and_then(|p| p.agents.get_mut(kind))
        else {
            return out;
        };
        agent.up = true;
        let parked: Vec<Assignment> = agent.parked.drain(..).collect();
        agent.outstanding.extend(parked);
        self.status(plant, kind, AgentStatus::Running, &mut out);
        self.next(plant, kind, service, &mut out);
        out
    }
}
