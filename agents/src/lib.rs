//! heatmesh-agents: the GL-0xx sub-agents.
//!
//! [`calc`] holds the pure calculations (no actors, no I/O). [`registry`] maps agent kinds to
//! type-erased runners, so the mesh serves any kind without knowing its types. [`plant`] is
//! the plant supervisor and [`actor`] the thin actor serving one kind.

pub mod actor;
/// The pure calculations, re-exported so `heatmesh_agents::calc::...` paths keep working.
pub use heatmesh_calc as calc;
pub mod fault;
pub mod messages;
pub mod plant;
pub mod plant_spec;
pub mod registry;
pub mod supervision;

pub use messages::{AgentStatus, Assignment, EventSink, Outcome, PlantEvent};
pub use plant::{PlantArgs, PlantMsg, PlantSupervisor};
pub use plant_spec::PlantSpec;
pub use supervision::RestartPolicy;
