//! GL-001 setpoints at the plant: the plant-side agent that receives the master's
//! heat-distribution setpoints for its units, checks them and acknowledges them.
//!
//! It is what makes `RunHeatDistribution { dispatch_setpoints }` reach the plants as tasks: a
//! plant that runs it gets its share of the dispatch, refused if it is not physical (negative
//! or non-finite output, duplicate units), with the plant balance re-checked:
//! units + imported - exported + unserved - dumped = demand.

use super::{CalcError, Calculation, finite, non_negative};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Relative tolerance of the balance check (the optimizer's verifier uses 1e-6).
const BALANCE_TOLERANCE: f64 = 1e-6;

/// One unit's setpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSetpoint {
    /// Unit id as in the fleet configuration.
    pub id: String,
    /// Heat output to run at, MW.
    pub heat_mw: f64,
    /// On/off decision for switchable units (None: not switchable).
    #[serde(default)]
    pub on: Option<bool>,
}

/// The setpoints of one plant, as the master sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetpointsRequest {
    /// Who computed them (`GL-001`).
    #[serde(default)]
    pub source: String,
    /// The optimizer's status for the run (optimal, feasible_with_slack, heuristic, ...).
    #[serde(default)]
    pub status: String,
    /// The plant they are for.
    pub plant: String,
    /// Unit setpoints.
    pub units: Vec<UnitSetpoint>,
    /// The plant's heat demand, MW.
    pub demand_mw: f64,
    /// Heat arriving over links (after losses), MW.
    #[serde(default)]
    pub imported_mw: f64,
    /// Heat sent over links, MW.
    #[serde(default)]
    pub exported_mw: f64,
    /// Demand the dispatch could not serve, MW.
    #[serde(default)]
    pub unserved_mw: f64,
    /// Heat produced beyond demand and dumped, MW.
    #[serde(default)]
    pub dumped_mw: f64,
    /// Marginal heat cost at this plant, EUR/MWh, when known.
    #[serde(default)]
    pub marginal_cost_eur_mwh: Option<f64>,
}

/// The acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetpointsResult {
    /// The plant.
    pub plant: String,
    /// Units whose setpoints were taken.
    pub units_applied: usize,
    /// Sum of unit heat outputs, MW.
    pub total_heat_mw: f64,
    /// units + imported - exported + unserved - dumped - demand, MW.
    pub balance_residual_mw: f64,
    /// True when the residual is within 1e-6 of demand.
    pub balance_closes: bool,
    /// Unserved demand the operator must know about, MW (copied for alerting).
    pub unserved_mw: f64,
}

/// Marker for the plant-side GL-001 setpoint agent.
pub struct Setpoints;

impl SetpointsRequest {
    fn check(&self) -> Result<f64, CalcError> {
        if self.plant.trim().is_empty() {
            return Err(CalcError::invalid("plant", "required"));
        }
        let mut seen = HashSet::new();
        let mut total = 0.0;
        for (i, u) in self.units.iter().enumerate() {
            if u.id.trim().is_empty() {
                return Err(CalcError::invalid(format!("units[{i}].id"), "required"));
            }
            if !seen.insert(u.id.as_str()) {
                return Err(CalcError::invalid(
                    format!("units[{i}].id"),
                    format!("duplicate unit {}", u.id),
                ));
            }
            total += non_negative(&format!("units[{i}].heat_mw"), u.heat_mw)?;
            if u.on == Some(false) && u.heat_mw > 0.0 {
                return Err(CalcError::invalid(
                    format!("units[{i}].heat_mw"),
                    format!("must be 0 for a unit switched off, got {}", u.heat_mw),
                ));
            }
        }
        non_negative("demand_mw", self.demand_mw)?;
        for (f, v) in [
            ("imported_mw", self.imported_mw),
            ("exported_mw", self.exported_mw),
            ("unserved_mw", self.unserved_mw),
            ("dumped_mw", self.dumped_mw),
        ] {
            non_negative(f, v)?;
        }
        if let Some(m) = self.marginal_cost_eur_mwh {
            finite("marginal_cost_eur_mwh", m)?;
        }
        Ok(total)
    }
}

impl Calculation for Setpoints {
    const KIND: &'static str = "GL-001";
    type Request = SetpointsRequest;
    type Output = SetpointsResult;

    fn validate(req: &SetpointsRequest) -> Result<(), CalcError> {
        req.check().map(|_| ())
    }

    fn run(req: &SetpointsRequest) -> Result<SetpointsResult, CalcError> {
        let total = req.check()?;
        let residual = total + req.imported_mw - req.exported_mw + req.unserved_mw
            - req.dumped_mw
            - req.demand_mw;
        Ok(SetpointsResult {
            plant: req.plant.clone(),
            units_applied: req.units.len(),
            total_heat_mw: total,
            balance_residual_mw: residual,
            balance_closes: residual.abs() <= BALANCE_TOLERANCE * req.demand_mw.max(1.0),
            unserved_mw: req.unserved_mw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plant_b() -> SetpointsRequest {
        // Reference case D_B = 18: oil 5.4 + heat pump 5 + 8 MW link at 5 % loss = 7.6 MW in.
        SetpointsRequest {
            source: "GL-001".into(),
            status: "optimal".into(),
            plant: "B".into(),
            units: vec![
                UnitSetpoint {
                    id: "oil".into(),
                    heat_mw: 5.4,
                    on: None,
                },
                UnitSetpoint {
                    id: "hp".into(),
                    heat_mw: 5.0,
                    on: None,
                },
            ],
            demand_mw: 18.0,
            imported_mw: 7.6,
            exported_mw: 0.0,
            unserved_mw: 0.0,
            dumped_mw: 0.0,
            marginal_cost_eur_mwh: Some(83.930353),
        }
    }

    #[test]
    fn reference_dispatch_closes_at_plant_b() {
        let r = Setpoints::run(&plant_b()).unwrap();
        assert_eq!(r.units_applied, 2);
        assert!((r.total_heat_mw - 10.4).abs() < 1e-12);
        assert!(
            r.balance_residual_mw.abs() < 1e-9,
            "{}",
            r.balance_residual_mw
        );
        assert!(r.balance_closes);
    }

    #[test]
    fn open_balance_is_reported_not_hidden() {
        let mut req = plant_b();
        req.imported_mw = 5.0;
        let r = Setpoints::run(&req).unwrap();
        assert!((r.balance_residual_mw + 2.6).abs() < 1e-9);
        assert!(!r.balance_closes);
    }

    #[test]
    fn bad_setpoints_name_the_field() {
        let mut r = plant_b();
        r.units[1].heat_mw = -1.0;
        assert_eq!(
            Setpoints::run(&r).unwrap_err().field(),
            Some("units[1].heat_mw")
        );
        let mut r = plant_b();
        r.units[1].id = "oil".into();
        assert_eq!(Setpoints::run(&r).unwrap_err().field(), Some("units[1].id"));
        let mut r = plant_b();
        r.units[0].on = Some(false);
        assert_eq!(
            Setpoints::run(&r).unwrap_err().field(),
            Some("units[0].heat_mw")
        );
        let mut r = plant_b();
        r.demand_mw = f64::NAN;
        assert_eq!(Setpoints::run(&r).unwrap_err().field(), Some("demand_mw"));
    }
}
