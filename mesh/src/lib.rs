//! heatmesh-mesh: where plants run.
//!
//! Every node runs a [`NodeAgent`]; the master places a plant by asking it to spawn a
//! `PlantSupervisor` under a placement epoch. The master talks to nodes only through the
//! [`NodeLink`] and [`PlantLink`] traits, so an in-process node ([`LocalNode`]) and a remote
//! one behind a network transport are interchangeable.

mod local;
mod node_agent;

pub use local::{LocalNode, LocalPlant};
pub use node_agent::{NodeAgent, NodeAgentArgs, NodeMsg};

use heatmesh_agents::{Assignment, EventSink, PlantSpec};
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

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The master's handle on one node.
pub trait NodeLink: Send + Sync {
    /// Node id.
    fn id(&self) -> &str;
    /// Address operators can reach it at (empty for in-process nodes).
    fn address(&self) -> String;
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
