//! Conversions between plant events / assignments and node-protocol frames. The node
//! protocol's only protobuf conversion point.

use heatmesh_agents::{AgentStatus, Assignment, Outcome, PlantEvent};
use heatmesh_proto::v1 as pb;
use pb::node_frame::Frame as Up;
use pb::task_done::Outcome as PbOutcome;
use std::sync::Arc;

/// A plant report as the frame a node sends up.
pub fn event_to_frame(ev: PlantEvent) -> pb::NodeFrame {
    let frame = match ev {
        PlantEvent::TaskDone {
            plant,
            task_id,
            attempt,
            epoch,
            agent,
            outcome,
        } => Up::TaskDone(pb::TaskDone {
            plant_id: plant,
            task_id,
            attempt,
            epoch,
            agent,
            outcome: Some(match outcome {
                Outcome::Completed(json) => PbOutcome::CompletedJson(json),
                Outcome::Failed { error, retryable } => {
                    PbOutcome::Failed(pb::TaskFailure { error, retryable })
                }
                Outcome::Orphaned { reason } => PbOutcome::Orphaned(reason),
            }),
        }),
        PlantEvent::AgentChanged {
            plant,
            kind,
            status,
            restarts,
            epoch,
        } => Up::AgentChanged(pb::AgentChanged {
            plant_id: plant,
            kind,
            status: status.as_str().into(),
            restarts,
            epoch,
        }),
        PlantEvent::PlantDown {
            plant,
            epoch,
            reason,
        } => Up::PlantDown(pb::PlantDown {
            plant_id: plant,
            epoch,
            reason,
        }),
    };
    pb::NodeFrame { frame: Some(frame) }
}

/// The plant report carried by a frame, if it is one. Returns (plant, epoch, event).
pub fn frame_to_event(frame: Up) -> Option<(String, u64, PlantEvent)> {
    Some(match frame {
        Up::TaskDone(t) => {
            let outcome = match t.outcome? {
                PbOutcome::CompletedJson(j) => Outcome::Completed(j),
                PbOutcome::Failed(f) => Outcome::Failed {
                    error: f.error,
                    retryable: f.retryable,
                },
                PbOutcome::Orphaned(reason) => Outcome::Orphaned { reason },
            };
            (
                t.plant_id.clone(),
                t.epoch,
                PlantEvent::TaskDone {
                    plant: t.plant_id,
                    task_id: t.task_id,
                    attempt: t.attempt,
                    epoch: t.epoch,
                    agent: t.agent,
                    outcome,
                },
            )
        }
        Up::AgentChanged(a) => {
            let status = match a.status.as_str() {
                "running" => AgentStatus::Running,
                "restarting" => AgentStatus::Restarting,
                _ => AgentStatus::Failed,
            };
            (
                a.plant_id.clone(),
                a.epoch,
                PlantEvent::AgentChanged {
                    plant: a.plant_id,
                    kind: a.kind,
                    status,
                    restarts: a.restarts,
                    epoch: a.epoch,
                },
            )
        }
        Up::PlantDown(d) => (
            d.plant_id.clone(),
            d.epoch,
            PlantEvent::PlantDown {
                plant: d.plant_id,
                epoch: d.epoch,
                reason: d.reason,
            },
        ),
        _ => return None,
    })
}

/// An assignment as the frame the master sends down.
pub fn assignment_to_frame(plant: &str, a: Assignment) -> pb::MasterFrame {
    pb::MasterFrame {
        frame: Some(pb::master_frame::Frame::Assign(pb::Assign {
            plant_id: plant.to_string(),
            task_id: a.task_id,
            attempt: a.attempt,
            epoch: a.epoch,
            kind: a.kind,
            payload_json: a.payload.to_vec(),
        })),
    }
}

/// The assignment carried by an Assign frame.
pub fn frame_to_assignment(a: pb::Assign) -> (String, Assignment) {
    (
        a.plant_id,
        Assignment {
            task_id: a.task_id,
            attempt: a.attempt,
            epoch: a.epoch,
            kind: a.kind,
            payload: Arc::from(a.payload_json),
        },
    )
}
