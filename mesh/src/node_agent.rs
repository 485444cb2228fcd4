//! The per-node actor that starts and watches plant supervisors.

use heatmesh_agents::fault::FaultTable;
use heatmesh_agents::{
    EventSink, PlantArgs, PlantEvent, PlantMsg, PlantSpec, PlantSupervisor, RestartPolicy,
};
use heatmesh_connect::feeds::{FeedHost, Running};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;

/// Messages a node agent accepts.
pub enum NodeMsg {
    /// Start a plant supervisor; an older incarnation of the same plant is stopped first.
    SpawnPlant {
        /// The plant.
        spec: PlantSpec,
        /// Its new placement epoch.
        epoch: u64,
        /// Where the plant reports.
        sink: EventSink,
        /// Receives the supervisor or the reason it failed to start.
        reply: RpcReplyPort<Result<ActorRef<PlantMsg>, String>>,
    },
    /// The plant incarnations running here: (plant, epoch), sorted by plant.
    Running(RpcReplyPort<Vec<(String, u64)>>),
    /// Restart a placed plant's connectors with these feeds; ignored if it is not placed here.
    SetFeeds {
        /// The plant.
        plant: String,
        /// Its feeds now.
        feeds: heatmesh_ingest::PlantFeeds,
    },
}

/// Start-up arguments of a node agent.
#[derive(Clone, Default)]
pub struct NodeAgentArgs {
    /// Node id.
    pub node_id: String,
    /// Restart policy handed to every plant supervisor.
    pub policy: RestartPolicy,
    /// Rehearsal faults shared by the node's plants.
    pub faults: FaultTable,
    /// Runs each placed plant's connectors; `None` runs none (drills, tests).
    pub feeds: Option<FeedHost>,
}

struct Placed {
    epoch: u64,
    sink: EventSink,
    actor: ActorRef<PlantMsg>,
    /// The plant's connectors, stopped when this entry goes (replaced, down, stopped).
    feeds: Option<Running>,
}

/// Node agent state.
pub struct NodeState {
    args: NodeAgentArgs,
    plants: HashMap<String, Placed>,
}

/// The node agent actor.
pub struct NodeAgent;

impl Actor for NodeAgent {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeAgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<NodeMsg>,
        args: NodeAgentArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        Ok(NodeState {
            args,
            plants: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        st: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::SpawnPlant {
                spec,
                epoch,
                sink,
                reply,
            } => {
                if let Some(old) = st.plants.remove(&spec.id) {
                    old.actor.stop(Some(format!("replaced by epoch {epoch}")));
                }
                let id = spec.id.clone();
                let feeds = spec.feeds.clone();
                let result = Actor::spawn_linked(
                    None,
                    PlantSupervisor,
                    PlantArgs {
                        spec,
                        epoch,
                        sink: sink.clone(),
                        policy: st.args.policy,
                        faults: st.args.faults.clone(),
                    },
                    myself.get_cell(),
                )
                .await;
                let answer = match result {
                    Ok((actor, _)) => {
                        let running = st.args.feeds.as_ref().map(|h| h.start(&id, &feeds));
                        st.plants.insert(
                            id,
                            Placed {
                                epoch,
                                sink,
                                actor: actor.clone(),
                                feeds: running,
                            },
                        );
                        Ok(actor)
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(answer);
            }
            NodeMsg::SetFeeds { plant, feeds } => {
                if let (Some(p), Some(host)) = (st.plants.get_mut(&plant), &st.args.feeds) {
                    // The old connectors go first: stopping them forgets the plant's health,
                    // which the new ones then register afresh.
                    p.feeds = None;
                    p.feeds = Some(host.start(&plant, &feeds));
                    tracing::info!(%plant, disabled = ?feeds.disabled, "plant data connectors restarted");
                }
            }
            NodeMsg::Running(reply) => {
                let mut running: Vec<(String, u64)> = st
                    .plants
                    .iter()
                    .map(|(id, p)| (id.clone(), p.epoch))
                    .collect();
                running.sort();
                let _ = reply.send(running);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<NodeMsg>,
        evt: SupervisionEvent,
        st: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason, failed) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string(), true),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()), false)
            }
            _ => return Ok(()),
        };
        let Some(plant) = st
            .plants
            .iter()
            .find(|(_, p)| p.actor.get_id() == cell.get_id())
            .map(|(id, _)| id.clone())
        else {
            // An incarnation already replaced: nothing to report.
            return Ok(());
        };
        let placed = st.plants.remove(&plant).expect("found above");
        // A supervisor that failed is news; one stopped on request (shutdown, replacement) is not.
        if failed {
            tracing::warn!(node = %st.args.node_id, plant = %plant, epoch = placed.epoch, "plant supervisor failed: {reason}");
        } else {
            tracing::info!(node = %st.args.node_id, plant = %plant, epoch = placed.epoch, "plant supervisor stopped: {reason}");
        }
        (placed.sink)(PlantEvent::PlantDown {
            plant,
            epoch: placed.epoch,
            reason,
        });
        Ok(())
    }
}
