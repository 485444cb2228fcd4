//! Scenario format (JSON or TOML): plants, heat units, inter-plant links, prices and options.
//!
//! Every number is validated before anything is solved, and every error names the field path
//! (`units[1].efficiency`) and the rule it breaks, so an operator can fix the input file
//! without reading solver output.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Exact number of MWh in one TJ (1e6 MJ / 3600 MJ per MWh); kept unrounded on purpose.
const MWH_PER_TJ: f64 = 1.0e6 / 3600.0;
/// Exact number of MWh in one GJ.
const MWH_PER_GJ: f64 = 1.0e3 / 3600.0;
/// 1 MMBtu (IT) in MWh (1 Btu = 1055.05585262 J).
const MWH_PER_MMBTU: f64 = 0.293_071_070_2;

/// A complete GL-001 heat-distribution problem for one time step (one hour at constant load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free-text label carried into reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sites with a heat demand; every unit and link refers to one of these by id.
    pub plants: Vec<Plant>,
    /// Heat producers (boilers, heat pumps, CHP, waste-heat recovery).
    pub units: Vec<Unit>,
    /// Directed inter-plant heat links; a two-way pipe is two links.
    #[serde(default)]
    pub links: Vec<Link>,
    /// CO2 price in EUR per tonne; required so a forgotten price is never silently zero.
    pub carbon_price_eur_t: f64,
    /// Solver behaviour; every field has a default.
    #[serde(default)]
    pub options: Options,
}

/// A site whose heat balance must close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plant {
    /// Unique plant id, referenced by units and links.
    pub id: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Heat demand in MW (must be >= 0).
    pub demand_mw: f64,
}

/// Technology of a heat unit; decides which efficiency field and price apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// Fuel-fired boiler: needs `efficiency`, a fuel price and an emission factor.
    Boiler,
    /// Electric heat pump: needs `cop` and an electricity price.
    HeatPump,
    /// Combined heat and power, modelled on its heat efficiency only (no power credit).
    Chp,
    /// Recovered heat: efficiency defaults to 1 and price to 0.
    WasteHeat,
}

/// Whether an energy quantity is on the net (LHV) or gross (HHV) calorific basis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Net calorific value (lower heating value); IPCC factors use this basis.
    #[default]
    Net,
    /// Gross calorific value (higher heating value); US EPA factors use this basis.
    Gross,
}

/// Unit of an emission factor, including the energy basis it is expressed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmissionUnit {
    /// kg CO2 per TJ of fuel, net basis (IPCC 2006 tables).
    KgCo2PerTjNet,
    /// kg CO2 per TJ of fuel, gross basis.
    KgCo2PerTjGross,
    /// kg CO2 per GJ of fuel, net basis.
    KgCo2PerGjNet,
    /// kg CO2 per GJ of fuel, gross basis.
    KgCo2PerGjGross,
    /// kg CO2 per MWh of fuel, net basis.
    KgCo2PerMwhNet,
    /// kg CO2 per MWh of fuel, gross basis.
    KgCo2PerMwhGross,
    /// kg CO2 per kWh of fuel, net basis.
    KgCo2PerKwhNet,
    /// kg CO2 per kWh of fuel, gross basis.
    KgCo2PerKwhGross,
    /// t CO2 per MWh of fuel, net basis.
    TCo2PerMwhNet,
    /// t CO2 per MWh of fuel, gross basis.
    TCo2PerMwhGross,
    /// kg CO2 per MMBtu of fuel, net basis.
    KgCo2PerMmbtuNet,
    /// kg CO2 per MMBtu of fuel, gross basis (US EPA 40 CFR 98 Table C-1).
    KgCo2PerMmbtuGross,
    /// kg CO2 per MWh of electricity consumed (heat pumps; no calorific basis applies).
    KgCo2PerMwhEl,
}

impl EmissionUnit {
    /// Tonnes CO2 per MWh of input energy for one unit of this factor, and the basis it is on
    /// (`None` for electricity, where net/gross does not apply).
    pub fn t_per_mwh_scale(self) -> (f64, Option<Basis>) {
        use EmissionUnit::*;
        match self {
            KgCo2PerTjNet => (1e-3 / MWH_PER_TJ, Some(Basis::Net)),
            KgCo2PerTjGross => (1e-3 / MWH_PER_TJ, Some(Basis::Gross)),
            KgCo2PerGjNet => (1e-3 / MWH_PER_GJ, Some(Basis::Net)),
            KgCo2PerGjGross => (1e-3 / MWH_PER_GJ, Some(Basis::Gross)),
            KgCo2PerMwhNet => (1e-3, Some(Basis::Net)),
            KgCo2PerMwhGross => (1e-3, Some(Basis::Gross)),
            KgCo2PerKwhNet => (1.0, Some(Basis::Net)),
            KgCo2PerKwhGross => (1.0, Some(Basis::Gross)),
            TCo2PerMwhNet => (1.0, Some(Basis::Net)),
            TCo2PerMwhGross => (1.0, Some(Basis::Gross)),
            KgCo2PerMmbtuNet => (1e-3 / MWH_PER_MMBTU, Some(Basis::Net)),
            KgCo2PerMmbtuGross => (1e-3 / MWH_PER_MMBTU, Some(Basis::Gross)),
            KgCo2PerMwhEl => (1e-3, None),
        }
    }
}

/// An emission factor with an explicit unit and basis, because mixing bases is the classic error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmissionFactor {
    /// Numeric value in `unit`.
    pub value: f64,
    /// Unit and calorific basis, e.g. `kg_co2_per_tj_net`.
    pub unit: EmissionUnit,
}

/// One heat-producing unit at a plant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// Unique unit id.
    pub id: String,
    /// Id of the plant this unit feeds.
    pub plant: String,
    /// Technology.
    pub kind: UnitKind,
    /// Lower heat-output bound in MW. For a continuous unit this is a must-run floor; for an
    /// on/off unit it is the minimum stable load when on (unless `min_load_mw` is given).
    #[serde(default)]
    pub min_mw: f64,
    /// Upper heat-output bound in MW.
    pub max_mw: f64,
    /// Heat out / fuel in, on `energy_basis`; required for boiler and chp, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<f64>,
    /// Coefficient of performance (heat out / electricity in); required for heat_pump, > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cop: Option<f64>,
    /// Fuel label, informational (e.g. `natural_gas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<String>,
    /// EUR per MWh of fuel on `energy_basis` (for heat pumps: per MWh of electricity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_price_eur_mwh: Option<f64>,
    /// EUR per MWh of electricity; heat pumps only, alternative to `fuel_price_eur_mwh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub electricity_price_eur_mwh: Option<f64>,
    /// CO2 per unit of input energy; required for boiler and chp (give 0 for biogenic fuels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emission_factor: Option<EmissionFactor>,
    /// Calorific basis of `efficiency` and `fuel_price_eur_mwh`; default net.
    #[serde(default)]
    pub energy_basis: Basis,
    /// Gross/net calorific value ratio of the fuel, needed only when the emission factor and
    /// `energy_basis` differ (natural gas about 1.108, gas oil about 1.066).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcv_ncv_ratio: Option<f64>,
    /// `true` makes the unit switchable (binary on/off variable, MILP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_off: Option<bool>,
    /// Minimum stable load in MW when on; implies `on_off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_load_mw: Option<f64>,
    /// EUR charged when an on/off unit is on but `initially_on` is false.
    #[serde(default)]
    pub startup_cost_eur: f64,
    /// Whether an on/off unit is already running, so starting it costs nothing.
    #[serde(default)]
    pub initially_on: bool,
}

/// A directed heat link between two plants; losses are taken at the receiving end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Unique link id.
    pub id: String,
    /// Sending plant id.
    pub from: String,
    /// Receiving plant id.
    pub to: String,
    /// Maximum heat sent, MW.
    pub capacity_mw: f64,
    /// Fraction of the sent heat lost in transit, in [0, 1).
    #[serde(default)]
    pub loss_factor: f64,
    /// EUR per MWh sent (pumping, tolls).
    #[serde(default)]
    pub cost_eur_mwh: f64,
}

/// Elastic keeps penalised slack in every balance; strict demands exact balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Unserved and dumped heat are allowed at a penalty, so every problem yields a dispatch.
    #[default]
    Elastic,
    /// Balances must close exactly; an infeasible problem is diagnosed, not dispatched.
    Strict,
}

/// Which algorithm to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// LP, or MILP when any unit is switchable.
    #[default]
    Auto,
    /// Linear program; rejected when a unit is switchable (use `milp`).
    Lp,
    /// Mixed-integer program with on/off binaries.
    Milp,
    /// Merit-order heuristic only.
    Greedy,
}

/// LP engine preference; MILP always uses microlp because clarabel has no integer support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LpSolverChoice {
    /// Pick by problem size (see `optimize::formulate::AUTO_CLARABEL_MIN_PLANTS`).
    #[default]
    Auto,
    /// Dual simplex (exact vertex solutions).
    Microlp,
    /// Interior point (fast on large sparse LPs, gives duals).
    Clarabel,
    /// HiGHS; only available with the `highs` cargo feature.
    Highs,
}

fn default_time_budget_ms() -> u64 {
    5_000
}

fn default_true() -> bool {
    true
}

/// Solver options; all optional in the scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Elastic (default) or strict balances.
    #[serde(default)]
    pub mode: Mode,
    /// Algorithm selection.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// LP engine.
    #[serde(default)]
    pub lp_solver: LpSolverChoice,
    /// Penalty M per MWh of unserved heat; default derived from the data (see
    /// [`Scenario::default_unserved_penalty`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unserved_penalty_eur_mwh: Option<f64>,
    /// Penalty per MWh of heat produced but not absorbed; defaults to the unserved penalty,
    /// because dumping is a balance violation unless the site has a cooler.
    #[serde(
        default,
        alias = "dump_penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub dump_penalty_eur_mwh: Option<f64>,
    /// Wall-clock budget for the exact solver before falling back to the greedy heuristic.
    #[serde(default = "default_time_budget_ms")]
    pub time_budget_ms: u64,
    /// Compute marginal heat cost per plant (an extra clarabel LP solve when the primal came
    /// from microlp).
    #[serde(default = "default_true")]
    pub marginal_costs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Elastic,
            algorithm: Algorithm::Auto,
            lp_solver: LpSolverChoice::Auto,
            unserved_penalty_eur_mwh: None,
            dump_penalty_eur_mwh: None,
            time_budget_ms: default_time_budget_ms(),
            marginal_costs: true,
        }
    }
}

/// One broken rule, located by its field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {rule}")]
pub struct FieldError {
    /// Path such as `units[1].efficiency`.
    pub path: String,
    /// The rule broken, with the offending value.
    pub rule: String,
}

impl FieldError {
    fn new(path: impl Into<String>, rule: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            rule: rule.into(),
        }
    }
}

/// Why a scenario could not be loaded or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Io {
        /// File path as given.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file extension is neither .json nor .toml.
    #[error("unsupported scenario file extension for {0} (expected .json or .toml)")]
    Extension(String),
    /// Syntax or type error while parsing (message from the parser, with position).
    #[error("cannot parse {format} scenario: {message}")]
    Parse {
        /// `JSON` or `TOML`.
        format: &'static str,
        /// Parser message.
        message: String,
    },
    /// One or more validation rules are broken; all are listed.
    #[error("invalid scenario: {}", FieldErrors(.0))]
    Invalid(Vec<FieldError>),
}

struct FieldErrors<'a>(&'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ScenarioError {
    /// The individual field errors (empty for I/O and parse errors).
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ScenarioError::Invalid(v) => v,
            _ => &[],
        }
    }
}

/// Heat cost of one unit split into its parts, all per MWh of heat delivered by the unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeatCost {
    /// Fuel (or electricity) cost, EUR/MWh heat.
    pub energy_eur_mwh: f64,
    /// Carbon cost, EUR/MWh heat.
    pub carbon_eur_mwh: f64,
    /// Sum of the two, EUR/MWh heat.
    pub total_eur_mwh: f64,
    /// Input energy per MWh heat (1/efficiency or 1/COP).
    pub input_per_heat: f64,
    /// CO2 in tonnes per MWh heat.
    pub co2_t_per_mwh: f64,
    /// True when the input energy is electricity (heat pumps).
    pub electric: bool,
}

impl Unit {
    /// Whether the unit gets an on/off binary (switchable, or has a minimum stable load).
    pub fn is_switchable(&self) -> bool {
        self.on_off == Some(true) || (self.on_off.is_none() && self.min_load_mw.is_some())
    }

    /// Output floor when on: `min_load_mw` if given, else `min_mw`.
    pub fn on_floor_mw(&self) -> f64 {
        self.min_load_mw.unwrap_or(self.min_mw).max(self.min_mw)
    }

    /// Heat cost = (energy price + carbon price x factor in t/MWh input on the unit's basis)
    /// / efficiency, or electricity price / COP (+ grid carbon if a factor is given).
    ///
    /// Assumes the unit has passed validation; returns the first broken rule otherwise.
    pub fn heat_cost(&self, carbon_price_eur_t: f64) -> Result<HeatCost, FieldError> {
        let electric = self.kind == UnitKind::HeatPump;
        let conv = if electric {
            self.cop
                .ok_or_else(|| FieldError::new("cop", "required for heat_pump"))?
        } else {
            match (self.kind, self.efficiency) {
                (_, Some(e)) => e,
                (UnitKind::WasteHeat, None) => 1.0,
                _ => return Err(FieldError::new("efficiency", "required")),
            }
        };
        if !(conv.is_finite() && conv > 0.0) {
            return Err(FieldError::new("efficiency", "must be a positive number"));
        }
        let price = if electric {
            self.electricity_price_eur_mwh
                .or(self.fuel_price_eur_mwh)
                .ok_or_else(|| {
                    FieldError::new("electricity_price_eur_mwh", "required for heat_pump")
                })?
        } else {
            match (self.kind, self.fuel_price_eur_mwh) {
                (_, Some(p)) => p,
                (UnitKind::WasteHeat, None) => 0.0,
                _ => return Err(FieldError::new("fuel_price_eur_mwh", "required")),
            }
        };
        let t_per_mwh_input = match self.emission_factor {
            None => 0.0,
            Some(ef) => {
                let (scale, basis) = ef.unit.t_per_mwh_scale();
                let raw = ef.value * scale;
                match basis {
                    None => raw,
                    Some(b) if b == self.energy_basis => raw,
                    Some(b) => {
                        let r = self.gcv_ncv_ratio.ok_or_else(|| {
                            FieldError::new(
                                "gcv_ncv_ratio",
                                "required when emission factor basis differs from energy_basis",
                            )
                        })?;
                        // 1 MWh net of fuel = r MWh gross, so a per-gross factor scales by r.
                        match b {
                            Basis::Gross => raw * r,
                            Basis::Net => raw / r,
                        }
                    }
                }
            }
        };
        let input_per_heat = 1.0 / conv;
        let energy = price * input_per_heat;
        let co2 = t_per_mwh_input * input_per_heat;
        let carbon = carbon_price_eur_t * co2;
        Ok(HeatCost {
            energy_eur_mwh: energy,
            carbon_eur_mwh: carbon,
            total_eur_mwh: energy + carbon,
            input_per_heat,
            co2_t_per_mwh: co2,
            electric,
        })
    }
}

/// Records a non-finite number and reports whether further rules can be checked on it.
fn num(path: String, v: f64, errs: &mut Vec<FieldError>) -> bool {
    if v.is_finite() {
        true
    } else {
        errs.push(FieldError::new(
            path,
            format!("must be a finite number (got {v})"),
        ));
        false
    }
}

impl UnitKind {
    /// The spelling used in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Boiler => "boiler",
            UnitKind::HeatPump => "heat_pump",
            UnitKind::Chp => "chp",
            UnitKind::WasteHeat => "waste_heat",
        }
    }
}

impl Basis {
    /// The spelling used in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Net => "net",
            Basis::Gross => "gross",
        }
    }
}

impl Scenario {
    /// Parse and validate a JSON scenario.
    pub fn from_json_str(s: &str) -> Result<Self, ScenarioError> {
        let sc: Scenario = serde_json::from_str(s).map_err(|e| ScenarioError::Parse {
            format: "JSON",
            message: e.to_string(),
        })?;
        sc.validate()?;
        Ok(sc)
    }

    /// Parse and validate a TOML scenario.
    pub fn from_toml_str(s: &str) -> Result<Self, ScenarioError> {
        let sc: Scenario = toml::from_str(s).map_err(|e| ScenarioError::Parse {
            format: "TOML",
            message: e.to_string(),
        })?;
        sc.validate()?;
        Ok(sc)
    }

    /// Load a scenario file, choosing the parser by extension (.json or .toml).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let text = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| ScenarioError::Io {
                path: shown.clone(),
                source,
            })
        };
        match ext.as_deref() {
            Some("json") => Self::from_json_str(&text(path)?),
            Some("toml") => Self::from_toml_str(&text(path)?),
            _ => Err(ScenarioError::Extension(shown.clone())),
        }
    }

    /// Serialise to pretty JSON (used to write examples and to echo inputs in reports).
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Whether any unit carries an on/off binary, which makes the problem a MILP.
    pub fn has_switchable_units(&self) -> bool {
        self.units.iter().any(Unit::is_switchable)
    }

    /// Default M: 10x the dearest heat a plant could import through one link (unit heat cost,
    /// plus startup cost spread over the on floor, plus the link cost, grossed up by the worst
    /// link loss), and never below 1000 EUR/MWh. Long chains of lossy links can still exceed
    /// it; `optimize` warns when a smaller unserved total was possible.
    pub fn default_unserved_penalty(&self) -> f64 {
        let mut max_cost: f64 = 0.0;
        for u in &self.units {
            if let Ok(c) = u.heat_cost(self.carbon_price_eur_t) {
                let startup = if u.is_switchable() && !u.initially_on {
                    u.startup_cost_eur.max(0.0) / u.on_floor_mw().max(1.0)
                } else {
                    0.0
                };
                max_cost = max_cost.max(c.total_eur_mwh + startup);
            }
        }
        let max_link_cost = self
            .links
            .iter()
            .map(|l| l.cost_eur_mwh)
            .fold(0.0_f64, f64::max);
        let min_eta = self
            .links
            .iter()
            .map(|l| 1.0 - l.loss_factor)
            .fold(1.0_f64, f64::min)
            .max(1e-3);
        let m = 10.0 * (max_cost + max_link_cost) / min_eta;
        if m.is_finite() { m.max(1000.0) } else { 1000.0 }
    }

    /// Effective unserved-heat penalty M (given or default).
    pub fn unserved_penalty(&self) -> f64 {
        self.options
            .unserved_penalty_eur_mwh
            .unwrap_or_else(|| self.default_unserved_penalty())
    }

    /// Effective dumped-heat penalty (given, or equal to M).
    pub fn dump_penalty(&self) -> f64 {
        self.options
            .dump_penalty_eur_mwh
            .unwrap_or_else(|| self.unserved_penalty())
    }

    /// Check every rule; returns all broken rules at once.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let mut errs = Vec::new();

        if self.plants.is_empty() {
            errs.push(FieldError::new("plants", "at least one plant is required"));
        }
        if num(
            "carbon_price_eur_t".into(),
            self.carbon_price_eur_t,
            &mut errs,
        ) && self.carbon_price_eur_t < 0.0
        {
            errs.push(FieldError::new(
                "carbon_price_eur_t",
                format!("must be >= 0 (got {})", self.carbon_price_eur_t),
            ));
        }

        let mut plant_ids: HashMap<&str, usize> = HashMap::new();
        for (i, p) in self.plants.iter().enumerate() {
            let base = format!("plants[{i}]");
            if p.id.trim().is_empty() {
                errs.push(FieldError::new(format!("{base}.id"), "must not be empty"));
            } else if let Some(prev) = plant_ids.insert(p.id.as_str(), i) {
                errs.push(FieldError::new(
                    format!("{base}.id"),
                    format!("duplicate plant id \"{}\" (also plants[{prev}])", p.id),
                ));
            }
            if num(format!("{base}.demand_mw"), p.demand_mw, &mut errs) && p.demand_mw < 0.0 {
                errs.push(FieldError::new(
                    format!("{base}.demand_mw"),
                    format!("must be >= 0 (got {})", p.demand_mw),
                ));
            }
        }

        let mut unit_ids: HashMap<&str, usize> = HashMap::new();
        for (i, u) in self.units.iter().enumerate() {
            let base = format!("units[{i}]");
            let who = format!("unit \"{}\"", u.id);
            if u.id.trim().is_empty() {
                errs.push(FieldError::new(format!("{base}.id"), "must not be empty"));
            } else if let Some(prev) = unit_ids.insert(u.id.as_str(), i) {
                errs.push(FieldError::new(
                    format!("{base}.id"),
                    format!("duplicate unit id \"{}\" (also units[{prev}])", u.id),
                ));
            }
            if !plant_ids.contains_key(u.plant.as_str()) {
                errs.push(FieldError::new(
                    format!("{base}.plant"),
                    format!("{who} refers to unknown plant \"{}\"", u.plant),
                ));
            }
            let min_ok = num(format!("{base}.min_mw"), u.min_mw, &mut errs);
            let max_ok = num(format!("{base}.max_mw"), u.max_mw, &mut errs);
            if min_ok && u.min_mw < 0.0 {
                errs.push(FieldError::new(
                    format!("{base}.min_mw"),
                    format!("{who}: negative capacity {}", u.min_mw),
                ));
            }
            if max_ok && u.max_mw < 0.0 {
                errs.push(FieldError::new(
                    format!("{base}.max_mw"),
                    format!("{who}: negative capacity {}", u.max_mw),
                ));
            }
            if min_ok && max_ok && u.min_mw > u.max_mw {
                errs.push(FieldError::new(
                    format!("{base}.min_mw"),
                    format!("{who}: min_mw {} > max_mw {}", u.min_mw, u.max_mw),
                ));
            }
            if let Some(ml) = u.min_load_mw
                && num(format!("{base}.min_load_mw"), ml, &mut errs)
            {
                if ml < 0.0 {
                    errs.push(FieldError::new(
                        format!("{base}.min_load_mw"),
                        format!("{who}: negative capacity {ml}"),
                    ));
                } else if max_ok && ml > u.max_mw {
                    errs.push(FieldError::new(
                        format!("{base}.min_load_mw"),
                        format!("{who}: min_load_mw {ml} > max_mw {}", u.max_mw),
                    ));
                }
                if u.on_off == Some(false) {
                    errs.push(FieldError::new(
                        format!("{base}.min_load_mw"),
                        format!(
                            "{who}: min_load_mw needs a switchable unit (on_off = false); \
                             use min_mw for a must-run floor"
                        ),
                    ));
                }
            }
            if num(
                format!("{base}.startup_cost_eur"),
                u.startup_cost_eur,
                &mut errs,
            ) && u.startup_cost_eur < 0.0
            {
                errs.push(FieldError::new(
                    format!("{base}.startup_cost_eur"),
                    format!("{who}: must be >= 0 (got {})", u.startup_cost_eur),
                ));
            }
            if u.startup_cost_eur > 0.0 && !u.is_switchable() {
                errs.push(FieldError::new(
                    format!("{base}.startup_cost_eur"),
                    format!("{who}: startup cost needs on_off = true or min_load_mw"),
                ));
            }
            let electric = u.kind == UnitKind::HeatPump;
            // Conversion factor: COP for heat pumps, efficiency otherwise.
            if electric {
                match u.cop {
                    None => errs.push(FieldError::new(
                        format!("{base}.cop"),
                        format!("{who}: required for heat_pump"),
                    )),
                    Some(c) => {
                        if num(format!("{base}.cop"), c, &mut errs) && c <= 0.0 {
                            errs.push(FieldError::new(
                                format!("{base}.cop"),
                                format!("{who}: COP must be > 0 (got {c})"),
                            ));
                        }
                    }
                }
                if u.efficiency.is_some() {
                    errs.push(FieldError::new(
                        format!("{base}.efficiency"),
                        format!("{who}: heat_pump uses cop, not efficiency"),
                    ));
                }
                match (u.electricity_price_eur_mwh, u.fuel_price_eur_mwh) {
                    (Some(_), Some(_)) => errs.push(FieldError::new(
                        format!("{base}.electricity_price_eur_mwh"),
                        format!(
                            "{who}: give electricity_price_eur_mwh or fuel_price_eur_mwh, not both"
                        ),
                    )),
                    (None, None) => errs.push(FieldError::new(
                        format!("{base}.electricity_price_eur_mwh"),
                        format!("{who}: required for heat_pump"),
                    )),
                    (Some(p), None) => {
                        num(format!("{base}.electricity_price_eur_mwh"), p, &mut errs);
                    }
                    (None, Some(p)) => {
                        num(format!("{base}.fuel_price_eur_mwh"), p, &mut errs);
                    }
                }
            } else {
                if u.cop.is_some() {
                    errs.push(FieldError::new(
                        format!("{base}.cop"),
                        format!("{who}: cop applies to heat_pump only"),
                    ));
                }
                if u.electricity_price_eur_mwh.is_some() {
                    errs.push(FieldError::new(
                        format!("{base}.electricity_price_eur_mwh"),
                        format!("{who}: applies to heat_pump only; use fuel_price_eur_mwh"),
                    ));
                }
                let needs_fuel = u.kind != UnitKind::WasteHeat;
                match u.efficiency {
                    None if needs_fuel => errs.push(FieldError::new(
                        format!("{base}.efficiency"),
                        format!("{who}: required for {}", u.kind.as_str()),
                    )),
                    None => {}
                    Some(e)
                        if num(format!("{base}.efficiency"), e, &mut errs)
                            && !(e > 0.0 && e <= 1.0) =>
                    {
                        errs.push(FieldError::new(
                            format!("{base}.efficiency"),
                            format!("{who}: efficiency must be in (0, 1] (got {e})"),
                        ));
                    }
                    Some(_) => {}
                }
                match u.fuel_price_eur_mwh {
                    None if needs_fuel => errs.push(FieldError::new(
                        format!("{base}.fuel_price_eur_mwh"),
                        format!("{who}: required"),
                    )),
                    None => {}
                    Some(p) => {
                        num(format!("{base}.fuel_price_eur_mwh"), p, &mut errs);
                    }
                }
                if needs_fuel && u.emission_factor.is_none() {
                    errs.push(FieldError::new(
                        format!("{base}.emission_factor"),
                        format!(
                            "{who}: required for fuel-fired units (give value 0 for biogenic fuel)"
                        ),
                    ));
                }
            }
            if let Some(ef) = u.emission_factor {
                let p = format!("{base}.emission_factor.value");
                if num(p.clone(), ef.value, &mut errs) && ef.value < 0.0 {
                    errs.push(FieldError::new(
                        p,
                        format!("{who}: must be >= 0 (got {})", ef.value),
                    ));
                }
                let (_, basis) = ef.unit.t_per_mwh_scale();
                match (electric, basis) {
                    (true, Some(_)) => errs.push(FieldError::new(
                        format!("{base}.emission_factor.unit"),
                        format!(
                            "{who}: a heat pump needs an electricity factor (kg_co2_per_mwh_el)"
                        ),
                    )),
                    (false, None) => errs.push(FieldError::new(
                        format!("{base}.emission_factor.unit"),
                        format!("{who}: kg_co2_per_mwh_el applies to heat pumps only"),
                    )),
                    (false, Some(b)) if b != u.energy_basis && u.gcv_ncv_ratio.is_none() => errs
                        .push(FieldError::new(
                            format!("{base}.gcv_ncv_ratio"),
                            format!(
                                "{who}: emission factor is on the {} basis but energy_basis is \
                                 {}; give gcv_ncv_ratio to convert",
                                b.as_str(),
                                u.energy_basis.as_str()
                            ),
                        )),
                    _ => {}
                }
            }
            if let Some(r) = u.gcv_ncv_ratio
                && num(format!("{base}.gcv_ncv_ratio"), r, &mut errs)
                && !(1.0..=1.25).contains(&r)
            {
                errs.push(FieldError::new(
                    format!("{base}.gcv_ncv_ratio"),
                    format!("{who}: gross/net ratio must be in [1, 1.25] (got {r})"),
                ));
            }
        }

        let mut link_ids: HashMap<&str, usize> = HashMap::new();
        for (i, l) in self.links.iter().enumerate() {
            let base = format!("links[{i}]");
            let who = format!("link \"{}\"", l.id);
            if l.id.trim().is_empty() {
                errs.push(FieldError::new(format!("{base}.id"), "must not be empty"));
            } else if let Some(prev) = link_ids.insert(l.id.as_str(), i) {
                errs.push(FieldError::new(
                    format!("{base}.id"),
                    format!("duplicate link id \"{}\" (also links[{prev}])", l.id),
                ));
            }
            for (field, end) in [("from", &l.from), ("to", &l.to)] {
                if !plant_ids.contains_key(end.as_str()) {
                    errs.push(FieldError::new(
                        format!("{base}.{field}"),
                        format!("{who} refers to unknown plant \"{end}\""),
                    ));
                }
            }
            if l.from == l.to {
                errs.push(FieldError::new(
                    format!("{base}.to"),
                    format!("{who} connects plant \"{}\" to itself", l.from),
                ));
            }
            if num(format!("{base}.capacity_mw"), l.capacity_mw, &mut errs) && l.capacity_mw < 0.0 {
                errs.push(FieldError::new(
                    format!("{base}.capacity_mw"),
                    format!("{who}: negative capacity {}", l.capacity_mw),
                ));
            }
            if num(format!("{base}.loss_factor"), l.loss_factor, &mut errs)
                && !(0.0..1.0).contains(&l.loss_factor)
            {
                errs.push(FieldError::new(
                    format!("{base}.loss_factor"),
                    format!(
                        "{who}: loss factor must be in [0, 1) (got {})",
                        l.loss_factor
                    ),
                ));
            }
            if num(format!("{base}.cost_eur_mwh"), l.cost_eur_mwh, &mut errs)
                && l.cost_eur_mwh < 0.0
            {
                errs.push(FieldError::new(
                    format!("{base}.cost_eur_mwh"),
                    format!("{who}: must be >= 0 (got {})", l.cost_eur_mwh),
                ));
            }
        }

        let o = &self.options;
        if let Some(m) = o.unserved_penalty_eur_mwh
            && num("options.unserved_penalty_eur_mwh".into(), m, &mut errs)
            && m <= 0.0
        {
            errs.push(FieldError::new(
                "options.unserved_penalty_eur_mwh",
                format!("must be > 0 (got {m})"),
            ));
        }
        if let Some(d) = o.dump_penalty_eur_mwh
            && num("options.dump_penalty_eur_mwh".into(), d, &mut errs)
            && d < 0.0
        {
            errs.push(FieldError::new(
                "options.dump_penalty_eur_mwh",
                format!("must be >= 0 (got {d})"),
            ));
        }
        if o.time_budget_ms == 0 {
            errs.push(FieldError::new("options.time_budget_ms", "must be > 0"));
        }
        if o.algorithm == Algorithm::Lp
            && let Some(u) = self.units.iter().find(|u| u.is_switchable())
        {
            errs.push(FieldError::new(
                "options.algorithm",
                format!(
                    "lp cannot honour on/off unit \"{}\"; use auto or milp",
                    u.id
                ),
            ));
        }
        if o.lp_solver == LpSolverChoice::Highs && !cfg!(feature = "highs") {
            errs.push(FieldError::new(
                "options.lp_solver",
                "highs requested but heatmesh-master was built without the `highs` feature",
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ScenarioError::Invalid(errs))
        }
    }
}
