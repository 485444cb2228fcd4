//! Indexed form of a validated scenario, shared by the solver, the heuristic and the verifier,
//! so that all three read exactly the same bounds and costs.

use super::scenario::{HeatCost, Mode, Scenario, ScenarioError};

/// A plant after validation.
#[derive(Debug, Clone)]
pub(crate) struct PPlant {
    pub id: String,
    pub demand: f64,
}

/// A unit after validation, with its heat cost resolved.
#[derive(Debug, Clone)]
pub(crate) struct PUnit {
    pub id: String,
    pub plant: usize,
    /// Floor: always for a continuous unit, only when on for a switchable one.
    pub lo: f64,
    pub hi: f64,
    pub switchable: bool,
    /// Startup cost actually charged when on (0 if the unit is already running).
    pub startup: f64,
    pub cost: HeatCost,
}

/// A link after validation.
#[derive(Debug, Clone)]
pub(crate) struct PLink {
    pub id: String,
    pub from: usize,
    pub to: usize,
    pub cap: f64,
    /// Delivered fraction, 1 - loss.
    pub eta: f64,
    pub cost: f64,
}

/// The whole problem in index form.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub plants: Vec<PPlant>,
    pub units: Vec<PUnit>,
    pub links: Vec<PLink>,
    pub elastic: bool,
    /// Penalty per MWh unserved.
    pub m: f64,
    /// Penalty per MWh dumped.
    pub dump: f64,
    pub units_at: Vec<Vec<usize>>,
    pub links_in: Vec<Vec<usize>>,
    pub links_out: Vec<Vec<usize>>,
}

impl Model {
    /// Validates and indexes; the only way to obtain a `Model`.
    pub fn new(sc: &Scenario) -> Result<Model, ScenarioError> {
        sc.validate()?;
        let plants: Vec<PPlant> = sc
            .plants
            .iter()
            .map(|p| PPlant {
                id: p.id.clone(),
                demand: p.demand_mw,
            })
            .collect();
        let mut units = Vec::with_capacity(sc.units.len());
        let mut errs = Vec::new();
        let plant_index: std::collections::HashMap<&str, usize> = sc
            .plants
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.as_str(), i))
            .collect();
        for (i, u) in sc.units.iter().enumerate() {
            let cost = match u.heat_cost(sc.carbon_price_eur_t) {
                Ok(c) => c,
                Err(mut e) => {
                    e.path = format!("units[{i}].{}", e.path);
                    errs.push(e);
                    continue;
                }
            };
            let switchable = u.is_switchable();
            let Some(&plant) = plant_index.get(u.plant.as_str()) else {
                continue;
            };
            units.push(PUnit {
                id: u.id.clone(),
                plant,
                lo: if switchable {
                    u.on_floor_mw()
                } else {
                    u.min_mw
                },
                hi: u.max_mw,
                switchable,
                startup: if switchable && !u.initially_on {
                    u.startup_cost_eur
                } else {
                    0.0
                },
                cost,
            });
        }
        if !errs.is_empty() {
            return Err(ScenarioError::Invalid(errs));
        }
        let links: Vec<PLink> = sc
            .links
            .iter()
            .filter_map(|l| {
                Some(PLink {
                    id: l.id.clone(),
                    from: *plant_index.get(l.from.as_str())?,
                    to: *plant_index.get(l.to.as_str())?,
                    cap: l.capacity_mw,
                    eta: 1.0 - l.loss_factor,
                    cost: l.cost_eur_mwh,
                })
            })
            .collect();
        let n = plants.len();
        let mut units_at = vec![Vec::new(); n];
        for (k, u) in units.iter().enumerate() {
            units_at[u.plant].push(k);
        }
        let mut links_in = vec![Vec::new(); n];
        let mut links_out = vec![Vec::new(); n];
        for (k, l) in links.iter().enumerate() {
            links_in[l.to].push(k);
            links_out[l.from].push(k);
        }
        Ok(Model {
            plants,
            units,
            links,
            elastic: sc.options.mode == Mode::Elastic,
            m: sc.unserved_penalty(),
            dump: sc.dump_penalty(),
            units_at,
            links_in,
            links_out,
        })
    }

    /// Whether the MILP formulation is needed.
    pub fn has_binaries(&self) -> bool {
        self.units.iter().any(|u| u.switchable)
    }

    /// Heat arriving at plant `p` from all links minus heat sent out, for flows `f`.
    pub fn net_import(&self, p: usize, f: &[f64]) -> f64 {
        let inflow: f64 = self.links_in[p]
            .iter()
            .map(|&l| self.links[l].eta * f[l])
            .sum();
        let outflow: f64 = self.links_out[p].iter().map(|&l| f[l]).sum();
        inflow - outflow
    }
}

/// Raw decision values in model index order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dispatch {
    pub q: Vec<f64>,
    /// On/off state; meaningful for switchable units only (continuous units are `true`).
    pub on: Vec<bool>,
    pub f: Vec<f64>,
    pub s: Vec<f64>,
    pub d: Vec<f64>,
}

impl Dispatch {
    /// All-zero dispatch with every switchable unit off.
    pub fn zero(m: &Model) -> Dispatch {
        Dispatch {
            q: vec![0.0; m.units.len()],
            on: m.units.iter().map(|u| !u.switchable).collect(),
            f: vec![0.0; m.links.len()],
            s: vec![0.0; m.plants.len()],
            d: vec![0.0; m.plants.len()],
        }
    }

    /// Supply minus demand at plant `p`, ignoring slack.
    pub fn surplus(&self, m: &Model, p: usize) -> f64 {
        let produced: f64 = m.units_at[p].iter().map(|&u| self.q[u]).sum();
        produced + m.net_import(p, &self.f) - m.plants[p].demand
    }

    /// Recompute slack from the residual so balances close exactly; solver round-off would
    /// otherwise appear as tiny phantom violations or both slacks being positive at once.
    pub fn close_slack(&mut self, m: &Model) {
        for p in 0..m.plants.len() {
            let r = self.surplus(m, p);
            self.s[p] = (-r).max(0.0);
            self.d[p] = r.max(0.0);
        }
    }

    /// Snap values that are within `tol` of a bound onto it, so output shows 0 not -3e-12.
    pub fn snap(&mut self, m: &Model, tol: f64) {
        let snap = |v: &mut f64, lo: f64, hi: f64| {
            if (*v - lo).abs() <= tol {
                *v = lo;
            } else if (*v - hi).abs() <= tol {
                *v = hi;
            }
        };
        for (k, u) in m.units.iter().enumerate() {
            if self.on[k] {
                snap(&mut self.q[k], u.lo, u.hi);
                snap(&mut self.q[k], 0.0, u.hi);
            } else {
                snap(&mut self.q[k], 0.0, 0.0);
            }
        }
        for (k, l) in m.links.iter().enumerate() {
            snap(&mut self.f[k], 0.0, l.cap);
        }
        for v in self.s.iter_mut().chain(self.d.iter_mut()) {
            snap(v, 0.0, 0.0);
        }
    }

    /// Objective value computed in Rust, independent of what the solver reports.
    pub fn objective(&self, m: &Model) -> f64 {
        let mut z = 0.0;
        for (k, u) in m.units.iter().enumerate() {
            z += u.cost.total_eur_mwh * self.q[k];
            if u.switchable && self.on[k] {
                z += u.startup;
            }
        }
        for (k, l) in m.links.iter().enumerate() {
            z += l.cost * self.f[k];
        }
        for p in 0..m.plants.len() {
            z += m.m * self.s[p] + m.dump * self.d[p];
        }
        z
    }
}
