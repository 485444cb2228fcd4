//! The master configuration of a load-test fleet: `Plant-001`.. built by cycling through the
//! sample fleet's plants (their `[plants.heat]` units and the links between them), so the
//! fleet optimizer has a plausible, feasible problem of the scenario's size.

use super::LoadtestError;
use heatmesh_agents::registry::{self, KINDS};
use heatmesh_master::config::{Config, SAMPLE_FLEET};
use heatmesh_master::heat_dispatch::GL002;
use std::collections::HashMap;

/// One generated plant.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPlant {
    /// `Plant-001`, `Plant-002`, ...
    pub id: String,
    /// Its sub-agent kinds.
    pub agents: Vec<&'static str>,
}

/// A generated master configuration and what it contains.
#[derive(Debug, Clone)]
pub struct GeneratedFleet {
    /// The configuration as TOML (the format of `config/fleet.toml`).
    pub toml: String,
    /// Its plants in order.
    pub plants: Vec<FleetPlant>,
}

/// A plant runs each agent kind at most once.
pub(super) fn max_agents_per_plant() -> usize {
    KINDS.len()
}

/// The `count` agent kinds of plant `index`. The setpoint consumer (GL-001) and GL-002 come
/// first: every fleet run sends each plant its setpoints, and GL-002 results replace the
/// configured boiler efficiencies, so each plant feeds the optimizer. The remaining slots
/// rotate through the other kinds from plant to plant so every kind is exercised.
pub fn plant_kinds(index: usize, count: usize) -> Vec<&'static str> {
    let gl002 = registry::lookup(GL002).map(|k| k.id);
    let mut pinned: Vec<&'static str> = gl002.into_iter().collect();
    if count >= 2 {
        pinned.extend(KINDS.iter().filter(|k| k.accepts_setpoints).map(|k| k.id));
    }
    let rest: Vec<&'static str> = KINDS
        .iter()
        .map(|k| k.id)
        .filter(|id| !pinned.contains(id))
        .collect();
    let mut kinds: Vec<&'static str> = pinned.into_iter().take(count).collect();
    let more = count.saturating_sub(kinds.len()).min(rest.len());
    if more > 0 {
        let start = index * more;
        kinds.extend((0..more).map(|j| rest[(start + j) % rest.len()]));
    }
    kinds.sort_unstable();
    kinds
}

fn fleet_err(what: impl Into<String>) -> LoadtestError {
    LoadtestError::Fleet(what.into())
}

/// Generates a fleet of `plants` plants with `sub_agents` sub-agents spread as evenly as
/// possible (the first `sub_agents % plants` plants get one more), and checks it with the
/// master's own configuration validation.
pub fn generate_fleet(plants: usize, sub_agents: usize) -> Result<GeneratedFleet, LoadtestError> {
    let mut base: toml::Table =
        toml::from_str(SAMPLE_FLEET).map_err(|e| fleet_err(format!("sample fleet: {e}")))?;
    let Some(toml::Value::Array(templates)) = base.remove("plants") else {
        return Err(fleet_err("sample fleet has no [[plants]]"));
    };
    let templates: Vec<toml::Table> = templates
        .into_iter()
        .filter_map(|v| match v {
            toml::Value::Table(t) => Some(t),
            _ => None,
        })
        .collect();
    if templates.is_empty() {
        return Err(fleet_err("sample fleet has no plant tables"));
    }
    let template_index: HashMap<String, usize> = templates
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((t.get("id")?.as_str()?.to_string(), i)))
        .collect();
    let heat = base
        .get_mut("heat")
        .and_then(|h| h.as_table_mut())
        .ok_or_else(|| fleet_err("sample fleet has no [heat] table"))?;
    let template_links = match heat.remove("links") {
        Some(toml::Value::Array(l)) => l,
        _ => Vec::new(),
    };

    let id_of = |i: usize| format!("Plant-{:03}", i + 1);
    let (base_share, extra) = (sub_agents / plants.max(1), sub_agents % plants.max(1));
    let mut out = Vec::with_capacity(plants);
    let mut tables = Vec::with_capacity(plants);
    for i in 0..plants {
        let mut t = templates[i % templates.len()].clone();
        let id = id_of(i);
        let name = t.get("name").and_then(|n| n.as_str()).unwrap_or("plant");
        let name = format!("{name} {}", i / templates.len() + 1);
        let kinds = plant_kinds(i, base_share + usize::from(i < extra));
        t.insert("id".into(), id.clone().into());
        t.insert("name".into(), name.into());
        // The predecessor's scenario drives tasks, not plant data: no connectors polling a
        // device nobody serves.
        t.remove("sources");
        t.remove("meters");
        t.insert(
            "agents".into(),
            toml::Value::Array(kinds.iter().map(|k| (*k).into()).collect()),
        );
        // Unit ids are fleet-wide: prefix each with its plant.
        if let Some(toml::Value::Array(units)) = t
            .get_mut("heat")
            .and_then(|h| h.as_table_mut())
            .and_then(|h| h.get_mut("units"))
        {
            for u in units.iter_mut().filter_map(|u| u.as_table_mut()) {
                if let Some(uid) = u.get("id").and_then(|v| v.as_str()) {
                    let uid = format!("P{:03}-{uid}", i + 1);
                    u.insert("id".into(), uid.into());
                }
            }
        }
        tables.push(toml::Value::Table(t));
        out.push(FleetPlant { id, agents: kinds });
    }
    // Each group of plants made from the templates gets the templates' links between them.
    let mut links = Vec::new();
    for group in 0..plants.div_ceil(templates.len()) {
        for l in template_links.iter().filter_map(|l| l.as_table()) {
            let end = |k: &str| {
                let i = template_index.get(l.get(k)?.as_str()?)?;
                let g = group * templates.len() + i;
                (g < plants).then_some(g)
            };
            let (Some(from), Some(to)) = (end("from"), end("to")) else {
                continue;
            };
            let mut l = l.clone();
            l.insert(
                "id".into(),
                format!("P{:03}-P{:03}", from + 1, to + 1).into(),
            );
            l.insert("from".into(), id_of(from).into());
            l.insert("to".into(), id_of(to).into());
            links.push(toml::Value::Table(l));
        }
    }
    heat.insert("links".into(), toml::Value::Array(links));
    // Fifteen nodes starting together on a small machine may take a few seconds to attach;
    // wait for each plant's own node rather than place it elsewhere and move it back.
    if let Some(p) = base.get_mut("placement").and_then(|p| p.as_table_mut()) {
        p.insert("startup_grace_ms".into(), toml::Value::Integer(15_000));
    }
    base.insert("plants".into(), toml::Value::Array(tables));
    let text = format!(
        "# Generated by heatmesh loadtest: {plants} plants, {sub_agents} sub-agents, built \
         from the sample fleet.\n{}",
        toml::to_string(&base).map_err(|e| fleet_err(e.to_string()))?
    );
    Config::from_toml_with_env(&text, Vec::new()).map_err(|e| fleet_err(e.to_string()))?;
    Ok(GeneratedFleet {
        toml: text,
        plants: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use heatmesh_master::optimize::optimize;

    #[test]
    fn kinds_pin_the_optimizer_agents_and_rotate_the_rest() {
        assert_eq!(plant_kinds(0, 1), vec!["GL-002"]);
        assert_eq!(plant_kinds(0, 2), vec!["GL-001", "GL-002"]);
        assert_eq!(
            plant_kinds(0, 5),
            vec!["GL-001", "GL-002", "GL-003", "GL-004", "GL-006"]
        );
        assert_eq!(
            plant_kinds(1, 5),
            vec!["GL-001", "GL-002", "GL-009", "GL-012", "GL-014"]
        );
        assert_eq!(plant_kinds(2, 5), plant_kinds(0, 5));
        assert_eq!(plant_kinds(3, 8).len(), 8);
    }

    /// The predecessor's fleet: 15 plants with 5 sub-agents each, a valid configuration whose
    /// heat problem is feasible (no unserved heat) with links inside each group of three.
    #[test]
    fn predecessor_fleet_is_valid_and_feasible() {
        let f = generate_fleet(15, 75).unwrap();
        assert_eq!(f.plants.len(), 15);
        assert!(f.plants.iter().all(|p| p.agents.len() == 5));
        assert_eq!(f.plants[14].id, "Plant-015");
        let cfg = Config::from_toml_with_env(&f.toml, Vec::new()).unwrap();
        assert_eq!(cfg.plants[3].agents, f.plants[3].agents);
        assert_eq!(cfg.placement.startup_grace_ms, 15_000);
        let heat = cfg.fleet_heat().unwrap();
        assert_eq!(heat.scenario.plants.len(), 15);
        assert_eq!(heat.scenario.units.len(), 30);
        assert_eq!(heat.scenario.links.len(), 15);
        assert!(
            heat.scenario
                .links
                .iter()
                .any(|l| l.id == "P004-P005" && l.from == "Plant-004")
        );
        let r = optimize(&heat.scenario).unwrap();
        assert!(r.plants.iter().all(|p| p.unserved_mw < 1e-9), "{r:?}");
    }

    #[test]
    fn uneven_share_and_partial_groups() {
        let f = generate_fleet(4, 9).unwrap();
        let per: Vec<usize> = f.plants.iter().map(|p| p.agents.len()).collect();
        assert_eq!(per, vec![3, 2, 2, 2]);
        let cfg = Config::from_toml_with_env(&f.toml, Vec::new()).unwrap();
        // Plant-004 starts a second group alone: no link has a missing end.
        assert_eq!(cfg.heat.links.len(), 3);
        let one = generate_fleet(1, 1).unwrap();
        assert_eq!(one.plants[0].agents, vec!["GL-002"]);
    }
}
