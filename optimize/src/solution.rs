//! Result types returned by [`super::optimize`] (serialisable to JSON for the CLI and gRPC).

use serde::{Deserialize, Serialize};

use super::formulate::Engine;
use super::model::{Dispatch, Model};
use super::scenario::Mode;
use super::verify::Violation;

/// Outcome class of a dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Proven optimal and every balance closes without slack.
    Optimal,
    /// Proven optimal for the elastic model, but some demand is unserved or heat dumped.
    FeasibleWithSlack,
    /// Valid dispatch from the exact solver without an optimality proof (MILP stopped at the
    /// time budget with an incumbent); see `gap`.
    Feasible,
    /// Strict mode and the balances cannot close; `violations` names the plants and amounts
    /// (from the elastic diagnosis whose dispatch is shown).
    Infeasible,
    /// Produced by the greedy heuristic; no optimality claim (see `gap` when a bound is known).
    Heuristic,
}

/// Algorithm that produced the returned dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmUsed {
    /// Linear program.
    Lp,
    /// Mixed-integer linear program.
    Milp,
    /// Greedy merit order.
    Greedy,
}

/// Setpoint and cost of one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitSetpoint {
    /// Unit id.
    pub id: String,
    /// Plant id.
    pub plant: String,
    /// On/off state for switchable units; `None` for continuous units.
    pub on: Option<bool>,
    /// Heat output, MW.
    pub heat_mw: f64,
    /// Fuel or electricity input, MW (on the unit's stated basis).
    pub input_mw: f64,
    /// Heat cost of this unit, EUR/MWh heat (energy + carbon).
    pub heat_cost_eur_mwh: f64,
    /// Fuel or electricity cost, EUR/h.
    pub energy_cost_eur_h: f64,
    /// Carbon cost, EUR/h.
    pub carbon_cost_eur_h: f64,
    /// Startup cost charged in this period, EUR.
    pub startup_cost_eur: f64,
    /// CO2 emitted, t/h.
    pub co2_t_h: f64,
}

/// Flow on one link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkFlow {
    /// Link id.
    pub id: String,
    /// Sending plant id.
    pub from: String,
    /// Receiving plant id.
    pub to: String,
    /// Heat sent, MW.
    pub sent_mw: f64,
    /// Heat arriving, MW.
    pub delivered_mw: f64,
    /// Heat lost in transit, MW.
    pub loss_mw: f64,
    /// Link cost, EUR/h.
    pub cost_eur_h: f64,
}

/// Heat balance and price at one plant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlantResult {
    /// Plant id.
    pub id: String,
    /// Demand, MW.
    pub demand_mw: f64,
    /// Own production, MW.
    pub produced_mw: f64,
    /// Heat arriving over links (after losses), MW.
    pub imported_mw: f64,
    /// Heat sent out over links (before losses), MW.
    pub exported_mw: f64,
    /// Demand not met, MW.
    pub unserved_mw: f64,
    /// Surplus not absorbed, MW.
    pub dumped_mw: f64,
    /// Cost of one more MWh of demand here (balance-row dual), EUR/MWh, when computed.
    pub marginal_cost_eur_mwh: Option<f64>,
}

/// Objective split into its parts; `total_eur_h` equals `DispatchResult::objective_eur_h`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CostBreakdown {
    /// Fuel for boilers, CHP and waste-heat units, EUR/h.
    pub fuel_eur_h: f64,
    /// Electricity for heat pumps, EUR/h.
    pub electricity_eur_h: f64,
    /// CO2 at the carbon price, EUR/h.
    pub carbon_eur_h: f64,
    /// Startup costs of switchable units started this period, EUR.
    pub startup_eur: f64,
    /// Link costs, EUR/h.
    pub links_eur_h: f64,
    /// M x unserved heat, EUR/h.
    pub unserved_penalty_eur_h: f64,
    /// Dump penalty x dumped heat, EUR/h.
    pub dump_penalty_eur_h: f64,
    /// Sum of all of the above.
    pub total_eur_h: f64,
}

/// Everything an operator needs from one optimisation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchResult {
    /// Outcome class.
    pub status: Status,
    /// Algorithm that produced the dispatch shown.
    pub algorithm: AlgorithmUsed,
    /// Solver engine, when an exact solver produced the dispatch.
    pub engine: Option<Engine>,
    /// Why the greedy fallback was used instead of the requested solver.
    pub fallback_reason: Option<String>,
    /// Balance mode the problem was solved in.
    pub mode: Mode,
    /// Total cost including penalties, EUR/h, recomputed from the dispatch.
    pub objective_eur_h: f64,
    /// Best proven lower bound on the objective (LP optimum or relaxation), when known.
    pub lower_bound_eur_h: Option<f64>,
    /// Relative gap (objective - bound) / max(|objective|, 1), when a bound is known.
    pub gap: Option<f64>,
    /// Cost parts.
    pub costs: CostBreakdown,
    /// Total CO2, t/h.
    pub co2_t_h: f64,
    /// Unit setpoints, in scenario order.
    pub units: Vec<UnitSetpoint>,
    /// Link flows, in scenario order.
    pub links: Vec<LinkFlow>,
    /// Plant balances, in scenario order.
    pub plants: Vec<PlantResult>,
    /// How `marginal_cost_eur_mwh` was obtained (e.g. `clarabel_dual`), or why it is absent.
    pub marginal_cost_method: Option<String>,
    /// Every violated constraint: slack in elastic mode, the cause in strict mode.
    pub violations: Vec<Violation>,
    /// Non-fatal findings (e.g. M too low, solver thread abandoned).
    pub warnings: Vec<String>,
    /// Penalty M used, EUR/MWh.
    pub unserved_penalty_eur_mwh: f64,
    /// Dump penalty used, EUR/MWh.
    pub dump_penalty_eur_mwh: f64,
    /// Wall time of the primal solve (or heuristic), ms.
    pub solve_time_ms: f64,
    /// Wall time of the whole call including checks and marginal costs, ms.
    pub total_time_ms: f64,
}

impl DispatchResult {
    /// Total unserved heat over all plants, MW.
    pub fn unserved_mw(&self) -> f64 {
        self.plants.iter().map(|p| p.unserved_mw).sum()
    }

    /// Total dumped heat over all plants, MW.
    pub fn dumped_mw(&self) -> f64 {
        self.plants.iter().map(|p| p.dumped_mw).sum()
    }

    /// Setpoint of the unit with this id.
    pub fn unit(&self, id: &str) -> Option<&UnitSetpoint> {
        self.units.iter().find(|u| u.id == id)
    }

    /// Flow on the link with this id.
    pub fn link(&self, id: &str) -> Option<&LinkFlow> {
        self.links.iter().find(|l| l.id == id)
    }

    /// Balance of the plant with this id.
    pub fn plant(&self, id: &str) -> Option<&PlantResult> {
        self.plants.iter().find(|p| p.id == id)
    }
}

/// Replace a non-finite number by 0 so serialised output never carries NaN; callers verify
/// finiteness before this, so it only guards against arithmetic surprises in reporting.
fn fin(v: f64) -> f64 {
    // `+ 0.0` also turns the -0.0 of an empty f64 sum into 0.0.
    if v.is_finite() { v + 0.0 } else { 0.0 }
}

/// The report parts derived purely from a dispatch.
pub(crate) struct Report {
    pub units: Vec<UnitSetpoint>,
    pub links: Vec<LinkFlow>,
    pub plants: Vec<PlantResult>,
    pub costs: CostBreakdown,
    pub co2_t_h: f64,
}

pub(crate) fn report(m: &Model, x: &Dispatch, marginal: Option<&[f64]>) -> Report {
    let mut costs = CostBreakdown::default();
    let mut co2 = 0.0;
    let units: Vec<UnitSetpoint> = m
        .units
        .iter()
        .enumerate()
        .map(|(k, u)| {
            let q = x.q[k];
            let energy = u.cost.energy_eur_mwh * q;
            let carbon = u.cost.carbon_eur_mwh * q;
            let startup = if u.switchable && x.on[k] {
                u.startup
            } else {
                0.0
            };
            if u.cost.electric {
                costs.electricity_eur_h += energy;
            } else {
                costs.fuel_eur_h += energy;
            }
            costs.carbon_eur_h += carbon;
            costs.startup_eur += startup;
            let e = u.cost.co2_t_per_mwh * q;
            co2 += e;
            UnitSetpoint {
                id: u.id.clone(),
                plant: m.plants[u.plant].id.clone(),
                on: u.switchable.then_some(x.on[k]),
                heat_mw: fin(q),
                input_mw: fin(q * u.cost.input_per_heat),
                heat_cost_eur_mwh: fin(u.cost.total_eur_mwh),
                energy_cost_eur_h: fin(energy),
                carbon_cost_eur_h: fin(carbon),
                startup_cost_eur: fin(startup),
                co2_t_h: fin(e),
            }
        })
        .collect();
    let links: Vec<LinkFlow> = m
        .links
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let f = x.f[k];
            costs.links_eur_h += l.cost * f;
            LinkFlow {
                id: l.id.clone(),
                from: m.plants[l.from].id.clone(),
                to: m.plants[l.to].id.clone(),
                sent_mw: fin(f),
                delivered_mw: fin(f * l.eta),
                loss_mw: fin(f * (1.0 - l.eta)),
                cost_eur_h: fin(l.cost * f),
            }
        })
        .collect();
    let plants: Vec<PlantResult> = m
        .plants
        .iter()
        .enumerate()
        .map(|(p, plant)| {
            costs.unserved_penalty_eur_h += m.m * x.s[p];
            costs.dump_penalty_eur_h += m.dump * x.d[p];
            let produced: f64 = m.units_at[p].iter().map(|&u| x.q[u]).sum();
            let imported: f64 = m.links_in[p].iter().map(|&l| m.links[l].eta * x.f[l]).sum();
            let exported: f64 = m.links_out[p].iter().map(|&l| x.f[l]).sum();
            PlantResult {
                id: plant.id.clone(),
                demand_mw: plant.demand,
                produced_mw: fin(produced),
                imported_mw: fin(imported),
                exported_mw: fin(exported),
                unserved_mw: fin(x.s[p]),
                dumped_mw: fin(x.d[p]),
                marginal_cost_eur_mwh: marginal
                    .and_then(|v| v.get(p).copied())
                    .filter(|v| v.is_finite()),
            }
        })
        .collect();
    costs.total_eur_h = costs.fuel_eur_h
        + costs.electricity_eur_h
        + costs.carbon_eur_h
        + costs.startup_eur
        + costs.links_eur_h
        + costs.unserved_penalty_eur_h
        + costs.dump_penalty_eur_h;
    for c in [
        &mut costs.fuel_eur_h,
        &mut costs.electricity_eur_h,
        &mut costs.carbon_eur_h,
        &mut costs.startup_eur,
        &mut costs.links_eur_h,
        &mut costs.unserved_penalty_eur_h,
        &mut costs.dump_penalty_eur_h,
        &mut costs.total_eur_h,
    ] {
        *c = fin(*c);
    }
    Report {
        units,
        links,
        plants,
        costs,
        co2_t_h: fin(co2),
    }
}
