//! The only place protobuf types meet ledger and calculation types.
//!
//! Typed agent messages carry the same field names as the calculations' JSON, so a request
//! converts through serde without per-field code; adding a kind adds one line to
//! [`typed_kinds!`].

use crate::task::{Priority, Status, TaskRecord, Transition};
use heatmesh_proto::v1 as pb;
use pb::task_payload::Request;
use pb::task_result::Typed;
use tonic::Status as GrpcStatus;

/// Lists each typed oneof variant with its agent kind, for requests and results alike.
macro_rules! typed_kinds {
    ($($variant:ident => $kind:literal),* $(,)?) => {
        /// The oneof field name and the agent kind of a typed request.
        fn typed_request(r: &Request) -> Result<(&'static str, &'static str, Vec<u8>), GrpcStatus> {
            match r {
                $(Request::$variant(m) => Ok((stringify!($variant), $kind, to_json(m)?)),)*
                Request::Json(_) => unreachable!("handled by the caller"),
            }
        }

        /// The typed request for a kind, when the kind has one.
        fn typed_from_json(kind: &str, json: &str) -> Option<Request> {
            match kind {
                $($kind => serde_json::from_str(json).ok().map(Request::$variant),)*
                _ => None,
            }
        }

        /// The typed result for a kind, when the kind has one.
        fn typed_result(kind: &str, json: &str) -> Option<Typed> {
            match kind {
                $($kind => serde_json::from_str(json).ok().map(Typed::$variant),)*
                _ => None,
            }
        }
    };
}

typed_kinds! {
    Gl009HeatBalance => "GL-009",
}

fn to_json<T: serde::Serialize>(m: &T) -> Result<Vec<u8>, GrpcStatus> {
    serde_json::to_vec(m).map_err(|e| GrpcStatus::internal(format!("payload encoding: {e}")))
}

/// A payload's agent kind (as given), its request JSON, and the field path prefix for errors.
pub struct DecodedPayload {
    /// Agent kind as named by the payload.
    pub kind: String,
    /// Request JSON.
    pub json: Vec<u8>,
    /// `payload.<variant>`, prefixed to calculation error fields.
    pub field: String,
}

/// Unpacks a task payload; a missing request names the field.
pub fn decode_payload(p: Option<pb::TaskPayload>) -> Result<DecodedPayload, GrpcStatus> {
    let req = p.and_then(|p| p.request).ok_or_else(|| {
        GrpcStatus::invalid_argument("payload: required: set exactly one typed request (e.g. gl009_heat_balance)")
    })?;
    match &req {
        Request::Json(j) => {
            if j.agent_kind.trim().is_empty() {
                return Err(GrpcStatus::invalid_argument("payload.json.agent_kind: required"));
            }
            Ok(DecodedPayload {
                kind: j.agent_kind.clone(),
                json: j.json.clone().into_bytes(),
                field: "payload.json.json".into(),
            })
        }
        typed => {
            let (variant, kind, json) = typed_request(typed)?;
            Ok(DecodedPayload {
                kind: kind.into(),
                json,
                field: format!("payload.{}", snake(variant)),
            })
        }
    }
}

fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Proto priority to ours; the unspecified value means normal.
pub fn priority_from_proto(v: i32) -> Result<Priority, GrpcStatus> {
    match pb::Priority::try_from(v) {
        Ok(pb::Priority::Unspecified) | Ok(pb::Priority::Normal) => Ok(Priority::Normal),
        Ok(pb::Priority::Critical) => Ok(Priority::Critical),
        Ok(pb::Priority::High) => Ok(Priority::High),
        Ok(pb::Priority::Low) => Ok(Priority::Low),
        Err(_) => Err(GrpcStatus::invalid_argument(format!(
            "priority: unknown value {v}; use CRITICAL, HIGH, NORMAL or LOW"
        ))),
    }
}

fn priority_to_proto(p: Priority) -> pb::Priority {
    match p {
        Priority::Critical => pb::Priority::Critical,
        Priority::High => pb::Priority::High,
        Priority::Normal => pb::Priority::Normal,
        Priority::Low => pb::Priority::Low,
    }
}

/// Our status to proto.
pub fn status_to_proto(s: Status) -> pb::TaskStatus {
    match s {
        Status::Pending => pb::TaskStatus::Pending,
        Status::Dispatched => pb::TaskStatus::Dispatched,
        Status::Completed => pb::TaskStatus::Completed,
        Status::Failed => pb::TaskStatus::Failed,
        Status::Orphaned => pb::TaskStatus::Orphaned,
        Status::Cancelled => pb::TaskStatus::Cancelled,
    }
}

/// Proto status filter value to ours.
pub fn status_from_proto(v: i32) -> Result<Status, GrpcStatus> {
    match pb::TaskStatus::try_from(v) {
        Ok(pb::TaskStatus::Pending) => Ok(Status::Pending),
        Ok(pb::TaskStatus::Dispatched) => Ok(Status::Dispatched),
        Ok(pb::TaskStatus::Completed) => Ok(Status::Completed),
        Ok(pb::TaskStatus::Failed) => Ok(Status::Failed),
        Ok(pb::TaskStatus::Orphaned) => Ok(Status::Orphaned),
        Ok(pb::TaskStatus::Cancelled) => Ok(Status::Cancelled),
        _ => Err(GrpcStatus::invalid_argument(format!("status: unknown value {v}"))),
    }
}

/// Unix microseconds to a protobuf timestamp.
pub fn ts(us: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1000) as i32,
    }
}

/// A task record (and optionally its journal) as the API shows it.
pub fn task_to_proto(rec: &TaskRecord, history: Vec<Transition>) -> pb::Task {
    let result = rec.result.as_ref().map(|json| pb::TaskResult {
        agent_kind: rec.agent_kind.clone(),
        json: json.clone(),
        typed: typed_result(&rec.agent_kind, json),
    });
    let request = typed_from_json(&rec.agent_kind, &rec.payload).unwrap_or_else(|| {
        Request::Json(pb::JsonRequest {
            agent_kind: rec.agent_kind.clone(),
            json: rec.payload.clone(),
        })
    });
    pb::Task {
        id: rec.id.to_string(),
        plant_id: rec.plant_id.clone(),
        agent_kind: rec.agent_kind.clone(),
        status: status_to_proto(rec.status) as i32,
        priority: priority_to_proto(rec.priority) as i32,
        attempt: rec.attempt,
        max_attempts: rec.max_attempts,
        epoch: rec.epoch,
        node: rec.node.clone(),
        agent: rec.agent.clone(),
        idempotency_key: rec.idempotency_key.clone().unwrap_or_default(),
        created_at: Some(ts(rec.created_us)),
        updated_at: Some(ts(rec.updated_us)),
        deadline: rec.deadline_us.map(ts),
        result,
        error: rec.error.clone().unwrap_or_default(),
        seq: rec.seq,
        history: history
            .into_iter()
            .map(|t| pb::Transition {
                from: t.from.map_or(pb::TaskStatus::Unspecified, status_to_proto) as i32,
                to: status_to_proto(t.to) as i32,
                at: Some(ts(t.at_us)),
                attempt: t.attempt,
                epoch: t.epoch,
                node: t.node,
                detail: t.detail,
            })
            .collect(),
        payload: Some(pb::TaskPayload { request: Some(request) }),
    }
}

/// A committed change as a feed event.
pub fn event_to_proto(rec: &TaskRecord) -> pb::TaskEvent {
    pb::TaskEvent {
        task_id: rec.id.to_string(),
        plant_id: rec.plant_id.clone(),
        agent_kind: rec.agent_kind.clone(),
        status: status_to_proto(rec.status) as i32,
        attempt: rec.attempt,
        seq: rec.seq,
        at: Some(ts(rec.updated_us)),
        created_at: Some(ts(rec.created_us)),
    }
}

/// Parses a task id, naming the field.
pub fn parse_id(field: &str, s: &str) -> Result<u64, GrpcStatus> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| GrpcStatus::invalid_argument(format!("{field}: must be a task id (a positive integer), got {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_variant() {
        assert_eq!(snake("Gl009HeatBalance"), "gl009_heat_balance");
    }

    #[test]
    fn typed_payload_round_trips_through_json() {
        let m = pb::HeatBalanceRequest {
            inputs: vec![pb::EnergyFlow { name: "fuel".into(), energy_kwh: 1000.0 }],
            outputs: vec![],
            losses: vec![],
            closure_threshold_pct: Some(7.5),
        };
        let d = decode_payload(Some(pb::TaskPayload { request: Some(Request::Gl009HeatBalance(m.clone())) })).unwrap();
        assert_eq!(d.kind, "GL-009");
        assert_eq!(d.field, "payload.gl009_heat_balance");
        let back = typed_from_json("GL-009", std::str::from_utf8(&d.json).unwrap());
        assert_eq!(back, Some(Request::Gl009HeatBalance(m)));
    }
}
