//! The task record as the ledger stores it, and its state machine.

use serde::{Deserialize, Serialize};

/// Where a task is in its life. Terminal: completed, failed, cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Durable and waiting for dispatch (or for its retry backoff).
    Pending,
    /// Sent to an agent under (attempt, epoch); a lease bounds how long it may take.
    Dispatched,
    /// Result stored.
    Completed,
    /// Gave up: out of attempts, deadline passed, or the calculation refused the input.
    Failed,
    /// Its agent or plant was lost; it goes back to pending when its plant can run it.
    Orphaned,
    /// Cancelled by an operator.
    Cancelled,
}

impl Status {
    /// All states, in API order.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Dispatched,
        Status::Completed,
        Status::Failed,
        Status::Orphaned,
        Status::Cancelled,
    ];

    /// True for completed, failed and cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// Lower-case name used in tables, metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Dispatched => "dispatched",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Orphaned => "orphaned",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Scheduling priority; lower value runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Safety- or trip-related work.
    Critical = 0,
    /// Operator-requested work.
    High = 1,
    /// Routine work (the default).
    Normal = 2,
    /// Background work.
    Low = 3,
}

impl Priority {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Priority> {
        [
            Priority::Critical,
            Priority::High,
            Priority::Normal,
            Priority::Low,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A task as stored in the ledger's `tasks` tree (JSON, keyed by big-endian id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Ledger-assigned id, increasing with acceptance order.
    pub id: u64,
    /// Plant the task runs on.
    pub plant_id: String,
    /// Canonical agent kind, e.g. `GL-009`.
    pub agent_kind: String,
    /// The validated request JSON (plant defaults applied).
    pub payload: String,
    /// Scheduling priority.
    pub priority: Priority,
    /// Current state.
    pub status: Status,
    /// Dispatch count: the fencing token that results must match.
    pub attempt: u32,
    /// Failed attempts so far (crashes, lease expiries); orphaning does not count.
    pub failures: u32,
    /// Failures allowed before the task fails for good.
    pub max_attempts: u32,
    /// Placement epoch of the plant at the last dispatch.
    pub epoch: u64,
    /// Node of the last dispatch.
    pub node: String,
    /// Agent of the last dispatch, `Plant/GL-0xx`.
    pub agent: String,
    /// Client idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Acceptance time, unix microseconds.
    pub created_us: u64,
    /// Last transition time, unix microseconds.
    pub updated_us: u64,
    /// Absolute deadline, unix microseconds.
    pub deadline_us: Option<u64>,
    /// Result JSON when completed.
    pub result: Option<String>,
    /// Why it failed or was cancelled; last retry reason while pending.
    pub error: Option<String>,
    /// Ledger sequence number of the last transition.
    pub seq: u64,
}

impl TaskRecord {
    /// A task just accepted: pending, normal priority, never dispatched, three attempts;
    /// override the rest with struct-update syntax.
    pub fn pending(id: u64, plant_id: &str, agent_kind: &str, payload: String) -> TaskRecord {
        TaskRecord {
            id,
            plant_id: plant_id.into(),
            agent_kind: agent_kind.into(),
            payload,
            priority: Priority::Normal,
            status: Status::Pending,
            attempt: 0,
            failures: 0,
            max_attempts: 3,
            epoch: 0,
            node: String::new(),
            agent: String::new(),
            idempotency_key: None,
            created_us: 0,
            updated_us: 0,
            deadline_us: None,
            result: None,
            error: None,
            seq: 0,
        }
    }
}

/// One journaled transition, stored under (task id, seq) in the `journal` tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// State before (None at acceptance).
    pub from: Option<Status>,
    /// State after.
    pub to: Status,
    /// Unix microseconds.
    pub at_us: u64,
    /// Attempt at the time.
    pub attempt: u32,
    /// Epoch at the time.
    pub epoch: u64,
    /// Node at the time.
    pub node: String,
    /// Why, in words.
    pub detail: String,
}

pub use heatmesh_base::now_us;
