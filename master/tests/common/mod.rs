//! Fixtures shared by the ledger's process-level tests.

use heatmesh_master::task::TaskRecord;

/// Task `id` as these tests write it: a key `k<id>`, times and seq equal to the id, and a
/// payload that names the id, so any mix-up between records shows.
pub fn rec(id: u64) -> TaskRecord {
    TaskRecord {
        idempotency_key: Some(format!("k{id}")),
        created_us: id,
        updated_us: id,
        seq: id,
        ..TaskRecord::pending(
            id,
            "Plant-001",
            "GL-009",
            format!(r#"{{"inputs":[{{"name":"fuel","energy_kwh":{id}}}]}}"#),
        )
    }
}
