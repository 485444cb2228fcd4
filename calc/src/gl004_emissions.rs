//! GL-004 EmissionsControl: CO2/CH4/N2O from fuel energy, NOx/SOx/PM, O2-corrected
//! concentrations, emission intensity and compliance.
//!
//! - GHG: emissions = energy on the factor set's basis x factor. `ipcc_2006` factors are per NET
//!   calorific value (kg/TJ; CO2 from process-heat.md, CH4/N2O from IPCC 2006 Vol. 2 Table 2.2,
//!   energy industries); `epa_ghgrp` factors are per GROSS (HHV) basis (kg/MMBtu, 40 CFR 98
//!   Subpart C Tables C-1 and C-2). Energy on the other basis is converted only with a
//!   request-given NCV/GCV ratio; otherwise the request is refused.
//! - CO2e with a named GWP set (default AR5 100-yr: CH4 28, N2O 265).
//! - NOx/SOx/PM either factor (kg/MWh fuel) x energy, or measured concentration (mg/Nm3, dry, at
//!   the measured O2) x dry flue-gas flow; O2 correction C_ref = C_meas (21 - O2_ref)/(21 - O2_meas).
//! - Intensity = total emissions / heat output (kg/MWh); compliance PASS <= 0.9 limit,
//!   WARNING <= limit, FAIL above; margin = (limit - value) / limit x 100.

use super::gl003_combustion::normalise_name;
use super::{CalcError, Calculation, finite, non_negative, positive};
use serde::{Deserialize, Serialize};

/// TJ per kWh: 1 kWh = 3.6 MJ exactly.
pub const TJ_PER_KWH: f64 = 3.6e-6;
/// kWh per MMBtu from the IT Btu, 1055.05585262 J: 293.0710702 kWh.
pub const KWH_PER_MMBTU: f64 = 1055.05585262e6 / 3.6e6;
/// Share of the limit up to which a value is PASS (seed rule); above it, WARNING up to the limit.
pub const PASS_FRACTION_OF_LIMIT: f64 = 0.9;

/// Physical state of a fuel; picks the default reference O2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FuelClass {
    Solid,
    Liquid,
    Gaseous,
}

/// One fuel of a factor set: CO2, CH4, N2O in the set's unit.
#[derive(Debug, Clone, Copy)]
struct FactorRow {
    fuel: &'static str,
    co2: f64,
    ch4: f64,
    n2o: f64,
    class: FuelClass,
}

const fn row(fuel: &'static str, co2: f64, ch4: f64, n2o: f64, class: FuelClass) -> FactorRow {
    FactorRow {
        fuel,
        co2,
        ch4,
        n2o,
        class,
    }
}

use FuelClass::{Gaseous, Liquid, Solid};

/// IPCC 2006, kg/TJ on NET calorific value. CO2: Vol. 2 Table 2.2 defaults as listed in
/// process-heat.md. CH4/N2O: IPCC 2006 Vol. 2 Ch. 2 Table 2.2 (stationary combustion in the
/// energy industries): oil products 3 / 0.6, natural gas and LPG 1 / 0.1, coals 1 / 1.5.
const IPCC_2006: &[FactorRow] = &[
    row("natural_gas", 56_100.0, 1.0, 0.1, Gaseous),
    row("gas_diesel_oil", 74_100.0, 3.0, 0.6, Liquid),
    row("residual_fuel_oil", 77_400.0, 3.0, 0.6, Liquid),
    row("lpg", 63_100.0, 1.0, 0.1, Gaseous),
    row("bituminous_coal", 94_600.0, 1.0, 1.5, Solid),
    row("sub_bituminous_coal", 96_100.0, 1.0, 1.5, Solid),
    row("lignite", 101_000.0, 1.0, 1.5, Solid),
    row("anthracite", 98_300.0, 1.0, 1.5, Solid),
    row("petroleum_coke", 97_500.0, 3.0, 0.6, Solid),
];

/// US EPA 40 CFR 98 Subpart C, kg/MMBtu on GROSS (HHV) basis. CO2: Table C-1. CH4/N2O:
/// Table C-2: natural gas 1.0e-3 / 1.0e-4, petroleum products 3.0e-3 / 6.0e-4,
/// coal and coke 1.1e-2 / 1.6e-3.
const EPA_GHGRP: &[FactorRow] = &[
    row("natural_gas", 53.06, 1.0e-3, 1.0e-4, Gaseous),
    row("distillate_fuel_oil_no2", 73.96, 3.0e-3, 6.0e-4, Liquid),
    row("residual_fuel_oil_no6", 75.10, 3.0e-3, 6.0e-4, Liquid),
    row("propane", 62.87, 3.0e-3, 6.0e-4, Gaseous),
    row("bituminous_coal", 93.28, 1.1e-2, 1.6e-3, Solid),
    row("sub_bituminous_coal", 97.17, 1.1e-2, 1.6e-3, Solid),
    row("lignite", 97.72, 1.1e-2, 1.6e-3, Solid),
    row("anthracite", 103.69, 1.1e-2, 1.6e-3, Solid),
];

/// A factor set: its table, basis and unit.
struct FactorSet {
    name: &'static str,
    basis: &'static str,
    unit: &'static str,
    /// kWh (on the set's basis) to the unit's energy denominator.
    per_kwh: f64,
    rows: &'static [FactorRow],
}

const FACTOR_SETS: &[FactorSet] = &[
    FactorSet {
        name: "ipcc_2006",
        basis: "net",
        unit: "kg/TJ",
        per_kwh: TJ_PER_KWH,
        rows: IPCC_2006,
    },
    FactorSet {
        name: "epa_ghgrp",
        basis: "gross",
        unit: "kg/MMBtu",
        per_kwh: 1.0 / KWH_PER_MMBTU,
        rows: EPA_GHGRP,
    },
];

/// 100-year GWP sets (name, CH4, N2O): AR4 WG1 Table 2.14; AR5 WG1 Table 8.7 (no
/// climate-carbon feedback); AR6 WG1 Table 7.15 (fossil CH4, as the fuels here are fossil).
const GWP_SETS: &[(&str, f64, f64)] = &[
    ("ar4_100", 25.0, 298.0),
    ("ar5_100", 28.0, 265.0),
    ("ar6_100", 29.8, 273.0),
];
/// GWP set used when the request names none.
pub const DEFAULT_GWP_SET: &str = "ar5_100";

/// Reference O2 (dry vol %) when the request gives none: EU Industrial Emissions Directive
/// 2010/75/EU Annex V Part 1: 6 % for solid fuels, 3 % for liquid and gaseous fuels (boilers).
fn default_o2_reference(class: FuelClass) -> f64 {
    match class {
        Solid => 6.0,
        Liquid | Gaseous => 3.0,
    }
}

/// Concentration at the reference O2: C_meas (21 - O2_ref) / (21 - O2_meas). Needs O2_meas < 21.
pub fn o2_corrected(c_measured: f64, o2_measured_pct: f64, o2_reference_pct: f64) -> f64 {
    c_measured * (21.0 - o2_reference_pct) / (21.0 - o2_measured_pct)
}

/// Emission intensity, kg per MWh of heat output.
pub fn intensity_kg_mwh(total_kg: f64, heat_output_mwh: f64) -> f64 {
    total_kg / heat_output_mwh
}

/// Compliance of `value` against `limit` (> 0): (`PASS` | `WARNING` | `FAIL`, margin %), with
/// PASS <= 0.9 limit, WARNING <= limit, margin = (limit - value) / limit x 100.
pub fn compliance(value: f64, limit: f64) -> (&'static str, f64) {
    let status = if value <= PASS_FRACTION_OF_LIMIT * limit {
        "PASS"
    } else if value <= limit {
        "WARNING"
    } else {
        "FAIL"
    };
    (status, (limit - value) / limit * 100.0)
}

/// A GL-004 request: fuel energy over a period, pollutant inputs, heat output and limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmissionsRequest {
    /// `ipcc_2006` (net basis, kg/TJ) or `epa_ghgrp` (gross basis, kg/MMBtu).
    #[serde(default)]
    pub factor_set: String,
    /// Fuel name in the factor set (the error lists the known ones).
    #[serde(default)]
    pub fuel: String,
    /// Fuel energy used over the period, kWh, on `energy_basis`.
    pub energy_input_kwh: f64,
    /// Basis of `energy_input_kwh`: `net` (NCV/LHV) or `gross` (GCV/HHV).
    #[serde(default)]
    pub energy_basis: String,
    /// NCV/GCV of the fuel, in (0, 1]; needed only when the basis differs from the factor set's.
    #[serde(default)]
    pub net_to_gross_ratio: Option<f64>,
    /// GWP set for CO2e: `ar4_100`, `ar5_100` (default) or `ar6_100`.
    #[serde(default)]
    pub gwp_set: Option<String>,
    /// Length of the period, hours (default 1); converts the flue-gas flow to a mass.
    #[serde(default)]
    pub period_h: Option<f64>,
    /// Useful heat output over the period, kWh; enables the intensity.
    #[serde(default)]
    pub heat_output_kwh: Option<f64>,
    /// NOx emission factor, kg per MWh of fuel input (on `energy_basis`).
    #[serde(default)]
    pub nox_factor_kg_mwh: Option<f64>,
    /// SOx emission factor, kg per MWh of fuel input (on `energy_basis`).
    #[serde(default)]
    pub sox_factor_kg_mwh: Option<f64>,
    /// PM emission factor, kg per MWh of fuel input (on `energy_basis`).
    #[serde(default)]
    pub pm_factor_kg_mwh: Option<f64>,
    /// Measured NOx (as NO2), mg/Nm3 dry at the measured O2.
    #[serde(default)]
    pub nox_measured_mg_nm3: Option<f64>,
    /// Measured SOx (as SO2), mg/Nm3 dry at the measured O2.
    #[serde(default)]
    pub sox_measured_mg_nm3: Option<f64>,
    /// Measured PM, mg/Nm3 dry at the measured O2.
    #[serde(default)]
    pub pm_measured_mg_nm3: Option<f64>,
    /// O2 at the measurement point, dry vol %, in [0, 21).
    #[serde(default)]
    pub flue_o2_measured_pct: Option<f64>,
    /// Reference O2, dry vol %; default 6 (solid) or 3 (liquid, gaseous) per IED Annex V.
    #[serde(default)]
    pub o2_reference_pct: Option<f64>,
    /// Dry flue-gas flow at the measured O2, Nm3/h (0 C, 101.325 kPa).
    #[serde(default)]
    pub flue_gas_flow_nm3_h: Option<f64>,
    /// Intensity limit, kg per MWh of heat output (needs `heat_output_kwh`).
    #[serde(default)]
    pub intensity_limit_kg_mwh: Option<f64>,
    /// NOx limit, mg/Nm3 at the reference O2 (needs `nox_measured_mg_nm3`).
    #[serde(default)]
    pub nox_limit_mg_nm3: Option<f64>,
    /// SOx limit, mg/Nm3 at the reference O2 (needs `sox_measured_mg_nm3`).
    #[serde(default)]
    pub sox_limit_mg_nm3: Option<f64>,
    /// PM limit, mg/Nm3 at the reference O2 (needs `pm_measured_mg_nm3`).
    #[serde(default)]
    pub pm_limit_mg_nm3: Option<f64>,
}

/// The GL-004 result: masses over the period, factors and bases used, intensity, compliance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmissionsResult {
    /// Factor set used.
    pub factor_set: String,
    /// Basis of the factor set: `net` or `gross`.
    pub factor_basis: String,
    /// Unit of the three factors: `kg/TJ` or `kg/MMBtu`.
    pub factor_unit: String,
    /// Canonical fuel name.
    pub fuel: String,
    /// Energy input as given, kWh.
    pub energy_input_kwh: f64,
    /// Basis of the energy input as given.
    pub energy_basis: String,
    /// Energy input on the factor set's basis, kWh.
    pub energy_on_factor_basis_kwh: f64,
    /// `none`, `gross_to_net` or `net_to_gross`.
    pub basis_conversion: String,
    /// CO2 factor, `factor_unit`.
    pub co2_factor: f64,
    /// CH4 factor, `factor_unit`.
    pub ch4_factor: f64,
    /// N2O factor, `factor_unit`.
    pub n2o_factor: f64,
    /// CO2 factor per kWh on the factor basis, kg/kWh.
    pub co2_factor_kg_kwh: f64,
    /// CO2 over the period, kg.
    pub co2_kg: f64,
    /// CH4 over the period, kg.
    pub ch4_kg: f64,
    /// N2O over the period, kg.
    pub n2o_kg: f64,
    /// GWP set used.
    pub gwp_set: String,
    /// GWP of CH4 used.
    pub gwp_ch4: f64,
    /// GWP of N2O used.
    pub gwp_n2o: f64,
    /// CO2 + GWP-weighted CH4 and N2O, kg CO2e.
    pub co2e_kg: f64,
    /// Length of the period, hours.
    pub period_h: f64,
    /// NOx over the period, kg, when given.
    pub nox_kg: Option<f64>,
    /// SOx over the period, kg, when given.
    pub sox_kg: Option<f64>,
    /// PM over the period, kg, when given.
    pub pm_kg: Option<f64>,
    /// Where `nox_kg` comes from: `factor` or `measured`.
    pub nox_source: Option<String>,
    /// Where `sox_kg` comes from: `factor` or `measured`.
    pub sox_source: Option<String>,
    /// Where `pm_kg` comes from: `factor` or `measured`.
    pub pm_source: Option<String>,
    /// Reference O2 used for corrected concentrations, dry vol %.
    pub o2_reference_pct: Option<f64>,
    /// NOx at the reference O2, mg/Nm3.
    pub nox_mg_nm3_ref_o2: Option<f64>,
    /// SOx at the reference O2, mg/Nm3.
    pub sox_mg_nm3_ref_o2: Option<f64>,
    /// PM at the reference O2, mg/Nm3.
    pub pm_mg_nm3_ref_o2: Option<f64>,
    /// NOx against its limit: PASS, WARNING or FAIL.
    pub nox_status: Option<String>,
    /// NOx margin to its limit, percent of the limit.
    pub nox_margin_pct: Option<f64>,
    /// SOx against its limit.
    pub sox_status: Option<String>,
    /// SOx margin, percent.
    pub sox_margin_pct: Option<f64>,
    /// PM against its limit.
    pub pm_status: Option<String>,
    /// PM margin, percent.
    pub pm_margin_pct: Option<f64>,
    /// CO2 + CH4 + N2O + NOx + SOx + PM mass over the period, kg.
    pub total_emissions_kg: f64,
    /// Heat output over the period, kWh, when given.
    pub heat_output_kwh: Option<f64>,
    /// total_emissions_kg per MWh of heat output.
    pub intensity_kg_mwh: Option<f64>,
    /// co2e_kg per MWh of heat output.
    pub co2e_intensity_kg_mwh: Option<f64>,
    /// Intensity limit used, kg/MWh.
    pub intensity_limit_kg_mwh: Option<f64>,
    /// Intensity against its limit: PASS, WARNING or FAIL.
    pub compliance_status: Option<String>,
    /// (limit - intensity) / limit x 100.
    pub compliance_margin_pct: Option<f64>,
}

/// Marker for the GL-004 calculation.
pub struct Emissions;

/// One pollutant's validated inputs.
#[derive(Debug, Clone, Copy)]
enum Pollutant {
    None,
    Factor(f64),
    Measured(f64),
}

/// What `check` establishes, reused by `run`.
struct Checked {
    set: &'static FactorSet,
    row: &'static FactorRow,
    energy_basis: &'static str,
    energy_fb_kwh: f64,
    conversion: &'static str,
    gwp: (&'static str, f64, f64),
    period_h: f64,
    pollutants: [Pollutant; 3],
    measurement: Option<(f64, f64, f64)>,
}

const POLLUTANTS: [&str; 3] = ["nox", "sox", "pm"];

fn o2_pct(field: &str, v: f64) -> Result<f64, CalcError> {
    finite(field, v)?;
    if !(0.0..21.0).contains(&v) {
        return Err(CalcError::invalid(
            field,
            format!("must be in [0, 21) dry vol %, got {v}"),
        ));
    }
    Ok(v)
}

impl EmissionsRequest {
    fn pollutant_fields(&self) -> [(Option<f64>, Option<f64>, Option<f64>); 3] {
        [
            (
                self.nox_factor_kg_mwh,
                self.nox_measured_mg_nm3,
                self.nox_limit_mg_nm3,
            ),
            (
                self.sox_factor_kg_mwh,
                self.sox_measured_mg_nm3,
                self.sox_limit_mg_nm3,
            ),
            (
                self.pm_factor_kg_mwh,
                self.pm_measured_mg_nm3,
                self.pm_limit_mg_nm3,
            ),
        ]
    }

    fn check(&self) -> Result<Checked, CalcError> {
        let set_name = normalise_name(&self.factor_set);
        let set = FACTOR_SETS
            .iter()
            .find(|s| s.name == set_name)
            .ok_or_else(|| {
                CalcError::invalid(
                    "factor_set",
                    format!(
                        "must be ipcc_2006 (net basis) or epa_ghgrp (gross basis), got {:?}",
                        self.factor_set
                    ),
                )
            })?;
        let fuel = normalise_name(&self.fuel);
        let row = set.rows.iter().find(|r| r.fuel == fuel).ok_or_else(|| {
            let known: Vec<&str> = set.rows.iter().map(|r| r.fuel).collect();
            CalcError::invalid(
                "fuel",
                format!(
                    "unknown fuel {:?} for {}; known: {}",
                    self.fuel,
                    set.name,
                    known.join(", ")
                ),
            )
        })?;
        let energy = non_negative("energy_input_kwh", self.energy_input_kwh)?;
        let energy_basis = match normalise_name(&self.energy_basis).as_str() {
            "net" => "net",
            "gross" => "gross",
            _ => {
                return Err(CalcError::invalid(
                    "energy_basis",
                    format!(
                        "required: net or gross (the basis of energy_input_kwh), got {:?}",
                        self.energy_basis
                    ),
                ));
            }
        };
        let ratio = self
            .net_to_gross_ratio
            .map(|r| {
                positive("net_to_gross_ratio", r)?;
                if r > 1.0 {
                    return Err(CalcError::invalid(
                        "net_to_gross_ratio",
                        format!("NCV/GCV must be in (0, 1], got {r}"),
                    ));
                }
                Ok(r)
            })
            .transpose()?;
        let (energy_fb_kwh, conversion) = match (energy_basis, set.basis) {
            (a, b) if a == b => (energy, "none"),
            (from, to) => {
                let r = ratio.ok_or_else(|| {
                    CalcError::invalid(
                        "net_to_gross_ratio",
                        format!(
                            "required: {} factors are on the {to} basis but energy_input_kwh is {from}; \
                             converting {from} to {to} needs the fuel's NCV/GCV ratio, which is not assumed",
                            set.name
                        ),
                    )
                })?;
                if from == "gross" {
                    (energy * r, "gross_to_net")
                } else {
                    (energy / r, "net_to_gross")
                }
            }
        };
        let gwp_name = self
            .gwp_set
            .as_deref()
            .map(normalise_name)
            .unwrap_or_else(|| DEFAULT_GWP_SET.to_string());
        let gwp = *GWP_SETS.iter().find(|g| g.0 == gwp_name).ok_or_else(|| {
            CalcError::invalid(
                "gwp_set",
                format!("must be ar4_100, ar5_100 or ar6_100, got {gwp_name:?}"),
            )
        })?;
        let period_h = positive("period_h", self.period_h.unwrap_or(1.0))?;
        if let Some(h) = self.heat_output_kwh {
            positive("heat_output_kwh", h)?;
        }
        if let Some(l) = self.intensity_limit_kg_mwh {
            positive("intensity_limit_kg_mwh", l)?;
            if self.heat_output_kwh.is_none() {
                return Err(CalcError::invalid(
                    "heat_output_kwh",
                    "required when intensity_limit_kg_mwh is given",
                ));
            }
        }

        let mut pollutants = [Pollutant::None; 3];
        for (i, (factor, measured, limit)) in self.pollutant_fields().into_iter().enumerate() {
            let p = POLLUTANTS[i];
            pollutants[i] = match (factor, measured) {
                (Some(_), Some(_)) => {
                    return Err(CalcError::invalid(
                        format!("{p}_measured_mg_nm3"),
                        format!("give either {p}_factor_kg_mwh or {p}_measured_mg_nm3, not both"),
                    ));
                }
                (Some(f), None) => {
                    Pollutant::Factor(non_negative(&format!("{p}_factor_kg_mwh"), f)?)
                }
                (None, Some(c)) => {
                    Pollutant::Measured(non_negative(&format!("{p}_measured_mg_nm3"), c)?)
                }
                (None, None) => Pollutant::None,
            };
            if let Some(l) = limit {
                positive(&format!("{p}_limit_mg_nm3"), l)?;
                if measured.is_none() {
                    return Err(CalcError::invalid(
                        format!("{p}_measured_mg_nm3"),
                        format!("required when {p}_limit_mg_nm3 is given"),
                    ));
                }
            }
        }
        let any_measured = pollutants
            .iter()
            .any(|p| matches!(p, Pollutant::Measured(_)));
        let measurement = if any_measured {
            let o2 = self.flue_o2_measured_pct.ok_or_else(|| {
                CalcError::invalid(
                    "flue_o2_measured_pct",
                    "required with measured concentrations",
                )
            })?;
            let o2 = o2_pct("flue_o2_measured_pct", o2)?;
            let o2_ref = match self.o2_reference_pct {
                Some(r) => o2_pct("o2_reference_pct", r)?,
                None => default_o2_reference(row.class),
            };
            let flow = self.flue_gas_flow_nm3_h.ok_or_else(|| {
                CalcError::invalid(
                    "flue_gas_flow_nm3_h",
                    "required with measured concentrations",
                )
            })?;
            let flow = non_negative("flue_gas_flow_nm3_h", flow)?;
            Some((o2, o2_ref, flow))
        } else {
            None
        };

        Ok(Checked {
            set,
            row,
            energy_basis,
            energy_fb_kwh,
            conversion,
            gwp,
            period_h,
            pollutants,
            measurement,
        })
    }
}

impl Calculation for Emissions {
    const KIND: &'static str = "GL-004";
    type Request = EmissionsRequest;
    type Output = EmissionsResult;

    /// Runs the (microsecond-cheap) calculation and discards it, so that inputs whose products
    /// would overflow f64 are refused here exactly as `run` refuses them.
    fn validate(req: &EmissionsRequest) -> Result<(), CalcError> {
        Self::run(req).map(|_| ())
    }

    fn run(req: &EmissionsRequest) -> Result<EmissionsResult, CalcError> {
        let c = req.check()?;
        let per_unit = c.energy_fb_kwh * c.set.per_kwh;
        let co2 = per_unit * c.row.co2;
        let ch4 = per_unit * c.row.ch4;
        let n2o = per_unit * c.row.n2o;
        let (gwp_name, gwp_ch4, gwp_n2o) = c.gwp;
        let co2e = co2 + gwp_ch4 * ch4 + gwp_n2o * n2o;

        let mut kg = [None; 3];
        let mut source: [Option<&str>; 3] = [None; 3];
        let mut corrected = [None; 3];
        let mut status: [Option<&str>; 3] = [None; 3];
        let mut margin = [None; 3];
        let limits = req.pollutant_fields().map(|f| f.2);
        for i in 0..3 {
            match c.pollutants[i] {
                Pollutant::None => {}
                Pollutant::Factor(f) => {
                    kg[i] = Some(f * req.energy_input_kwh / 1000.0);
                    source[i] = Some("factor");
                }
                Pollutant::Measured(conc) => {
                    let (o2, o2_ref, flow) = c.measurement.unwrap_or_default();
                    kg[i] = Some(conc * flow * c.period_h / 1e6);
                    source[i] = Some("measured");
                    let at_ref = o2_corrected(conc, o2, o2_ref);
                    corrected[i] = Some(at_ref);
                    if let Some(limit) = limits[i] {
                        let (s, m) = compliance(at_ref, limit);
                        status[i] = Some(s);
                        margin[i] = Some(m);
                    }
                }
            }
        }
        let total = co2 + ch4 + n2o + kg.iter().flatten().sum::<f64>();
        let heat_mwh = req.heat_output_kwh.map(|h| h / 1000.0);
        let intensity = heat_mwh.map(|h| intensity_kg_mwh(total, h));
        let judged = intensity
            .zip(req.intensity_limit_kg_mwh)
            .map(|(v, l)| compliance(v, l));

        let r = EmissionsResult {
            factor_set: c.set.name.to_string(),
            factor_basis: c.set.basis.to_string(),
            factor_unit: c.set.unit.to_string(),
            fuel: c.row.fuel.to_string(),
            energy_input_kwh: req.energy_input_kwh,
            energy_basis: c.energy_basis.to_string(),
            energy_on_factor_basis_kwh: c.energy_fb_kwh,
            basis_conversion: c.conversion.to_string(),
            co2_factor: c.row.co2,
            ch4_factor: c.row.ch4,
            n2o_factor: c.row.n2o,
            co2_factor_kg_kwh: c.row.co2 * c.set.per_kwh,
            co2_kg: co2,
            ch4_kg: ch4,
            n2o_kg: n2o,
            gwp_set: gwp_name.to_string(),
            gwp_ch4,
            gwp_n2o,
            co2e_kg: co2e,
            period_h: c.period_h,
            nox_kg: kg[0],
            sox_kg: kg[1],
            pm_kg: kg[2],
            nox_source: source[0].map(str::to_string),
            sox_source: source[1].map(str::to_string),
            pm_source: source[2].map(str::to_string),
            o2_reference_pct: c.measurement.map(|m| m.1),
            nox_mg_nm3_ref_o2: corrected[0],
            sox_mg_nm3_ref_o2: corrected[1],
            pm_mg_nm3_ref_o2: corrected[2],
            nox_status: status[0].map(str::to_string),
            nox_margin_pct: margin[0],
            sox_status: status[1].map(str::to_string),
            sox_margin_pct: margin[1],
            pm_status: status[2].map(str::to_string),
            pm_margin_pct: margin[2],
            total_emissions_kg: total,
            heat_output_kwh: req.heat_output_kwh,
            intensity_kg_mwh: intensity,
            co2e_intensity_kg_mwh: heat_mwh.map(|h| co2e / h),
            intensity_limit_kg_mwh: req.intensity_limit_kg_mwh,
            compliance_status: judged.map(|j| j.0.to_string()),
            compliance_margin_pct: judged.map(|j| j.1),
        };
        // Inputs near f64::MAX could overflow a product; refuse rather than return inf/NaN.
        let numbers = [
            r.co2e_kg,
            r.total_emissions_kg,
            r.energy_on_factor_basis_kwh,
            r.intensity_kg_mwh.unwrap_or(0.0),
            r.co2e_intensity_kg_mwh.unwrap_or(0.0),
            r.compliance_margin_pct.unwrap_or(0.0),
        ];
        let pollutant_numbers = kg
            .iter()
            .chain(corrected.iter())
            .chain(margin.iter())
            .flatten()
            .copied();
        if !numbers
            .into_iter()
            .chain(pollutant_numbers)
            .all(f64::is_finite)
        {
            return Err(CalcError::invalid(
                "energy_input_kwh",
                "inputs too large: a result overflows f64",
            ));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gas_ipcc(kwh: f64) -> EmissionsRequest {
        EmissionsRequest {
            factor_set: "ipcc_2006".into(),
            fuel: "natural_gas".into(),
            energy_input_kwh: kwh,
            energy_basis: "net".into(),
            ..Default::default()
        }
    }

    #[test]
    fn natural_gas_ipcc_per_kwh_net() {
        // Reference: 56,100 kg/TJ x 3.6e-6 TJ/kWh = 0.20196 kg CO2/kWh (net).
        let r = Emissions::run(&gas_ipcc(1.0)).unwrap();
        assert!((r.co2_factor_kg_kwh - 0.20196).abs() < 1e-12);
        assert!((r.co2_kg - 0.20196).abs() < 1e-12);
        assert_eq!(r.factor_basis, "net");
        assert_eq!(r.basis_conversion, "none");
        // 1 GWh: 3.6 TJ -> CH4 3.6 kg, N2O 0.36 kg; AR5: CO2e = 201,960 + 28 x 3.6 + 265 x 0.36.
        let r = Emissions::run(&gas_ipcc(1e6)).unwrap();
        assert!((r.ch4_kg - 3.6).abs() < 1e-9 && (r.n2o_kg - 0.36).abs() < 1e-9);
        assert!((r.co2e_kg - (201_960.0 + 28.0 * 3.6 + 265.0 * 0.36)).abs() < 1e-6);
        assert_eq!(
            (r.gwp_set.as_str(), r.gwp_ch4, r.gwp_n2o),
            ("ar5_100", 28.0, 265.0)
        );
    }

    #[test]
    fn ipcc_co2_table_per_kwh() {
        for (fuel, kg_tj) in [
            ("natural_gas", 56_100.0),
            ("gas_diesel_oil", 74_100.0),
            ("residual_fuel_oil", 77_400.0),
            ("lpg", 63_100.0),
            ("bituminous_coal", 94_600.0),
            ("sub_bituminous_coal", 96_100.0),
            ("lignite", 101_000.0),
            ("anthracite", 98_300.0),
            ("petroleum_coke", 97_500.0),
        ] {
            let mut req = gas_ipcc(1000.0);
            req.fuel = fuel.into();
            let r = Emissions::run(&req).unwrap();
            assert!((r.co2_kg - kg_tj * 3.6e-3).abs() < 1e-9, "{fuel}");
        }
    }

    #[test]
    fn epa_gross_basis_per_mmbtu() {
        // 1 MMBtu = 293.0710702 kWh (gross): natural gas 53.06 kg CO2, CH4 1e-3, N2O 1e-4.
        let req = EmissionsRequest {
            factor_set: "epa_ghgrp".into(),
            fuel: "natural_gas".into(),
            energy_input_kwh: KWH_PER_MMBTU,
            energy_basis: "gross".into(),
            ..Default::default()
        };
        assert!((KWH_PER_MMBTU - 293.071_070_2).abs() < 1e-6);
        let r = Emissions::run(&req).unwrap();
        assert!((r.co2_kg - 53.06).abs() < 1e-9);
        assert!((r.ch4_kg - 1.0e-3).abs() < 1e-15 && (r.n2o_kg - 1.0e-4).abs() < 1e-15);
        assert_eq!(
            (r.factor_basis.as_str(), r.factor_unit.as_str()),
            ("gross", "kg/MMBtu")
        );
        let mut coal = req.clone();
        coal.fuel = "bituminous_coal".into();
        let r = Emissions::run(&coal).unwrap();
        assert!((r.co2_kg - 93.28).abs() < 1e-9 && (r.ch4_kg - 1.1e-2).abs() < 1e-15);
    }

    #[test]
    fn basis_conversion_needs_a_ratio() {
        // Gross energy against net factors: refused without a ratio, naming the ratio field.
        let mut req = gas_ipcc(1000.0);
        req.energy_basis = "gross".into();
        let err = Emissions::run(&req).unwrap_err();
        assert_eq!(err.field(), Some("net_to_gross_ratio"));
        assert!(err.to_string().contains("not assumed"), "{err}");
        req.net_to_gross_ratio = Some(0.9);
        let r = Emissions::run(&req).unwrap();
        assert_eq!(r.basis_conversion, "gross_to_net");
        assert!((r.energy_on_factor_basis_kwh - 900.0).abs() < 1e-9);
        assert!((r.co2_kg - 900.0 * 0.20196).abs() < 1e-9);
        // Net energy against gross factors.
        let req = EmissionsRequest {
            factor_set: "epa_ghgrp".into(),
            fuel: "natural_gas".into(),
            energy_input_kwh: 900.0,
            energy_basis: "net".into(),
            net_to_gross_ratio: Some(0.9),
            ..Default::default()
        };
        let r = Emissions::run(&req).unwrap();
        assert_eq!(r.basis_conversion, "net_to_gross");
        assert!((r.energy_on_factor_basis_kwh - 1000.0).abs() < 1e-9);
        let mut no_ratio = req;
        no_ratio.net_to_gross_ratio = None;
        assert_eq!(
            Emissions::run(&no_ratio).unwrap_err().field(),
            Some("net_to_gross_ratio")
        );
    }

    #[test]
    fn seed_intensity_and_compliance() {
        // Seed: CO2 15000 + NOx 20 + SOx 10 + PM 5 kg/h at 90 MW, limit 200 kg/MWh
        // -> 167.06 kg/MWh, PASS, margin 16.47 %.
        let i = intensity_kg_mwh(15_000.0 + 20.0 + 10.0 + 5.0, 90.0);
        assert!((i - 167.06).abs() < 0.005, "{i}");
        let (s, m) = compliance(i, 200.0);
        assert_eq!(s, "PASS");
        assert!((m - 16.47).abs() < 0.005, "{m}");
        assert_eq!(compliance(185.0, 200.0).0, "WARNING");
        assert_eq!(compliance(180.0, 200.0).0, "PASS");
        assert_eq!(compliance(200.0, 200.0).0, "WARNING");
        assert_eq!(compliance(200.1, 200.0).0, "FAIL");
        assert!(compliance(220.0, 200.0).1 < 0.0);
    }

    #[test]
    fn seed_through_run() {
        // One hour of natural gas giving 15,000 kg CO2 (IPCC, net), NOx/SOx/PM from factors
        // giving 20/10/5 kg, 90 MWh heat. CH4 and N2O add 0.27 kg: 167.06 kg/MWh all the same.
        let energy = 15_000.0 / 0.20196;
        let mwh = energy / 1000.0;
        let req = EmissionsRequest {
            heat_output_kwh: Some(90_000.0),
            nox_factor_kg_mwh: Some(20.0 / mwh),
            sox_factor_kg_mwh: Some(10.0 / mwh),
            pm_factor_kg_mwh: Some(5.0 / mwh),
            intensity_limit_kg_mwh: Some(200.0),
            ..gas_ipcc(energy)
        };
        let r = Emissions::run(&req).unwrap();
        assert!((r.co2_kg - 15_000.0).abs() < 1e-6);
        assert!((r.nox_kg.unwrap() - 20.0).abs() < 1e-9);
        assert_eq!(r.nox_source.as_deref(), Some("factor"));
        let i = r.intensity_kg_mwh.unwrap();
        assert!((i - 167.06).abs() < 0.005, "{i}");
        assert_eq!(r.compliance_status.as_deref(), Some("PASS"));
        assert!((r.compliance_margin_pct.unwrap() - 16.47).abs() < 0.005);
    }

    #[test]
    fn measured_concentrations_with_o2_correction() {
        // Coal, 8 % O2 measured; IED default reference 6 % for solids.
        let req = EmissionsRequest {
            factor_set: "ipcc_2006".into(),
            fuel: "bituminous_coal".into(),
            energy_input_kwh: 100_000.0,
            energy_basis: "net".into(),
            period_h: Some(2.0),
            nox_measured_mg_nm3: Some(300.0),
            sox_measured_mg_nm3: Some(150.0),
            pm_factor_kg_mwh: Some(0.05),
            flue_o2_measured_pct: Some(8.0),
            flue_gas_flow_nm3_h: Some(50_000.0),
            nox_limit_mg_nm3: Some(400.0),
            sox_limit_mg_nm3: Some(150.0),
            ..Default::default()
        };
        let r = Emissions::run(&req).unwrap();
        assert_eq!(r.o2_reference_pct, Some(6.0));
        let nox_ref = 300.0 * 15.0 / 13.0;
        assert!((r.nox_mg_nm3_ref_o2.unwrap() - nox_ref).abs() < 1e-9);
        // 300 mg/Nm3 x 50,000 Nm3/h x 2 h = 30 kg.
        assert!((r.nox_kg.unwrap() - 30.0).abs() < 1e-9);
        assert!((r.pm_kg.unwrap() - 5.0).abs() < 1e-12);
        assert_eq!(r.nox_status.as_deref(), Some("PASS")); // 346 <= 360
        assert_eq!(r.sox_status.as_deref(), Some("FAIL")); // 173 > 150
        assert!(r.pm_status.is_none() && r.pm_mg_nm3_ref_o2.is_none());
        // A gaseous fuel defaults to 3 % reference O2.
        let mut gas = req;
        gas.fuel = "natural_gas".into();
        assert_eq!(Emissions::run(&gas).unwrap().o2_reference_pct, Some(3.0));
    }

    /// A named change applied to a valid request.
    type Mutation = Box<dyn Fn(&mut EmissionsRequest)>;

    #[test]
    fn errors_name_the_field() {
        let field = |req: &EmissionsRequest| {
            Emissions::validate(req)
                .unwrap_err()
                .field()
                .map(str::to_string)
        };
        let base = gas_ipcc(1000.0);
        let cases: Vec<(&str, Mutation)> = vec![
            ("factor_set", Box::new(|r| r.factor_set = "defra".into())),
            ("factor_set", Box::new(|r| r.factor_set.clear())),
            ("fuel", Box::new(|r| r.fuel = "propane".into())),
            ("energy_basis", Box::new(|r| r.energy_basis.clear())),
            ("energy_input_kwh", Box::new(|r| r.energy_input_kwh = -1.0)),
            (
                "energy_input_kwh",
                Box::new(|r| r.energy_input_kwh = f64::NAN),
            ),
            (
                "energy_input_kwh",
                Box::new(|r| {
                    r.energy_input_kwh = f64::MAX;
                    r.nox_factor_kg_mwh = Some(1e6);
                }),
            ),
            (
                "net_to_gross_ratio",
                Box::new(|r| r.net_to_gross_ratio = Some(1.1)),
            ),
            ("gwp_set", Box::new(|r| r.gwp_set = Some("sar".into()))),
            ("period_h", Box::new(|r| r.period_h = Some(0.0))),
            (
                "heat_output_kwh",
                Box::new(|r| r.heat_output_kwh = Some(-5.0)),
            ),
            (
                "heat_output_kwh",
                Box::new(|r| r.intensity_limit_kg_mwh = Some(200.0)),
            ),
            (
                "nox_factor_kg_mwh",
                Box::new(|r| r.nox_factor_kg_mwh = Some(-1.0)),
            ),
            (
                "nox_measured_mg_nm3",
                Box::new(|r| {
                    r.nox_factor_kg_mwh = Some(1.0);
                    r.nox_measured_mg_nm3 = Some(1.0);
                }),
            ),
            (
                "pm_measured_mg_nm3",
                Box::new(|r| r.pm_limit_mg_nm3 = Some(20.0)),
            ),
            (
                "flue_o2_measured_pct",
                Box::new(|r| r.sox_measured_mg_nm3 = Some(10.0)),
            ),
            (
                "flue_o2_measured_pct",
                Box::new(|r| {
                    r.sox_measured_mg_nm3 = Some(10.0);
                    r.flue_o2_measured_pct = Some(21.0);
                }),
            ),
            (
                "flue_gas_flow_nm3_h",
                Box::new(|r| {
                    r.sox_measured_mg_nm3 = Some(10.0);
                    r.flue_o2_measured_pct = Some(5.0);
                }),
            ),
            (
                "o2_reference_pct",
                Box::new(|r| {
                    r.sox_measured_mg_nm3 = Some(10.0);
                    r.flue_o2_measured_pct = Some(5.0);
                    r.flue_gas_flow_nm3_h = Some(1000.0);
                    r.o2_reference_pct = Some(-3.0);
                }),
            ),
        ];
        for (want, mutate) in cases {
            let mut r = base.clone();
            mutate(&mut r);
            assert_eq!(field(&r).as_deref(), Some(want), "{r:?}");
        }
        let mut epa = base;
        epa.factor_set = "epa_ghgrp".into();
        epa.fuel = "lpg".into();
        let err = Emissions::validate(&epa).unwrap_err();
        assert!(err.to_string().contains("propane"), "{err}");
    }

    proptest! {
        #[test]
        fn o2_correction_is_monotonic(
            c in 0.0f64..5_000.0, o2 in 0.0f64..20.0, d in 0.0f64..0.9, o2_ref in 0.0f64..20.9,
        ) {
            let base = o2_corrected(c, o2, o2_ref);
            prop_assert!(base >= 0.0 && base.is_finite());
            // More O2 at the measurement point (more dilution) -> higher corrected value.
            prop_assert!(o2_corrected(c, o2 + d, o2_ref) >= base);
            // A higher reference O2 -> lower corrected value.
            prop_assert!(o2_corrected(c, o2, (o2_ref + d).min(20.99)) <= base);
            // Proportional in the concentration; identity at equal O2.
            prop_assert!(o2_corrected(c + 1.0, o2, o2_ref) >= base);
            prop_assert!((o2_corrected(c, o2, o2) - c).abs() <= 1e-9 * c.max(1.0));
        }

        #[test]
        fn emissions_non_negative_and_linear(kwh in 0.0f64..1e9, fuel in 0usize..9) {
            let mut req = gas_ipcc(kwh);
            req.fuel = IPCC_2006[fuel].fuel.into();
            let r = Emissions::run(&req).unwrap();
            prop_assert!(r.co2_kg >= 0.0 && r.ch4_kg >= 0.0 && r.n2o_kg >= 0.0);
            prop_assert!(r.co2e_kg >= r.co2_kg);
            let mut twice = req.clone();
            twice.energy_input_kwh = 2.0 * kwh;
            let r2 = Emissions::run(&twice).unwrap();
            prop_assert!((r2.co2_kg - 2.0 * r.co2_kg).abs() <= 1e-9 * r2.co2_kg.max(1.0));
        }

        #[test]
        fn never_nan(
            kwh in proptest::num::f64::ANY, heat in proptest::option::of(proptest::num::f64::ANY),
            conc in proptest::option::of(proptest::num::f64::ANY),
            o2 in proptest::option::of(proptest::num::f64::ANY),
            flow in proptest::option::of(proptest::num::f64::ANY),
            ratio in proptest::option::of(proptest::num::f64::ANY),
            limit in proptest::option::of(proptest::num::f64::ANY),
        ) {
            let mut req = gas_ipcc(kwh);
            req.energy_basis = "gross".into();
            req.net_to_gross_ratio = ratio;
            req.heat_output_kwh = heat;
            req.nox_measured_mg_nm3 = conc;
            req.flue_o2_measured_pct = o2;
            req.flue_gas_flow_nm3_h = flow;
            req.intensity_limit_kg_mwh = limit;
            if let Ok(r) = Emissions::run(&req) {
                prop_assert!(r.co2e_kg.is_finite() && r.total_emissions_kg.is_finite());
                prop_assert!(r.intensity_kg_mwh.is_none_or(f64::is_finite));
                prop_assert!(r.nox_mg_nm3_ref_o2.is_none_or(f64::is_finite));
                prop_assert!(r.compliance_margin_pct.is_none_or(f64::is_finite));
            }
        }
    }
}
