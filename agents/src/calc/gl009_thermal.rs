//! GL-009 ThermalEfficiency: first-law energy balance, efficiency and closure.
//!
//! eta = sum(useful outputs) / sum(inputs) x 100;
//! unaccounted = inputs - outputs - measured losses; closure % = unaccounted / inputs x 100.
//! A balance alert is raised when |closure| exceeds the plant's threshold (default 5 %).

use super::{CalcError, Calculation, finite, non_negative};
use serde::{Deserialize, Serialize};

/// Closure threshold used when neither the request nor the plant sets one (seed default).
pub const DEFAULT_CLOSURE_THRESHOLD_PCT: f64 = 5.0;

/// One metered energy stream over the balance period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyFlow {
    /// Stream name as the operator knows it (`fuel`, `steam`, `stack loss`).
    pub name: String,
    /// Energy over the period, kWh. Must be finite and >= 0.
    pub energy_kwh: f64,
}

/// A heat-balance request: what came in, what left as useful output, what was measured lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatBalanceRequest {
    /// Energy inputs (fuel, electricity, ...). At least one; the total must be > 0.
    pub inputs: Vec<EnergyFlow>,
    /// Useful outputs (steam, hot water, electricity exported, ...).
    #[serde(default)]
    pub outputs: Vec<EnergyFlow>,
    /// Measured losses (stack, radiation, blowdown, ...).
    #[serde(default)]
    pub losses: Vec<EnergyFlow>,
    /// |closure| above this raises a balance alert, percent. Defaults to the plant's threshold.
    #[serde(default)]
    pub closure_threshold_pct: Option<f64>,
}

/// The balance: totals, first-law efficiency, closure and whether it needs attention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatBalanceResult {
    /// Sum of inputs, kWh.
    pub total_input_kwh: f64,
    /// Sum of useful outputs, kWh.
    pub total_output_kwh: f64,
    /// Sum of measured losses, kWh.
    pub total_losses_kwh: f64,
    /// inputs - outputs - measured losses, kWh (negative: more out than in).
    pub unaccounted_kwh: f64,
    /// First-law efficiency, percent of input.
    pub efficiency_pct: f64,
    /// unaccounted / inputs, percent.
    pub closure_pct: f64,
    /// The threshold the closure was judged against, percent.
    pub closure_threshold_pct: f64,
    /// True when |closure| > threshold: the meters or the model need a look.
    pub balance_alert: bool,
}

/// Marker for the GL-009 calculation.
pub struct HeatBalance;

fn total(list: &[EnergyFlow], name: &str) -> Result<f64, CalcError> {
    list.iter().enumerate().try_fold(0.0, |acc, (i, f)| {
        Ok(acc + non_negative(&format!("{name}[{i}].energy_kwh"), f.energy_kwh)?)
    })
}

impl HeatBalanceRequest {
    /// Checks every rule and returns the three totals (inputs, outputs, losses).
    pub fn validate(&self) -> Result<(f64, f64, f64), CalcError> {
        if self.inputs.is_empty() {
            return Err(CalcError::invalid(
                "inputs",
                "at least one input is required",
            ));
        }
        let input = total(&self.inputs, "inputs")?;
        let output = total(&self.outputs, "outputs")?;
        let losses = total(&self.losses, "losses")?;
        if input <= 0.0 {
            return Err(CalcError::invalid("inputs", "total input must be > 0 kWh"));
        }
        if output > input {
            return Err(CalcError::invalid(
                "outputs",
                format!(
                    "total useful output {output} kWh exceeds total input {input} kWh (efficiency > 100 %)"
                ),
            ));
        }
        if let Some(t) = self.closure_threshold_pct {
            finite("closure_threshold_pct", t)?;
            if !(0.0..=100.0).contains(&t) {
                return Err(CalcError::invalid(
                    "closure_threshold_pct",
                    format!("must be within [0, 100], got {t}"),
                ));
            }
        }
        Ok((input, output, losses))
    }
}

impl Calculation for HeatBalance {
    const KIND: &'static str = "GL-009";
    type Request = HeatBalanceRequest;
    type Output = HeatBalanceResult;

    fn validate(req: &HeatBalanceRequest) -> Result<(), CalcError> {
        req.validate().map(|_| ())
    }

    fn run(req: &HeatBalanceRequest) -> Result<HeatBalanceResult, CalcError> {
        let (input, output, losses) = req.validate()?;
        let threshold = req
            .closure_threshold_pct
            .unwrap_or(DEFAULT_CLOSURE_THRESHOLD_PCT);
        let unaccounted = input - output - losses;
        let closure_pct = unaccounted / input * 100.0;
        Ok(HeatBalanceResult {
            total_input_kwh: input,
            total_output_kwh: output,
            total_losses_kwh: losses,
            unaccounted_kwh: unaccounted,
            efficiency_pct: output / input * 100.0,
            closure_pct,
            closure_threshold_pct: threshold,
            balance_alert: closure_pct.abs() > threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(name: &str, kwh: f64) -> EnergyFlow {
        EnergyFlow {
            name: name.into(),
            energy_kwh: kwh,
        }
    }

    #[test]
    fn seed_case_fuel_and_electricity() {
        let req = HeatBalanceRequest {
            inputs: vec![flow("fuel", 1000.0), flow("electricity", 50.0)],
            outputs: vec![flow("steam", 750.0), flow("electricity", 200.0)],
            losses: vec![],
            closure_threshold_pct: None,
        };
        let r = HeatBalance::run(&req).unwrap();
        assert!(
            (r.efficiency_pct - 90.476_190_476).abs() < 1e-6,
            "{}",
            r.efficiency_pct
        );
        assert!((r.unaccounted_kwh - 100.0).abs() < 1e-9);
        assert!((r.closure_pct - 9.523_809_524).abs() < 1e-6);
        assert!(r.balance_alert);
    }

    #[test]
    fn seed_case_gas_with_losses_closes() {
        let req = HeatBalanceRequest {
            inputs: vec![flow("natural gas", 1000.0)],
            outputs: vec![flow("steam", 850.0)],
            losses: vec![
                flow("stack", 100.0),
                flow("radiation", 30.0),
                flow("blowdown", 20.0),
            ],
            closure_threshold_pct: None,
        };
        let r = HeatBalance::run(&req).unwrap();
        assert!((r.efficiency_pct - 85.0).abs() < 1e-12);
        assert!((r.total_losses_kwh - 150.0).abs() < 1e-12);
        assert!(r.closure_pct.abs() < 1e-12);
        assert!(!r.balance_alert);
    }

    #[test]
    fn threshold_is_configurable() {
        let mut req = HeatBalanceRequest {
            inputs: vec![flow("fuel", 1000.0), flow("electricity", 50.0)],
            outputs: vec![flow("steam", 750.0), flow("electricity", 200.0)],
            losses: vec![],
            closure_threshold_pct: Some(10.0),
        };
        assert!(!HeatBalance::run(&req).unwrap().balance_alert);
        req.closure_threshold_pct = Some(7.5);
        assert!(HeatBalance::run(&req).unwrap().balance_alert);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let base = HeatBalanceRequest {
            inputs: vec![flow("fuel", 1000.0)],
            outputs: vec![flow("steam", 500.0)],
            losses: vec![],
            closure_threshold_pct: None,
        };
        let mut r = base.clone();
        r.inputs[0].energy_kwh = f64::NAN;
        assert_eq!(
            HeatBalance::run(&r).unwrap_err().field(),
            Some("inputs[0].energy_kwh")
        );
        let mut r = base.clone();
        r.outputs[0].energy_kwh = -1.0;
        assert_eq!(
            HeatBalance::run(&r).unwrap_err().field(),
            Some("outputs[0].energy_kwh")
        );
        let mut r = base.clone();
        r.inputs.clear();
        assert_eq!(HeatBalance::run(&r).unwrap_err().field(), Some("inputs"));
        let mut r = base.clone();
        r.inputs[0].energy_kwh = 0.0;
        assert_eq!(HeatBalance::run(&r).unwrap_err().field(), Some("inputs"));
        let mut r = base.clone();
        r.outputs[0].energy_kwh = 2000.0;
        assert_eq!(HeatBalance::run(&r).unwrap_err().field(), Some("outputs"));
        let mut r = base;
        r.losses.push(flow("stack", f64::INFINITY));
        assert_eq!(
            HeatBalance::run(&r).unwrap_err().field(),
            Some("losses[0].energy_kwh")
        );
    }
}
