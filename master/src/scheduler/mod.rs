//! GL-001 master: accepts tasks into the ledger, queues them by priority, delegates them to
//! plant agents under fencing tokens, retries, expires, and re-places plants.
//!
//! [`MasterState`] is the scheduler's whole state. Its handlers are split by concern, one
//! file each: [`lifecycle`] (the transition table every status change passes), [`token`]
//! (whether a report is current), `change` (applying and journaling a change), `accept`,
//! `dispatch`, `retry`, `placement`, `timers`, `recovery`, `operator` and `retention`; `actor` is the
//! ractor shell. Handlers never sleep, spawn or read the clock: the actor sets the time
//! before each message ([`MasterState::set_clock`]) and carries out the [`Effect`]s they
//! leave (timers and plant starts), so the scheduler's tests drive it by hand.
//!
//! Every task change is journaled through the ledger, which calls back once it is durable:
//! the actor never waits for the disk.

mod accept;
mod actor;
mod change;
mod dispatch;
pub mod lifecycle;
mod operator;
mod placement;
mod recovery;
mod retention;
mod retry;
mod timers;
pub mod token;

#[cfg(test)]
mod tests;

pub use actor::Master;
pub use placement::PlantStatus;

use crate::config::Config;
use crate::ledger::{Commit, FeedSwitch, LedgerError, Store};
use crate::task::{Priority, TaskRecord};
use heatmesh_agents::fault::Fault;
use heatmesh_agents::{AgentStatus, EventSink, PlantEvent, PlantSpec};
use heatmesh_mesh::{NodeLink, NodeSession, PlantLink, SessionSink};
use lifecycle::Counts;
use ractor::{ActorRef, RpcReplyPort};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use token::DispatchToken;

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
    /// The request clashes with one made earlier (an idempotency key reused for another
    /// request).
    #[error("{0}")]
    Conflict(String),
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
    /// Where it is in its placement lifecycle.
    pub status: PlantStatus,
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
    /// A plant reported, on the node session it arrived on.
    Plant(NodeSession, PlantEvent),
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
    /// Ledger callback: a write failed (a full disk); write it again once writes succeed.
    WriteFailed(Rewrite),
    /// Timer: retries, deadlines, leases, gauges.
    Tick,
    /// Timer: remove what retention says is due.
    Sweep,
    /// Ledger callback: a sweep's removals are applied (or failed).
    Swept {
        /// It stopped at its batch limit: sweep again at once.
        more: bool,
        /// Failed tasks it took out of the retry set, to put back because the write failed.
        restore: Vec<u64>,
    },
}

/// Start-up arguments.
pub struct MasterArgs {
    /// Configuration (validated).
    pub config: Config,
    /// The opened ledger (the on-disk [`crate::ledger::Ledger`], or the simulator's).
    pub ledger: Arc<dyn Store>,
    /// An in-process node that prefers every plant (`heatmesh up`); None for a master that
    /// only places plants on attached nodes (`heatmesh master`).
    pub local_node: Option<Arc<dyn NodeLink>>,
    /// Start with dispatch held.
    pub paused: bool,
    /// Deliberate defects for proving the drill checker (test builds only).
    #[cfg(feature = "planted-bugs")]
    pub planted: PlantedBugs,
}

impl MasterArgs {
    /// A master over `config` and `ledger`: no in-process node, dispatch running, no
    /// deliberate defects.
    pub fn new(config: Config, ledger: Arc<dyn Store>) -> MasterArgs {
        MasterArgs {
            config,
            ledger,
            local_node: None,
            paused: false,
            #[cfg(feature = "planted-bugs")]
            planted: PlantedBugs::default(),
        }
    }
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

/// What a handler leaves for the actor to carry out: the only ways the scheduler reaches
/// beyond its state besides ledger writes and replies.
pub enum Effect {
    /// Deliver `msg` to the master after `delay`.
    After(Duration, MasterMsg),
    /// Start a plant incarnation on a node; the answer comes back as [`MasterMsg::Placed`].
    Spawn {
        /// The node.
        node: Arc<dyn NodeLink>,
        /// The plant.
        spec: PlantSpec,
        /// Its new placement epoch.
        epoch: u64,
        /// The node session it is placed in (an in-process plant's events carry it).
        session: NodeSession,
    },
}

/// A write that failed to reach the ledger and is made again once writes succeed.
#[derive(Debug, Clone)]
pub enum Rewrite {
    /// One task change: its journal entry as it was, its record as it is then.
    Task {
        /// Task id.
        id: u64,
        /// The change's sequence number.
        seq: u64,
        /// Its journal entry.
        entry: crate::task::Transition,
    },
    /// A plant's placement, as it is then.
    Placement {
        /// Plant id.
        plant: String,
    },
}

/// A task the master holds in memory: unfinished, or finished but not yet applied.
struct Active {
    rec: TaskRecord,
    payload: Arc<[u8]>,
    durable: bool,
    waiters: Vec<RpcReplyPort<Result<Submitted, ApiError>>>,
    /// The dispatch outstanding, while dispatched.
    token: Option<DispatchToken>,
    /// Times it was orphaned since the master started (capped by `scheduler.max_orphaned`).
    orphaned: u32,
}

struct PlantRt {
    spec: PlantSpec,
    epoch: u64,
    /// Node it is placed on (None: unplaced).
    node: Option<String>,
    /// The node session of the current incarnation.
    session: Option<NodeSession>,
    /// Put there by an operator's rebalance: not moved back to its preferred node.
    pinned: bool,
    link: Option<Arc<dyn PlantLink>>,
    status: PlantStatus,
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

/// Where the master's own messages go: the actor's mailbox in service, the simulator's
/// event queue under simulation. Ledger callbacks post through it.
pub type Mailbox = Arc<dyn Fn(MasterMsg) + Send + Sync>;

/// The mailbox of a master actor.
pub fn mailbox(master: &ActorRef<MasterMsg>) -> Mailbox {
    let m = master.clone();
    Arc::new(move |msg| {
        let _ = m.cast(msg);
    })
}

/// Master state. The maps whose order a decision can see (nodes, plants, queues) are
/// ordered, so the same inputs make the same choices in every process (the deterministic
/// simulation relies on it).
pub struct MasterState {
    cfg: Config,
    myself: Option<Mailbox>,
    ledger: Arc<dyn Store>,
    nodes: BTreeMap<String, NodeRt>,
    started: Instant,
    /// Monotonic time of the message being handled.
    now: Instant,
    /// Wall-clock unix microseconds of the message being handled.
    wall_us: u64,
    paused: bool,
    next_id: u64,
    seq: u64,
    active: HashMap<u64, Active>,
    idem: HashMap<String, u64>,
    failed: BTreeSet<u64>,
    plants: BTreeMap<String, PlantRt>,
    agents: BTreeMap<QueueKey, AgentView>,
    ready: BTreeMap<QueueKey, BinaryHeap<Reverse<(Priority, u64)>>>,
    in_flight: BTreeMap<QueueKey, usize>,
    delayed: BTreeSet<(Instant, u64)>,
    deadlines: BTreeSet<(u64, u64)>,
    leases: BTreeSet<(Instant, u64, u32)>,
    counts: Counts,
    /// Changes the lifecycle table refused (each one a scheduler bug; logged and counted).
    refused: u64,
    fx: Vec<Effect>,
    /// Writes that failed, to make again once the ledger writes again.
    rewrites: Vec<Rewrite>,
    /// Where the next retention sweep looks for expired tasks (the id before it).
    sweep_from: u64,
    #[cfg(feature = "planted-bugs")]
    planted: PlantedBugs,
}

/// The sink remote plants report through: every event becomes a message to the master
/// actor, tagged with the session it arrived on.
pub fn event_sink(master: &ActorRef<MasterMsg>) -> SessionSink {
    let m = master.clone();
    Arc::new(move |session, ev| {
        let _ = m.cast(MasterMsg::Plant(session, ev));
    })
}

/// The sink an in-process plant incarnation reports through: its events carry the session
/// it was placed in.
fn placed_sink(master: &ActorRef<MasterMsg>, session: NodeSession) -> EventSink {
    let m = master.clone();
    Arc::new(move |ev| {
        let _ = m.cast(MasterMsg::Plant(session.clone(), ev));
    })
}

impl MasterState {
    fn queue_key(rec: &TaskRecord) -> QueueKey {
        (rec.plant_id.clone(), rec.agent_kind.clone())
    }

    /// Sets the time the next handler runs at.
    pub fn set_clock(&mut self, now: Instant, wall_us: u64) {
        self.now = now;
        self.wall_us = wall_us;
    }

    /// Takes the effects the handlers left.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.fx)
    }

    fn after(&mut self, delay: Duration, msg: MasterMsg) {
        self.fx.push(Effect::After(delay, msg));
    }

    fn write(&self, c: Commit) {
        if let Err(e) = self.ledger.submit(c) {
            tracing::error!("ledger unavailable: {e}");
        }
    }

    /// The task's in-memory entry as a fresh record loaded from the ledger.
    fn loaded(rec: TaskRecord) -> Active {
        Active {
            payload: Arc::from(rec.payload.as_bytes()),
            rec,
            durable: true,
            waiters: Vec::new(),
            token: None,
            orphaned: 0,
        }
    }
}
