//! heatmesh-agents: the GL-0xx sub-agents.
//!
//! [`calc`] holds the pure calculations (no actors, no I/O). [`registry`] maps agent kinds to
//! type-erased runners so the mesh can serve any kind without knowing its types.

pub mod calc;
pub mod registry;
