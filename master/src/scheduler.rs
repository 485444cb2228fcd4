//! GL-001 master actor: accepts tasks into the ledger, queues them by priority, delegates them
//! to plant agents under (attempt, epoch) fencing, retries, expires, and re-places plants.
//!
//! All task state changes happen here, one message at a time, and each is journaled through
//! the ledger. The actor never waits for the disk: the ledger's group commit calls back.

use crate::config::Config;
use crate::ledger::{Callback, Commit, FeedSwitch, Ledger, LedgerError, Op};
use crate::task::{Priority, Status, TaskRecord, Transition, now_us};
use heatmesh_agents::fault::Fault;
use heatmesh_agents::{AgentStatus, Assignment, EventSink, Outcome, PlantEvent, PlantSpec};
use heatmesh_mesh::{NodeLink, PlantLink};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A task as the gRPC layer hands it over: validated, plant defaults applied.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Plant id (known to the fleet).
    pub plant_id: String,
    /// Canonical agent kind.
    pub agent_kind: String,
    /// Request JSON.
    pub payload: String,
    /// Priority.
    pub priority: Priority,
    /// Optional idempotency key.
    pub idempotency_key: Option<String>,
    /// Optional relative deadline.
    pub deadline: Option<Duration>,
    /// Optional override of the failure budget.
    pub max_attempts: Option<u32>,
}

/// Answer to a submit.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The task (the earlier one when `duplicate`).
    pub task: TaskRecord,
    /// The idempotency key matched an existing task.
    pub duplicate: bool,
}

/// Errors of master operations, mapped to gRPC codes by the gRPC layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// No such task / plant.
    #[error("{0}")]
    NotFound(String),
    /// The operation does not apply in the task's state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The ledger could not make the change durable.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// One plant as operators see it.
#[derive(Debug, Clone)]
pub struct PlantView {
    /// Configuration.
    pub spec: PlantSpec,
    /// Node it runs on.
    pub node: String,
    /// Placement epoch.
    pub epoch: u64,
    /// running | restarting | failed
    pub status: &'static str,
    /// Tasks waiting in the master's queues.
    pub queued: u64,
    /// Tasks dispatched and not yet reported.
    pub in_flight: u64,
}

/// One sub-agent as operators see it.
#[derive(Debug, Clone)]
pub struct AgentView {
    /// Plant id.
    pub plant: String,
    /// Canonical kind.
    pub kind: String,
    /// Lifecycle status.
    pub status: AgentStatus,
    /// Restarts so far.
    pub restarts: u32,
    /// Epoch of the plant incarnation it belongs to.
    pub epoch: u64,
    /// Node.
    pub node: String,
    /// Tasks it completed since the master started.
    pub completed: u64,
    /// Unix microseconds of its last status change.
    pub last_change_us: u64,
}

/// Point-in-time view of the mesh.
#[derive(Debug, Clone)]
pub struct MeshSnapshot {
    /// Plants.
    pub plants: Vec<PlantView>,
    /// Sub-agents.
    pub agents: Vec<AgentView>,
    /// Nodes, connected or not.
    pub nodes: Vec<NodeView>,
}

/// One node as operators see it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Address it reported (empty: in-process).
    pub address: String,
    /// Attached now.
    pub connected: bool,
    /// Node epoch of its current (or last) session.
    pub node_epoch: u64,
    /// Plants placed on it.
    pub plants: Vec<String>,
    /// Plants it prefers.
    pub preferred: Vec<String>,
    /// Unix microseconds of its last heartbeat (now, for in-process nodes).
    pub last_heartbeat_us: u64,
    /// Why it was lost, when disconnected.
    pub lost_reason: Option<String>,
}

/// Messages of the master actor.
pub enum MasterMsg {
    /// Accept a task; the reply comes once it is durable.
    Submit(NewTask, RpcReplyPort<Result<Submitted, ApiError>>),
    /// Ledger callback: the task's acceptance is durable (or failed to be).
    Durable(u64, Result<(), LedgerError>),
    /// A plant reported.
    Plant(PlantEvent),
    /// A (re)placement finished.
    Placed {
        /// Plant id.
        plant: String,
        /// Epoch it was started under.
        epoch: u64,
        /// The plant, or why it failed to start.
        result: Result<Arc<dyn PlantLink>, String>,
    },
    /// Timer: place a plant again.
    Replace(String),
    /// A node attached.
    NodeJoined {
        /// Its link.
        link: Arc<dyn NodeLink>,
        /// Its node epoch.
        node_epoch: u64,
        /// Plants it prefers.
        preferred: Vec<String>,
        /// Plant incarnations it still runs: (plant, epoch).
        running: Vec<(String, u64)>,
    },
    /// A node's session ended (closed connection or expired lease); it is fenced.
    NodeLost {
        /// Node id.
        node_id: String,
        /// The session that ended.
        node_epoch: u64,
        /// Why.
        reason: String,
    },
    /// Move the busiest plant off the most loaded node to the least loaded one.
    Rebalance(RpcReplyPort<Result<Vec<String>, ApiError>>),
    /// Cancel a task.
    Cancel(u64, String, RpcReplyPort<Result<TaskRecord, ApiError>>),
    /// Put failed tasks back to pending (optional plant and kind filters).
    RetryFailed(
        Option<String>,
        Option<String>,
        RpcReplyPort<Result<Vec<u64>, ApiError>>,
    ),
    /// Cancel orphaned tasks unchanged for longer than this.
    ClearOrphaned(Duration, RpcReplyPort<Result<Vec<u64>, ApiError>>),
    /// Operator view.
    Snapshot(RpcReplyPort<MeshSnapshot>),
    /// Hold (true) or resume (false) dispatching; accepted tasks still queue.
    SetPaused(bool),
    /// Arm rehearsal faults on an agent.
    InjectFault(String, String, Fault, RpcReplyPort<Result<(), ApiError>>),
    /// Disable or enable one meter's connector; the reply comes once the switch is durable.
    SetFeed {
        /// Plant id.
        plant: String,
        /// Meter id.
        meter: String,
        /// The switch.
        switch: FeedSwitch,
        /// Receives the switch as journaled.
        reply: RpcReplyPort<Result<FeedSwitch, ApiError>>,
    },
    /// Ledger callback: a terminal record is durable; drop it from memory.
    Retired(u64, u64),
    /// Timer: retries, deadlines, leases, gauges.
    Tick,
}

/// Start-up arguments.
pub struct MasterArgs {
    /// Configuration (validated).
    pub config: Config,
    /// The opened ledger.
    pub ledger: Ledger,
    /// An in-process node that prefers every plant (`heatmesh up`); None for a master that
    /// only places plants on attached nodes (`heatmesh master`).
    pub local_node: Option<Arc<dyn NodeLink>>,
    /// Start with dispatch held.
    pub paused: bool,
    /// Deliberate defects for proving the drill checker (test builds only).
    #[cfg(feature = "planted-bugs")]
    pub planted: PlantedBugs,
}

/// Deliberate defects that the drill checker must catch. Compiled only with the
/// `planted-bugs` feature; every switch is off unless a drill turns it on.
#[cfg(feature = "planted-bugs")]
#[derive(Debug, Clone, Copy, Default)]
pub struct PlantedBugs {
    /// Accept a result for any unfinished task, whatever attempt and epoch produced it:
    /// breaks fencing (a partitioned node's late result is committed).
    pub accept_stale_results: bool,
}

struct Active {
    rec: TaskRecord,
    payload: Arc<[u8]>,
    durable: bool,
    waiters: Vec<RpcReplyPort<Result<Submitted, ApiError>>>,
}

struct PlantRt {
    spec: PlantSpec,
    epoch: u64,
    /// Node it is placed on (None: unplaced).
    node: Option<String>,
    /// Put there by an operator's rebalance: not moved back to its preferred node.
    pinned: bool,
    link: Option<Arc<dyn PlantLink>>,
    status: &'static str,
    replace_failures: u32,
}

type QueueKey = (String, String);

struct NodeRt {
    link: Arc<dyn NodeLink>,
    node_epoch: u64,
    connected: bool,
    preferred: Vec<String>,
    lost_reason: Option<String>,
}

/// Master state.
pub struct MasterState {
    cfg: Config,
    myself: Option<ActorRef<MasterMsg>>,
    ledger: Ledger,
    nodes: HashMap<String, NodeRt>,
    started: Instant,
    paused: bool,
    next_id: u64,
    seq: u64,
    active: HashMap<u64, Active>,
    idem: HashMap<String, u64>,
    failed: BTreeSet<u64>,
    plants: HashMap<String, PlantRt>,
    agents: HashMap<QueueKey, AgentView>,
    ready: HashMap<QueueKey, BinaryHeap<Reverse<(Priority, u64)>>>,
    in_flight: HashMap<QueueKey, usize>,
    delayed: BTreeSet<(Instant, u64)>,
    deadlines: BTreeSet<(u64, u64)>,
    leases: BTreeSet<(Instant, u64, u32)>,
    counts: HashMap<Status, i64>,
    #[cfg(feature = "planted-bugs")]
    planted: PlantedBugs,
}

/// The GL-001 master actor.
pub struct Master;

/// The sink plants report through: every event becomes a message to the master actor.
pub fn event_sink(master: &ActorRef<MasterMsg>) -> EventSink {
    sink_for(master)
}

fn sink_for(master: &ActorRef<MasterMsg>) -> EventSink {
    let m = master.clone();
    Arc::new(move |ev| {
        let _ = m.cast(MasterMsg::Plant(ev));
    })
}

fn backoff(initial_ms: u64, max_ms: u64, n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(30);
    Duration::from_millis(initial_ms.saturating_mul(1u64 << exp).min(max_ms))
}

impl MasterState {
    fn queue_key(rec: &TaskRecord) -> QueueKey {
        (rec.plant_id.clone(), rec.agent_kind.clone())
    }

    fn bump_count(&mut self, s: Status, d: i64) {
        *self.counts.entry(s).or_insert(0) += d;
    }

    /// Applies a state change to an active task and journals it. Terminal tasks leave the
    /// active set. `done` runs once the change is in the ledger's state (readable).
    fn transition(&mut self, id: u64, to: Status, detail: String, done: Option<Callback>) {
        self.transition_by(id, to, detail, done, None);
    }

    /// [`Self::transition`] that journals the (attempt, epoch) which produced the change
    /// (a result) instead of the task's current one. They are equal whenever fencing works;
    /// keeping the producer's in the journal lets an audit prove it.
    fn transition_by(
        &mut self,
        id: u64,
        to: Status,
        detail: String,
        done: Option<Callback>,
        produced_by: Option<(u32, u64)>,
    ) {
        let Some(t) = self.active.get_mut(&id) else {
            return;
        };
        let from = t.rec.status;
        self.seq += 1;
        let now = now_us();
        t.rec.status = to;
        t.rec.updated_us = now;
        t.rec.seq = self.seq;
        let (attempt, epoch) = produced_by.unwrap_or((t.rec.attempt, t.rec.epoch));
        let entry = Transition {
            from: Some(from),
            to,
            at_us: now,
            attempt,
            epoch,
            node: t.rec.node.clone(),
            detail,
        };
        let rec = t.rec.clone();
        let key = Self::queue_key(&rec);
        if from == Status::Dispatched
            && let Some(n) = self.in_flight.get_mut(&key)
        {
            *n = n.saturating_sub(1);
        }
        self.bump_count(from, -1);
        self.bump_count(to, 1);
        // `done` reads the change back from the ledger (an operator's answer), so it runs
        // once the change is applied, not merely durable.
        let mut applied = done;
        if to.is_terminal() {
            // The task stays readable in memory until its terminal record is in the ledger's
            // state, so a read never falls back to an older ledger record.
            let seq = self.seq;
            let retire = self.myself.clone();
            let then = applied.take();
            applied = Some(Box::new(move |r: Result<(), LedgerError>| {
                if let Some(m) = retire {
                    let _ = m.cast(MasterMsg::Retired(id, seq));
                }
                if let Some(f) = then {
                    f(r);
                }
            }));
            if to == Status::Failed {
                self.failed.insert(id);
            }
            metrics::counter!("heatmesh_tasks_finished_total", "state" => to.as_str()).increment(1);
            if to == Status::Completed {
                let secs = now.saturating_sub(rec.created_us) as f64 / 1e6;
                metrics::histogram!("heatmesh_task_latency_seconds").record(secs);
            }
        }
        self.write(Commit {
            ops: vec![
                Op::Put(rec.clone()),
                Op::Journal {
                    id,
                    seq: self.seq,
                    entry,
                },
            ],
            events: vec![rec],
            done: None,
            applied,
        });
    }

    /// Switches a meter's connector off or on: journaled, then the node hosting the plant
    /// restarts its connectors without (or with) it; a later placement carries the switch.
    fn set_feed(
        &mut self,
        plant: String,
        meter: String,
        switch: FeedSwitch,
        reply: RpcReplyPort<Result<FeedSwitch, ApiError>>,
    ) {
        let Some(p) = self.plants.get_mut(&plant) else {
            let _ = reply.send(Err(ApiError::NotFound(format!(
                "plant_id: no plant {plant:?} in the fleet"
            ))));
            return;
        };
        let Some(m) = p.spec.feeds.meter(&meter) else {
            let known: Vec<&str> = p.spec.feeds.meters.iter().map(|m| m.id.as_str()).collect();
            let _ = reply.send(Err(ApiError::NotFound(format!(
                "meter: plant {plant} has no meter {meter:?}; known: {}",
                known.join(", ")
            ))));
            return;
        };
        if m.source.is_none() {
            let _ = reply.send(Err(ApiError::FailedPrecondition(format!(
                "meter: {plant}/{meter} has no source; it is fed by pushes and files, and no connector reads it"
            ))));
            return;
        }
        if switch.enabled {
            p.spec.feeds.disabled.remove(&meter);
        } else {
            p.spec.feeds.disabled.insert(meter.clone());
        }
        tracing::info!(%plant, %meter, enabled = switch.enabled, reason = %switch.reason, "feed switched by an operator");
        if let Some(link) = p
            .node
            .as_ref()
            .and_then(|n| self.nodes.get(n))
            .map(|n| n.link.clone())
            && let Err(e) = link.set_feeds(&plant, &p.spec.feeds)
        {
            // The node is going away; the plant's next placement carries the switch.
            tracing::warn!(%plant, "telling the node about the feed switch: {e}");
        }
        let journaled = switch.clone();
        self.write(Commit {
            ops: vec![Op::FeedSwitch {
                plant,
                meter,
                switch,
            }],
            done: Some(Box::new(move |r| {
                let _ = reply.send(r.map(|()| journaled).map_err(ApiError::from));
            })),
            ..Commit::default()
        });
    }

    fn write(&self, c: Commit) {
        if let Err(e) = self.ledger.submit(c) {
            tracing::error!("ledger unavailable: {e}");
        }
    }

    fn enqueue(&mut self, id: u64) {
        if let Some(t) = self.active.get(&id) {
            let key = Self::queue_key(&t.rec);
            let prio = t.rec.priority;
            self.ready.entry(key).or_default().push(Reverse((prio, id)));
        }
    }

    /// Marks a task orphaned and, when its plant is still in the fleet, re-queues it at once.
    fn orphan(&mut self, id: u64, reason: String) {
        let known = self
            .active
            .get(&id)
            .is_some_and(|t| self.plants.contains_key(&t.rec.plant_id));
        self.transition(id, Status::Orphaned, reason, None);
        metrics::counter!("heatmesh_tasks_orphaned_total").increment(1);
        if known {
            self.transition(
                id,
                Status::Pending,
                "re-queued after orphaning".into(),
                None,
            );
            self.enqueue(id);
            metrics::counter!("heatmesh_tasks_recovered_total").increment(1);
        }
    }

    fn attempt_failed(&mut self, id: u64, error: String, retryable: bool) {
        let s = &self.cfg.scheduler;
        let (initial, max) = (s.retry_backoff_initial_ms, s.retry_backoff_max_ms);
        let Some(t) = self.active.get_mut(&id) else {
            return;
        };
        t.rec.failures += 1;
        t.rec.error = Some(error.clone());
        if retryable && t.rec.failures < t.rec.max_attempts {
            let delay = backoff(initial, max, t.rec.failures);
            let detail = format!(
                "attempt {} failed ({}/{} failures): {error}; retry in {} ms",
                t.rec.attempt,
                t.rec.failures,
                t.rec.max_attempts,
                delay.as_millis()
            );
            self.transition(id, Status::Pending, detail, None);
            self.delayed.insert((Instant::now() + delay, id));
        } else {
            let detail = if retryable {
                format!(
                    "attempt {} failed, no attempts left: {error}",
                    t.rec.attempt
                )
            } else {
                format!("attempt {} failed, not retryable: {error}", t.rec.attempt)
            };
            self.transition(id, Status::Failed, detail, None);
        }
    }

    /// Dispatches from a queue while its agent has room.
    fn pump(&mut self, key: &QueueKey) {
        if self.paused {
            return;
        }
        let Some(plant) = self.plants.get(&key.0) else {
            return;
        };
        let Some(link) = plant.link.clone() else {
            return;
        };
        let (epoch, node) = (plant.epoch, plant.node.clone().unwrap_or_default());
        let lease = Duration::from_millis(self.cfg.scheduler.lease_ms);
        let max = self.cfg.scheduler.max_in_flight_per_agent;
        loop {
            if self.in_flight.get(key).copied().unwrap_or(0) >= max {
                return;
            }
            let Some(Reverse((_, id))) = self.ready.get_mut(key).and_then(|h| h.pop()) else {
                return;
            };
            let Some(t) = self.active.get_mut(&id) else {
                continue;
            };
            if t.rec.status != Status::Pending || !t.durable {
                continue;
            }
            t.rec.attempt += 1;
            t.rec.epoch = epoch;
            t.rec.node = node.clone();
            t.rec.agent = format!("{}/{}", key.0, key.1);
            let a = Assignment {
                task_id: id,
                attempt: t.rec.attempt,
                epoch,
                kind: key.1.clone(),
                payload: t.payload.clone(),
            };
            let detail = format!(
                "attempt {} to {} (epoch {epoch}) on {node}",
                a.attempt, t.rec.agent
            );
            self.transition(id, Status::Dispatched, detail, None);
            *self.in_flight.entry(key.clone()).or_insert(0) += 1;
            self.leases.insert((Instant::now() + lease, id, a.attempt));
            if let Err(e) = link.dispatch(a) {
                // The plant is unreachable (its node is gone or fenced): stop feeding it, or
                // the re-queued task would be popped and fail again right here. Its in-flight
                // tasks are orphaned and it is placed again once its node's loss is known.
                let reason = format!("dispatch to {} failed: {e}", key.0);
                self.orphan(id, reason.clone());
                if let Some(m) = self.myself.clone() {
                    let delay = Duration::from_millis(self.cfg.scheduler.replace_backoff_ms);
                    self.on_plant_down(&m, key.0.clone(), epoch, reason, delay);
                }
                return;
            }
        }
    }

    fn pump_all(&mut self) {
        let keys: Vec<QueueKey> = self
            .ready
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.pump(&k);
        }
    }

    fn on_task_done(
        &mut self,
        task_id: u64,
        attempt: u32,
        epoch: u64,
        agent: String,
        outcome: Outcome,
    ) {
        let current = self.active.get(&task_id).is_some_and(|t| {
            t.rec.status == Status::Dispatched && t.rec.attempt == attempt && t.rec.epoch == epoch
        });
        #[cfg(feature = "planted-bugs")]
        let current = current
            || (self.planted.accept_stale_results
                && self
                    .active
                    .get(&task_id)
                    .is_some_and(|t| !t.rec.status.is_terminal()));
        if !current {
            metrics::counter!("heatmesh_stale_results_total").increment(1);
            tracing::debug!(task_id, attempt, epoch, "stale result rejected");
            return;
        }
        let key = self
            .active
            .get(&task_id)
            .map(|t| Self::queue_key(&t.rec))
            .expect("current");
        match outcome {
            Outcome::Completed(json) => {
                let t = self.active.get_mut(&task_id).expect("current");
                t.rec.result = Some(String::from_utf8_lossy(&json).into_owned());
                t.rec.error = None;
                if let Some(a) = self.agents.get_mut(&key) {
                    a.completed += 1;
                }
                self.transition_by(
                    task_id,
                    Status::Completed,
                    format!("completed by {agent}"),
                    None,
                    Some((attempt, epoch)),
                );
            }
            Outcome::Failed { error, retryable } => self.attempt_failed(task_id, error, retryable),
            Outcome::Orphaned { reason } => self.orphan(task_id, reason),
        }
        self.pump(&key);
    }

    fn on_plant_down(
        &mut self,
        myself: &ActorRef<MasterMsg>,
        plant: String,
        epoch: u64,
        reason: String,
        delay: Duration,
    ) {
        let Some(p) = self.plants.get_mut(&plant) else {
            return;
        };
        if p.epoch != epoch {
            return;
        }
        p.link = None;
        p.pinned = false;
        p.status = "restarting";
        tracing::warn!(plant = %plant, epoch, "plant down: {reason}; re-placing");
        let lost: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, t)| {
                t.rec.plant_id == plant
                    && t.rec.status == Status::Dispatched
                    && t.rec.epoch == epoch
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.orphan(
                id,
                format!("plant {plant} epoch {epoch} went down: {reason}"),
            );
        }
        for a in self.agents.values_mut().filter(|a| a.plant == plant) {
            a.status = AgentStatus::Failed;
            a.last_change_us = now_us();
        }
        metrics::counter!("heatmesh_plant_down_total").increment(1);
        if delay.is_zero() {
            self.place(myself, &plant);
        } else {
            myself.send_after(delay, move || MasterMsg::Replace(plant));
        }
    }

    /// Where a plant should run: its preferred node when attached; otherwise (after the
    /// start-up grace, so preferred nodes can attach first) the live node with fewest plants.
    fn choose_node(&self, plant: &str) -> Option<String> {
        let live = |n: &&String| self.nodes.get(*n).is_some_and(|r| r.connected);
        let mut preferred: Vec<&String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.connected && n.preferred.iter().any(|p| p == plant))
            .map(|(id, _)| id)
            .collect();
        preferred.sort();
        if let Some(id) = preferred.first() {
            return Some((*id).clone());
        }
        // Right after start, wait for a preferred node we have not heard of yet; once one is
        // known (and now down), waiting longer only delays recovery.
        let preferred_known = self
            .nodes
            .values()
            .any(|n| n.preferred.iter().any(|p| p == plant));
        if !preferred_known
            && self.started.elapsed() < Duration::from_millis(self.cfg.placement.startup_grace_ms)
        {
            return None;
        }
        let load = |id: &String| {
            self.plants
                .values()
                .filter(|p| p.node.as_ref() == Some(id))
                .count()
        };
        let mut live_nodes: Vec<&String> = self.nodes.keys().filter(live).collect();
        live_nodes.sort_by_key(|id| (load(id), (*id).clone()));
        live_nodes.first().map(|id| (*id).clone())
    }

    /// Whether the plant's preferred node is attached but the plant runs elsewhere.
    fn away_from_preferred(&self, plant: &PlantRt) -> Option<String> {
        let pref = self
            .nodes
            .iter()
            .find(|(_, n)| n.connected && n.preferred.iter().any(|p| p == &plant.spec.id))
            .map(|(id, _)| id.clone())?;
        (plant.node.as_ref() != Some(&pref)).then_some(pref)
    }

    fn plant_in_flight(&self, plant: &str) -> usize {
        self.in_flight
            .iter()
            .filter(|((p, _), _)| p == plant)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Moves a running plant to another node: the old incarnation is stopped and its
    /// in-flight tasks are orphaned and re-queued, then the plant is placed again.
    fn move_plant(&mut self, myself: &ActorRef<MasterMsg>, plant: &str, why: &str) {
        let Some(p) = self.plants.get_mut(plant) else {
            return;
        };
        if let Some(link) = p.link.take() {
            link.stop();
        }
        let epoch = p.epoch;
        metrics::counter!("heatmesh_placement_moves_total").increment(1);
        tracing::info!(plant, epoch, "moving plant: {why}");
        self.on_plant_down(
            myself,
            plant.to_string(),
            epoch,
            why.to_string(),
            Duration::ZERO,
        );
    }

    fn place(&mut self, myself: &ActorRef<MasterMsg>, plant: &str) {
        match self.choose_node(plant) {
            Some(node) => self.place_on(myself, plant, &node),
            None => {
                if let Some(p) = self.plants.get_mut(plant) {
                    p.node = None;
                    p.link = None;
                    p.status = "unplaced";
                }
            }
        }
    }

    /// Starts a new incarnation (epoch + 1) of `plant` on `node_id` and journals it.
    fn place_on(&mut self, myself: &ActorRef<MasterMsg>, plant: &str, node_id: &str) {
        let Some(node) = self.nodes.get(node_id).map(|n| n.link.clone()) else {
            return;
        };
        let node_id = node_id.to_string();
        let Some(p) = self.plants.get_mut(plant) else {
            return;
        };
        p.epoch += 1;
        p.node = Some(node_id.clone());
        p.link = None;
        p.status = "placing";
        let (spec, epoch) = (p.spec.clone(), p.epoch);
        self.write(Commit {
            ops: vec![Op::Placement {
                plant: plant.to_string(),
                node: node_id,
                epoch,
            }],
            ..Commit::default()
        });
        let master = myself.clone();
        let sink = sink_for(myself);
        tokio::spawn(async move {
            let plant = spec.id.clone();
            let result = node
                .spawn_plant(spec, epoch, sink)
                .await
                .map_err(|e| e.to_string());
            let _ = master.cast(MasterMsg::Placed {
                plant,
                epoch,
                result,
            });
        });
    }

    fn on_node_joined(
        &mut self,
        myself: &ActorRef<MasterMsg>,
        link: Arc<dyn NodeLink>,
        node_epoch: u64,
        preferred: Vec<String>,
        running: Vec<(String, u64)>,
    ) {
        let id = link.id().to_string();
        tracing::info!(node = %id, node_epoch, ?preferred, "node joined");
        // Whatever it still runs from an earlier session is not current: a new master or a
        // fence gave those plants new epochs. Stop them; placement below decides afresh.
        for (plant, epoch) in &running {
            let current = self.plants.get(plant).is_some_and(|p| {
                p.epoch == *epoch && p.node.as_ref() == Some(&id) && p.link.is_some()
            });
            if !current {
                link.stop_stale_plant(plant, *epoch);
            }
        }
        for p in &preferred {
            if !self.plants.contains_key(p) {
                tracing::warn!(node = %id, plant = %p, "node prefers a plant that is not in the fleet");
            }
        }
        self.nodes.insert(
            id.clone(),
            NodeRt {
                link,
                node_epoch,
                connected: true,
                preferred,
                lost_reason: None,
            },
        );
        metrics::gauge!("heatmesh_nodes", "status" => "connected")
            .set(self.nodes.values().filter(|n| n.connected).count() as f64);
        self.place_waiting(myself);
    }

    fn on_node_lost(
        &mut self,
        myself: &ActorRef<MasterMsg>,
        id: String,
        node_epoch: u64,
        reason: String,
    ) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.node_epoch != node_epoch {
            return;
        }
        n.connected = false;
        n.lost_reason = Some(reason.clone());
        metrics::gauge!("heatmesh_nodes", "status" => "connected")
            .set(self.nodes.values().filter(|n| n.connected).count() as f64);
        let mut lost: Vec<(String, u64)> = self
            .plants
            .values()
            .filter(|p| p.node.as_ref() == Some(&id))
            .map(|p| (p.spec.id.clone(), p.epoch))
            .collect();
        lost.sort();
        for (plant, epoch) in lost {
            let why = format!("node {id} (node epoch {node_epoch}) lost: {reason}");
            self.on_plant_down(myself, plant, epoch, why, Duration::ZERO);
        }
        for a in self.agents.values_mut().filter(|a| a.node == id) {
            a.status = AgentStatus::Failed;
            a.last_change_us = now_us();
        }
    }

    /// Places unplaced plants where possible, and moves plants back to their preferred
    /// node once they are idle (when `placement.move_back` is on).
    fn place_waiting(&mut self, myself: &ActorRef<MasterMsg>) {
        let mut ids: Vec<String> = self.plants.keys().cloned().collect();
        ids.sort();
        for id in ids {
            let Some(p) = self.plants.get(&id) else {
                continue;
            };
            if p.node.is_none() {
                self.place(myself, &id);
            } else if self.cfg.placement.move_back
                && !p.pinned
                && p.link.is_some()
                && let Some(pref) = self.away_from_preferred(p)
                && self.plant_in_flight(&id) == 0
            {
                self.move_plant(
                    myself,
                    &id,
                    &format!("moving back to preferred node {pref}"),
                );
            }
        }
    }

    /// Moves the plant with the most waiting work off the most loaded node onto the least
    /// loaded live node, when that node has fewer plants. Returns the moves made.
    fn rebalance(&mut self, myself: &ActorRef<MasterMsg>) -> Vec<String> {
        let work = |st: &Self, plant: &str| -> usize {
            st.ready
                .iter()
                .filter(|((p, _), _)| p == plant)
                .map(|(_, h)| h.len())
                .sum::<usize>()
                + st.plant_in_flight(plant)
        };
        let live: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.connected)
            .map(|(id, _)| id.clone())
            .collect();
        let plants_on = |st: &Self, n: &String| -> Vec<String> {
            st.plants
                .values()
                .filter(|p| p.node.as_ref() == Some(n))
                .map(|p| p.spec.id.clone())
                .collect()
        };
        let node_work =
            |st: &Self, n: &String| -> usize { plants_on(st, n).iter().map(|p| work(st, p)).sum() };
        let Some(busiest) = live
            .iter()
            .max_by_key(|n| (node_work(self, n), plants_on(self, n).len(), (*n).clone()))
            .cloned()
        else {
            return Vec::new();
        };
        let Some(idlest) = live
            .iter()
            .filter(|n| **n != busiest)
            .min_by_key(|n| (plants_on(self, n).len(), node_work(self, n), (*n).clone()))
            .cloned()
        else {
            return Vec::new();
        };
        let on_busiest = plants_on(self, &busiest);
        if on_busiest.len() < 2 || plants_on(self, &idlest).len() + 1 >= on_busiest.len() {
            return Vec::new();
        }
        let Some(plant) = on_busiest
            .iter()
            .max_by_key(|p| (work(self, p), (*p).clone()))
            .cloned()
        else {
            return Vec::new();
        };
        // Place on the idlest node explicitly: it may not be the plant's preferred one.
        let why = format!("rebalance: {busiest} -> {idlest}");
        if let Some(p) = self.plants.get_mut(&plant) {
            if let Some(link) = p.link.take() {
                link.stop();
            }
            let epoch = p.epoch;
            metrics::counter!("heatmesh_placement_moves_total").increment(1);
            let lost: Vec<u64> = self
                .active
                .iter()
                .filter(|(_, t)| {
                    t.rec.plant_id == plant
                        && t.rec.status == Status::Dispatched
                        && t.rec.epoch == epoch
                })
                .map(|(id, _)| *id)
                .collect();
            for id in lost {
                self.orphan(id, why.clone());
            }
            self.place_on(myself, &plant, &idlest);
            if let Some(p) = self.plants.get_mut(&plant) {
                p.pinned = true;
            }
        }
        vec![format!("{plant}: {busiest} -> {idlest}")]
    }

    fn tick(&mut self) {
        let now = Instant::now();
        while let Some(&(at, id)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            self.enqueue(id);
        }
        let wall = now_us();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > wall {
                break;
            }
            self.deadlines.pop_first();
            if let Some(t) = self
                .active
                .get_mut(&id)
                .filter(|t| !t.rec.status.is_terminal())
            {
                let late_ms = (wall - t.rec.created_us) / 1000;
                t.rec.error = Some(format!(
                    "DEADLINE_EXCEEDED: not completed within {late_ms} ms of acceptance"
                ));
                self.transition(id, Status::Failed, "deadline exceeded".into(), None);
            }
        }
        while let Some(&(at, id, attempt)) = self.leases.first() {
            if at > now {
                break;
            }
            self.leases.pop_first();
            let expired = self
                .active
                .get(&id)
                .is_some_and(|t| t.rec.status == Status::Dispatched && t.rec.attempt == attempt);
            if expired {
                let ms = self.cfg.scheduler.lease_ms;
                self.attempt_failed(id, format!("lease expired: no result within {ms} ms"), true);
            }
        }
        if let Some(m) = self.myself.clone() {
            self.place_waiting(&m);
        }
        self.pump_all();
        for s in [Status::Pending, Status::Dispatched, Status::Orphaned] {
            let n = self.counts.get(&s).copied().unwrap_or(0).max(0);
            metrics::gauge!("heatmesh_tasks", "state" => s.as_str()).set(n as f64);
        }
        let depth: usize = self.ready.values().map(|h| h.len()).sum::<usize>() + self.delayed.len();
        metrics::gauge!("heatmesh_queue_depth").set(depth as f64);
    }

    fn submit(
        &mut self,
        myself: &ActorRef<MasterMsg>,
        t: NewTask,
        reply: RpcReplyPort<Result<Submitted, ApiError>>,
    ) {
        if let Some(key) = &t.idempotency_key {
            if let Some(&id) = self.idem.get(key)
                && let Some(a) = self.active.get_mut(&id)
            {
                if a.durable {
                    let _ = reply.send(Ok(Submitted {
                        task: a.rec.clone(),
                        duplicate: true,
                    }));
                } else {
                    a.waiters.push(reply);
                }
                return;
            }
            match self.ledger.idempotent(key).and_then(|id| match id {
                Some(id) => self.ledger.get(id),
                None => Ok(None),
            }) {
                Ok(Some(rec)) => {
                    let _ = reply.send(Ok(Submitted {
                        task: rec,
                        duplicate: true,
                    }));
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    return;
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.seq += 1;
        let now = now_us();
        let rec = TaskRecord {
            id,
            plant_id: t.plant_id,
            agent_kind: t.agent_kind,
            payload: t.payload,
            priority: t.priority,
            status: Status::Pending,
            attempt: 0,
            failures: 0,
            max_attempts: t.max_attempts.unwrap_or(self.cfg.scheduler.max_attempts),
            epoch: 0,
            node: String::new(),
            agent: String::new(),
            idempotency_key: t.idempotency_key,
            created_us: now,
            updated_us: now,
            deadline_us: t.deadline.map(|d| now + d.as_micros() as u64),
            result: None,
            error: None,
            seq: self.seq,
        };
        let mut ops = vec![
            Op::Put(rec.clone()),
            Op::Journal {
                id,
                seq: self.seq,
                entry: Transition {
                    from: None,
                    to: Status::Pending,
                    at_us: now,
                    attempt: 0,
                    epoch: 0,
                    node: String::new(),
                    detail: format!("accepted ({} priority)", rec.priority.as_str()),
                },
            },
        ];
        if let Some(k) = &rec.idempotency_key {
            ops.push(Op::Idem(k.clone(), id));
            self.idem.insert(k.clone(), id);
        }
        if let Some(d) = rec.deadline_us {
            self.deadlines.insert((d, id));
        }
        self.bump_count(Status::Pending, 1);
        metrics::counter!("heatmesh_tasks_submitted_total").increment(1);
        self.active.insert(
            id,
            Active {
                payload: Arc::from(rec.payload.as_bytes()),
                rec: rec.clone(),
                durable: false,
                waiters: Vec::new(),
            },
        );
        let master = myself.clone();
        let answer = rec.clone();
        // Tell the master before the client: anything the client sends after the ack then
        // reaches the master after the task is queued.
        let done: Callback = Box::new(move |r| {
            let _ = master.cast(MasterMsg::Durable(id, r.clone()));
            let _ = reply.send(
                r.map(|_| Submitted {
                    task: answer,
                    duplicate: false,
                })
                .map_err(ApiError::from),
            );
        });
        self.write(Commit {
            ops,
            events: vec![rec],
            done: Some(done),
            applied: None,
        });
    }

    fn on_durable(&mut self, id: u64, r: Result<(), LedgerError>) {
        let Some(t) = self.active.get_mut(&id) else {
            return;
        };
        let waiters = std::mem::take(&mut t.waiters);
        match r {
            Ok(()) => {
                t.durable = true;
                for w in waiters {
                    let _ = w.send(Ok(Submitted {
                        task: t.rec.clone(),
                        duplicate: true,
                    }));
                }
                let key = Self::queue_key(&t.rec);
                self.enqueue(id);
                self.pump(&key);
            }
            Err(e) => {
                // Never acknowledged: forget it entirely.
                let t = self.active.remove(&id).expect("present");
                self.bump_count(t.rec.status, -1);
                if let Some(k) = &t.rec.idempotency_key {
                    self.idem.remove(k);
                }
                for w in waiters {
                    let _ = w.send(Err(e.clone().into()));
                }
            }
        }
    }

    fn snapshot(&self) -> MeshSnapshot {
        let mut plants: Vec<PlantView> = self
            .plants
            .values()
            .map(|p| {
                let queued = self
                    .ready
                    .iter()
                    .filter(|((pl, _), _)| pl == &p.spec.id)
                    .map(|(_, h)| h.len() as u64)
                    .sum();
                let in_flight = self
                    .in_flight
                    .iter()
                    .filter(|((pl, _), _)| pl == &p.spec.id)
                    .map(|(_, n)| *n as u64)
                    .sum();
                PlantView {
                    spec: p.spec.clone(),
                    node: p.node.clone().unwrap_or_default(),
                    epoch: p.epoch,
                    status: p.status,
                    queued,
                    in_flight,
                }
            })
            .collect();
        plants.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        let mut agents: Vec<AgentView> = self.agents.values().cloned().collect();
        agents.sort_by(|a, b| (&a.plant, &a.kind).cmp(&(&b.plant, &b.kind)));
        let mut nodes: Vec<NodeView> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeView {
                id: id.clone(),
                address: n.link.address(),
                connected: n.connected,
                node_epoch: n.node_epoch,
                plants: plants
                    .iter()
                    .filter(|p| &p.node == id)
                    .map(|p| p.spec.id.clone())
                    .collect(),
                preferred: n.preferred.clone(),
                last_heartbeat_us: n.link.last_heartbeat_us().unwrap_or_else(now_us),
                lost_reason: n.lost_reason.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        MeshSnapshot {
            plants,
            agents,
            nodes,
        }
    }

    /// Rebuilds the active set from the ledger after a (re)start: dispatched and orphaned
    /// tasks go back to pending, tasks of plants no longer configured stay orphaned.
    fn recover(&mut self) -> Result<(), LedgerError> {
        let mut requeue = Vec::new();
        let ledger = self.ledger.clone();
        for r in ledger.scan_all() {
            let rec = r?;
            self.next_id = self.next_id.max(rec.id + 1);
            self.seq = self.seq.max(rec.seq);
            if rec.status == Status::Failed {
                self.failed.insert(rec.id);
            }
            if rec.status.is_terminal() {
                continue;
            }
            let id = rec.id;
            if let Some(k) = &rec.idempotency_key {
                self.idem.insert(k.clone(), id);
            }
            if let Some(d) = rec.deadline_us {
                self.deadlines.insert((d, id));
            }
            self.bump_count(rec.status, 1);
            requeue.push((id, rec.status, self.plants.contains_key(&rec.plant_id)));
            self.active.insert(
                id,
                Active {
                    payload: Arc::from(rec.payload.as_bytes()),
                    rec,
                    durable: true,
                    waiters: Vec::new(),
                },
            );
        }
        let n = requeue.len();
        for (id, status, known) in requeue {
            if !known {
                if status != Status::Orphaned {
                    self.transition(
                        id,
                        Status::Orphaned,
                        "plant is not in the fleet configuration".into(),
                        None,
                    );
                }
                continue;
            }
            match status {
                Status::Dispatched => self.transition(
                    id,
                    Status::Pending,
                    "master restarted while dispatched; re-queued".into(),
                    None,
                ),
                Status::Orphaned => self.transition(
                    id,
                    Status::Pending,
                    "master restarted; orphan re-queued".into(),
                    None,
                ),
                _ => {}
            }
            self.enqueue(id);
        }
        if n > 0 {
            tracing::info!("recovered {n} unfinished tasks from the ledger");
        }
        Ok(())
    }
}

impl Actor for Master {
    type Msg = MasterMsg;
    type State = MasterState;
    type Arguments = MasterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MasterMsg>,
        args: MasterArgs,
    ) -> Result<MasterState, ActorProcessingErr> {
        let mut st = MasterState {
            myself: Some(myself.clone()),
            plants: HashMap::new(),
            ledger: args.ledger,
            nodes: HashMap::new(),
            started: Instant::now(),
            paused: args.paused,
            next_id: 1,
            seq: 0,
            active: HashMap::new(),
            idem: HashMap::new(),
            failed: BTreeSet::new(),
            agents: HashMap::new(),
            ready: HashMap::new(),
            in_flight: HashMap::new(),
            delayed: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            leases: BTreeSet::new(),
            counts: HashMap::new(),
            #[cfg(feature = "planted-bugs")]
            planted: args.planted,
            cfg: args.config,
        };
        for spec in st.cfg.plants.clone() {
            let epoch = st.ledger.placement_epoch(&spec.id)?;
            st.plants.insert(
                spec.id.clone(),
                PlantRt {
                    spec,
                    epoch,
                    node: None,
                    pinned: false,
                    link: None,
                    status: "unplaced",
                    replace_failures: 0,
                },
            );
        }
        for (plant, meter, switch) in st.ledger.feed_switches()? {
            // A meter since removed from the fleet file has nothing to switch.
            if let Some(p) = st.plants.get_mut(&plant)
                && !switch.enabled
                && p.spec.feeds.meter(&meter).is_some()
            {
                p.spec.feeds.disabled.insert(meter);
            }
        }
        st.recover()?;
        if let Some(local) = args.local_node {
            let preferred = st.plants.keys().cloned().collect();
            st.nodes.insert(
                local.id().to_string(),
                NodeRt {
                    link: local,
                    node_epoch: 1,
                    connected: true,
                    preferred,
                    lost_reason: None,
                },
            );
        }
        let mut ids: Vec<String> = st.plants.keys().cloned().collect();
        ids.sort();
        for id in ids {
            st.place(&myself, &id);
        }
        myself.send_interval(Duration::from_millis(st.cfg.scheduler.tick_ms), || {
            MasterMsg::Tick
        });
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<MasterMsg>,
        msg: MasterMsg,
        st: &mut MasterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MasterMsg::Submit(t, reply) => st.submit(&myself, t, reply),
            MasterMsg::Durable(id, r) => st.on_durable(id, r),
            MasterMsg::Plant(ev) => match ev {
                PlantEvent::TaskDone {
                    task_id,
                    attempt,
                    epoch,
                    agent,
                    outcome,
                    ..
                } => st.on_task_done(task_id, attempt, epoch, agent, outcome),
                PlantEvent::AgentChanged {
                    plant,
                    kind,
                    status,
                    restarts,
                    epoch,
                } => {
                    if let Some(node) = st
                        .plants
                        .get(&plant)
                        .filter(|p| p.epoch == epoch)
                        .map(|p| p.node.clone().unwrap_or_default())
                    {
                        let a =
                            st.agents
                                .entry((plant.clone(), kind.clone()))
                                .or_insert(AgentView {
                                    plant,
                                    kind,
                                    status,
                                    restarts: 0,
                                    epoch,
                                    node: node.clone(),
                                    completed: 0,
                                    last_change_us: 0,
                                });
                        // A new incarnation (new epoch) starts its restart count afresh.
                        a.restarts = if a.epoch == epoch {
                            restarts.max(a.restarts)
                        } else {
                            restarts
                        };
                        a.status = status;
                        a.epoch = epoch;
                        a.node = node;
                        a.last_change_us = now_us();
                    }
                }
                PlantEvent::PlantDown {
                    plant,
                    epoch,
                    reason,
                } => {
                    let delay = Duration::from_millis(st.cfg.scheduler.replace_backoff_ms);
                    st.on_plant_down(&myself, plant, epoch, reason, delay)
                }
            },
            MasterMsg::Placed {
                plant,
                epoch,
                result,
            } => {
                let Some(p) = st.plants.get_mut(&plant) else {
                    return Ok(());
                };
                if p.epoch != epoch {
                    return Ok(());
                }
                match result {
                    Ok(link) => {
                        p.link = Some(link);
                        p.status = "running";
                        p.replace_failures = 0;
                        tracing::info!(plant = %plant, epoch, "plant placed");
                        let keys: Vec<QueueKey> = p
                            .spec
                            .agents
                            .iter()
                            .map(|k| (plant.clone(), k.clone()))
                            .collect();
                        for k in keys {
                            st.pump(&k);
                        }
                    }
                    Err(e) => {
                        p.status = "failed";
                        p.replace_failures += 1;
                        let delay = backoff(
                            st.cfg.scheduler.replace_backoff_ms,
                            30_000,
                            p.replace_failures,
                        );
                        tracing::error!(plant = %plant, epoch, "placement failed: {e}; retry in {delay:?}");
                        myself.send_after(delay, move || MasterMsg::Replace(plant));
                    }
                }
            }
            MasterMsg::Replace(plant) => {
                // A placement already under way (e.g. after the node's loss) wins.
                if st
                    .plants
                    .get(&plant)
                    .is_some_and(|p| p.link.is_none() && p.status != "placing")
                {
                    st.place(&myself, &plant)
                }
            }
            MasterMsg::NodeJoined {
                link,
                node_epoch,
                preferred,
                running,
            } => st.on_node_joined(&myself, link, node_epoch, preferred, running),
            MasterMsg::NodeLost {
                node_id,
                node_epoch,
                reason,
            } => st.on_node_lost(&myself, node_id, node_epoch, reason),
            MasterMsg::Rebalance(reply) => {
                let moves = st.rebalance(&myself);
                let _ = reply.send(Ok(moves));
            }
            MasterMsg::Cancel(id, reason, reply) => {
                if st
                    .active
                    .get(&id)
                    .is_some_and(|t| !t.rec.status.is_terminal())
                {
                    let ledger = st.ledger.clone();
                    let detail = if reason.is_empty() {
                        "cancelled by operator".to_string()
                    } else {
                        format!("cancelled: {reason}")
                    };
                    if let Some(t) = st.active.get_mut(&id) {
                        t.rec.error = Some(detail.clone());
                    }
                    st.transition(
                        id,
                        Status::Cancelled,
                        detail,
                        Some(Box::new(move |r| {
                            let answer = r.map_err(ApiError::from).and_then(|_| {
                                ledger.get(id)?.ok_or_else(|| {
                                    ApiError::NotFound(format!("task {id} not found"))
                                })
                            });
                            let _ = reply.send(answer);
                        })),
                    );
                } else {
                    let current = st.active.get(&id).map(|t| Ok(Some(t.rec.clone())));
                    let answer = match current.unwrap_or_else(|| st.ledger.get(id)) {
                        Ok(Some(rec)) => Err(ApiError::FailedPrecondition(format!(
                            "task {id} is already {}; only pending, dispatched or orphaned tasks can be cancelled",
                            rec.status.as_str()
                        ))),
                        Ok(None) => Err(ApiError::NotFound(format!("task {id} not found"))),
                        Err(e) => Err(e.into()),
                    };
                    let _ = reply.send(answer);
                }
            }
            MasterMsg::RetryFailed(plant, kind, reply) => {
                let mut retried = Vec::new();
                let candidates: Vec<u64> = st.failed.iter().copied().collect();
                for id in candidates {
                    let in_memory = st.active.get(&id).map(|t| Ok(Some(t.rec.clone())));
                    let rec = match in_memory.unwrap_or_else(|| st.ledger.get(id)) {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err(e) => {
                            let _ = reply.send(Err(e.into()));
                            return Ok(());
                        }
                    };
                    if rec.status != Status::Failed
                        || plant.as_ref().is_some_and(|p| p != &rec.plant_id)
                        || kind.as_ref().is_some_and(|k| k != &rec.agent_kind)
                        || !st.plants.contains_key(&rec.plant_id)
                    {
                        continue;
                    }
                    st.failed.remove(&id);
                    let mut rec = rec;
                    rec.failures = 0;
                    rec.deadline_us = None;
                    st.bump_count(Status::Failed, 1);
                    st.active.insert(
                        id,
                        Active {
                            payload: Arc::from(rec.payload.as_bytes()),
                            rec,
                            durable: true,
                            waiters: Vec::new(),
                        },
                    );
                    st.transition(
                        id,
                        Status::Pending,
                        "retried by operator (attempt budget reset, deadline cleared)".into(),
                        None,
                    );
                    st.enqueue(id);
                    retried.push(id);
                }
                st.pump_all();
                let _ = reply.send(Ok(retried));
            }
            MasterMsg::ClearOrphaned(older, reply) => {
                let cutoff = now_us().saturating_sub(older.as_micros() as u64);
                let ids: Vec<u64> = st
                    .active
                    .iter()
                    .filter(|(_, t)| t.rec.status == Status::Orphaned && t.rec.updated_us <= cutoff)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    let detail = format!("cleared: orphaned for more than {} s", older.as_secs());
                    if let Some(t) = st.active.get_mut(id) {
                        t.rec.error = Some(detail.clone());
                    }
                    st.transition(*id, Status::Cancelled, detail, None);
                }
                let _ = reply.send(Ok(ids));
            }
            MasterMsg::Snapshot(reply) => {
                let _ = reply.send(st.snapshot());
            }
            MasterMsg::SetPaused(p) => {
                st.paused = p;
                if !p {
                    st.pump_all();
                }
            }
            MasterMsg::InjectFault(plant, kind, fault, reply) => {
                let node = st
                    .plants
                    .get(&plant)
                    .and_then(|p| p.node.as_ref())
                    .and_then(|n| st.nodes.get(n))
                    .map(|n| n.link.clone());
                let answer = if !st.cfg.allow_fault_injection {
                    Err(ApiError::FailedPrecondition(
                        "fault injection is disabled; set allow_fault_injection = true".into(),
                    ))
                } else if !st.agents.contains_key(&(plant.clone(), kind.clone())) {
                    Err(ApiError::NotFound(format!(
                        "no agent {kind} on plant {plant}"
                    )))
                } else if let Some(node) = node {
                    node.inject_fault(&plant, &kind, fault)
                        .map_err(|e| ApiError::FailedPrecondition(e.to_string()))
                } else {
                    Err(ApiError::FailedPrecondition(format!(
                        "plant {plant} is not placed"
                    )))
                };
                let _ = reply.send(answer);
            }
            MasterMsg::SetFeed {
                plant,
                meter,
                switch,
                reply,
            } => st.set_feed(plant, meter, switch, reply),
            MasterMsg::Retired(id, seq) => {
                if st
                    .active
                    .get(&id)
                    .is_some_and(|t| t.rec.seq == seq && t.rec.status.is_terminal())
                {
                    let t = st.active.remove(&id).expect("checked");
                    st.bump_count(t.rec.status, -1);
                    if let Some(k) = &t.rec.idempotency_key {
                        st.idem.remove(k);
                    }
                }
            }
            MasterMsg::Tick => st.tick(),
        }
        Ok(())
    }
}
