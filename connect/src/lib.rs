//! heatmesh-connect: plant data on the node that hosts the plant.
//!
//! - [`buffer`]: readings kept durably on the node until the master has them in its ledger;
//! - [`ship`]: sends the buffer's oldest batches to the master and forgets what it confirms;
//! - [`modbus`]: polls a Modbus TCP device for its meters; [`modbus::serve`] is the other
//!   side, for the plant simulator;
//! - [`opcua`]: an OPC UA client session per source (subscriptions or reads, security policy
//!   None or Basic256Sha256); [`opcua::Device`] is the simulator's server;
//! - [`feeds`]: starts a placed plant's connectors and stops them when it moves, and keeps
//!   each meter's health;
//! - [`backoff`]: the jittered exponential delay every reconnect uses.
//!
//! What a reading is and which rules it obeys is `heatmesh-ingest`'s; nothing here decides
//! whether a reading is new: the master deduplicates on (meter, source time), so the node may
//! send a batch again after any failure without counting anything twice.

pub mod buffer;
pub mod feeds;
pub mod modbus;
pub mod opcua;
pub mod ship;

/// Unix microseconds now, by the node's clock, on the readings' signed time axis (the source
/// time of readings a protocol does not timestamp itself, as Modbus does not).
pub fn now_us() -> i64 {
    heatmesh_base::now_us() as i64
}
