//! heatmesh-mesh: where plants run.
//!
//! Every node runs a [`NodeAgent`]; the master places a plant by asking it to spawn a
//! `PlantSupervisor` under a placement epoch. The master talks to nodes only through the
//! [`NodeLink`] and [`PlantLink`] traits, so an in-process node ([`LocalNode`]) and a remote
//! one ([`remote::RemoteNode`], over the node protocol of `node.proto`) are interchangeable.
//! [`remote`] is the master's side of that protocol (sessions, leases, fencing), [`attach`]
//! the node's side (attach, heartbeats, reconnection with backoff).

pub mod attach;
mod local;
mod node_agent;
pub mod remote;
pub mod wire;

pub use local::{LocalNode, LocalPlant};
pub use node_agent::{NodeAgent, NodeAgentArgs, NodeMsg};

use heatmesh_agents::fault::Fault;
use heatmesh_agents::{Assignment, EventSink, PlantEvent, PlantSpec};
use heatmesh_ingest::PlantFeeds;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Errors crossing the node boundary.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The node did not accept the request (it is down or its agent stopped).
    #[error("node {node}: {reason}")]
    NodeUnavailable {
        /// Node id.
        node: String,
        /// Why.
        reason: String,
    },
    /// The plant could not be started on the node.
    #[error("plant {plant} failed to start on node {node}: {reason}")]
    SpawnFailed {
        /// Plant id.
        plant: String,
        /// Node id.
        node: String,
        /// Why.
        reason: String,
    },
}

/// One attach session of a node: its id and the node epoch the master gave that session.
/// Every plant event reaches the master tagged with the session it arrived on, so a report
/// is judged against the session that holds the assignment, not against what it claims.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeSession {
    /// Node id.
    pub node: String,
    /// Node epoch of the session.
    pub node_epoch: u64,
}

/// Where the master receives plant events, each with the session it arrived on.
pub type SessionSink = Arc<dyn Fn(NodeSession, PlantEvent) + Send + Sync>;

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The master's handle on one node.
pub trait NodeLink: Send + Sync {
    /// Node id.
    fn id(&self) -> &str;
    /// Address operators can reach it at (empty for in-process nodes).
    fn address(&self) -> String;
    /// Unix microseconds of its last heartbeat; None for in-process nodes (always alive).
    fn last_heartbeat_us(&self) -> Option<u64> {
        None
    }
    /// Stops a plant incarnation found running there that is no longer current (after a
    /// re-attach). In-process nodes never outlive their master, so the default does nothing.
    fn stop_stale_plant(&self, _plant: &str, _epoch: u64) {}
    /// Arms a rehearsal fault on one agent of a plant running on this node.
    fn inject_fault(&self, plant: &str, kind: &str, fault: Fault) -> Result<(), MeshError>;
    /// Restarts a placed plant's connectors with `feeds` (a meter disabled or enabled).
    fn set_feeds(&self, plant: &str, feeds: &PlantFeeds) -> Result<(), MeshError>;
    /// Starts `spec` under `epoch`; the plant reports through `sink`.
    fn spawn_plant(
        &self,
        spec: PlantSpec,
        epoch: u64,
        sink: EventSink,
    ) -> BoxFuture<'_, Result<Arc<dyn PlantLink>, MeshError>>;
}

/// The master's handle on one placed plant.
pub trait PlantLink: Send + Sync {
    /// Sends one assignment; delivery failure means the plant is gone.
    fn dispatch(&self, a: Assignment) -> Result<(), MeshError>;
    /// Stops the plant (its outstanding work is reported orphaned by the master).
    fn stop(&self);
}
