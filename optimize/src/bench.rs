//! Seeded generator of feasible scenarios and the benchmark entry point used by the CLI.
//!
//! The generator draws from heatmesh-base's seeded SplitMix64, so results are reproducible
//! across platforms and need no `rand` dependency.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::scenario::{
    Algorithm, EmissionFactor, EmissionUnit, Link, LpSolverChoice, Options, Plant, Scenario, Unit,
    UnitKind,
};
use super::solution::{AlgorithmUsed, Status};
use super::{Engine, optimize};
use heatmesh_base::Rng;

/// Shape of a generated instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeneratorParams {
    /// Number of plants.
    pub plants: usize,
    /// Units per plant (at least 1 is generated).
    pub units_per_plant: usize,
    /// Outgoing links per plant, to random other plants.
    pub links_per_plant: usize,
    /// Make about half of the units (never a plant's first) switchable with floors and
    /// startup costs.
    pub milp: bool,
}

/// IPCC 2006 net factors (kg CO2/TJ) with a plausible fuel price range (EUR/MWh).
const FUELS: [(&str, f64, f64, f64); 4] = [
    ("natural_gas", 56_100.0, 25.0, 45.0),
    ("gas_oil", 74_100.0, 45.0, 65.0),
    ("bituminous_coal", 94_600.0, 10.0, 20.0),
    ("lpg", 63_100.0, 40.0, 55.0),
];

/// Build a random instance that is feasible in strict mode: every plant's first unit is
/// continuous and alone covers the plant's demand, so all switchable units may stay off.
pub fn generate(params: GeneratorParams, seed: u64) -> Scenario {
    let mut rng = Rng::new(seed ^ 0x6C01_0001_u64);
    let np = params.plants.max(1);
    let nu = params.units_per_plant.max(1);
    let mut plants = Vec::with_capacity(np);
    let mut units = Vec::with_capacity(np * nu);
    for p in 0..np {
        let pid = format!("P{p}");
        let mut first_cap = 0.0;
        for k in 0..nu {
            let max = (rng.uniform(5.0, 40.0) * 10.0).round() / 10.0;
            if k == 0 {
                first_cap = max;
            }
            let kind = match rng.below(10) {
                0..=4 => UnitKind::Boiler,
                5..=6 => UnitKind::HeatPump,
                7..=8 => UnitKind::Chp,
                _ => UnitKind::WasteHeat,
            };
            let (fuel, ef, lo, hi) = FUELS[rng.below(FUELS.len())];
            let mut u = Unit {
                id: format!("P{p}U{k}"),
                plant: pid.clone(),
                kind,
                min_mw: 0.0,
                max_mw: max,
                efficiency: None,
                cop: None,
                fuel: None,
                fuel_price_eur_mwh: None,
                electricity_price_eur_mwh: None,
                emission_factor: None,
                energy_basis: Default::default(),
                gcv_ncv_ratio: None,
                on_off: None,
                min_load_mw: None,
                startup_cost_eur: 0.0,
                initially_on: false,
            };
            match kind {
                UnitKind::Boiler | UnitKind::Chp => {
                    u.efficiency = Some(rng.uniform(0.75, 0.95));
                    u.fuel = Some(fuel.to_string());
                    u.fuel_price_eur_mwh = Some(rng.uniform(lo, hi));
                    u.emission_factor = Some(EmissionFactor {
                        value: ef,
                        unit: EmissionUnit::KgCo2PerTjNet,
                    });
                }
                UnitKind::HeatPump => {
                    u.cop = Some(rng.uniform(2.5, 4.0));
                    u.electricity_price_eur_mwh = Some(rng.uniform(40.0, 150.0));
                }
                UnitKind::WasteHeat => {
                    u.max_mw = (rng.uniform(1.0, 6.0) * 10.0).round() / 10.0;
                    if k == 0 {
                        first_cap = u.max_mw;
                    }
                    u.fuel_price_eur_mwh = Some(rng.uniform(0.0, 5.0));
                }
            }
            if params.milp && k > 0 && rng.unit() < 0.5 {
                u.on_off = Some(true);
                u.min_load_mw = Some((u.max_mw * rng.uniform(0.2, 0.5) * 10.0).round() / 10.0);
                u.startup_cost_eur = (rng.uniform(0.0, 400.0)).round();
                u.initially_on = rng.unit() < 0.2;
            }
            units.push(u);
        }
        plants.push(Plant {
            id: pid,
            name: None,
            demand_mw: (first_cap * rng.uniform(0.3, 0.95) * 100.0).round() / 100.0,
        });
    }
    let mut links = Vec::new();
    if np > 1 {
        for p in 0..np {
            for k in 0..params.links_per_plant {
                let mut q = rng.below(np - 1);
                if q >= p {
                    q += 1;
                }
                let (from, to) = if rng.unit() < 0.5 { (p, q) } else { (q, p) };
                links.push(Link {
                    id: format!("L{p}_{k}"),
                    from: format!("P{from}"),
                    to: format!("P{to}"),
                    capacity_mw: (rng.uniform(2.0, 20.0) * 10.0).round() / 10.0,
                    loss_factor: rng.uniform(0.0, 0.1),
                    cost_eur_mwh: rng.uniform(0.0, 3.0),
                });
            }
        }
    }
    Scenario {
        name: Some(format!("generated seed {seed}")),
        plants,
        units,
        links,
        carbon_price_eur_t: rng.uniform(30.0, 100.0),
        options: Options {
            time_budget_ms: 60_000,
            ..Options::default()
        },
    }
}

/// Timings and outcome of one generated instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchFigures {
    /// Instance shape.
    pub params: GeneratorParams,
    /// Seed used.
    pub seed: u64,
    /// Units in the instance.
    pub units: usize,
    /// Links in the instance.
    pub links: usize,
    /// Switchable units (binaries).
    pub binaries: usize,
    /// Algorithm of the returned dispatch.
    pub algorithm: AlgorithmUsed,
    /// Engine of the returned dispatch.
    pub engine: Option<Engine>,
    /// Status of the returned dispatch.
    pub status: Status,
    /// Objective, EUR/h.
    pub objective_eur_h: f64,
    /// Primal solve wall time, ms.
    pub solve_ms: f64,
    /// Whole `optimize` call (model build, solve, verification, marginals), ms.
    pub total_ms: f64,
    /// Greedy heuristic wall time on the same instance, ms.
    pub greedy_ms: f64,
    /// Greedy objective, EUR/h (`None` if the heuristic failed).
    pub greedy_objective_eur_h: Option<f64>,
    /// Error text if `optimize` failed.
    pub error: Option<String>,
}

/// Generate one instance and time `optimize` on it (default options, no marginal costs) plus
/// the greedy heuristic; the CLI calls this.
pub fn bench(
    plants: usize,
    units_per_plant: usize,
    links_per_plant: usize,
    milp: bool,
    seed: u64,
) -> BenchFigures {
    bench_with(
        GeneratorParams {
            plants,
            units_per_plant,
            links_per_plant,
            milp,
        },
        seed,
        LpSolverChoice::Auto,
        false,
    )
}

/// As [`bench()`] with an explicit LP engine and marginal-cost switch, for engine comparisons.
pub fn bench_with(
    params: GeneratorParams,
    seed: u64,
    lp_solver: LpSolverChoice,
    marginal_costs: bool,
) -> BenchFigures {
    let mut sc = generate(params, seed);
    sc.options.lp_solver = lp_solver;
    sc.options.marginal_costs = marginal_costs;
    let units = sc.units.len();
    let links = sc.links.len();
    let binaries = sc.units.iter().filter(|u| u.is_switchable()).count();
    let t = Instant::now();
    let r = optimize(&sc);
    let total_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut g = sc.clone();
    g.options.algorithm = Algorithm::Greedy;
    g.options.marginal_costs = false;
    let tg = Instant::now();
    let gr = optimize(&g);
    let greedy_wall = tg.elapsed().as_secs_f64() * 1e3;
    let (greedy_ms, greedy_obj) = match &gr {
        Ok(r) => (r.solve_time_ms, Some(r.objective_eur_h)),
        Err(_) => (greedy_wall, None),
    };
    match r {
        Ok(r) => BenchFigures {
            params,
            seed,
            units,
            links,
            binaries,
            algorithm: r.algorithm,
            engine: r.engine,
            status: r.status,
            objective_eur_h: r.objective_eur_h,
            solve_ms: r.solve_time_ms,
            total_ms,
            greedy_ms,
            greedy_objective_eur_h: greedy_obj,
            error: None,
        },
        Err(e) => BenchFigures {
            params,
            seed,
            units,
            links,
            binaries,
            algorithm: AlgorithmUsed::Greedy,
            engine: None,
            status: Status::Infeasible,
            objective_eur_h: 0.0,
            solve_ms: total_ms,
            total_ms,
            greedy_ms,
            greedy_objective_eur_h: greedy_obj,
            error: Some(e.to_string()),
        },
    }
}
