//! What a plant is, as the fleet configuration describes it.

use heatmesh_ingest::PlantFeeds;
use serde::{Deserialize, Serialize};

/// One plant of the fleet: its units and the sub-agents it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantSpec {
    /// Stable id, e.g. `Plant-001`; tasks name their plant by it.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Heat-producing units (boilers, heat pumps, CHP, recovery), by name.
    #[serde(default)]
    pub units: Vec<String>,
    /// Sub-agent kinds this plant runs, e.g. `["GL-009"]`.
    pub agents: Vec<String>,
    /// GL-009 balance closure alert threshold for this plant, percent.
    #[serde(default = "default_threshold")]
    pub balance_threshold_pct: f64,
    /// Its meters and the sources they are read from (configured as `[[plants.sources]]` and
    /// `[[plants.meters]]`); travels with the spec so the hosting node runs the connectors.
    #[serde(default, skip_serializing_if = "PlantFeeds::is_empty")]
    pub feeds: PlantFeeds,
}

fn default_threshold() -> f64 {
    crate::calc::gl009_thermal::DEFAULT_CLOSURE_THRESHOLD_PCT
}
