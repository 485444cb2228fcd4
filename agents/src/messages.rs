//! What flows between the master, a plant supervisor and its sub-agents.
//!
//! Payloads and results travel as JSON bytes so the same messages can later cross a node
//! boundary unchanged.

use std::sync::Arc;

/// One dispatch of a task to a plant: the fencing token is (attempt, epoch).
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Ledger task id.
    pub task_id: u64,
    /// Dispatch number of this task; results of older attempts are rejected.
    pub attempt: u32,
    /// Placement epoch of the plant this was sent to.
    pub epoch: u64,
    /// Canonical agent kind, e.g. `GL-009`.
    pub kind: String,
    /// The request JSON.
    pub payload: Arc<[u8]>,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The agent produced this JSON result.
    Completed(Vec<u8>),
    /// The attempt failed; `retryable` says whether trying again can help.
    Failed {
        /// What went wrong.
        error: String,
        /// True for crashes and timeouts, false for a calculation that refused its input.
        retryable: bool,
    },
    /// The task never ran: it was queued on an agent that died, or its plant went down.
    Orphaned {
        /// Why it was dropped.
        reason: String,
    },
}

/// Agent lifecycle as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// Serving tasks.
    Running,
    /// Crashed; a restart is scheduled.
    Restarting,
    /// Given up on (restart intensity exceeded).
    Failed,
}

impl AgentStatus {
    /// Lower-case name used in the API and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Running => "running",
            AgentStatus::Restarting => "restarting",
            AgentStatus::Failed => "failed",
        }
    }
}

/// Reports from a plant to whoever placed it.
#[derive(Debug, Clone)]
pub enum PlantEvent {
    /// An attempt finished (or was dropped).
    TaskDone {
        /// Plant id.
        plant: String,
        /// Ledger task id.
        task_id: u64,
        /// The attempt this outcome belongs to.
        attempt: u32,
        /// The placement epoch it ran under.
        epoch: u64,
        /// Agent that ran it, e.g. `Plant-001/GL-009`.
        agent: String,
        /// What happened.
        outcome: Outcome,
    },
    /// A sub-agent changed state.
    AgentChanged {
        /// Plant id.
        plant: String,
        /// Canonical kind.
        kind: String,
        /// New status.
        status: AgentStatus,
        /// Restarts so far.
        restarts: u32,
        /// Placement epoch.
        epoch: u64,
    },
    /// The plant supervisor gave up (restart intensity exceeded) or stopped unexpectedly.
    PlantDown {
        /// Plant id.
        plant: String,
        /// The epoch that went down.
        epoch: u64,
        /// Why.
        reason: String,
    },
}

/// Where a plant sends its reports. The master provides it; a remote node would provide a
/// transport-backed one.
pub type EventSink = Arc<dyn Fn(PlantEvent) + Send + Sync>;
