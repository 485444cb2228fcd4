//! The drills' seeded generator: heatmesh-base's SplitMix64, so a timeline replays from its
//! seed on any build.

pub use heatmesh_base::Rng;
