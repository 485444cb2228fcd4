//! GL-006 HeatRecovery: how much heat a waste stream can give up to a heat sink, and what that
//! is worth a year.
//!
//! The waste stream (flue gas, exhaust air, hot effluent) can be cooled no lower than the
//! sink's inlet plus the minimum approach dT_min, nor below a floor such as the flue-gas acid
//! dew point: Q = m cp (T_in - max(T_sink,in + dT_min, T_floor)), and 0 when that is not
//! positive. When the sink stream's flow and cp are given, a counterflow exchanger is sized
//! too: with constant cp the stream temperature difference in counterflow changes
//! monotonically along the exchanger (Incropera, 6th ed., sec. 11.3), so dT_min is also
//! enforced at the hot end, Q <= C_sink (T_in - dT_min - T_sink,in), and UA = Q / LMTD.
//!
//! Fuel saved is the recovered heat divided by the efficiency of the boiler it displaces (the
//! first-law efficiency of GL-009), on the basis that efficiency is stated on.

use super::gl014_exchanger::{Arrangement, lmtd};
use super::units::{self, Basis, EnergyUnit, celsius_reading};
use super::{CalcError, Calculation, in_range, non_negative, positive};
use serde::{Deserialize, Serialize};

/// Hours in a leap year, the most a plant can run in one year.
pub const MAX_HOURS_PER_YEAR: f64 = 8_784.0;

/// A GL-006 request. Temperatures in degC, flows in kg/s, cp in J/(kg K).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryRequest {
    /// Waste stream mass flow, kg/s, > 0.
    pub waste_flow_kg_s: f64,
    /// Waste stream mean specific heat over the cooling range, J/(kg K), > 0.
    pub waste_cp_j_kg_k: f64,
    /// Waste stream temperature entering the recovery exchanger, degC.
    pub waste_inlet_c: f64,
    /// Heat sink inlet temperature (e.g. boiler feedwater, combustion air), degC.
    pub sink_inlet_c: f64,
    /// Minimum approach between the streams, K, > 0.
    pub min_approach_k: f64,
    /// Lowest temperature the waste stream may be cooled to, degC, e.g. the flue-gas acid dew
    /// point plus a margin.
    #[serde(default)]
    pub waste_outlet_floor_c: Option<f64>,
    /// Sink stream mass flow, kg/s, > 0. With `sink_cp_j_kg_k`, sizes the exchanger.
    #[serde(default)]
    pub sink_flow_kg_s: Option<f64>,
    /// Sink stream specific heat, J/(kg K), > 0. Given together with `sink_flow_kg_s`.
    #[serde(default)]
    pub sink_cp_j_kg_k: Option<f64>,
    /// Hours a year the recovery runs, [0, 8784]. Enables the annual figures.
    #[serde(default)]
    pub operating_hours_per_year: Option<f64>,
    /// Efficiency of the boiler whose fuel the recovered heat displaces, percent, > 0 (and
    /// <= 100 on the gross basis). Needs `efficiency_basis` and `operating_hours_per_year`.
    #[serde(default)]
    pub boiler_efficiency_pct: Option<f64>,
    /// `gross` or `net`: the calorific basis of `boiler_efficiency_pct` and so of the fuel
    /// saving and of `fuel_price_per_mwh`.
    #[serde(default)]
    pub efficiency_basis: Option<String>,
    /// Fuel price per MWh of fuel on `efficiency_basis`, in the plant's currency, >= 0.
    /// Needs `boiler_efficiency_pct`.
    #[serde(default)]
    pub fuel_price_per_mwh: Option<f64>,
}

/// A GL-006 result. Optional figures appear only when their inputs were given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryResult {
    /// Waste stream capacity rate m cp, W/K.
    pub waste_capacity_rate_w_k: f64,
    /// Lowest waste outlet the bounds allow: max(sink inlet + dT_min, floor), degC.
    pub waste_outlet_limit_c: f64,
    /// What limits the recovery: `approach` (sink inlet + dT_min), `floor` (the outlet floor)
    /// or `sink` (the sink stream's capacity rate, at the hot end).
    pub limited_by: String,
    /// Waste temperature after recovery, degC (the inlet when nothing is recoverable).
    pub waste_outlet_c: f64,
    /// Recoverable heat, kW; 0 when the waste inlet is not above the limit.
    pub recoverable_heat_kw: f64,
    /// Sink outlet temperature, degC (sink stream given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_outlet_c: Option<f64>,
    /// Counterflow LMTD of the recovery exchanger, K (sink stream given, heat > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmtd_k: Option<f64>,
    /// UA the counterflow recovery exchanger needs, W/K (sink stream given; 0 with no heat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ua_required_w_k: Option<f64>,
    /// Recovered heat over a year, kWh (operating hours given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_energy_kwh_per_year: Option<f64>,
    /// Boiler fuel no longer burned, kWh a year on `fuel_saving_basis` (efficiency given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_saving_kwh_per_year: Option<f64>,
    /// `gross` or `net`: the calorific basis of the fuel saving (echoes `efficiency_basis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_saving_basis: Option<String>,
    /// Fuel cost no longer paid, plant currency a year (fuel price given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_saving_per_year: Option<f64>,
}

/// Marker for the GL-006 calculation.
pub struct HeatRecovery;

struct Checked {
    cw: f64,
    tw_in: f64,
    ts_in: f64,
    dt_min: f64,
    floor: Option<f64>,
    sink_c: Option<f64>,
    hours: Option<f64>,
    efficiency: Option<(f64, Basis)>,
    price: Option<f64>,
}

fn requires(field: &str, needs: &str) -> CalcError {
    CalcError::invalid(field, format!("needs {needs} to be given too"))
}

impl RecoveryRequest {
    fn check(&self) -> Result<Checked, CalcError> {
        positive("waste_flow_kg_s", self.waste_flow_kg_s)?;
        positive("waste_cp_j_kg_k", self.waste_cp_j_kg_k)?;
        let cw = self.waste_flow_kg_s * self.waste_cp_j_kg_k;
        if !cw.is_finite() {
            return Err(CalcError::invalid("waste_flow_kg_s", "flow x cp overflows"));
        }
        let tw_in = celsius_reading("waste_inlet_c", self.waste_inlet_c)?;
        let ts_in = celsius_reading("sink_inlet_c", self.sink_inlet_c)?;
        let dt_min = positive("min_approach_k", self.min_approach_k)?;
        let floor = self
            .waste_outlet_floor_c
            .map(|t| celsius_reading("waste_outlet_floor_c", t))
            .transpose()?;
        let sink_c = match (self.sink_flow_kg_s, self.sink_cp_j_kg_k) {
            (None, None) => None,
            (Some(_), None) => return Err(requires("sink_flow_kg_s", "sink_cp_j_kg_k")),
            (None, Some(_)) => return Err(requires("sink_cp_j_kg_k", "sink_flow_kg_s")),
            (Some(m), Some(cp)) => {
                positive("sink_flow_kg_s", m)?;
                positive("sink_cp_j_kg_k", cp)?;
                let c = m * cp;
                if !c.is_finite() {
                    return Err(CalcError::invalid("sink_flow_kg_s", "flow x cp overflows"));
                }
                Some(c)
            }
        };
        let hours = self
            .operating_hours_per_year
            .map(|h| in_range("operating_hours_per_year", h, 0.0, MAX_HOURS_PER_YEAR))
            .transpose()?;
        let basis = self
            .efficiency_basis
            .as_deref()
            .map(|b| Basis::parse_field("efficiency_basis", b))
            .transpose()?;
        let efficiency = match (self.boiler_efficiency_pct, basis) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(requires("efficiency_basis", "boiler_efficiency_pct"));
            }
            (Some(_), None) => {
                return Err(CalcError::invalid(
                    "efficiency_basis",
                    "required with boiler_efficiency_pct: gross or net (the fuel saving is on that basis)",
                ));
            }
            (Some(e), Some(b)) => {
                positive("boiler_efficiency_pct", e)?;
                // On the net basis a condensing boiler legitimately exceeds 100 %; on the
                // gross basis nothing can.
                if b == Basis::Gross && e > 100.0 {
                    return Err(CalcError::invalid(
                        "boiler_efficiency_pct",
                        format!("must be <= 100 on the gross basis, got {e}"),
                    ));
                }
                if hours.is_none() {
                    return Err(requires(
                        "boiler_efficiency_pct",
                        "operating_hours_per_year",
                    ));
                }
                Some((e, b))
            }
        };
        let price = self
            .fuel_price_per_mwh
            .map(|p| non_negative("fuel_price_per_mwh", p))
            .transpose()?;
        if price.is_some() && efficiency.is_none() {
            return Err(requires(
                "fuel_price_per_mwh",
                "boiler_efficiency_pct and efficiency_basis",
            ));
        }
        Ok(Checked {
            cw,
            tw_in,
            ts_in,
            dt_min,
            floor,
            sink_c,
            hours,
            efficiency,
            price,
        })
    }
}

fn finite_out(name: &str, v: f64) -> Result<f64, CalcError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(CalcError::invalid(
            "request",
            format!("{name} is not representable ({v}): inputs are out of any physical range"),
        ))
    }
}

fn run_checked(c: &Checked) -> Result<RecoveryResult, CalcError> {
    let approach_limit = c.ts_in + c.dt_min;
    let (mut limit, mut limited_by) = (approach_limit, "approach");
    if let Some(floor) = c.floor
        && floor > approach_limit
    {
        (limit, limited_by) = (floor, "floor");
    }
    let mut q_w = (c.cw * (c.tw_in - limit)).max(0.0);
    if let Some(cs) = c.sink_c {
        // dT_min at the hot end: the sink cannot leave hotter than T_in - dT_min.
        let hot_end_max = (cs * (c.tw_in - c.dt_min - c.ts_in)).max(0.0);
        if hot_end_max < q_w {
            q_w = hot_end_max;
            limited_by = "sink";
        }
    }
    let q_w = finite_out("recoverable_heat_kw", q_w)?;
    let tw_out = if q_w > 0.0 {
        c.tw_in - q_w / c.cw
    } else {
        c.tw_in
    };

    let (sink_outlet, lmtd_k, ua) = match c.sink_c {
        None => (None, None, None),
        Some(_) if q_w == 0.0 => (Some(c.ts_in), None, Some(0.0)),
        Some(cs) => {
            let ts_out = c.ts_in + q_w / cs;
            let d = lmtd(Arrangement::Counterflow, c.tw_in, tw_out, c.ts_in, ts_out);
            // Both ends are at least dT_min > 0 apart by construction; guard regardless.
            if d.is_nan() || d <= 0.0 {
                return Err(CalcError::invalid(
                    "min_approach_k",
                    format!("the exchanger's log-mean difference is {d} K; no finite UA"),
                ));
            }
            (
                Some(ts_out),
                Some(d),
                Some(finite_out("ua_required_w_k", q_w / d)?),
            )
        }
    };

    let q_kw = units::convert(q_w, units::PowerUnit::Watt, units::PowerUnit::Kilowatt);
    let annual_kwh = c.hours.map(|h| q_kw * h);
    let fuel_kwh = match (annual_kwh, c.efficiency) {
        (Some(e), Some((eff, _))) => Some(e / (eff / 100.0)),
        _ => None,
    };
    let cost = match (fuel_kwh, c.price) {
        (Some(f), Some(p)) => {
            Some(units::convert(f, EnergyUnit::KilowattHour, EnergyUnit::MegawattHour) * p)
        }
        _ => None,
    };
    for (name, v) in [
        ("recovered_energy_kwh_per_year", annual_kwh),
        ("fuel_saving_kwh_per_year", fuel_kwh),
        ("cost_saving_per_year", cost),
    ] {
        if let Some(v) = v {
            finite_out(name, v)?;
        }
    }
    Ok(RecoveryResult {
        waste_capacity_rate_w_k: c.cw,
        waste_outlet_limit_c: limit,
        limited_by: limited_by.to_string(),
        waste_outlet_c: finite_out("waste_outlet_c", tw_out)?,
        recoverable_heat_kw: q_kw,
        sink_outlet_c: sink_outlet,
        lmtd_k,
        ua_required_w_k: ua,
        recovered_energy_kwh_per_year: annual_kwh,
        fuel_saving_kwh_per_year: fuel_kwh,
        fuel_saving_basis: c.efficiency.map(|(_, b)| b.name().to_string()),
        cost_saving_per_year: cost,
    })
}

impl Calculation for HeatRecovery {
    const KIND: &'static str = "GL-006";
    type Request = RecoveryRequest;
    type Output = RecoveryResult;

    fn validate(req: &RecoveryRequest) -> Result<(), CalcError> {
        // Overflow only shows once computed; computing is cheap, so validate and run agree.
        run_checked(&req.check()?).map(|_| ())
    }

    fn run(req: &RecoveryRequest) -> Result<RecoveryResult, CalcError> {
        run_checked(&req.check()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gl014_exchanger::{ExchangerRequest, HeatExchanger};
    use proptest::prelude::*;

    /// Boiler flue gas 5 kg/s, cp 1100 J/(kg K), 250 C, heating 105 C feedwater with 20 K
    /// approach, acid dew point floor 130 C.
    fn flue_gas() -> RecoveryRequest {
        RecoveryRequest {
            waste_flow_kg_s: 5.0,
            waste_cp_j_kg_k: 1100.0,
            waste_inlet_c: 250.0,
            sink_inlet_c: 105.0,
            min_approach_k: 20.0,
            waste_outlet_floor_c: Some(130.0),
            sink_flow_kg_s: None,
            sink_cp_j_kg_k: None,
            operating_hours_per_year: None,
            boiler_efficiency_pct: None,
            efficiency_basis: None,
            fuel_price_per_mwh: None,
        }
    }

    #[test]
    fn floor_binds_above_the_approach() {
        let r = HeatRecovery::run(&flue_gas()).unwrap();
        // 5 x 1100 x (250 - max(105 + 20, 130)) = 660 000 W.
        assert_eq!(r.limited_by, "floor");
        assert_eq!(r.waste_outlet_limit_c, 130.0);
        assert!((r.recoverable_heat_kw - 660.0).abs() < 1e-9);
        assert!((r.waste_outlet_c - 130.0).abs() < 1e-9);
        assert!(r.ua_required_w_k.is_none() && r.fuel_saving_kwh_per_year.is_none());
    }

    #[test]
    fn approach_binds_without_a_floor() {
        let mut req = flue_gas();
        req.waste_outlet_floor_c = None;
        let r = HeatRecovery::run(&req).unwrap();
        assert_eq!(r.limited_by, "approach");
        assert!((r.recoverable_heat_kw - 5.0 * 1100.0 * 125.0 / 1000.0).abs() < 1e-9);
    }

    #[test]
    fn nothing_recoverable_is_zero_not_negative() {
        let mut req = flue_gas();
        req.waste_inlet_c = 120.0;
        req.sink_flow_kg_s = Some(3.0);
        req.sink_cp_j_kg_k = Some(4200.0);
        req.operating_hours_per_year = Some(8000.0);
        let r = HeatRecovery::run(&req).unwrap();
        assert_eq!(r.recoverable_heat_kw, 0.0);
        assert_eq!(r.waste_outlet_c, 120.0);
        assert_eq!(r.ua_required_w_k, Some(0.0));
        assert_eq!(r.lmtd_k, None);
        assert_eq!(r.recovered_energy_kwh_per_year, Some(0.0));
    }

    #[test]
    fn annual_fuel_and_cost() {
        let mut req = flue_gas();
        req.operating_hours_per_year = Some(8000.0);
        req.boiler_efficiency_pct = Some(88.0);
        req.efficiency_basis = Some("gross".into());
        req.fuel_price_per_mwh = Some(30.0);
        let r = HeatRecovery::run(&req).unwrap();
        let annual = 660.0 * 8000.0;
        let fuel = annual / 0.88;
        assert!((r.recovered_energy_kwh_per_year.unwrap() - annual).abs() < 1e-6);
        assert!((r.fuel_saving_kwh_per_year.unwrap() - fuel).abs() < 1e-6);
        assert!((r.cost_saving_per_year.unwrap() - fuel / 1000.0 * 30.0).abs() < 1e-6);
        assert_eq!(r.fuel_saving_basis.as_deref(), Some("gross"));
    }

    #[test]
    fn sink_stream_sizes_a_counterflow_exchanger() {
        let mut req = flue_gas();
        // Feedwater 2 kg/s: C = 8400 W/K, plenty; the floor still binds.
        req.sink_flow_kg_s = Some(2.0);
        req.sink_cp_j_kg_k = Some(4200.0);
        let r = HeatRecovery::run(&req).unwrap();
        assert_eq!(r.limited_by, "floor");
        let ts_out = 105.0 + 660_000.0 / 8400.0;
        assert!((r.sink_outlet_c.unwrap() - ts_out).abs() < 1e-9);
        // Cross-check against GL-014 in lmtd mode on the same four temperatures.
        let x = HeatExchanger::run(&ExchangerRequest {
            mode: "lmtd".into(),
            arrangement: "counterflow".into(),
            hot_flow_kg_s: 5.0,
            hot_cp_j_kg_k: 1100.0,
            hot_inlet_c: 250.0,
            hot_outlet_c: Some(130.0),
            cold_flow_kg_s: 2.0,
            cold_cp_j_kg_k: 4200.0,
            cold_inlet_c: 105.0,
            cold_outlet_c: None,
            ua_w_k: None,
            ua_clean_w_k: None,
            area_m2: None,
            duty_basis: None,
        })
        .unwrap();
        assert!((r.ua_required_w_k.unwrap() - x.ua_w_k).abs() < 1e-9 * x.ua_w_k);
        assert!((r.lmtd_k.unwrap() - x.lmtd_k).abs() < 1e-12);
    }

    #[test]
    fn small_sink_limits_at_the_hot_end() {
        let mut req = flue_gas();
        // Combustion air 1 kg/s: C = 1010 W/K < waste 5500 W/K.
        req.sink_inlet_c = 20.0;
        req.sink_flow_kg_s = Some(1.0);
        req.sink_cp_j_kg_k = Some(1010.0);
        let r = HeatRecovery::run(&req).unwrap();
        assert_eq!(r.limited_by, "sink");
        // Sink leaves at 250 - 20 = 230 C: q = 1010 x 210 W.
        assert!((r.recoverable_heat_kw - 1010.0 * 210.0 / 1000.0).abs() < 1e-9);
        assert!((r.sink_outlet_c.unwrap() - 230.0).abs() < 1e-9);
        assert!(r.waste_outlet_c > r.waste_outlet_limit_c);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let field = |req: &RecoveryRequest| {
            HeatRecovery::run(req)
                .unwrap_err()
                .field()
                .map(String::from)
        };
        let mut r = flue_gas();
        r.waste_flow_kg_s = -1.0;
        assert_eq!(field(&r).as_deref(), Some("waste_flow_kg_s"));
        let mut r = flue_gas();
        r.waste_inlet_c = f64::NAN;
        assert_eq!(field(&r).as_deref(), Some("waste_inlet_c"));
        let mut r = flue_gas();
        r.min_approach_k = 0.0;
        assert_eq!(field(&r).as_deref(), Some("min_approach_k"));
        let mut r = flue_gas();
        r.sink_flow_kg_s = Some(1.0);
        assert_eq!(field(&r).as_deref(), Some("sink_flow_kg_s"));
        let mut r = flue_gas();
        r.boiler_efficiency_pct = Some(90.0);
        assert_eq!(field(&r).as_deref(), Some("efficiency_basis"));
        r.efficiency_basis = Some("gross".into());
        assert_eq!(field(&r).as_deref(), Some("boiler_efficiency_pct"));
        r.operating_hours_per_year = Some(9000.0);
        assert_eq!(field(&r).as_deref(), Some("operating_hours_per_year"));
        r.operating_hours_per_year = Some(8000.0);
        r.boiler_efficiency_pct = Some(104.0);
        assert_eq!(field(&r).as_deref(), Some("boiler_efficiency_pct"));
        r.efficiency_basis = Some("net".into());
        assert!(
            HeatRecovery::run(&r).is_ok(),
            "a condensing boiler on net basis"
        );
        r.efficiency_basis = Some("wet".into());
        assert_eq!(field(&r).as_deref(), Some("efficiency_basis"));
        let mut r = flue_gas();
        r.fuel_price_per_mwh = Some(30.0);
        assert_eq!(field(&r).as_deref(), Some("fuel_price_per_mwh"));
        let mut r = flue_gas();
        r.waste_outlet_floor_c = Some(-280.0);
        assert_eq!(field(&r).as_deref(), Some("waste_outlet_floor_c"));
    }

    proptest! {
        #[test]
        fn recovery_matches_the_formula_and_conserves_energy(
            m in 0.01f64..100.0, cp in 500f64..5000.0,
            tw in 30f64..900.0, ts in 0f64..200.0, dtm in 1f64..50.0,
            floor in proptest::option::of(50f64..200.0),
            sink in proptest::option::of((0.01f64..100.0, 500f64..5000.0)),
        ) {
            let req = RecoveryRequest {
                waste_flow_kg_s: m,
                waste_cp_j_kg_k: cp,
                waste_inlet_c: tw,
                sink_inlet_c: ts,
                min_approach_k: dtm,
                waste_outlet_floor_c: floor,
                sink_flow_kg_s: sink.map(|s| s.0),
                sink_cp_j_kg_k: sink.map(|s| s.1),
                operating_hours_per_year: None,
                boiler_efficiency_pct: None,
                efficiency_basis: None,
                fuel_price_per_mwh: None,
            };
            let r = HeatRecovery::run(&req).unwrap();
            let bound = (ts + dtm).max(floor.unwrap_or(f64::NEG_INFINITY));
            let formula = (m * cp * (tw - bound)).max(0.0) / 1000.0;
            prop_assert!(r.recoverable_heat_kw >= 0.0);
            prop_assert!(r.recoverable_heat_kw <= formula * (1.0 + 1e-12));
            if sink.is_none() {
                prop_assert!((r.recoverable_heat_kw - formula).abs() <= 1e-9 * formula.max(1.0));
            }
            prop_assert!(r.waste_outlet_c >= bound - 1e-9 || r.recoverable_heat_kw == 0.0);
            if let (Some((ms, cps)), Some(ts_out), true) =
                (sink, r.sink_outlet_c, r.recoverable_heat_kw > 0.0)
            {
                let taken = ms * cps * (ts_out - ts) / 1000.0;
                prop_assert!((taken - r.recoverable_heat_kw).abs() <= 1e-9 * taken.max(1.0));
                prop_assert!(tw - ts_out >= dtm - 1e-9);
                prop_assert!(r.ua_required_w_k.unwrap().is_finite());
            }
        }

        #[test]
        fn never_panics_nor_returns_nan(
            v in proptest::collection::vec(
                prop_oneof![any::<f64>(), -300f64..1000.0, Just(0.0), Just(f64::NAN)], 11),
            some in proptest::collection::vec(any::<bool>(), 6),
            basis in prop_oneof![Just("gross"), Just("net")],
        ) {
            let opt = |b: bool, x: f64| b.then_some(x);
            let req = RecoveryRequest {
                waste_flow_kg_s: v[0],
                waste_cp_j_kg_k: v[1],
                waste_inlet_c: v[2],
                sink_inlet_c: v[3],
                min_approach_k: v[4],
                waste_outlet_floor_c: opt(some[0], v[5]),
                sink_flow_kg_s: opt(some[1], v[6]),
                sink_cp_j_kg_k: opt(some[1], v[7]),
                operating_hours_per_year: opt(some[2], v[8]),
                boiler_efficiency_pct: opt(some[3], v[9]),
                efficiency_basis: some[3].then(|| basis.to_string()),
                fuel_price_per_mwh: opt(some[4] && some[3], v[10]),
            };
            if let Ok(r) = HeatRecovery::run(&req) {
                let json = serde_json::to_value(&r).unwrap();
                for (k, x) in json.as_object().unwrap() {
                    if let Some(f) = x.as_f64() {
                        prop_assert!(f.is_finite(), "{k} = {f}");
                    } else {
                        prop_assert!(x.is_string(), "{k} = {x}");
                    }
                }
                prop_assert!(HeatRecovery::validate(&req).is_ok());
            }
        }
    }
}
