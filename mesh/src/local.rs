//! An in-process node: the node agent runs in the master's process.

use crate::{BoxFuture, MeshError, NodeAgent, NodeAgentArgs, NodeLink, NodeMsg, PlantLink};
use heatmesh_agents::fault::{Fault, FaultTable};
use heatmesh_agents::{Assignment, EventSink, PlantMsg, PlantSpec};
use heatmesh_ingest::PlantFeeds;
use ractor::{Actor, ActorRef};
use std::sync::Arc;

/// A node whose agent lives in this process. Clones share the agent.
#[derive(Clone)]
pub struct LocalNode {
    id: String,
    agent: ActorRef<NodeMsg>,
    faults: FaultTable,
}

impl LocalNode {
    /// Starts the node agent.
    pub async fn start(args: NodeAgentArgs) -> Result<Self, MeshError> {
        let id = args.node_id.clone();
        let faults = args.faults.clone();
        let (agent, _) =
            Actor::spawn(None, NodeAgent, args)
                .await
                .map_err(|e| MeshError::NodeUnavailable {
                    node: id.clone(),
                    reason: e.to_string(),
                })?;
        Ok(LocalNode { id, agent, faults })
    }

    /// The plant incarnations running on this node: (plant, epoch), sorted by plant.
    pub async fn running(&self) -> Result<Vec<(String, u64)>, MeshError> {
        ractor::call!(self.agent, NodeMsg::Running).map_err(|e| MeshError::NodeUnavailable {
            node: self.id.clone(),
            reason: e.to_string(),
        })
    }

    /// Stops the node agent and everything under it.
    pub fn shutdown(&self) {
        self.agent.stop_children(None);
        self.agent.stop(None);
    }

    /// Stops the node agent and waits (up to `limit`) until it has, so its connectors are
    /// gone and what they held (the master's ledger, under `heatmesh up`) is released.
    pub async fn stop(&self, limit: std::time::Duration) {
        self.agent.stop_children(None);
        let _ = self.agent.stop_and_wait(None, Some(limit)).await;
    }
}

impl NodeLink for LocalNode {
    fn id(&self) -> &str {
        &self.id
    }

    fn address(&self) -> String {
        String::new()
    }

    fn inject_fault(&self, plant: &str, kind: &str, fault: Fault) -> Result<(), MeshError> {
        self.faults.set(plant, kind, fault);
        Ok(())
    }

    fn set_feeds(&self, plant: &str, feeds: &PlantFeeds) -> Result<(), MeshError> {
        self.agent
            .cast(NodeMsg::SetFeeds {
                plant: plant.to_string(),
                feeds: feeds.clone(),
            })
            .map_err(|e| MeshError::NodeUnavailable {
                node: self.id.clone(),
                reason: e.to_string(),
            })
    }

    fn spawn_plant(
        &self,
        spec: PlantSpec,
        epoch: u64,
        sink: EventSink,
    ) -> BoxFuture<'_, Result<Arc<dyn PlantLink>, MeshError>> {
        Box::pin(async move {
            let plant = spec.id.clone();
            let unavailable = |reason: String| MeshError::NodeUnavailable {
                node: self.id.clone(),
                reason,
            };
            let answer = ractor::call!(self.agent, |reply| NodeMsg::SpawnPlant {
                spec,
                epoch,
                sink,
                reply
            })
            .map_err(|e| unavailable(e.to_string()))?;
            let actor = answer.map_err(|reason| MeshError::SpawnFailed {
                plant,
                node: self.id.clone(),
                reason,
            })?;
            Ok(Arc::new(LocalPlant {
                node: self.id.clone(),
                actor,
            }) as Arc<dyn PlantLink>)
        })
    }
}

/// A plant supervisor in this process.
pub struct LocalPlant {
    node: String,
    actor: ActorRef<PlantMsg>,
}

impl PlantLink for LocalPlant {
    fn dispatch(&self, a: Assignment) -> Result<(), MeshError> {
        self.actor
            .cast(PlantMsg::Run(a))
            .map_err(|e| MeshError::NodeUnavailable {
                node: self.node.clone(),
                reason: e.to_string(),
            })
    }

    fn stop(&self) {
        self.actor.stop(Some("stopped by master".into()));
    }
}
