//! GL-009 ThermalEfficiency: first- and second-law efficiency, energy-balance closure,
//! Sankey flows and data quality.
//!
//! First law: eta = sum(useful outputs) / sum(inputs) x 100;
//! unaccounted = inputs - outputs - measured losses; closure % = unaccounted / inputs x 100.
//! A balance alert is raised when |closure| exceeds the plant's threshold (default 5 %).
//!
//! Second law (exergy), dead state T0 = 298.15 K, p0 = 101.325 kPa unless the request overrides
//! them: electricity and work carry exergy equal to their energy; a fuel carries phi x HHV
//! (phi from the reference applies to the gross heating value, so net-basis fuel energy is
//! first converted with the stream's gross-to-net ratio); heat at T carries Q (1 - T0/T).
//! Second-law efficiency = exergy of useful outputs / exergy of inputs x 100.
//!
//! Every new request field is optional, so requests written for the first-law-only version
//! still parse and give the same first-law figures.

use super::{CalcError, Calculation, finite, in_range, non_negative, positive};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Closure threshold used when neither the request nor the plant sets one (seed default).
pub const DEFAULT_CLOSURE_THRESHOLD_PCT: f64 = 5.0;

/// Dead-state (ambient) temperature of the reference, K, used unless the request sets one.
pub const DEAD_STATE_TEMPERATURE_K: f64 = 298.15;

/// Dead-state pressure of the reference, kPa, used unless the request sets one.
pub const DEAD_STATE_PRESSURE_KPA: f64 = 101.325;

/// |z| above this flags a reading as an outlier (the predecessor's OUTLIER_ZSCORE_THRESHOLD).
pub const DEFAULT_OUTLIER_Z_THRESHOLD: f64 = 3.0;

/// Relative tolerance of [`check_sankey`]'s conservation test: room for summation rounding,
/// far below any meter error worth reporting.
pub const SANKEY_TOLERANCE: f64 = 1e-9;

/// Chemical-exergy factors phi = exergy / HHV (reference table). They apply to the gross
/// heating value only; net-basis energy must be converted to gross before multiplying.
pub const FUEL_EXERGY_FACTORS: &[(&str, f64)] = &[
    ("natural_gas", 1.04),
    ("coal", 1.06),
    ("fuel_oil", 1.065),
    ("diesel", 1.07),
    ("biomass", 1.15),
    ("hydrogen", 0.985),
    ("propane", 1.05),
];

/// Stream kinds whose exergy equals their energy (ordered energy, no temperature limit).
pub const WORK_KINDS: &[&str] = &["electricity", "work"];

/// Stream kinds treated as heat delivered at `temperature_k`: exergy = Q (1 - T0/T).
pub const HEAT_KINDS: &[&str] = &["heat", "steam", "hot_water", "thermal_oil", "flue_gas"];

/// The kind of a fuel stream; its exergy is phi x gross energy.
pub const FUEL_KIND: &str = "fuel";

/// Smallest residual, relative to total input, drawn as an unaccounted or unmetered node:
/// below this the residual is summation rounding, not an imbalance.
const SANKEY_RESIDUAL_EPS: f64 = 1e-12;

/// One metered energy stream over the balance period.
///
/// Only `name` and `energy_kwh` are required; the rest switch on the second-law and
/// data-quality analyses for this stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyFlow {
    /// Stream name as the operator knows it (`fuel`, `steam`, `stack loss`).
    pub name: String,
    /// Energy over the period, kWh. Must be finite and >= 0. For a fuel this is on the basis
    /// named by `basis` (gross unless stated).
    pub energy_kwh: f64,
    /// What the stream carries: `fuel`, `electricity`, `work`, `heat`, `steam`, `hot_water`,
    /// `thermal_oil`, `flue_gas`. Without it the stream's exergy is unknown (noted, not an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For kind `fuel`: natural_gas, coal, fuel_oil, diesel, biomass, hydrogen or propane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<String>,
    /// For kind `fuel`: `gross` (HHV) or `net` (LHV) basis of `energy_kwh`; absent means gross,
    /// and the result notes that assumption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    /// For a net-basis fuel: HHV / LHV of this fuel, within [1, 2] (about 1.108 for natural gas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_to_net_ratio: Option<f64>,
    /// For heat kinds: the temperature the heat is available at, K, not below the dead state.
    /// For sensible heat cooled to ambient use the mean (T - T0) / ln(T / T0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_k: Option<f64>,
    /// Earlier readings of this stream for comparable periods, oldest first, kWh; `null` (or NaN
    /// from protobuf) is a missing reading. `energy_kwh` is appended as the current reading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history_kwh: Vec<Option<f64>>,
}

/// A heat-balance request: what came in, what left as useful output, what was measured lost.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Dead-state temperature T0, K, within [200, 400] so a Celsius value is caught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_state_temperature_k: Option<f64>,
    /// Dead-state pressure p0, kPa, within [50, 150] so bar or Pa values are caught. Recorded
    /// only: fuel, heat and work exergy do not depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_state_pressure_kpa: Option<f64>,
    /// Label of the single equipment node in the Sankey diagram (`boiler-1`); default `Equipment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equipment: Option<String>,
    /// |z| above this flags a reading as an outlier; > 0, default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_z_threshold: Option<f64>,
}

/// One node of the Sankey diagram.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SankeyNode {
    /// Unique id; stream nodes use the request path (`inputs[0]`) so names may repeat.
    pub id: String,
    /// Text to draw: the stream name or the equipment label.
    pub label: String,
    /// Role: `input`, `unmetered_input`, `equipment`, `output`, `loss` or `unaccounted`.
    pub kind: String,
}

/// One directed link of the Sankey diagram.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SankeyLink {
    /// Id of the node the energy leaves.
    pub source: String,
    /// Id of the node the energy enters.
    pub target: String,
    /// Energy carried, kWh; never negative.
    pub value_kwh: f64,
}

/// A Sankey diagram of the balance: inputs into one equipment node, out to outputs and losses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sankey {
    /// Every node, inputs first, then equipment, outputs, losses and any residual node.
    pub nodes: Vec<SankeyNode>,
    /// Every link; values are non-negative and conserve energy at every internal node.
    pub links: Vec<SankeyLink>,
}

/// A reading whose z-score exceeded the threshold. Flagged only: the balance still uses it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Outlier {
    /// Path of the stream in the request (`inputs[0]`), unique where names may repeat.
    pub stream: String,
    /// The stream's name.
    pub name: String,
    /// Position in the series `history_kwh` + current reading; `history_kwh.len()` is the current.
    pub index: u64,
    /// The reading, kWh.
    pub value_kwh: f64,
    /// (value - mean) / population standard deviation of the stream's present readings.
    pub z_score: f64,
    /// True when the outlier is the current reading (`energy_kwh`) the balance is built on.
    pub current_reading: bool,
}

/// How trustworthy the readings behind the balance look.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DataQuality {
    /// Readings counted: every stream's history plus its current reading.
    pub readings_expected: u64,
    /// Readings given as null (or NaN).
    pub readings_missing: u64,
    /// Present readings / expected readings, percent.
    pub completeness_pct: f64,
    /// The |z| threshold the outliers were judged against.
    pub outlier_z_threshold: f64,
    /// Every reading flagged as an outlier, in request order.
    pub outliers: Vec<Outlier>,
    /// Readings that are present and not outliers / expected readings, percent (alert below 90).
    pub score_pct: f64,
}

/// The balance: totals, first- and second-law efficiency, closure, Sankey and data quality.
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
    /// Dead-state temperature the exergy was computed against, K.
    #[serde(default = "default_t0")]
    pub dead_state_temperature_k: f64,
    /// Dead-state pressure, kPa (recorded; no stream kind here depends on it).
    #[serde(default = "default_p0")]
    pub dead_state_pressure_kpa: f64,
    /// Exergy of all inputs, kWh; null when any input's exergy is unknown.
    #[serde(default)]
    pub exergy_input_kwh: Option<f64>,
    /// Exergy of all useful outputs, kWh; null when any output's exergy is unknown.
    #[serde(default)]
    pub exergy_output_kwh: Option<f64>,
    /// Exergy carried out by the measured losses, kWh; null when any loss's exergy is unknown.
    #[serde(default)]
    pub exergy_lost_kwh: Option<f64>,
    /// input - output - lost exergy, kWh: irreversibility plus exergy of unmetered streams.
    #[serde(default)]
    pub exergy_destroyed_kwh: Option<f64>,
    /// Second-law efficiency, exergy output / exergy input, percent; null when either is unknown.
    #[serde(default)]
    pub second_law_efficiency_pct: Option<f64>,
    /// The balance as a Sankey diagram.
    #[serde(default)]
    pub sankey: Sankey,
    /// Completeness and outliers of the readings.
    #[serde(default)]
    pub data_quality: DataQuality,
    /// Why a figure is missing, which assumption was made, what looks suspect.
    #[serde(default)]
    pub notes: Vec<String>,
}

fn default_t0() -> f64 {
    DEAD_STATE_TEMPERATURE_K
}

fn default_p0() -> f64 {
    DEAD_STATE_PRESSURE_KPA
}

/// Marker for the GL-009 calculation.
pub struct HeatBalance;

fn total(list: &[EnergyFlow], name: &str) -> Result<f64, CalcError> {
    list.iter().enumerate().try_fold(0.0, |acc, (i, f)| {
        Ok(acc + non_negative(&format!("{name}[{i}].energy_kwh"), f.energy_kwh)?)
    })
}

/// Operators type `Natural Gas` or `hot-water`; the tables use snake_case.
fn normalise(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

/// Phi (exergy / HHV) of a fuel by its table name, `None` when the fuel is not in the table.
pub fn fuel_exergy_factor(fuel: &str) -> Option<f64> {
    let fuel = normalise(fuel);
    FUEL_EXERGY_FACTORS
        .iter()
        .find(|(name, _)| *name == fuel)
        .map(|(_, phi)| *phi)
}

fn fuel_names() -> String {
    FUEL_EXERGY_FACTORS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_names() -> String {
    let mut all: Vec<&str> = vec![FUEL_KIND];
    all.extend_from_slice(WORK_KINDS);
    all.extend_from_slice(HEAT_KINDS);
    all.join(", ")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Basis {
    Gross,
    Net,
    /// Not given: treated as gross, and the assumption is noted.
    Assumed,
}

/// What is known about one stream's exergy.
struct StreamExergy {
    exergy_kwh: Option<f64>,
    basis: Option<Basis>,
    notes: Vec<String>,
}

/// Exergy of one stream. `Err` for values that are wrong; `exergy_kwh: None` plus a note for
/// values that are merely absent, so a first-law balance is never refused for lacking them.
fn stream_exergy(f: &EnergyFlow, path: &str, t0: f64) -> Result<StreamExergy, CalcError> {
    let who = format!("{path} '{}'", f.name);
    if let Some(t) = f.temperature_k {
        positive(&format!("{path}.temperature_k"), t)?;
    }
    if let Some(r) = f.gross_to_net_ratio {
        in_range(&format!("{path}.gross_to_net_ratio"), r, 1.0, 2.0)?;
    }
    let basis = match f.basis.as_deref().map(normalise).as_deref() {
        None => None,
        Some("gross" | "hhv") => Some(Basis::Gross),
        Some("net" | "lhv") => Some(Basis::Net),
        Some(other) => {
            return Err(CalcError::invalid(
                format!("{path}.basis"),
                format!("must be gross (HHV) or net (LHV), got '{other}'"),
            ));
        }
    };
    let phi = match &f.fuel {
        None => None,
        Some(fuel) => Some(fuel_exergy_factor(fuel).ok_or_else(|| {
            CalcError::invalid(
                format!("{path}.fuel"),
                format!("unknown fuel '{fuel}'; expected one of {}", fuel_names()),
            )
        })?),
    };
    let Some(kind) = f.kind.as_deref().map(normalise) else {
        return Ok(StreamExergy {
            exergy_kwh: None,
            basis: None,
            notes: vec![format!("{who}: exergy unknown, no kind given")],
        });
    };
    let is_fuel = kind == FUEL_KIND;
    let is_work = WORK_KINDS.contains(&kind.as_str());
    let is_heat = HEAT_KINDS.contains(&kind.as_str());
    if !(is_fuel || is_work || is_heat) {
        return Err(CalcError::invalid(
            format!("{path}.kind"),
            format!("unknown kind '{kind}'; expected one of {}", kind_names()),
        ));
    }
    if !is_fuel {
        // A fuel name on a heat or electricity stream means the kind or the stream is wrong;
        // guessing which would hide the mistake.
        for (field, set) in [
            ("fuel", f.fuel.is_some()),
            ("basis", f.basis.is_some()),
            ("gross_to_net_ratio", f.gross_to_net_ratio.is_some()),
        ] {
            if set {
                return Err(CalcError::invalid(
                    format!("{path}.{field}"),
                    format!("only allowed on kind fuel, this stream is kind '{kind}'"),
                ));
            }
        }
    }
    let e = f.energy_kwh;
    if is_work {
        return Ok(StreamExergy {
            exergy_kwh: Some(e),
            basis: None,
            notes: vec![],
        });
    }
    if is_heat {
        let Some(t) = f.temperature_k else {
            return Ok(StreamExergy {
                exergy_kwh: None,
                basis: None,
                notes: vec![format!(
                    "{who}: exergy unknown, kind '{kind}' needs temperature_k"
                )],
            });
        };
        if t < t0 {
            // Below T0 the exergy of heat flows against the heat (a cooling duty); a balance of
            // non-negative energy streams cannot carry that sign, so refuse rather than guess.
            return Err(CalcError::invalid(
                format!("{path}.temperature_k"),
                format!(
                    "heat at {t} K is below the dead state T0 = {t0} K; set dead_state_temperature_k \
                     to the actual ambient or omit temperature_k (is it in degrees Celsius?)"
                ),
            ));
        }
        return Ok(StreamExergy {
            exergy_kwh: Some(e * (1.0 - t0 / t)),
            basis: None,
            notes: vec![],
        });
    }
    let Some(phi) = phi else {
        return Ok(StreamExergy {
            exergy_kwh: None,
            basis: None,
            notes: vec![format!(
                "{who}: exergy unknown, kind fuel needs fuel (one of {})",
                fuel_names()
            )],
        });
    };
    let mut notes = vec![];
    let (basis, gross_kwh) = match (basis, f.gross_to_net_ratio) {
        (Some(Basis::Net), Some(r)) => (Basis::Net, e * r),
        (Some(Basis::Net), None) => {
            return Err(CalcError::invalid(
                format!("{path}.gross_to_net_ratio"),
                "required for a net (LHV) basis fuel: phi applies to the gross (HHV) energy",
            ));
        }
        (_, Some(_)) => {
            return Err(CalcError::invalid(
                format!("{path}.gross_to_net_ratio"),
                "only meaningful with basis net; a gross (HHV) energy needs no conversion",
            ));
        }
        (Some(b), None) => (b, e),
        (None, None) => {
            notes.push(format!(
                "{who}: basis not given, energy_kwh taken as gross (HHV) for phi"
            ));
            (Basis::Assumed, e)
        }
    };
    Ok(StreamExergy {
        exergy_kwh: Some(phi * gross_kwh),
        basis: Some(basis),
        notes,
    })
}

/// Everything validation learns, kept so `run` does not compute it twice.
struct Prepared {
    input: f64,
    output: f64,
    losses: f64,
    t0: f64,
    p0: f64,
    z_threshold: f64,
    exergy_input: Option<f64>,
    exergy_output: Option<f64>,
    exergy_lost: Option<f64>,
    notes: Vec<String>,
}

/// Sums the exergy of one list; `None` when a stream's exergy is unknown.
fn list_exergy(
    list: &[EnergyFlow],
    name: &str,
    t0: f64,
    notes: &mut Vec<String>,
    bases: &mut Vec<Basis>,
) -> Result<Option<f64>, CalcError> {
    let mut sum = Some(0.0);
    for (i, f) in list.iter().enumerate() {
        let s = stream_exergy(f, &format!("{name}[{i}]"), t0)?;
        notes.extend(s.notes);
        bases.extend(s.basis);
        sum = match (sum, s.exergy_kwh) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    if sum.is_some_and(|s| !s.is_finite()) {
        return Err(CalcError::invalid(
            name,
            "total exergy is too large to represent",
        ));
    }
    Ok(sum)
}

fn check_history(list: &[EnergyFlow], name: &str) -> Result<(), CalcError> {
    for (i, f) in list.iter().enumerate() {
        for (k, v) in f.history_kwh.iter().enumerate() {
            // NaN is how protobuf carries a missing reading; it counts as missing, not wrong.
            if let Some(v) = v.filter(|v| !v.is_nan()) {
                non_negative(&format!("{name}[{i}].history_kwh[{k}]"), v)?;
            }
        }
    }
    Ok(())
}

impl HeatBalanceRequest {
    /// Checks every rule and returns the three totals (inputs, outputs, losses).
    pub fn validate(&self) -> Result<(f64, f64, f64), CalcError> {
        self.prepare().map(|p| (p.input, p.output, p.losses))
    }

    fn prepare(&self) -> Result<Prepared, CalcError> {
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
        // Finite streams can still sum past f64::MAX; an infinite total would turn the closure
        // and the Sankey into NaN.
        for (field, v) in [
            ("inputs", input),
            ("outputs", output),
            ("losses", losses),
            ("losses", output + losses),
        ] {
            if !v.is_finite() {
                return Err(CalcError::invalid(
                    field,
                    "total energy is too large to represent",
                ));
            }
        }
        if !((input - output - losses) / input * 100.0).is_finite() {
            return Err(CalcError::invalid(
                "losses",
                format!(
                    "total losses {losses} kWh against input {input} kWh give a closure too large to represent"
                ),
            ));
        }
        let t0 = match self.dead_state_temperature_k {
            Some(t) => in_range("dead_state_temperature_k", t, 200.0, 400.0)?,
            None => DEAD_STATE_TEMPERATURE_K,
        };
        let p0 = match self.dead_state_pressure_kpa {
            Some(p) => in_range("dead_state_pressure_kpa", p, 50.0, 150.0)?,
            None => DEAD_STATE_PRESSURE_KPA,
        };
        let z_threshold = match self.outlier_z_threshold {
            Some(z) => positive("outlier_z_threshold", z)?,
            None => DEFAULT_OUTLIER_Z_THRESHOLD,
        };
        let mut notes = vec![];
        let mut input_bases = vec![];
        let mut other_bases = vec![];
        let exergy_input = list_exergy(&self.inputs, "inputs", t0, &mut notes, &mut input_bases)?;
        let exergy_output =
            list_exergy(&self.outputs, "outputs", t0, &mut notes, &mut other_bases)?;
        let exergy_lost = list_exergy(&self.losses, "losses", t0, &mut notes, &mut other_bases)?;
        check_history(&self.inputs, "inputs")?;
        check_history(&self.outputs, "outputs")?;
        check_history(&self.losses, "losses")?;

        let all = || self.inputs.iter().chain(&self.outputs).chain(&self.losses);
        if all().all(|f| f.kind.is_none()) {
            // A first-law-only request: one note instead of one per stream.
            notes.retain(|n| !n.ends_with("no kind given"));
            notes.push(
                "no stream has a kind: second-law (exergy) analysis not requested".to_string(),
            );
        }
        if input_bases.contains(&Basis::Net) && input_bases.iter().any(|b| *b != Basis::Net) {
            notes.push(
                "inputs mix net (LHV) and gross (HHV) fuel energy: the first-law efficiency adds them as given"
                    .to_string(),
            );
        }
        if let (Some(xi), Some(xo)) = (exergy_input, exergy_output) {
            // Rounding may leave an all-electric balance a few ulps over; real excess is a meter
            // or kind/temperature error, refused like a first-law efficiency over 100 %.
            if xo > xi * (1.0 + 1e-12) {
                return Err(CalcError::invalid(
                    "outputs",
                    format!(
                        "exergy of useful outputs {xo} kWh exceeds exergy of inputs {xi} kWh \
                         (second-law efficiency > 100 %); check kind and temperature_k"
                    ),
                ));
            }
        }
        Ok(Prepared {
            input,
            output,
            losses,
            t0,
            p0,
            z_threshold,
            exergy_input,
            exergy_output,
            exergy_lost,
            notes,
        })
    }
}

/// Builds the diagram: each input -> equipment -> each output and loss, plus one residual node
/// so the equipment node conserves energy whatever the closure.
fn build_sankey(req: &HeatBalanceRequest, input: f64, output: f64, losses: f64) -> Sankey {
    let mut nodes = vec![];
    let mut links = vec![];
    let equipment = "equipment".to_string();
    let unaccounted = input - output - losses;
    let residual = unaccounted.abs() > SANKEY_RESIDUAL_EPS * input;
    let stream = |nodes: &mut Vec<SankeyNode>, id: String, f: &EnergyFlow, kind: &str| {
        nodes.push(SankeyNode {
            id,
            label: f.name.clone(),
            kind: kind.into(),
        });
    };
    for (i, f) in req.inputs.iter().enumerate() {
        let id = format!("inputs[{i}]");
        stream(&mut nodes, id.clone(), f, "input");
        links.push(SankeyLink {
            source: id,
            target: equipment.clone(),
            value_kwh: f.energy_kwh,
        });
    }
    if residual && unaccounted < 0.0 {
        // More left than was metered in: drawn as an unmetered input, since a link of negative
        // value cannot be drawn and would break conservation checks downstream.
        nodes.push(SankeyNode {
            id: "unmetered_input".into(),
            label: "Unmetered input".into(),
            kind: "unmetered_input".into(),
        });
        links.push(SankeyLink {
            source: "unmetered_input".into(),
            target: equipment.clone(),
            value_kwh: -unaccounted,
        });
    }
    let label = req
        .equipment
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("Equipment");
    nodes.push(SankeyNode {
        id: equipment.clone(),
        label: label.into(),
        kind: "equipment".into(),
    });
    for (list, name, kind) in [
        (&req.outputs, "outputs", "output"),
        (&req.losses, "losses", "loss"),
    ] {
        for (i, f) in list.iter().enumerate() {
            let id = format!("{name}[{i}]");
            stream(&mut nodes, id.clone(), f, kind);
            links.push(SankeyLink {
                source: equipment.clone(),
                target: id,
                value_kwh: f.energy_kwh,
            });
        }
    }
    if residual && unaccounted > 0.0 {
        nodes.push(SankeyNode {
            id: "unaccounted".into(),
            label: "Unaccounted".into(),
            kind: "unaccounted".into(),
        });
        links.push(SankeyLink {
            source: equipment,
            target: "unaccounted".into(),
            value_kwh: unaccounted,
        });
    }
    Sankey { nodes, links }
}

/// Rejects a Sankey diagram with duplicate or unknown node ids, negative or non-finite values,
/// cycles, or an internal node whose inflow and outflow differ by more than [`SANKEY_TOLERANCE`].
pub fn check_sankey(s: &Sankey) -> Result<(), CalcError> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(s.nodes.len());
    for (i, n) in s.nodes.iter().enumerate() {
        if n.id.is_empty() {
            return Err(CalcError::invalid(
                format!("sankey.nodes[{i}].id"),
                "must not be empty",
            ));
        }
        if index.insert(n.id.as_str(), i).is_some() {
            return Err(CalcError::invalid(
                format!("sankey.nodes[{i}].id"),
                format!("duplicate node id '{}'", n.id),
            ));
        }
    }
    let n = s.nodes.len();
    let mut inflow = vec![0.0_f64; n];
    let mut outflow = vec![0.0_f64; n];
    let mut has_in = vec![false; n];
    let mut has_out = vec![false; n];
    let mut indegree = vec![0_usize; n];
    let mut next: Vec<Vec<usize>> = vec![vec![]; n];
    for (k, l) in s.links.iter().enumerate() {
        non_negative(&format!("sankey.links[{k}].value_kwh"), l.value_kwh)?;
        let node = |id: &str, end: &str| {
            index.get(id).copied().ok_or_else(|| {
                CalcError::invalid(
                    format!("sankey.links[{k}].{end}"),
                    format!("no node with id '{id}'"),
                )
            })
        };
        let (a, b) = (node(&l.source, "source")?, node(&l.target, "target")?);
        if a == b {
            return Err(CalcError::invalid(
                format!("sankey.links[{k}]"),
                format!("links node '{}' to itself (a cycle)", l.source),
            ));
        }
        outflow[a] += l.value_kwh;
        inflow[b] += l.value_kwh;
        has_out[a] = true;
        has_in[b] = true;
        indegree[b] += 1;
        next[a].push(b);
    }
    // Kahn's algorithm: whatever cannot be ordered lies on or behind a cycle.
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut ordered = 0;
    while let Some(a) = ready.pop() {
        ordered += 1;
        for &b in &next[a] {
            indegree[b] -= 1;
            if indegree[b] == 0 {
                ready.push(b);
            }
        }
    }
    if ordered < n {
        let stuck = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
        return Err(CalcError::invalid(
            "sankey.links",
            format!("contain a cycle through node '{}'", s.nodes[stuck].id),
        ));
    }
    for i in 0..n {
        if !(has_in[i] && has_out[i]) {
            continue;
        }
        let (a, b) = (inflow[i], outflow[i]);
        let ok = a.is_finite() && b.is_finite() && (a - b).abs() <= SANKEY_TOLERANCE * a.max(b);
        if !ok {
            return Err(CalcError::invalid(
                format!("sankey.nodes[{i}]"),
                format!(
                    "node '{}' is not conserved: inflow {a} kWh, outflow {b} kWh",
                    s.nodes[i].id
                ),
            ));
        }
    }
    Ok(())
}

/// Population z-scores (as `scipy.stats.zscore`) of the present readings, as (index, value, z).
/// Values are scaled to at most 1 first so squares of huge readings cannot overflow.
fn z_scores(series: &[(usize, f64)]) -> Vec<(usize, f64, f64)> {
    let n = series.len();
    let scale = series.iter().fold(0.0_f64, |m, &(_, v)| m.max(v));
    if n < 2 || scale <= 0.0 {
        return vec![];
    }
    let x: Vec<f64> = series.iter().map(|&(_, v)| v / scale).collect();
    let mean = x.iter().sum::<f64>() / n as f64;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    let sd = var.sqrt();
    if !(sd > 0.0 && sd.is_finite()) {
        return vec![];
    }
    series
        .iter()
        .zip(&x)
        .map(|(&(i, v), &s)| (i, v, (s - mean) / sd))
        .filter(|(_, _, z)| z.is_finite())
        .collect()
}

fn data_quality(req: &HeatBalanceRequest, threshold: f64, notes: &mut Vec<String>) -> DataQuality {
    let mut expected = 0_u64;
    let mut missing = 0_u64;
    let mut outliers = vec![];
    for (list, name) in [
        (&req.inputs, "inputs"),
        (&req.outputs, "outputs"),
        (&req.losses, "losses"),
    ] {
        for (i, f) in list.iter().enumerate() {
            let path = format!("{name}[{i}]");
            let current = f.history_kwh.len();
            let present: Vec<(usize, f64)> = f
                .history_kwh
                .iter()
                .copied()
                .chain([Some(f.energy_kwh)])
                .enumerate()
                .filter_map(|(k, v)| v.filter(|v| !v.is_nan()).map(|v| (k, v)))
                .collect();
            expected += current as u64 + 1;
            missing += (current + 1 - present.len()) as u64;
            if f.history_kwh.is_empty() {
                continue;
            }
            // With n points no population z-score can exceed sqrt(n - 1); say so rather than
            // let "no outliers" read as "checked and clean".
            let reachable = (present.len().saturating_sub(1) as f64).sqrt();
            if reachable <= threshold {
                notes.push(format!(
                    "{path} '{}': {} readings present, |z| cannot exceed {reachable:.3} <= {threshold}; outlier test inconclusive",
                    f.name,
                    present.len()
                ));
            }
            for (k, v, z) in z_scores(&present) {
                if z.abs() > threshold {
                    if k == current {
                        notes.push(format!(
                            "{path} '{}': current reading {v} kWh is an outlier (z = {z:.2}); the balance uses it as given",
                            f.name
                        ));
                    }
                    outliers.push(Outlier {
                        stream: path.clone(),
                        name: f.name.clone(),
                        index: k as u64,
                        value_kwh: v,
                        z_score: z,
                        current_reading: k == current,
                    });
                }
            }
        }
    }
    // expected >= 1: validation requires an input, and every stream has a current reading.
    let expected_f = expected.max(1) as f64;
    let present = expected - missing;
    DataQuality {
        readings_expected: expected,
        readings_missing: missing,
        completeness_pct: present as f64 / expected_f * 100.0,
        outlier_z_threshold: threshold,
        score_pct: (present - outliers.len() as u64) as f64 / expected_f * 100.0,
        outliers,
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
        let p = req.prepare()?;
        let (input, output, losses) = (p.input, p.output, p.losses);
        let threshold = req
            .closure_threshold_pct
            .unwrap_or(DEFAULT_CLOSURE_THRESHOLD_PCT);
        let unaccounted = input - output - losses;
        let closure_pct = unaccounted / input * 100.0;
        let mut notes = p.notes;

        let second_law_efficiency_pct = match (p.exergy_input, p.exergy_output) {
            (Some(xi), Some(xo)) if xi > 0.0 => Some((xo / xi * 100.0).min(100.0)),
            (Some(_), Some(_)) => {
                notes.push(
                    "exergy of inputs is 0 (heat at the dead-state temperature): second-law efficiency undefined"
                        .to_string(),
                );
                None
            }
            _ => None,
        };
        let exergy_destroyed_kwh = match (p.exergy_input, p.exergy_output, p.exergy_lost) {
            (Some(xi), Some(xo), Some(xl)) => Some(xi - xo - xl),
            _ => None,
        };
        if let (Some(d), Some(xi)) = (exergy_destroyed_kwh, p.exergy_input)
            && d < -1e-9 * xi
        {
            notes.push(format!(
                "exergy destroyed is negative ({d} kWh): the losses carry more exergy than input minus output; check loss temperatures"
            ));
        }

        let sankey = build_sankey(req, input, output, losses);
        // Validated inputs always give a valid diagram; should that ever fail, an error is
        // better than handing an operator a diagram that does not add up.
        check_sankey(&sankey)?;
        let data_quality = data_quality(req, p.z_threshold, &mut notes);

        Ok(HeatBalanceResult {
            total_input_kwh: input,
            total_output_kwh: output,
            total_losses_kwh: losses,
            unaccounted_kwh: unaccounted,
            efficiency_pct: output / input * 100.0,
            closure_pct,
            closure_threshold_pct: threshold,
            balance_alert: closure_pct.abs() > threshold,
            dead_state_temperature_k: p.t0,
            dead_state_pressure_kpa: p.p0,
            exergy_input_kwh: p.exergy_input,
            exergy_output_kwh: p.exergy_output,
            exergy_lost_kwh: p.exergy_lost,
            exergy_destroyed_kwh,
            second_law_efficiency_pct,
            sankey,
            data_quality,
            notes,
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
            ..Default::default()
        }
    }

    #[test]
    fn seed_case_fuel_and_electricity() {
        let req = HeatBalanceRequest {
            inputs: vec![flow("fuel", 1000.0), flow("electricity", 50.0)],
            outputs: vec![flow("steam", 750.0), flow("electricity", 200.0)],
            losses: vec![],
            closure_threshold_pct: None,
            ..Default::default()
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
            ..Default::default()
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
            ..Default::default()
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
            ..Default::default()
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

    // ---- second law -------------------------------------------------------------------

    fn fuel(name: &str, kwh: f64, fuel: &str) -> EnergyFlow {
        EnergyFlow {
            kind: Some("fuel".into()),
            fuel: Some(fuel.into()),
            basis: Some("gross".into()),
            ..flow(name, kwh)
        }
    }

    fn heat(name: &str, kwh: f64, kind: &str, t: f64) -> EnergyFlow {
        EnergyFlow {
            kind: Some(kind.into()),
            temperature_k: Some(t),
            ..flow(name, kwh)
        }
    }

    fn power(name: &str, kwh: f64) -> EnergyFlow {
        EnergyFlow {
            kind: Some("electricity".into()),
            ..flow(name, kwh)
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn gas_boiler() -> HeatBalanceRequest {
        HeatBalanceRequest {
            inputs: vec![fuel("natural gas", 1000.0, "natural_gas")],
            outputs: vec![heat("steam", 850.0, "steam", 453.15)],
            losses: vec![
                heat("stack", 100.0, "flue_gas", 450.0),
                heat("radiation", 30.0, "heat", 298.15),
                heat("blowdown", 20.0, "hot_water", 373.15),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn exergy_known_answers_gas_boiler() {
        let r = HeatBalance::run(&gas_boiler()).unwrap();
        // 1000 kWh natural gas (gross) x phi 1.04 = 1040 kWh.
        assert!(close(r.exergy_input_kwh.unwrap(), 1040.0, 1e-9));
        // 850 x (1 - 298.15/453.15) = 850 x 155/453.15 = 290.742 579 72 kWh.
        assert!(close(r.exergy_output_kwh.unwrap(), 290.742_579_72, 1e-6));
        // 290.742 579 72 / 1040 x 100 = 27.956 017 28 %.
        let eta2 = r.second_law_efficiency_pct.unwrap();
        assert!(close(eta2, 27.956_017_28, 1e-6), "{eta2}");
        // Losses: 100 (1 - 298.15/450) + 30 x 0 + 20 (1 - 298.15/373.15)
        //       = 33.744 444 44 + 0 + 4.019 831 17 = 37.764 275 61 kWh.
        let lost = 100.0 * (1.0 - 298.15 / 450.0) + 20.0 * (1.0 - 298.15 / 373.15);
        assert!(close(lost, 37.764_275_61, 1e-6));
        assert!(close(r.exergy_lost_kwh.unwrap(), lost, 1e-9));
        // Destroyed = 1040 - 290.742 579 72 - 37.764 275 61 = 711.493 144 67 kWh.
        assert!(close(r.exergy_destroyed_kwh.unwrap(), 711.493_144_67, 1e-6));
        // The first-law figures are those of the seed case.
        assert!((r.efficiency_pct - 85.0).abs() < 1e-12);
        assert!(r.closure_pct.abs() < 1e-12);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn exergy_known_answer_fuel_and_electricity() {
        let req = HeatBalanceRequest {
            inputs: vec![
                fuel("fuel", 1000.0, "natural_gas"),
                power("electricity", 50.0),
            ],
            outputs: vec![
                heat("steam", 750.0, "steam", 453.15),
                power("electricity", 200.0),
            ],
            ..Default::default()
        };
        let r = HeatBalance::run(&req).unwrap();
        // in: 1040 + 50 = 1090; out: 750 x 0.342 050 094 + 200 = 456.537 570 34.
        assert!(close(r.exergy_input_kwh.unwrap(), 1090.0, 1e-9));
        assert!(close(r.exergy_output_kwh.unwrap(), 456.537_570_34, 1e-6));
        // 456.537 570 34 / 1090 = 41.884 180 77 %.
        assert!(close(
            r.second_law_efficiency_pct.unwrap(),
            41.884_180_77,
            1e-6
        ));
        // No losses listed: lost exergy is 0 and all the rest is destroyed or unmetered.
        assert_eq!(r.exergy_lost_kwh, Some(0.0));
        assert!(close(
            r.exergy_destroyed_kwh.unwrap(),
            1090.0 - 456.537_570_34,
            1e-6
        ));
        assert!((r.efficiency_pct - 90.476_190_476).abs() < 1e-6);
    }

    #[test]
    fn each_fuel_uses_its_phi() {
        for (name, phi) in [
            ("natural_gas", 1.04),
            ("coal", 1.06),
            ("fuel_oil", 1.065),
            ("diesel", 1.07),
            ("biomass", 1.15),
            ("hydrogen", 0.985),
            ("propane", 1.05),
        ] {
            let req = HeatBalanceRequest {
                inputs: vec![fuel("f", 1000.0, name)],
                ..Default::default()
            };
            let r = HeatBalance::run(&req).unwrap();
            assert!(
                close(r.exergy_input_kwh.unwrap(), 1000.0 * phi, 1e-9),
                "{name}"
            );
        }
        // Operators' spellings normalise to the table's names.
        assert_eq!(fuel_exergy_factor(" Natural Gas "), Some(1.04));
        assert_eq!(fuel_exergy_factor("fuel-oil"), Some(1.065));
        assert_eq!(fuel_exergy_factor("peat"), None);
    }

    #[test]
    fn net_basis_is_converted_to_gross() {
        let mut f = fuel("gas", 900.0, "natural_gas");
        f.basis = Some("net".into());
        f.gross_to_net_ratio = Some(1.108);
        let req = HeatBalanceRequest {
            inputs: vec![f],
            ..Default::default()
        };
        // 900 kWh (LHV) x 1.108 = 997.2 kWh (HHV); x 1.04 = 1037.088 kWh exergy.
        let r = HeatBalance::run(&req).unwrap();
        assert!(close(r.exergy_input_kwh.unwrap(), 1037.088, 1e-9));
        // The first law keeps the energy as given.
        assert_eq!(r.total_input_kwh, 900.0);
    }

    #[test]
    fn missing_basis_is_assumed_gross_and_noted() {
        let mut f = fuel("gas", 1000.0, "natural_gas");
        f.basis = None;
        let req = HeatBalanceRequest {
            inputs: vec![f],
            ..Default::default()
        };
        let r = HeatBalance::run(&req).unwrap();
        assert!(close(r.exergy_input_kwh.unwrap(), 1040.0, 1e-9));
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("inputs[0]") && n.contains("gross"))
        );
    }

    #[test]
    fn mixed_bases_are_noted() {
        let mut net = fuel("gas", 500.0, "natural_gas");
        net.basis = Some("LHV".into());
        net.gross_to_net_ratio = Some(1.108);
        let req = HeatBalanceRequest {
            inputs: vec![net, fuel("oil", 500.0, "fuel_oil")],
            ..Default::default()
        };
        let r = HeatBalance::run(&req).unwrap();
        assert!(
            r.notes.iter().any(|n| n.contains("mix net")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn dead_state_is_overridable() {
        let mut req = gas_boiler();
        req.dead_state_temperature_k = Some(288.15);
        req.dead_state_pressure_kpa = Some(95.0);
        let r = HeatBalance::run(&req).unwrap();
        // 850 x (1 - 288.15/453.15) = 850 x 165/453.15 = 309.500 165 51 kWh.
        assert!(close(r.exergy_output_kwh.unwrap(), 309.500_165_51, 1e-6));
        assert_eq!(r.dead_state_temperature_k, 288.15);
        assert_eq!(r.dead_state_pressure_kpa, 95.0);
        let d = HeatBalance::run(&gas_boiler()).unwrap();
        assert_eq!(d.dead_state_temperature_k, DEAD_STATE_TEMPERATURE_K);
        assert_eq!(d.dead_state_pressure_kpa, DEAD_STATE_PRESSURE_KPA);
    }

    #[test]
    fn heat_at_dead_state_has_no_exergy() {
        let req = HeatBalanceRequest {
            inputs: vec![
                heat("ambient heat", 200.0, "heat", 298.15),
                power("compressor", 100.0),
            ],
            outputs: vec![heat("hot water", 290.0, "hot_water", 333.15)],
            ..Default::default()
        };
        let r = HeatBalance::run(&req).unwrap();
        assert!(close(r.exergy_input_kwh.unwrap(), 100.0, 1e-12));
        // 290 x (1 - 298.15/333.15) = 290 x 35/333.15 = 30.466 756 72 kWh -> 30.466 756 72 %.
        assert!(close(
            r.second_law_efficiency_pct.unwrap(),
            30.466_756_72,
            1e-6
        ));
    }

    #[test]
    fn zero_exergy_input_leaves_second_law_undefined() {
        let req = HeatBalanceRequest {
            inputs: vec![heat("ambient", 100.0, "heat", 298.15)],
            outputs: vec![heat("room", 50.0, "heat", 298.15)],
            ..Default::default()
        };
        let r = HeatBalance::run(&req).unwrap();
        assert_eq!(r.exergy_input_kwh, Some(0.0));
        assert_eq!(r.second_law_efficiency_pct, None);
        assert!(r.notes.iter().any(|n| n.contains("undefined")));
    }

    #[test]
    fn missing_exergy_data_is_noted_not_refused() {
        let mut req = gas_boiler();
        req.inputs.push(flow("electricity", 10.0));
        req.outputs[0].temperature_k = None;
        req.losses[0].kind = None;
        req.losses[1].kind = Some("fuel".into());
        let r = HeatBalance::run(&req).unwrap();
        assert_eq!(r.exergy_input_kwh, None);
        assert_eq!(r.exergy_output_kwh, None);
        assert_eq!(r.exergy_lost_kwh, None);
        assert_eq!(r.exergy_destroyed_kwh, None);
        assert_eq!(r.second_law_efficiency_pct, None);
        let has = |s: &str, what: &str| r.notes.iter().any(|n| n.contains(s) && n.contains(what));
        assert!(has("inputs[1] 'electricity'", "no kind"), "{:?}", r.notes);
        assert!(has("outputs[0] 'steam'", "temperature_k"), "{:?}", r.notes);
        assert!(has("losses[0] 'stack'", "no kind"), "{:?}", r.notes);
        assert!(has("losses[1] 'radiation'", "needs fuel"), "{:?}", r.notes);
        // The first law is untouched.
        assert!(close(r.efficiency_pct, 850.0 / 1010.0 * 100.0, 1e-12));
    }

    #[test]
    fn loss_exergy_is_not_needed_for_second_law_efficiency() {
        let mut req = gas_boiler();
        req.losses[0].kind = None;
        let r = HeatBalance::run(&req).unwrap();
        assert!(r.second_law_efficiency_pct.is_some());
        assert_eq!(r.exergy_lost_kwh, None);
        assert_eq!(r.exergy_destroyed_kwh, None);
    }

    #[test]
    fn first_law_only_request_gets_one_note() {
        let req = HeatBalanceRequest {
            inputs: vec![flow("fuel", 1000.0)],
            outputs: vec![flow("steam", 850.0)],
            losses: vec![flow("stack", 100.0)],
            ..Default::default()
        };
        let r = HeatBalance::run(&req).unwrap();
        assert_eq!(r.second_law_efficiency_pct, None);
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        assert!(r.notes[0].contains("not requested"));
    }

    #[test]
    fn exergy_output_above_input_is_refused() {
        let req = HeatBalanceRequest {
            inputs: vec![heat("waste heat", 1000.0, "heat", 350.0)],
            outputs: vec![power("generator", 500.0)],
            ..Default::default()
        };
        assert_eq!(HeatBalance::run(&req).unwrap_err().field(), Some("outputs"));
    }

    #[test]
    fn all_electric_balance_is_not_refused_for_rounding() {
        let req = HeatBalanceRequest {
            inputs: vec![power("a", 0.1), power("b", 0.2)],
            outputs: vec![power("c", 0.1 + 0.2)],
            ..Default::default()
        };
        let r = HeatBalance::run(&req).unwrap();
        assert!(r.second_law_efficiency_pct.unwrap() <= 100.0);
    }

    #[test]
    fn invalid_new_fields_name_the_field() {
        type Edit = fn(&mut HeatBalanceRequest);
        let cases: &[(&str, Edit)] = &[
            ("inputs[0].fuel", |r| r.inputs[0].fuel = Some("peat".into())),
            ("inputs[0].kind", |r| {
                r.inputs[0].kind = Some("plasma".into())
            }),
            ("inputs[0].basis", |r| {
                r.inputs[0].basis = Some("wet".into())
            }),
            ("inputs[0].gross_to_net_ratio", |r| {
                r.inputs[0].basis = Some("net".into())
            }),
            ("inputs[0].gross_to_net_ratio", |r| {
                r.inputs[0].gross_to_net_ratio = Some(1.1)
            }),
            ("inputs[0].gross_to_net_ratio", |r| {
                r.inputs[0].basis = Some("net".into());
                r.inputs[0].gross_to_net_ratio = Some(0.9);
            }),
            ("inputs[0].gross_to_net_ratio", |r| {
                r.inputs[0].basis = Some("net".into());
                r.inputs[0].gross_to_net_ratio = Some(f64::NAN);
            }),
            ("outputs[0].temperature_k", |r| {
                r.outputs[0].temperature_k = Some(180.0)
            }),
            ("outputs[0].temperature_k", |r| {
                r.outputs[0].temperature_k = Some(f64::NAN)
            }),
            ("outputs[0].temperature_k", |r| {
                r.outputs[0].temperature_k = Some(-5.0)
            }),
            ("losses[1].temperature_k", |r| {
                r.losses[1].temperature_k = Some(293.15)
            }),
            ("outputs[0].fuel", |r| {
                r.outputs[0].fuel = Some("coal".into())
            }),
            ("losses[0].basis", |r| {
                r.losses[0].basis = Some("gross".into())
            }),
            ("dead_state_temperature_k", |r| {
                r.dead_state_temperature_k = Some(25.0)
            }),
            ("dead_state_temperature_k", |r| {
                r.dead_state_temperature_k = Some(f64::INFINITY)
            }),
            ("dead_state_pressure_kpa", |r| {
                r.dead_state_pressure_kpa = Some(1.01325)
            }),
            ("dead_state_pressure_kpa", |r| {
                r.dead_state_pressure_kpa = Some(101_325.0)
            }),
            ("outlier_z_threshold", |r| r.outlier_z_threshold = Some(0.0)),
            ("outlier_z_threshold", |r| {
                r.outlier_z_threshold = Some(f64::NAN)
            }),
            ("inputs[0].history_kwh[1]", |r| {
                r.inputs[0].history_kwh = vec![Some(1.0), Some(f64::INFINITY)]
            }),
            ("losses[2].history_kwh[0]", |r| {
                r.losses[2].history_kwh = vec![Some(-3.0)]
            }),
            ("inputs", |r| {
                r.inputs = vec![flow("a", f64::MAX), flow("b", f64::MAX)]
            }),
            ("losses", |r| {
                r.losses[0].energy_kwh = f64::MAX;
                r.losses[1].energy_kwh = f64::MAX;
            }),
            ("losses", |r| {
                r.inputs[0].energy_kwh = 1e-300;
                r.outputs.clear();
                r.losses[0].energy_kwh = 1e300;
            }),
            ("inputs", |r| r.inputs[0].energy_kwh = f64::MAX),
        ];
        for (field, edit) in cases {
            let mut r = gas_boiler();
            edit(&mut r);
            let err = HeatBalance::run(&r).unwrap_err();
            assert_eq!(err.field(), Some(*field), "{err}");
            assert_eq!(HeatBalance::validate(&r).unwrap_err(), err);
        }
    }

    #[test]
    fn heat_below_dead_state_message_says_how_to_fix() {
        let mut r = gas_boiler();
        r.outputs[0].temperature_k = Some(180.0);
        let msg = HeatBalance::run(&r).unwrap_err().to_string();
        assert!(msg.contains("dead_state_temperature_k"), "{msg}");
        assert!(msg.contains("Celsius"), "{msg}");
    }

    // ---- Sankey -----------------------------------------------------------------------

    fn link<'a>(s: &'a Sankey, from: &str, to: &str) -> Option<&'a SankeyLink> {
        s.links.iter().find(|l| l.source == from && l.target == to)
    }

    #[test]
    fn sankey_closed_balance_has_no_residual_node() {
        let r = HeatBalance::run(&gas_boiler()).unwrap();
        let s = &r.sankey;
        check_sankey(s).unwrap();
        assert_eq!(s.nodes.len(), 1 + 1 + 1 + 3);
        assert_eq!(s.links.len(), 1 + 1 + 3);
        assert!(
            s.nodes
                .iter()
                .all(|n| n.kind != "unaccounted" && n.kind != "unmetered_input")
        );
        assert_eq!(link(s, "inputs[0]", "equipment").unwrap().value_kwh, 1000.0);
        assert_eq!(link(s, "equipment", "outputs[0]").unwrap().value_kwh, 850.0);
        assert_eq!(link(s, "equipment", "losses[2]").unwrap().value_kwh, 20.0);
        assert_eq!(s.nodes[0].label, "natural gas");
        assert_eq!(s.nodes[1].label, "Equipment");
    }

    #[test]
    fn sankey_positive_unaccounted_goes_to_its_node() {
        let req = HeatBalanceRequest {
            inputs: vec![flow("fuel", 1000.0), flow("electricity", 50.0)],
            outputs: vec![flow("steam", 750.0), flow("electricity", 200.0)],
            equipment: Some("boiler-1".into()),
            ..Default::default()
        };
        let r = HeatBalance::run(&req).unwrap();
        check_sankey(&r.sankey).unwrap();
        // Names repeat ("electricity" in and out); ids do not.
        assert_eq!(r.sankey.nodes[1].label, "electricity");
        assert_eq!(r.sankey.nodes[4].label, "electricity");
        assert_ne!(r.sankey.nodes[1].id, r.sankey.nodes[4].id);
        assert_eq!(r.sankey.nodes[2].label, "boiler-1");
        let u = link(&r.sankey, "equipment", "unaccounted").unwrap();
        assert!(close(u.value_kwh, 100.0, 1e-9));
    }

    #[test]
    fn sankey_negative_unaccounted_is_an_unmetered_input() {
        let req = HeatBalanceRequest {
            inputs: vec![flow("fuel", 1000.0)],
            outputs: vec![flow("steam", 900.0)],
            losses: vec![flow("stack", 150.0)],
            ..Default::default()
        };
        let r = HeatBalance::run(&req).unwrap();
        assert!(close(r.unaccounted_kwh, -50.0, 1e-9));
        check_sankey(&r.sankey).unwrap();
        let u = link(&r.sankey, "unmetered_input", "equipment").unwrap();
        assert!(close(u.value_kwh, 50.0, 1e-9));
        assert!(r.sankey.links.iter().all(|l| l.value_kwh >= 0.0));
        assert!(r.sankey.nodes.iter().all(|n| n.id != "unaccounted"));
    }

    fn node(id: &str) -> SankeyNode {
        SankeyNode {
            id: id.into(),
            label: id.into(),
            kind: "x".into(),
        }
    }

    fn edge(a: &str, b: &str, v: f64) -> SankeyLink {
        SankeyLink {
            source: a.into(),
            target: b.into(),
            value_kwh: v,
        }
    }

    #[test]
    fn check_sankey_rejects_bad_diagrams() {
        let good = Sankey {
            nodes: vec![node("a"), node("b"), node("c")],
            links: vec![edge("a", "b", 10.0), edge("b", "c", 10.0)],
        };
        check_sankey(&good).unwrap();
        let field = |s: &Sankey| check_sankey(s).unwrap_err().field().map(str::to_string);

        let mut s = good.clone();
        s.links[1].value_kwh = -10.0;
        assert_eq!(field(&s).as_deref(), Some("sankey.links[1].value_kwh"));

        let mut s = good.clone();
        s.links[0].value_kwh = f64::NAN;
        assert_eq!(field(&s).as_deref(), Some("sankey.links[0].value_kwh"));

        let mut s = good.clone();
        s.links[1].value_kwh = 9.0;
        assert_eq!(field(&s).as_deref(), Some("sankey.nodes[1]"));

        let mut s = good.clone();
        s.links.push(edge("c", "a", 10.0));
        assert_eq!(field(&s).as_deref(), Some("sankey.links"));

        let mut s = good.clone();
        s.links.push(edge("b", "b", 1.0));
        assert_eq!(field(&s).as_deref(), Some("sankey.links[2]"));

        let mut s = good.clone();
        s.links.push(edge("b", "zz", 1.0));
        assert_eq!(field(&s).as_deref(), Some("sankey.links[2].target"));

        let mut s = good.clone();
        s.nodes.push(node("a"));
        assert_eq!(field(&s).as_deref(), Some("sankey.nodes[3].id"));

        // Within the relative tolerance is conserved.
        let mut s = good;
        s.links[1].value_kwh = 10.0 * (1.0 + 1e-12);
        check_sankey(&s).unwrap();
    }

    // ---- data quality -----------------------------------------------------------------

    /// 20 readings around 1000 kWh with a 5000 kWh spike at index 7.
    fn history_with_spike() -> Vec<Option<f64>> {
        (0..20)
            .map(|k| {
                Some(if k == 7 {
                    5000.0
                } else {
                    1000.0 + (k % 5) as f64 * 10.0
                })
            })
            .collect()
    }

    #[test]
    fn planted_spike_is_flagged_without_changing_the_balance() {
        let plain = HeatBalance::run(&gas_boiler()).unwrap();
        let mut req = gas_boiler();
        req.inputs[0].history_kwh = history_with_spike();
        let r = HeatBalance::run(&req).unwrap();
        let o = &r.data_quality.outliers;
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(o[0].stream, "inputs[0]");
        assert_eq!(o[0].name, "natural gas");
        assert_eq!(o[0].index, 7);
        assert_eq!(o[0].value_kwh, 5000.0);
        assert!(o[0].z_score > 3.0);
        assert!(!o[0].current_reading);
        assert_eq!(r.efficiency_pct, plain.efficiency_pct);
        assert_eq!(r.unaccounted_kwh, plain.unaccounted_kwh);
        assert_eq!(r.exergy_input_kwh, plain.exergy_input_kwh);
        assert_eq!(r.sankey, plain.sankey);
        // 21 + 4 readings, none missing, one outlier.
        assert_eq!(r.data_quality.readings_expected, 25);
        assert_eq!(r.data_quality.readings_missing, 0);
        assert_eq!(r.data_quality.completeness_pct, 100.0);
        assert!(close(r.data_quality.score_pct, 24.0 / 25.0 * 100.0, 1e-12));
    }

    #[test]
    fn z_threshold_is_configurable() {
        let mut req = gas_boiler();
        req.inputs[0].history_kwh = history_with_spike();
        req.outlier_z_threshold = Some(10.0);
        let r = HeatBalance::run(&req).unwrap();
        assert!(r.data_quality.outliers.is_empty());
        assert_eq!(r.data_quality.outlier_z_threshold, 10.0);
    }

    #[test]
    fn current_reading_spike_is_flagged_and_noted() {
        let mut req = gas_boiler();
        req.inputs[0].history_kwh = vec![Some(100.0); 15];
        req.inputs[0].history_kwh[3] = Some(101.0);
        let r = HeatBalance::run(&req).unwrap();
        let o = &r.data_quality.outliers;
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(o[0].index, 15);
        assert!(o[0].current_reading);
        assert!(r.notes.iter().any(|n| n.contains("current reading")));
        assert_eq!(r.total_input_kwh, 1000.0);
    }

    #[test]
    fn missing_readings_lower_completeness() {
        let json = r#"{
            "inputs": [{"name": "gas", "energy_kwh": 1000,
                        "history_kwh": [980, null, 1010, null, 995]}],
            "outputs": [{"name": "steam", "energy_kwh": 850, "history_kwh": [840, 860, null]}]
        }"#;
        let req: HeatBalanceRequest = serde_json::from_str(json).unwrap();
        let r = HeatBalance::run(&req).unwrap();
        // gas: 5 + 1 readings, 2 missing; steam: 3 + 1 readings, 1 missing -> 7 / 10 present.
        assert_eq!(r.data_quality.readings_expected, 10);
        assert_eq!(r.data_quality.readings_missing, 3);
        assert!(close(r.data_quality.completeness_pct, 70.0, 1e-12));
        assert!(close(r.data_quality.score_pct, 70.0, 1e-12));
        // Short histories cannot reach |z| > 3: said, not hidden.
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("inputs[0]") && n.contains("inconclusive"))
        );
    }

    #[test]
    fn nan_history_counts_as_missing() {
        let mut req = gas_boiler();
        req.inputs[0].history_kwh = vec![Some(f64::NAN), None, Some(990.0)];
        let r = HeatBalance::run(&req).unwrap();
        assert_eq!(r.data_quality.readings_missing, 2);
    }

    #[test]
    fn no_history_is_complete() {
        let r = HeatBalance::run(&gas_boiler()).unwrap();
        assert_eq!(r.data_quality.readings_expected, 5);
        assert_eq!(r.data_quality.completeness_pct, 100.0);
        assert_eq!(r.data_quality.score_pct, 100.0);
        assert!(r.data_quality.outliers.is_empty());
    }

    #[test]
    fn z_scores_survive_huge_and_flat_readings() {
        let flat: Vec<(usize, f64)> = (0..12).map(|k| (k, 7.0)).collect();
        assert!(z_scores(&flat).is_empty());
        let mut huge: Vec<(usize, f64)> = (0..12).map(|k| (k, 1e300)).collect();
        huge[4].1 = f64::MAX;
        let z = z_scores(&huge);
        assert!(z.iter().all(|(_, _, z)| z.is_finite()));
        assert!(z.iter().any(|(k, _, z)| *k == 4 && *z > 3.0));
    }

    // ---- JSON -------------------------------------------------------------------------

    #[test]
    fn example_request_runs() {
        let req: HeatBalanceRequest =
            serde_json::from_str(include_str!("../../examples/calc/gl-009.json")).unwrap();
        let r = HeatBalance::run(&req).unwrap();
        assert!(r.second_law_efficiency_pct.is_some());
        assert!(!r.data_quality.outliers.is_empty());
        check_sankey(&r.sankey).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        let back: HeatBalanceResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn first_law_json_is_unchanged_on_the_way_in_and_out() {
        let json = r#"{"inputs":[{"name":"fuel","energy_kwh":1000.0}],"outputs":[{"name":"steam","energy_kwh":850.0}],"losses":[],"closure_threshold_pct":null}"#;
        let req: HeatBalanceRequest = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&req).unwrap(), json);
        // A result stored before the extension still deserialises.
        let old = r#"{"total_input_kwh":1000,"total_output_kwh":850,"total_losses_kwh":0,
            "unaccounted_kwh":150,"efficiency_pct":85,"closure_pct":15,
            "closure_threshold_pct":5,"balance_alert":true}"#;
        let r: HeatBalanceResult = serde_json::from_str(old).unwrap();
        assert_eq!(r.dead_state_temperature_k, DEAD_STATE_TEMPERATURE_K);
        assert_eq!(r.second_law_efficiency_pct, None);
    }

    // ---- properties -------------------------------------------------------------------

    fn all_finite(r: &HeatBalanceResult) -> bool {
        let opt = |o: Option<f64>| o.is_none_or(f64::is_finite);
        [
            r.total_input_kwh,
            r.total_output_kwh,
            r.total_losses_kwh,
            r.unaccounted_kwh,
            r.efficiency_pct,
            r.closure_pct,
            r.closure_threshold_pct,
            r.dead_state_temperature_k,
            r.dead_state_pressure_kpa,
            r.data_quality.completeness_pct,
            r.data_quality.score_pct,
            r.data_quality.outlier_z_threshold,
        ]
        .iter()
        .all(|v| v.is_finite())
            && [
                r.exergy_input_kwh,
                r.exergy_output_kwh,
                r.exergy_lost_kwh,
                r.exergy_destroyed_kwh,
                r.second_law_efficiency_pct,
            ]
            .into_iter()
            .all(opt)
            && r.sankey.links.iter().all(|l| l.value_kwh.is_finite())
            && r.data_quality
                .outliers
                .iter()
                .all(|o| o.value_kwh.is_finite() && o.z_score.is_finite())
    }

    use proptest::prelude::*;

    const FUELS_PHI_GE_1: &[&str] = &[
        "natural_gas",
        "coal",
        "fuel_oil",
        "diesel",
        "biomass",
        "propane",
    ];

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            proptest::num::f64::ANY,
            -10.0..2000.0_f64,
            Just(0.0),
            Just(f64::MAX),
            Just(298.15),
        ]
    }

    fn any_flow() -> impl Strategy<Value = EnergyFlow> {
        (
            any_f64(),
            proptest::option::of(prop::sample::select(vec![
                "fuel",
                "electricity",
                "heat",
                "steam",
                "bogus",
            ])),
            proptest::option::of(prop::sample::select(vec!["natural_gas", "hydrogen", "x"])),
            proptest::option::of(prop::sample::select(vec!["gross", "net", "?"])),
            proptest::option::of(any_f64()),
            proptest::option::of(any_f64()),
            prop::collection::vec(proptest::option::of(any_f64()), 0..15),
        )
            .prop_map(|(e, kind, fuel, basis, ratio, t, history_kwh)| EnergyFlow {
                name: "s".into(),
                energy_kwh: e,
                kind: kind.map(Into::into),
                fuel: fuel.map(Into::into),
                basis: basis.map(Into::into),
                gross_to_net_ratio: ratio,
                temperature_k: t,
                history_kwh,
            })
    }

    proptest! {
        #[test]
        fn sankey_conserves_energy_for_random_balances(
            ins in prop::collection::vec(0.0..1e6_f64, 1..5),
            out_frac in prop::collection::vec(0.0..0.999_f64, 0..5),
            losses in prop::collection::vec(0.0..1e6_f64, 0..5),
        ) {
            let total_in: f64 = ins.iter().sum();
            prop_assume!(total_in > 0.0);
            // Outputs share at most the whole input; losses are free, so the residual takes
            // either sign.
            let n = out_frac.len().max(1) as f64;
            let req = HeatBalanceRequest {
                inputs: ins.iter().map(|&v| flow("in", v)).collect(),
                outputs: out_frac.iter().map(|&f| flow("out", f * total_in / n)).collect(),
                losses: losses.iter().map(|&v| flow("loss", v)).collect(),
                ..Default::default()
            };
            let r = HeatBalance::run(&req).unwrap();
            let s = &r.sankey;
            prop_assert!(check_sankey(s).is_ok());
            prop_assert!(s.links.iter().all(|l| l.value_kwh >= 0.0 && l.value_kwh.is_finite()));
            // Independent of check_sankey: every node with links both ways conserves.
            for nd in &s.nodes {
                let inflow: f64 = s.links.iter().filter(|l| l.target == nd.id).map(|l| l.value_kwh).sum();
                let outflow: f64 = s.links.iter().filter(|l| l.source == nd.id).map(|l| l.value_kwh).sum();
                let internal = s.links.iter().any(|l| l.target == nd.id)
                    && s.links.iter().any(|l| l.source == nd.id);
                if internal {
                    prop_assert!((inflow - outflow).abs() <= 1e-9 * inflow.max(outflow),
                        "{}: {inflow} vs {outflow}", nd.id);
                }
            }
            let has = |id: &str| s.nodes.iter().any(|n| n.id == id);
            let eps = SANKEY_RESIDUAL_EPS * total_in;
            prop_assert_eq!(has("unaccounted"), r.unaccounted_kwh > eps);
            prop_assert_eq!(has("unmetered_input"), r.unaccounted_kwh < -eps);
        }

        #[test]
        fn efficiencies_within_0_and_100_for_physical_inputs(
            fuels in prop::collection::vec((0.0..1e6_f64, 0..7_usize), 1..4),
            power_in in 0.0..1e5_f64,
            outs in prop::collection::vec((0.0..0.999_f64, 298.15..2000.0_f64, any::<bool>()), 0..4),
            loss in 0.0..1e6_f64,
        ) {
            let mut inputs: Vec<EnergyFlow> = fuels
                .iter()
                .map(|&(e, k)| fuel("f", e, FUEL_EXERGY_FACTORS[k].0))
                .collect();
            inputs.push(power("grid", power_in));
            let total_in: f64 = inputs.iter().map(|f| f.energy_kwh).sum();
            prop_assume!(total_in > 0.0);
            let n = outs.len().max(1) as f64;
            // Electricity out may only use the electricity in, else the data break the second law.
            let outputs = outs
                .iter()
                .map(|&(frac, t, is_power)| {
                    if is_power {
                        power("export", frac * power_in / n)
                    } else {
                        heat("heat", frac * total_in / n, "heat", t)
                    }
                })
                .collect();
            let req = HeatBalanceRequest {
                inputs,
                outputs,
                losses: vec![heat("stack", loss, "flue_gas", 420.0)],
                ..Default::default()
            };
            let r = HeatBalance::run(&req).unwrap();
            prop_assert!((0.0..=100.0).contains(&r.efficiency_pct), "{}", r.efficiency_pct);
            let eta2 = r.second_law_efficiency_pct.unwrap();
            prop_assert!((0.0..=100.0).contains(&eta2), "{eta2}");
            prop_assert!(all_finite(&r));
        }

        #[test]
        fn second_law_below_first_law_for_fuel_in_heat_out(
            fuels in prop::collection::vec((0.0..1e6_f64, 0..FUELS_PHI_GE_1.len()), 1..4),
            outs in prop::collection::vec((0.0..0.999_f64, 298.15..5000.0_f64), 1..4),
            t0 in 250.0..330.0_f64,
        ) {
            let inputs: Vec<EnergyFlow> = fuels
                .iter()
                .map(|&(e, k)| fuel("f", e, FUELS_PHI_GE_1[k]))
                .collect();
            let total_in: f64 = inputs.iter().map(|f| f.energy_kwh).sum();
            prop_assume!(total_in > 0.0);
            let n = outs.len() as f64;
            let req = HeatBalanceRequest {
                inputs,
                // Heat outputs strictly above T0 so no case is refused as below the dead state.
                outputs: outs
                    .iter()
                    .map(|&(frac, t)| heat("h", frac * total_in / n, "heat", t.max(t0)))
                    .collect(),
                dead_state_temperature_k: Some(t0),
                ..Default::default()
            };
            let r = HeatBalance::run(&req).unwrap();
            let eta2 = r.second_law_efficiency_pct.unwrap();
            prop_assert!(eta2 <= r.efficiency_pct * (1.0 + 1e-12), "{eta2} > {}", r.efficiency_pct);
            prop_assert!(eta2 >= 0.0);
        }

        #[test]
        fn planted_spike_is_found(
            baseline in prop::collection::vec(900.0..1100.0_f64, 15..60),
            at in any::<prop::sample::Index>(),
            spike in 1e5..1e9_f64,
        ) {
            let mut history: Vec<Option<f64>> = baseline.iter().copied().map(Some).collect();
            let k = at.index(history.len());
            history[k] = Some(spike);
            let mut req = gas_boiler();
            req.outputs[0].history_kwh = history;
            let plain = HeatBalance::run(&gas_boiler()).unwrap();
            let r = HeatBalance::run(&req).unwrap();
            let o = &r.data_quality.outliers;
            prop_assert_eq!(o.len(), 1, "{:?}", o);
            prop_assert_eq!(o[0].index, k as u64);
            prop_assert_eq!(o[0].stream.as_str(), "outputs[0]");
            prop_assert_eq!(r.efficiency_pct, plain.efficiency_pct);
            prop_assert_eq!(r.closure_pct, plain.closure_pct);
        }

        #[test]
        fn never_panics_never_nan(
            inputs in prop::collection::vec(any_flow(), 0..4),
            outputs in prop::collection::vec(any_flow(), 0..3),
            losses in prop::collection::vec(any_flow(), 0..3),
            t0 in proptest::option::of(any_f64()),
            p0 in proptest::option::of(any_f64()),
            z in proptest::option::of(any_f64()),
            threshold in proptest::option::of(any_f64()),
        ) {
            let req = HeatBalanceRequest {
                inputs,
                outputs,
                losses,
                closure_threshold_pct: threshold,
                dead_state_temperature_k: t0,
                dead_state_pressure_kpa: p0,
                equipment: None,
                outlier_z_threshold: z,
            };
            match HeatBalance::run(&req) {
                Ok(r) => {
                    prop_assert!(all_finite(&r), "{r:?}");
                    prop_assert!(check_sankey(&r.sankey).is_ok());
                    prop_assert!(serde_json::to_string(&r).is_ok());
                }
                Err(e) => prop_assert!(e.field().is_some(), "{e}"),
            }
        }
    }
}
