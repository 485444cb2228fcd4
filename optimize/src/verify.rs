//! Independent check of a dispatch against every constraint of the model, so that no solver
//! answer (and no heuristic bug) reaches an operator unchecked.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::model::{Dispatch, Model};
use super::scenario::{Scenario, ScenarioError};
use super::solution::DispatchResult;

/// Absolute tolerance in MW, scaled up by the magnitude of the bound when it exceeds 1 MW.
pub const TOLERANCE: f64 = 1e-6;

/// Category of a violated constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Demand not met at a plant (elastic slack s_p > 0).
    Unserved,
    /// Heat produced or imported but not absorbed at a plant (elastic slack d_p > 0).
    Dumped,
    /// The plant balance does not close even counting slack.
    Balance,
    /// Unit output outside [floor, max] while on.
    UnitBound,
    /// A switchable unit produces while off.
    Binary,
    /// Link flow above capacity.
    LinkCapacity,
    /// A quantity that must be >= 0 is negative.
    Negative,
    /// NaN or infinite value.
    NonFinite,
    /// The result refers to an id the scenario does not have, or omits one.
    UnknownId,
}

/// One violated constraint with its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// Constraint name, e.g. `balance[B]`, `unit[oil].max`, `link[AB].capacity`.
    pub constraint: String,
    /// Category.
    pub kind: ViolationKind,
    /// Size of the violation in MW (always >= 0).
    pub amount_mw: f64,
    /// Human-readable explanation.
    pub detail: String,
}

impl Violation {
    /// Slack violations are legitimate in elastic mode (they are what the penalty prices);
    /// all others mean the dispatch is not physically valid.
    pub fn is_slack(&self) -> bool {
        matches!(self.kind, ViolationKind::Unserved | ViolationKind::Dumped)
    }
}

fn tol(scale: f64) -> f64 {
    TOLERANCE * scale.abs().max(1.0)
}

/// Check a raw dispatch; returns every violation, slack included.
pub(crate) fn check(m: &Model, x: &Dispatch) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut push = |constraint: String, kind, amount: f64, detail: String| {
        v.push(Violation {
            constraint,
            kind,
            amount_mw: if amount.is_finite() {
                amount.abs()
            } else {
                0.0
            },
            detail,
        })
    };
    let lens_ok = x.q.len() == m.units.len()
        && x.on.len() == m.units.len()
        && x.f.len() == m.links.len()
        && x.s.len() == m.plants.len()
        && x.d.len() == m.plants.len();
    if !lens_ok {
        push(
            "dispatch".into(),
            ViolationKind::UnknownId,
            0.0,
            "dispatch vectors do not match the model size".into(),
        );
        return v;
    }
    for (k, u) in m.units.iter().enumerate() {
        let q = x.q[k];
        let name = format!("unit[{}]", u.id);
        if !q.is_finite() {
            push(
                name,
                ViolationKind::NonFinite,
                0.0,
                format!("heat output of unit {} is {q}", u.id),
            );
            continue;
        }
        if u.switchable && !x.on[k] {
            if q.abs() > tol(0.0) {
                push(
                    format!("{name}.off"),
                    ViolationKind::Binary,
                    q,
                    format!("unit {} is off but produces {q:.6} MW", u.id),
                );
            }
            continue;
        }
        if q < u.lo - tol(u.lo) {
            let kind = if q < -tol(0.0) {
                ViolationKind::Negative
            } else {
                ViolationKind::UnitBound
            };
            push(
                format!("{name}.min"),
                kind,
                u.lo - q,
                format!(
                    "unit {} produces {q:.6} MW, below its floor {} MW",
                    u.id, u.lo
                ),
            );
        }
        if q > u.hi + tol(u.hi) {
            push(
                format!("{name}.max"),
                ViolationKind::UnitBound,
                q - u.hi,
                format!(
                    "unit {} produces {q:.6} MW, above its maximum {} MW",
                    u.id, u.hi
                ),
            );
        }
    }
    for (k, l) in m.links.iter().enumerate() {
        let f = x.f[k];
        let name = format!("link[{}]", l.id);
        if !f.is_finite() {
            push(
                name,
                ViolationKind::NonFinite,
                0.0,
                format!("flow on link {} is {f}", l.id),
            );
            continue;
        }
        if f < -tol(0.0) {
            push(
                format!("{name}.min"),
                ViolationKind::Negative,
                -f,
                format!("flow on link {} is negative ({f:.6} MW)", l.id),
            );
        }
        if f > l.cap + tol(l.cap) {
            push(
                format!("{name}.capacity"),
                ViolationKind::LinkCapacity,
                f - l.cap,
                format!(
                    "link {} carries {f:.6} MW, above its capacity {} MW",
                    l.id, l.cap
                ),
            );
        }
    }
    for (p, plant) in m.plants.iter().enumerate() {
        let (s, d) = (x.s[p], x.d[p]);
        let name = format!("balance[{}]", plant.id);
        if !(s.is_finite() && d.is_finite()) {
            push(
                name,
                ViolationKind::NonFinite,
                0.0,
                format!("slack at plant {} is not finite", plant.id),
            );
            continue;
        }
        for (val, what) in [(s, "unserved"), (d, "dumped")] {
            if val < -tol(0.0) {
                push(
                    format!("{name}.{what}"),
                    ViolationKind::Negative,
                    -val,
                    format!(
                        "{what} heat at plant {} is negative ({val:.6} MW)",
                        plant.id
                    ),
                );
            }
        }
        let residual = x.surplus(m, p) + s - d;
        if !residual.is_finite() || residual.abs() > tol(plant.demand) {
            push(
                name.clone(),
                ViolationKind::Balance,
                residual,
                format!(
                    "balance at plant {} is off by {residual:.6} MW after slack",
                    plant.id
                ),
            );
        }
        if s > tol(plant.demand) {
            push(
                name.clone(),
                ViolationKind::Unserved,
                s,
                format!(
                    "plant {} balance cannot close: {s:.6} MW of its {} MW demand unserved",
                    plant.id, plant.demand
                ),
            );
        }
        if d > tol(plant.demand) {
            push(
                name,
                ViolationKind::Dumped,
                d,
                format!(
                    "plant {} balance cannot close: {d:.6} MW surplus heat (unit floors or \
                     imports) cannot be absorbed",
                    plant.id
                ),
            );
        }
    }
    v
}

/// Re-check a returned result against its scenario by id (e.g. a stored or remote result).
/// Slack shows up as `Unserved` / `Dumped` entries; anything else means the result is invalid.
pub fn verify(
    scenario: &Scenario,
    result: &DispatchResult,
) -> Result<Vec<Violation>, ScenarioError> {
    let m = Model::new(scenario)?;
    let mut x = Dispatch::zero(&m);
    let mut extra = Vec::new();
    let unit_idx: HashMap<&str, usize> = m
        .units
        .iter()
        .enumerate()
        .map(|(k, u)| (u.id.as_str(), k))
        .collect();
    let link_idx: HashMap<&str, usize> = m
        .links
        .iter()
        .enumerate()
        .map(|(k, l)| (l.id.as_str(), k))
        .collect();
    let plant_idx: HashMap<&str, usize> = m
        .plants
        .iter()
        .enumerate()
        .map(|(k, p)| (p.id.as_str(), k))
        .collect();
    let mut unknown = |what: &str, id: &str| {
        extra.push(Violation {
            constraint: format!("{what}[{id}]"),
            kind: ViolationKind::UnknownId,
            amount_mw: 0.0,
            detail: format!("result names {what} {id}, which the scenario does not have"),
        })
    };
    for u in &result.units {
        match unit_idx.get(u.id.as_str()) {
            Some(&k) => {
                x.q[k] = u.heat_mw;
                x.on[k] = u.on.unwrap_or(true);
            }
            None => unknown("unit", &u.id),
        }
    }
    for l in &result.links {
        match link_idx.get(l.id.as_str()) {
            Some(&k) => x.f[k] = l.sent_mw,
            None => unknown("link", &l.id),
        }
    }
    for p in &result.plants {
        match plant_idx.get(p.id.as_str()) {
            Some(&k) => {
                x.s[k] = p.unserved_mw;
                x.d[k] = p.dumped_mw;
            }
            None => unknown("plant", &p.id),
        }
    }
    let mut v = check(&m, &x);
    v.extend(extra);
    Ok(v)
}
