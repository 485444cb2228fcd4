//! GL-003 CombustionOptimizer: stoichiometric air, excess air, Siegert flue-gas loss, O2 target.
//!
//! - Stoichiometric air from an ultimate analysis (kg/kg):
//!   TA = [11.6 C + 34.8 (H - O/8) + 4.35 S] / 100 (mass %, BEE Guide Book 2; process-heat.md
//!   GL-002), or for a named fuel from its molecule (CH4, C3H8, ...) or its stored composition.
//! - Excess air from flue O2 alone: EA = O2 / (21 - O2) x 100, or, when CO and N2 are measured,
//!   EA = 100 (O2 - 0.5 CO) / [0.264 N2 - (O2 - 0.5 CO)] (all dry vol %). The result says which.
//! - Siegert flue-gas loss (NET basis): qA = (T_flue - T_air) x [A2 / (21 - O2) + B] %, with the
//!   coefficients of the German 1. BImSchV (heating oil, natural gas, LPG).
//! - O2 target per fuel (cited below; the measured O2 clamped into the recommended band) and the
//!   gain qA(current O2) - qA(target O2) at the same temperatures.

use super::{CalcError, Calculation, finite, in_range};
use serde::{Deserialize, Serialize};

/// Volume fraction of O2 in air used by the volumetric stoichiometry (m3 air per m3 fuel). This is
/// the 21 % convention of the O2 / (21 - O2) formula; it gives the reference 9.52 m3/m3 for CH4.
pub const AIR_O2_VOL_FRACTION: f64 = 0.21;
/// Mole fraction of O2 in dry air, U.S. Standard Atmosphere 1976 (= ISO 2533).
pub const DRY_AIR_O2_MOLE_FRACTION: f64 = 0.209476;
/// Molar mass of dry air, kg/kmol, U.S. Standard Atmosphere 1976 (= ISO 2533).
pub const DRY_AIR_MOLAR_MASS: f64 = 28.9644;
/// Molar mass of O2, kg/kmol (IUPAC standard atomic weight of O, 15.9994 x 2).
pub const O2_MOLAR_MASS: f64 = 31.9988;
/// Mass fraction of O2 in dry air (0.2314), used for the kg/kg stoichiometry of named molecules:
/// it gives the reference 17.24 kg/kg for CH4.
pub const AIR_O2_MASS_FRACTION: f64 = DRY_AIR_O2_MOLE_FRACTION * O2_MOLAR_MASS / DRY_AIR_MOLAR_MASS;
/// Atomic mass of carbon, kg/kmol (IUPAC conventional value).
const C_ATOMIC_MASS: f64 = 12.011;
/// Atomic mass of hydrogen, kg/kmol (IUPAC conventional value).
const H_ATOMIC_MASS: f64 = 1.008;
/// |sum of the ultimate analysis - 100| allowed, percentage points (rounding in lab reports).
pub const COMPOSITION_SUM_TOLERANCE_PCT: f64 = 1.0;
/// Lowest and highest temperature accepted for flue gas and air, degC.
const T_MIN_C: f64 = -273.15;
const T_MAX_C: f64 = 2000.0;

/// An ultimate analysis, mass % as fired. Validated: each in [0, 100], sum 100 +- 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UltimateAnalysis {
    /// Carbon, mass %.
    pub carbon: f64,
    /// Hydrogen, mass %.
    pub hydrogen: f64,
    /// Oxygen, mass %.
    pub oxygen: f64,
    /// Sulphur, mass %.
    pub sulphur: f64,
    /// Nitrogen, mass %.
    pub nitrogen: f64,
    /// Moisture, mass %.
    pub moisture: f64,
    /// Ash, mass %.
    pub ash: f64,
}

impl UltimateAnalysis {
    /// Builds and validates an analysis from the seven flat request fields (carbon first). Missing
    /// fields count as 0 %, except carbon which is required; the sum must be 100 +- 1 %.
    pub fn from_fields(fields: [(&str, Option<f64>); 7]) -> Result<UltimateAnalysis, CalcError> {
        let mut v = [0.0; 7];
        for (i, (name, value)) in fields.iter().enumerate() {
            match value {
                Some(x) => v[i] = in_range(name, *x, 0.0, 100.0)?,
                None if i == 0 => {
                    return Err(CalcError::invalid(
                        fields[0].0,
                        "required when an ultimate analysis is given",
                    ));
                }
                None => {}
            }
        }
        let sum: f64 = v.iter().sum();
        if (sum - 100.0).abs() > COMPOSITION_SUM_TOLERANCE_PCT {
            let names: Vec<&str> = fields.iter().map(|f| f.0).collect();
            return Err(CalcError::invalid(
                "ultimate_analysis",
                format!(
                    "{} must sum to 100 +- {COMPOSITION_SUM_TOLERANCE_PCT} %, got {sum}",
                    names.join(" + ")
                ),
            ));
        }
        let a = UltimateAnalysis {
            carbon: v[0],
            hydrogen: v[1],
            oxygen: v[2],
            sulphur: v[3],
            nitrogen: v[4],
            moisture: v[5],
            ash: v[6],
        };
        if a.theoretical_air_kg_kg() <= 0.0 {
            return Err(CalcError::invalid(
                fields[2].0,
                "oxygen is too high for the carbon/hydrogen/sulphur: theoretical air would be <= 0",
            ));
        }
        Ok(a)
    }

    /// Theoretical (stoichiometric) air, kg per kg fuel:
    /// [11.6 C + 34.8 (H - O/8) + 4.35 S] / 100 (BEE Guide Book 2; process-heat.md GL-002).
    pub fn theoretical_air_kg_kg(&self) -> f64 {
        (11.6 * self.carbon + 34.8 * (self.hydrogen - self.oxygen / 8.0) + 4.35 * self.sulphur)
            / 100.0
    }
}

/// Excess air from flue O2 alone (dry vol %), percent: O2 / (21 - O2) x 100. Needs O2 < 21.
pub fn excess_air_from_o2_pct(o2_pct: f64) -> f64 {
    o2_pct / (21.0 - o2_pct) * 100.0
}

/// Flue O2 (dry vol %) that the O2-only formula maps to `excess_air_pct`: 21 EA / (100 + EA).
pub fn o2_from_excess_air_pct(excess_air_pct: f64) -> f64 {
    21.0 * excess_air_pct / (100.0 + excess_air_pct)
}

/// Excess air from O2, CO and N2 (dry vol %), percent:
/// 100 (O2 - 0.5 CO) / [0.264 N2 - (O2 - 0.5 CO)]. The caller checks the denominator is > 0.
pub fn excess_air_from_o2_co_n2_pct(o2_pct: f64, co_pct: f64, n2_pct: f64) -> f64 {
    let free_o2 = o2_pct - 0.5 * co_pct;
    100.0 * free_o2 / (0.264 * n2_pct - free_o2)
}

/// Siegert flue-gas loss, percent of the NET calorific value:
/// (T_flue - T_air) x [A2 / (21 - O2) + B]. Needs O2 < 21.
pub fn siegert_loss_pct(t_flue_c: f64, t_air_c: f64, o2_pct: f64, a2: f64, b: f64) -> f64 {
    (t_flue_c - t_air_c) * (a2 / (21.0 - o2_pct) + b)
}

/// How the stoichiometric air of a named fuel is derived.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FuelModel {
    /// A pure molecule CcHh (gaseous fuels): volumetric and mass stoichiometry.
    Molecule { c: f64, h: f64 },
    /// A stored ultimate analysis (mass %: C, H, O, S, N, moisture, ash).
    Ultimate([f64; 7]),
    /// No composition stored: the stoichiometric air needs an ultimate analysis in the request.
    Unknown,
}

/// A recommended flue-O2 band (dry vol %) and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct O2Band {
    min_pct: f64,
    max_pct: f64,
    source: &'static str,
}

/// One entry of the named-fuel table.
#[derive(Debug, Clone, Copy)]
struct Fuel {
    name: &'static str,
    model: FuelModel,
    /// Siegert (A2, B) from the 1. BImSchV table, when the fuel is covered.
    siegert: Option<(f64, f64)>,
    o2_band: Option<fn() -> O2Band>,
}

/// Siegert coefficients (A2, B) of the O2 form from the German 1. BImSchV (ordinance on small and
/// medium firing installations): heating oil 0.68 / 0.007; natural gas 0.66 / 0.009; LPG 0.63 / 0.008.
const SIEGERT_HEATING_OIL: (f64, f64) = (0.68, 0.007);
const SIEGERT_NATURAL_GAS: (f64, f64) = (0.66, 0.009);
const SIEGERT_LPG: (f64, f64) = (0.63, 0.008);

/// BEE Guide Book 2 worked example fuel oil (mass %): C 84, H 12, O 1.5, S 1.5, N 0.5,
/// moisture 0.5, ash 0. These are the inputs that reproduce every published figure of the example
/// (TA 13.92 kg/kg, dry flue gas 20.7934 kg/kg, L3 0.0335 %), see the GL-002 tests.
pub const BEE_FUEL_OIL: [f64; 7] = [84.0, 12.0, 1.5, 1.5, 0.5, 0.5, 0.0];

/// U.S. DOE AMO Steam Tip Sheet #4 "Improve Your Boiler's Combustion Efficiency": its natural gas
/// table pairs 9.5 % excess air with 2.0 % O2 and 15 % with 3.0 % O2, and states ~10 % excess air
/// is attainable on well-designed natural gas systems. Band 2-3 % O2.
fn band_natural_gas() -> O2Band {
    O2Band {
        min_pct: 2.0,
        max_pct: 3.0,
        source: "US DOE AMO Steam Tip Sheet #4 (natural gas: 2 % O2 = 9.5 % excess air, 3 % O2 = 15 %)",
    }
}

/// Bacharach FYRITE instruction 0011-9026 s. 5.5.3: rough guideline 15-20 % excess air for oil
/// burners; converted to O2 with 21 EA / (100 + EA): 2.74-3.50 % O2.
fn band_oil() -> O2Band {
    O2Band {
        min_pct: o2_from_excess_air_pct(15.0),
        max_pct: o2_from_excess_air_pct(20.0),
        source: "Bacharach FYRITE instruction 0011-9026 s. 5.5.3 (oil: 15-20 % excess air), O2 = 21 EA/(100+EA)",
    }
}

/// Every named fuel GL-003 knows. Natural gas is modelled as pure methane, LPG as pure propane.
const FUELS: &[Fuel] = &[
    Fuel {
        name: "natural_gas",
        model: FuelModel::Molecule { c: 1.0, h: 4.0 },
        siegert: Some(SIEGERT_NATURAL_GAS),
        o2_band: Some(band_natural_gas),
    },
    Fuel {
        name: "methane",
        model: FuelModel::Molecule { c: 1.0, h: 4.0 },
        siegert: Some(SIEGERT_NATURAL_GAS),
        o2_band: Some(band_natural_gas),
    },
    Fuel {
        name: "ethane",
        model: FuelModel::Molecule { c: 2.0, h: 6.0 },
        siegert: None,
        o2_band: None,
    },
    Fuel {
        name: "propane",
        model: FuelModel::Molecule { c: 3.0, h: 8.0 },
        siegert: Some(SIEGERT_LPG),
        o2_band: None,
    },
    Fuel {
        name: "butane",
        model: FuelModel::Molecule { c: 4.0, h: 10.0 },
        siegert: Some(SIEGERT_LPG),
        o2_band: None,
    },
    Fuel {
        name: "lpg",
        model: FuelModel::Molecule { c: 3.0, h: 8.0 },
        siegert: Some(SIEGERT_LPG),
        o2_band: None,
    },
    Fuel {
        name: "hydrogen",
        model: FuelModel::Molecule { c: 0.0, h: 2.0 },
        siegert: None,
        o2_band: None,
    },
    Fuel {
        name: "fuel_oil",
        model: FuelModel::Ultimate(BEE_FUEL_OIL),
        siegert: None,
        o2_band: Some(band_oil),
    },
    Fuel {
        name: "heating_oil",
        model: FuelModel::Unknown,
        siegert: Some(SIEGERT_HEATING_OIL),
        o2_band: Some(band_oil),
    },
];

/// Names of the fuels GL-003 knows, in table order.
pub fn known_fuels() -> Vec<&'static str> {
    FUELS.iter().map(|f| f.name).collect()
}

/// Lower-cases and turns spaces and hyphens into underscores (`Natural Gas` -> `natural_gas`).
pub fn normalise_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

fn lookup_fuel(name: &str) -> Result<&'static Fuel, CalcError> {
    let key = normalise_name(name);
    FUELS.iter().find(|f| f.name == key).ok_or_else(|| {
        CalcError::invalid(
            "fuel",
            format!("unknown fuel {name:?}; known: {}", known_fuels().join(", ")),
        )
    })
}

/// Stoichiometric air of a molecule CcHh: (m3 air / m3 fuel at 21 vol % O2, kg air / kg fuel at
/// the dry-air O2 mass fraction). O2 demand = c + h/4 mol per mol fuel.
pub fn molecule_stoich_air(c: f64, h: f64) -> (f64, f64) {
    let o2_mol = c + h / 4.0;
    let molar_mass = c * C_ATOMIC_MASS + h * H_ATOMIC_MASS;
    (
        o2_mol / AIR_O2_VOL_FRACTION,
        o2_mol * O2_MOLAR_MASS / molar_mass / AIR_O2_MASS_FRACTION,
    )
}

/// A GL-003 request: the fuel (by name and/or ultimate analysis), the flue-gas analysis and,
/// optionally, temperatures for the Siegert loss and an O2 target.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CombustionRequest {
    /// Fuel name (see `known_fuels`); optional when an ultimate analysis is given.
    #[serde(default)]
    pub fuel: Option<String>,
    /// Ultimate analysis carbon, mass %. Giving any *_pct analysis field makes this required.
    #[serde(default)]
    pub carbon_pct: Option<f64>,
    /// Ultimate analysis hydrogen, mass % (missing = 0).
    #[serde(default)]
    pub hydrogen_pct: Option<f64>,
    /// Ultimate analysis oxygen, mass % (missing = 0).
    #[serde(default)]
    pub oxygen_pct: Option<f64>,
    /// Ultimate analysis sulphur, mass % (missing = 0).
    #[serde(default)]
    pub sulphur_pct: Option<f64>,
    /// Ultimate analysis nitrogen, mass % (missing = 0).
    #[serde(default)]
    pub nitrogen_pct: Option<f64>,
    /// Fuel moisture, mass % (missing = 0).
    #[serde(default)]
    pub moisture_pct: Option<f64>,
    /// Fuel ash, mass % (missing = 0).
    #[serde(default)]
    pub ash_pct: Option<f64>,
    /// Measured flue-gas O2, dry vol %. Must be in [0, 21).
    pub flue_o2_pct: f64,
    /// Measured flue-gas CO, dry vol %; with `flue_n2_pct` selects the O2 + CO + N2 formula.
    #[serde(default)]
    pub flue_co_pct: Option<f64>,
    /// Flue-gas N2, dry vol % (usually 100 - CO2 - O2 - CO of an Orsat analysis).
    #[serde(default)]
    pub flue_n2_pct: Option<f64>,
    /// Flue-gas temperature, degC; with `combustion_air_temp_c` enables the Siegert loss.
    #[serde(default)]
    pub flue_gas_temp_c: Option<f64>,
    /// Combustion-air temperature, degC. Must not exceed the flue-gas temperature.
    #[serde(default)]
    pub combustion_air_temp_c: Option<f64>,
    /// O2 target, dry vol %; overrides the fuel's recommended band.
    #[serde(default)]
    pub o2_target_pct: Option<f64>,
    /// Siegert A2 override (give with `siegert_b`), for fuels not in the 1. BImSchV table.
    #[serde(default)]
    pub siegert_a2: Option<f64>,
    /// Siegert B override (give with `siegert_a2`).
    #[serde(default)]
    pub siegert_b: Option<f64>,
}

/// The GL-003 result: air requirement, excess air (and which formula), flue-gas loss, O2 target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CombustionResult {
    /// Canonical fuel name, when a name was given.
    pub fuel: Option<String>,
    /// Where the stoichiometric air comes from: `ultimate_analysis`, `fuel_table`, or none.
    pub stoich_air_source: Option<String>,
    /// Stoichiometric (theoretical) air, kg air per kg fuel.
    pub stoich_air_kg_kg: Option<f64>,
    /// Stoichiometric air, m3 air per m3 fuel (gaseous named fuels only, 21 vol % O2 in air).
    pub stoich_air_m3_m3: Option<f64>,
    /// Excess air, percent over stoichiometric (negative: air deficit, CO formula only).
    pub excess_air_pct: f64,
    /// Which formula gave `excess_air_pct`: `o2_only` or `o2_co_n2`.
    pub excess_air_method: String,
    /// Excess air from O2 alone, percent (always given, for comparison).
    pub excess_air_o2_only_pct: f64,
    /// Actual air = (1 + EA/100) x stoichiometric, kg/kg.
    pub actual_air_kg_kg: Option<f64>,
    /// Siegert flue-gas loss at the measured O2, percent of NET calorific value.
    pub flue_gas_loss_pct: Option<f64>,
    /// Basis of the flue-gas loss figures: always `net`.
    pub flue_gas_loss_basis: String,
    /// Siegert A2 used.
    pub siegert_a2: Option<f64>,
    /// Siegert B used.
    pub siegert_b: Option<f64>,
    /// O2 target, dry vol %: the request's, else the measured O2 clamped into the fuel's band
    /// (top of the band when above it, bottom when below, the measured value inside).
    pub o2_target_pct: Option<f64>,
    /// Bottom of the recommended O2 band, dry vol %.
    pub o2_range_min_pct: Option<f64>,
    /// Top of the recommended O2 band, dry vol %.
    pub o2_range_max_pct: Option<f64>,
    /// Where the target comes from (`request` or the cited guidance).
    pub o2_target_source: Option<String>,
    /// `above_range`, `within_range`, `below_range` (band) or `above_target`, `at_or_below_target`.
    pub o2_status: Option<String>,
    /// Siegert loss at the target O2 and the same temperatures, percent (net).
    pub flue_gas_loss_at_target_pct: Option<f64>,
    /// flue_gas_loss_pct - flue_gas_loss_at_target_pct, percentage points (negative: the current
    /// O2 is below the target and raising it costs that much).
    pub efficiency_gain_pct: Option<f64>,
}

/// Marker for the GL-003 calculation.
pub struct CombustionAnalysis;

/// Everything validation establishes, reused by `run`.
struct Checked {
    fuel: Option<&'static Fuel>,
    analysis: Option<UltimateAnalysis>,
    excess_air_pct: f64,
    method: &'static str,
    temps: Option<(f64, f64)>,
    siegert: Option<(f64, f64)>,
    target: Option<(f64, Option<O2Band>)>,
}

fn o2_field(field: &str, v: f64) -> Result<f64, CalcError> {
    finite(field, v)?;
    if !(0.0..21.0).contains(&v) {
        return Err(CalcError::invalid(
            field,
            format!("must be in [0, 21) dry vol % (21 % is air: nothing burnt), got {v}"),
        ));
    }
    Ok(v)
}

impl CombustionRequest {
    fn analysis_fields(&self) -> [(&'static str, Option<f64>); 7] {
        [
            ("carbon_pct", self.carbon_pct),
            ("hydrogen_pct", self.hydrogen_pct),
            ("oxygen_pct", self.oxygen_pct),
            ("sulphur_pct", self.sulphur_pct),
            ("nitrogen_pct", self.nitrogen_pct),
            ("moisture_pct", self.moisture_pct),
            ("ash_pct", self.ash_pct),
        ]
    }

    fn check(&self) -> Result<Checked, CalcError> {
        let fuel = self.fuel.as_deref().map(lookup_fuel).transpose()?;
        let fields = self.analysis_fields();
        let analysis = if fields.iter().any(|f| f.1.is_some()) {
            Some(UltimateAnalysis::from_fields(fields)?)
        } else {
            None
        };
        if fuel.is_none() && analysis.is_none() {
            return Err(CalcError::invalid(
                "fuel",
                format!(
                    "give a fuel name or an ultimate analysis (carbon_pct, ...); known fuels: {}",
                    known_fuels().join(", ")
                ),
            ));
        }

        let o2 = o2_field("flue_o2_pct", self.flue_o2_pct)?;
        let (excess_air_pct, method) = match (self.flue_co_pct, self.flue_n2_pct) {
            (None, None) => (excess_air_from_o2_pct(o2), "o2_only"),
            (Some(_), None) => {
                return Err(CalcError::invalid(
                    "flue_n2_pct",
                    "required when flue_co_pct is given (O2 + CO + N2 formula)",
                ));
            }
            (None, Some(_)) => {
                return Err(CalcError::invalid(
                    "flue_co_pct",
                    "required when flue_n2_pct is given (O2 + CO + N2 formula; 0 if no CO)",
                ));
            }
            (Some(co), Some(n2)) => {
                let co = in_range("flue_co_pct", co, 0.0, 100.0)?;
                let n2 = in_range("flue_n2_pct", n2, 0.0, 100.0)?;
                if n2 <= 0.0 {
                    return Err(CalcError::invalid("flue_n2_pct", "must be > 0 dry vol %"));
                }
                if o2 + co + n2 > 100.0 {
                    return Err(CalcError::invalid(
                        "flue_n2_pct",
                        format!(
                            "O2 + CO + N2 must not exceed 100 dry vol %, got {}",
                            o2 + co + n2
                        ),
                    ));
                }
                if 0.264 * n2 - (o2 - 0.5 * co) <= 0.0 {
                    return Err(CalcError::invalid(
                        "flue_n2_pct",
                        format!(
                            "0.264 N2 must exceed O2 - 0.5 CO (else the gas is air, nothing burnt), got N2 {n2}"
                        ),
                    ));
                }
                (excess_air_from_o2_co_n2_pct(o2, co, n2), "o2_co_n2")
            }
        };

        let temps = match (self.flue_gas_temp_c, self.combustion_air_temp_c) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(CalcError::invalid(
                    "combustion_air_temp_c",
                    "required when flue_gas_temp_c is given",
                ));
            }
            (None, Some(_)) => {
                return Err(CalcError::invalid(
                    "flue_gas_temp_c",
                    "required when combustion_air_temp_c is given",
                ));
            }
            (Some(tf), Some(ta)) => {
                let tf = in_range("flue_gas_temp_c", tf, T_MIN_C, T_MAX_C)?;
                let ta = in_range("combustion_air_temp_c", ta, T_MIN_C, T_MAX_C)?;
                if tf < ta {
                    return Err(CalcError::invalid(
                        "flue_gas_temp_c",
                        format!(
                            "flue gas ({tf} C) must not be colder than the combustion air ({ta} C)"
                        ),
                    ));
                }
                Some((tf, ta))
            }
        };

        let siegert = match (self.siegert_a2, self.siegert_b) {
            (Some(a2), Some(b)) => Some((
                in_range("siegert_a2", a2, 0.0, 10.0)?,
                in_range("siegert_b", b, 0.0, 1.0)?,
            )),
            (Some(_), None) => {
                return Err(CalcError::invalid("siegert_b", "required with siegert_a2"));
            }
            (None, Some(_)) => {
                return Err(CalcError::invalid("siegert_a2", "required with siegert_b"));
            }
            (None, None) => fuel.and_then(|f| f.siegert),
        };
        if temps.is_some() && siegert.is_none() {
            let covered: Vec<&str> = FUELS
                .iter()
                .filter(|f| f.siegert.is_some())
                .map(|f| f.name)
                .collect();
            return Err(CalcError::invalid(
                "siegert_a2",
                format!(
                    "required with siegert_b for the flue-gas loss: the fuel has no 1. BImSchV Siegert coefficients (covered: {})",
                    covered.join(", ")
                ),
            ));
        }

        let target = match self.o2_target_pct {
            Some(t) => Some((o2_field("o2_target_pct", t)?, None)),
            None => fuel.and_then(|f| f.o2_band).map(|band| {
                // Above the band: trim to its top; inside: stay; below: raise to its bottom.
                let b = band();
                (o2.clamp(b.min_pct, b.max_pct), Some(b))
            }),
        };

        Ok(Checked {
            fuel,
            analysis,
            excess_air_pct,
            method,
            temps,
            siegert,
            target,
        })
    }
}

impl Calculation for CombustionAnalysis {
    const KIND: &'static str = "GL-003";
    type Request = CombustionRequest;
    type Output = CombustionResult;

    fn validate(req: &CombustionRequest) -> Result<(), CalcError> {
        req.check().map(|_| ())
    }

    fn run(req: &CombustionRequest) -> Result<CombustionResult, CalcError> {
        let c = req.check()?;
        let o2 = req.flue_o2_pct;

        // An analysis in the request wins over the stored composition of the named fuel.
        let (source, stoich_kg, stoich_m3) = match (c.analysis, c.fuel.map(|f| f.model)) {
            (Some(a), _) => (
                Some("ultimate_analysis"),
                Some(a.theoretical_air_kg_kg()),
                None,
            ),
            (None, Some(FuelModel::Molecule { c, h })) => {
                let (m3, kg) = molecule_stoich_air(c, h);
                (Some("fuel_table"), Some(kg), Some(m3))
            }
            (None, Some(FuelModel::Ultimate(v))) => {
                let a = UltimateAnalysis {
                    carbon: v[0],
                    hydrogen: v[1],
                    oxygen: v[2],
                    sulphur: v[3],
                    nitrogen: v[4],
                    moisture: v[5],
                    ash: v[6],
                };
                (Some("fuel_table"), Some(a.theoretical_air_kg_kg()), None)
            }
            (None, _) => (None, None, None),
        };

        let loss_at = |o2_pct: f64| match (c.temps, c.siegert) {
            (Some((tf, ta)), Some((a2, b))) => Some(siegert_loss_pct(tf, ta, o2_pct, a2, b)),
            _ => None,
        };
        let loss = loss_at(o2);
        let (target, band) = match c.target {
            Some((t, band)) => (Some(t), band),
            None => (None, None),
        };
        let loss_target = target.and_then(loss_at);
        let status = match (target, band) {
            (Some(_), Some(b)) if o2 > b.max_pct => Some("above_range"),
            (Some(_), Some(b)) if o2 < b.min_pct => Some("below_range"),
            (Some(_), Some(_)) => Some("within_range"),
            (Some(t), None) if o2 > t => Some("above_target"),
            (Some(_), None) => Some("at_or_below_target"),
            _ => None,
        };

        let result = CombustionResult {
            fuel: c.fuel.map(|f| f.name.to_string()),
            stoich_air_source: source.map(str::to_string),
            stoich_air_kg_kg: stoich_kg,
            stoich_air_m3_m3: stoich_m3,
            excess_air_pct: c.excess_air_pct,
            excess_air_method: c.method.to_string(),
            excess_air_o2_only_pct: excess_air_from_o2_pct(o2),
            actual_air_kg_kg: stoich_kg.map(|ta| (1.0 + c.excess_air_pct / 100.0) * ta),
            flue_gas_loss_pct: loss,
            flue_gas_loss_basis: "net".to_string(),
            siegert_a2: c.siegert.map(|s| s.0),
            siegert_b: c.siegert.map(|s| s.1),
            o2_target_pct: target,
            o2_range_min_pct: band.map(|b| b.min_pct),
            o2_range_max_pct: band.map(|b| b.max_pct),
            o2_target_source: target
                .map(|_| band.map_or("request".to_string(), |b| b.source.to_string())),
            o2_status: status.map(str::to_string),
            flue_gas_loss_at_target_pct: loss_target,
            efficiency_gain_pct: loss.zip(loss_target).map(|(now, at)| now - at),
        };
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gas(o2: f64) -> CombustionRequest {
        CombustionRequest {
            fuel: Some("natural_gas".into()),
            flue_o2_pct: o2,
            ..Default::default()
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn methane_stoichiometric_air_matches_reference() {
        // Reference: methane 9.52 m3/m3 (17.24 kg/kg).
        let r = CombustionAnalysis::run(&gas(3.0)).unwrap();
        let m3 = r.stoich_air_m3_m3.unwrap();
        let kg = r.stoich_air_kg_kg.unwrap();
        assert!(close(m3, 9.52, 0.005), "{m3}");
        assert!(close(kg, 17.24, 0.005), "{kg}");
        assert_eq!(r.stoich_air_source.as_deref(), Some("fuel_table"));
    }

    #[test]
    fn fuel_oil_stoichiometric_air_is_bee_13_92() {
        let mut req = gas(7.0);
        req.fuel = Some("Fuel Oil".into());
        let r = CombustionAnalysis::run(&req).unwrap();
        assert!(close(r.stoich_air_kg_kg.unwrap(), 13.92, 1e-9));
        assert_eq!(r.fuel.as_deref(), Some("fuel_oil"));
        // BEE example: EA 50 % at 7 % O2, actual air 20.88 kg/kg.
        assert!(close(r.excess_air_pct, 50.0, 1e-12));
        assert!(close(r.actual_air_kg_kg.unwrap(), 20.88, 1e-9));
    }

    #[test]
    fn derived_gas_stoichiometry() {
        // Derived from the molecules (c + h/4 mol O2 per mol fuel); textbook values
        // propane 23.8 m3/m3 (15.7 kg/kg), butane 31.0 (15.5), hydrogen 2.38 (34.3).
        let (m3, kg) = molecule_stoich_air(3.0, 8.0);
        assert!(
            close(m3, 23.81, 0.005) && close(kg, 15.68, 0.01),
            "{m3} {kg}"
        );
        let (m3, kg) = molecule_stoich_air(4.0, 10.0);
        assert!(
            close(m3, 30.95, 0.005) && close(kg, 15.46, 0.01),
            "{m3} {kg}"
        );
        let (m3, kg) = molecule_stoich_air(0.0, 2.0);
        assert!(
            close(m3, 2.381, 0.001) && close(kg, 34.29, 0.005),
            "{m3} {kg}"
        );
        let mut req = gas(3.0);
        req.fuel = Some("LPG".into());
        let r = CombustionAnalysis::run(&req).unwrap();
        assert!(close(r.stoich_air_m3_m3.unwrap(), 23.81, 0.005));
    }

    #[test]
    fn ultimate_analysis_overrides_the_table() {
        let req = CombustionRequest {
            carbon_pct: Some(84.0),
            hydrogen_pct: Some(12.0),
            oxygen_pct: Some(1.5),
            sulphur_pct: Some(1.5),
            nitrogen_pct: Some(0.5),
            moisture_pct: Some(0.5),
            flue_o2_pct: 7.0,
            ..Default::default()
        };
        let r = CombustionAnalysis::run(&req).unwrap();
        assert_eq!(r.stoich_air_source.as_deref(), Some("ultimate_analysis"));
        assert!(close(r.stoich_air_kg_kg.unwrap(), 13.92, 1e-9));
        assert!(r.fuel.is_none() && r.o2_target_pct.is_none());
    }

    #[test]
    fn excess_air_o2_only_gas_at_3_pct() {
        let r = CombustionAnalysis::run(&gas(3.0)).unwrap();
        assert!(close(r.excess_air_pct, 16.7, 0.05), "{}", r.excess_air_pct);
        assert_eq!(r.excess_air_method, "o2_only");
    }

    #[test]
    fn excess_air_with_co_and_n2() {
        let mut req = gas(3.0);
        req.flue_co_pct = Some(0.0);
        req.flue_n2_pct = Some(87.0);
        let r = CombustionAnalysis::run(&req).unwrap();
        assert_eq!(r.excess_air_method, "o2_co_n2");
        // 100 x 3 / (0.264 x 87 - 3) = 300 / 19.968
        assert!(close(r.excess_air_pct, 300.0 / 19.968, 1e-9));
        assert!(close(r.excess_air_o2_only_pct, 300.0 / 18.0, 1e-9));
        // CO reduces the free oxygen: O2 3, CO 0.2 -> 100 x 2.9 / (0.264 x 86.8 - 2.9)
        req.flue_co_pct = Some(0.2);
        req.flue_n2_pct = Some(86.8);
        let r = CombustionAnalysis::run(&req).unwrap();
        assert!(close(r.excess_air_pct, 290.0 / (0.264 * 86.8 - 2.9), 1e-9));
    }

    #[test]
    fn siegert_natural_gas_known_answer() {
        // Reference: natural gas, 180/20 C, 4.5 % O2 -> 7.84 %.
        let mut req = gas(4.5);
        req.flue_gas_temp_c = Some(180.0);
        req.combustion_air_temp_c = Some(20.0);
        let r = CombustionAnalysis::run(&req).unwrap();
        assert!(close(r.flue_gas_loss_pct.unwrap(), 7.84, 1e-9));
        assert_eq!(r.flue_gas_loss_basis, "net");
        // Target: top of the DOE band, 3 % O2 -> 160 x (0.66/18 + 0.009) = 7.3067 %.
        assert_eq!(r.o2_target_pct, Some(3.0));
        assert_eq!(r.o2_status.as_deref(), Some("above_range"));
        let at = 160.0 * (0.66 / 18.0 + 0.009);
        assert!(close(r.flue_gas_loss_at_target_pct.unwrap(), at, 1e-9));
        assert!(close(r.efficiency_gain_pct.unwrap(), 7.84 - at, 1e-9));
    }

    #[test]
    fn siegert_coefficients_per_fuel() {
        for (fuel, a2, b) in [
            ("heating_oil", 0.68, 0.007),
            ("natural_gas", 0.66, 0.009),
            ("lpg", 0.63, 0.008),
        ] {
            let req = CombustionRequest {
                fuel: Some(fuel.into()),
                flue_o2_pct: 6.0,
                flue_gas_temp_c: Some(200.0),
                combustion_air_temp_c: Some(20.0),
                ..Default::default()
            };
            let r = CombustionAnalysis::run(&req).unwrap();
            assert_eq!((r.siegert_a2, r.siegert_b), (Some(a2), Some(b)));
            assert!(close(
                r.flue_gas_loss_pct.unwrap(),
                180.0 * (a2 / 15.0 + b),
                1e-12
            ));
        }
    }

    #[test]
    fn user_target_and_status() {
        let mut req = gas(2.5);
        req.flue_gas_temp_c = Some(150.0);
        req.combustion_air_temp_c = Some(15.0);
        let r = CombustionAnalysis::run(&req).unwrap();
        assert_eq!(r.o2_status.as_deref(), Some("within_range"));
        assert_eq!(r.o2_target_pct, Some(2.5));
        assert_eq!(r.efficiency_gain_pct, Some(0.0));
        req.flue_o2_pct = 1.5;
        let r = CombustionAnalysis::run(&req).unwrap();
        assert_eq!(r.o2_status.as_deref(), Some("below_range"));
        assert_eq!(r.o2_target_pct, Some(2.0));
        assert!(
            r.efficiency_gain_pct.unwrap() < 0.0,
            "raising O2 to the band costs"
        );
        req.o2_target_pct = Some(1.0);
        let r = CombustionAnalysis::run(&req).unwrap();
        assert_eq!(r.o2_target_source.as_deref(), Some("request"));
        assert_eq!(r.o2_status.as_deref(), Some("above_target"));
        assert!(r.efficiency_gain_pct.unwrap() > 0.0);
        assert!(r.o2_range_min_pct.is_none());
    }

    #[test]
    fn oil_band_from_excess_air_guidance() {
        let mut req = gas(5.0);
        req.fuel = Some("heating_oil".into());
        let r = CombustionAnalysis::run(&req).unwrap();
        assert!(close(
            r.o2_range_min_pct.unwrap(),
            21.0 * 15.0 / 115.0,
            1e-12
        ));
        assert!(close(r.o2_range_max_pct.unwrap(), 3.5, 1e-12));
        assert!(
            r.stoich_air_kg_kg.is_none(),
            "heating oil has no stored composition"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let field = |req: &CombustionRequest| {
            CombustionAnalysis::run(req)
                .unwrap_err()
                .field()
                .map(str::to_string)
        };
        assert_eq!(field(&gas(21.0)).as_deref(), Some("flue_o2_pct"));
        assert_eq!(field(&gas(25.0)).as_deref(), Some("flue_o2_pct"));
        assert_eq!(field(&gas(-1.0)).as_deref(), Some("flue_o2_pct"));
        assert_eq!(field(&gas(f64::NAN)).as_deref(), Some("flue_o2_pct"));

        let mut req = gas(3.0);
        req.fuel = Some("unobtainium".into());
        let err = CombustionAnalysis::run(&req).unwrap_err();
        assert_eq!(err.field(), Some("fuel"));
        assert!(err.to_string().contains("natural_gas"), "{err}");

        let mut req = gas(3.0);
        req.flue_gas_temp_c = Some(15.0);
        req.combustion_air_temp_c = Some(20.0);
        assert_eq!(field(&req).as_deref(), Some("flue_gas_temp_c"));
        req.flue_gas_temp_c = Some(f64::INFINITY);
        assert_eq!(field(&req).as_deref(), Some("flue_gas_temp_c"));
        req.flue_gas_temp_c = None;
        assert_eq!(field(&req).as_deref(), Some("flue_gas_temp_c"));

        let mut req = gas(3.0);
        req.flue_co_pct = Some(0.1);
        assert_eq!(field(&req).as_deref(), Some("flue_n2_pct"));
        req.flue_n2_pct = Some(10.0);
        assert_eq!(field(&req).as_deref(), Some("flue_n2_pct"));

        let mut req = gas(3.0);
        req.fuel = None;
        assert_eq!(field(&req).as_deref(), Some("fuel"));
        req.carbon_pct = Some(50.0);
        assert_eq!(field(&req).as_deref(), Some("ultimate_analysis"));
        req.carbon_pct = None;
        req.hydrogen_pct = Some(100.0);
        assert_eq!(field(&req).as_deref(), Some("carbon_pct"));

        let mut req = gas(3.0);
        req.fuel = Some("hydrogen".into());
        req.flue_gas_temp_c = Some(150.0);
        req.combustion_air_temp_c = Some(20.0);
        assert_eq!(field(&req).as_deref(), Some("siegert_a2"));
        req.siegert_a2 = Some(0.6);
        assert_eq!(field(&req).as_deref(), Some("siegert_b"));
        req.siegert_b = Some(0.01);
        assert!(CombustionAnalysis::run(&req).is_ok());
    }

    proptest! {
        #[test]
        fn siegert_loss_non_negative_and_grows_with_o2(
            o2 in 0.0f64..20.9, d_o2 in 0.0f64..0.09,
            t_air in -30.0f64..50.0, dt in 0.0f64..400.0,
        ) {
            let mut req = gas(o2);
            req.flue_gas_temp_c = Some(t_air + dt);
            req.combustion_air_temp_c = Some(t_air);
            let r = CombustionAnalysis::run(&req).unwrap();
            let q = r.flue_gas_loss_pct.unwrap();
            prop_assert!(q >= 0.0 && q.is_finite());
            req.flue_o2_pct = o2 + d_o2;
            let q2 = CombustionAnalysis::run(&req).unwrap().flue_gas_loss_pct.unwrap();
            prop_assert!(q2 >= q);
        }

        #[test]
        fn excess_air_non_negative_and_monotonic(o2 in 0.0f64..20.99, d in 0.0f64..0.009) {
            let ea = excess_air_from_o2_pct(o2);
            prop_assert!(ea >= 0.0 && ea.is_finite());
            prop_assert!(excess_air_from_o2_pct(o2 + d) >= ea);
            prop_assert!((o2_from_excess_air_pct(ea) - o2).abs() < 1e-9);
        }

        #[test]
        fn never_nan(
            o2 in proptest::num::f64::ANY, co in proptest::option::of(proptest::num::f64::ANY),
            n2 in proptest::option::of(proptest::num::f64::ANY),
            tf in proptest::option::of(proptest::num::f64::ANY),
            ta in proptest::option::of(proptest::num::f64::ANY),
        ) {
            let mut req = gas(o2);
            req.flue_co_pct = co;
            req.flue_n2_pct = n2;
            req.flue_gas_temp_c = tf;
            req.combustion_air_temp_c = ta;
            if let Ok(r) = CombustionAnalysis::run(&req) {
                let v = serde_json::to_value(&r).unwrap();
                prop_assert!(!v.to_string().contains("NaN"));
                prop_assert!(r.excess_air_pct.is_finite());
                prop_assert!(r.flue_gas_loss_pct.is_none_or(f64::is_finite));
            }
        }
    }
}
