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

/// A reading as the protobuf message both the node protocol and the ReadingService carry.
pub fn reading_to_proto(r: heatmesh_ingest::Reading) -> pb::Reading {
    use heatmesh_ingest::Quality;
    let us = r.time_us.max(0);
    pb::Reading {
        meter: r.meter,
        source_time: Some(prost_types::Timestamp {
            seconds: us / 1_000_000,
            nanos: ((us % 1_000_000) * 1_000) as i32,
        }),
        value: r.raw,
        quality: match r.quality {
            Quality::Good => pb::ReadingQuality::Good,
            Quality::Uncertain => pb::ReadingQuality::Uncertain,
            Quality::Bad => pb::ReadingQuality::Bad,
        } as i32,
        status_code: r.status,
    }
}

/// The readings of one message, checked for what the protobuf form cannot rule out (a
/// missing source time, an unknown quality); the error names `readings[i].field`.
pub fn readings_from_proto(
    readings: Vec<pb::Reading>,
) -> Result<Vec<heatmesh_ingest::Reading>, String> {
    use heatmesh_ingest::Quality;
    readings
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let t = r
                .source_time
                .as_ref()
                .ok_or_else(|| format!("readings[{i}].source_time: required"))?;
            let quality = match pb::ReadingQuality::try_from(r.quality) {
                Ok(pb::ReadingQuality::Unspecified | pb::ReadingQuality::Good) => Quality::Good,
                Ok(pb::ReadingQuality::Uncertain) => Quality::Uncertain,
                Ok(pb::ReadingQuality::Bad) => Quality::Bad,
                Err(_) => {
                    return Err(format!(
                        "readings[{i}].quality: unknown value {}",
                        r.quality
                    ));
                }
            };
            Ok(heatmesh_ingest::Reading {
                meter: r.meter,
                time_us: t
                    .seconds
                    .saturating_mul(1_000_000)
                    .saturating_add(i64::from(t.nanos) / 1_000),
                raw: r.value,
                quality,
                status: r.status_code,
            })
        })
        .collect()
}
