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

/// Microseconds since the Unix epoch as a protobuf timestamp.
pub fn timestamp(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// A protobuf timestamp as microseconds since the Unix epoch (saturating at the ends).
pub fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos) / 1_000)
}

/// A reading's quality as its protobuf enum.
pub fn quality_to_proto(q: heatmesh_ingest::Quality) -> pb::ReadingQuality {
    use heatmesh_ingest::Quality;
    match q {
        Quality::Good => pb::ReadingQuality::Good,
        Quality::Uncertain => pb::ReadingQuality::Uncertain,
        Quality::Bad => pb::ReadingQuality::Bad,
    }
}

/// A reading as the protobuf message both the node protocol and the ReadingService carry.
pub fn reading_to_proto(r: heatmesh_ingest::Reading) -> pb::Reading {
    pb::Reading {
        meter: r.meter,
        source_time: Some(timestamp(r.time_us.max(0))),
        value: r.raw,
        quality: quality_to_proto(r.quality) as i32,
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
                time_us: micros(t),
                raw: r.value,
                quality,
                status: r.status_code,
            })
        })
        .collect()
}

/// A meter's health as a node reports it (`reported_us`: when the snapshot was taken).
pub fn feed_to_proto(
    h: heatmesh_connect::feeds::MeterHealth,
    node: &str,
    reported_us: i64,
) -> pb::MeterFeed {
    let ts = |us: i64| timestamp(us.max(0));
    pb::MeterFeed {
        plant_id: h.plant,
        meter: h.meter,
        source: h.source,
        state: h.state.name().into(),
        has_value: h.last_value.is_some(),
        last_value: h.last_value.unwrap_or(0.0),
        last_time: h.last_time_us.map(ts),
        last_error: h.last_error.unwrap_or_default(),
        errors: h.errors,
        node: node.into(),
        reported: Some(ts(reported_us)),
        switch: None,
    }
}

/// A node's report of one meter back to its health record and when it was taken; unknown
/// states read as `waiting`.
pub fn feed_from_proto(f: pb::MeterFeed) -> (i64, heatmesh_connect::feeds::MeterHealth) {
    use heatmesh_connect::feeds::{FeedState, MeterHealth};
    let state = match f.state.as_str() {
        "ok" => FeedState::Ok,
        "stale" => FeedState::Stale,
        "down" => FeedState::Down,
        "disabled" => FeedState::Disabled,
        _ => FeedState::Waiting,
    };
    let reported = f.reported.as_ref().map_or(0, micros);
    let h = MeterHealth {
        plant: f.plant_id,
        meter: f.meter,
        source: f.source,
        state,
        last_value: f.has_value.then_some(f.last_value),
        last_time_us: f.last_time.as_ref().map(micros),
        last_error: Some(f.last_error).filter(|e| !e.is_empty()),
        errors: f.errors,
        poll_ms: 0,
        stale_after: 0,
        timestamped: false,
        changed_us: None,
        disabled: state == FeedState::Disabled,
    };
    (reported, h)
}
