//! heatmesh-sim: failover drills and load tests against a real mesh.
//!
//! Thin for now: the drill runner, fault injection over the transport, the blackhole proxy
//! and the invariant checker arrive with the multi-node mesh. Rehearsal faults inside a
//! plant (panicking or slow agents) already exist: see `MeshService.InjectFault`.

/// Version of the simulation harness, reported by drills.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
