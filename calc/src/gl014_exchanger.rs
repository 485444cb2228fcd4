//! GL-014 HeatExchanger: LMTD, effectiveness-NTU rating, and UA/fouling from measurements.
//!
//! Single-phase streams with constant cp in a pure counterflow or parallel-flow exchanger.
//! Formulas follow Incropera, DeWitt, Bergman and Lavine, *Fundamentals of Heat and Mass
//! Transfer*, 6th ed., ch. 11: LMTD eqs. 11.15-11.17, effectiveness Table 11.3, NTU Table 11.4.
//! They are rearranged (not changed) where the textbook form cancels catastrophically:
//! near-equal end differences in the LMTD and Cr -> 1 in counterflow.
//!
//! Three modes share one request and one result:
//! - `lmtd`: measured temperatures (one outlet may be left out and is closed by the energy
//!   balance) -> duty, heat-balance mismatch, LMTD, UA = q / LMTD.
//! - `rating`: UA and inlets -> effectiveness, duty, outlet temperatures.
//! - `performance`: measured temperatures -> effectiveness, NTU by the inverse formulas,
//!   UA = NTU Cmin, and fouling against a clean UA.

use super::units::celsius_reading;
use super::{CalcError, Calculation, finite, non_negative, positive};
use serde::{Deserialize, Serialize};

/// Flow arrangement of the two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrangement {
    /// Streams enter at opposite ends.
    Counterflow,
    /// Streams enter at the same end.
    Parallel,
}

impl Arrangement {
    /// Names accepted in the request's `arrangement` field.
    pub const NAMES: &'static [&'static str] = &["counterflow", "parallel"];

    /// The request spelling.
    pub fn name(self) -> &'static str {
        match self {
            Arrangement::Counterflow => "counterflow",
            Arrangement::Parallel => "parallel",
        }
    }

    /// Parses `counterflow` or `parallel`; the error names `field` and lists both.
    pub fn parse(field: &str, s: &str) -> Result<Self, CalcError> {
        match s {
            "counterflow" => Ok(Arrangement::Counterflow),
            "parallel" => Ok(Arrangement::Parallel),
            other => Err(one_of(field, Self::NAMES, other)),
        }
    }
}

fn one_of(field: &str, names: &[&str], got: &str) -> CalcError {
    CalcError::invalid(
        field,
        format!("must be one of {}, got \"{got}\"", names.join(", ")),
    )
}

/// Logarithmic mean of two positive numbers, (a - b) / ln(a / b), and `a` when they are equal.
///
/// For a/b within a factor of 2 it is evaluated as lo / [ln(1+u)/u] with u = (hi - lo)/lo:
/// hi - lo is then exact (Sterbenz) and ln_1p keeps full precision, so near-equal ends do not
/// cancel. A non-positive argument gives 0, the limit as that end's approach closes.
pub fn log_mean(a: f64, b: f64) -> f64 {
    if a <= 0.0 || b <= 0.0 {
        return 0.0;
    }
    if a == b {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    let r = hi / lo;
    if r <= 2.0 {
        let u = (hi - lo) / lo;
        lo * u / u.ln_1p()
    } else if r.is_finite() {
        (hi - lo) / r.ln()
    } else {
        (hi - lo) / (hi.ln() - lo.ln())
    }
}

/// End temperature differences (dT1, dT2) for the arrangement, as Incropera eqs. 11.16-11.17
/// define them: counterflow (Th,in - Tc,out, Th,out - Tc,in), parallel (Th,in - Tc,in,
/// Th,out - Tc,out).
pub fn end_differences(
    arrangement: Arrangement,
    hot_in: f64,
    hot_out: f64,
    cold_in: f64,
    cold_out: f64,
) -> (f64, f64) {
    match arrangement {
        Arrangement::Counterflow => (hot_in - cold_out, hot_out - cold_in),
        Arrangement::Parallel => (hot_in - cold_in, hot_out - cold_out),
    }
}

/// Log-mean temperature difference, K. Both end differences must be > 0 for the result to mean
/// anything; validate the temperatures first (a closed end gives 0).
pub fn lmtd(
    arrangement: Arrangement,
    hot_in: f64,
    hot_out: f64,
    cold_in: f64,
    cold_out: f64,
) -> f64 {
    let (dt1, dt2) = end_differences(arrangement, hot_in, hot_out, cold_in, cold_out);
    log_mean(dt1, dt2)
}

/// (1 - e^-x) / x, with its limit 1 at x = 0.
fn one_minus_exp_over(x: f64) -> f64 {
    if x == 0.0 { 1.0 } else { -(-x).exp_m1() / x }
}

/// ln(1 + y) / y, with its limit 1 at y = 0.
fn ln_1p_over(y: f64) -> f64 {
    if y == 0.0 { 1.0 } else { y.ln_1p() / y }
}

/// Effectiveness for NTU >= 0 and Cr in [0, 1] (Incropera Table 11.3).
///
/// Counterflow is evaluated as g / (g + e^-x) with x = NTU(1 - Cr) and g = NTU (1 - e^-x)/x,
/// an exact rearrangement of [1 - e^-x] / [1 - Cr e^-x] that stays accurate as Cr -> 1 and
/// equals NTU / (1 + NTU) at Cr = 1. Cr = 0 gives 1 - e^-NTU for both arrangements.
pub fn effectiveness(arrangement: Arrangement, ntu: f64, cr: f64) -> f64 {
    if ntu.is_infinite() && ntu > 0.0 {
        return max_effectiveness(arrangement, cr);
    }
    match arrangement {
        Arrangement::Counterflow => {
            let x = ntu * (1.0 - cr);
            let g = ntu * one_minus_exp_over(x);
            g / (g + (-x).exp())
        }
        Arrangement::Parallel => {
            let s = 1.0 + cr;
            -(-ntu * s).exp_m1() / s
        }
    }
}

/// The effectiveness an infinitely large exchanger reaches: 1 in counterflow, 1/(1 + Cr) in
/// parallel flow, where the outlets can only meet.
pub fn max_effectiveness(arrangement: Arrangement, cr: f64) -> f64 {
    match arrangement {
        Arrangement::Counterflow => 1.0,
        Arrangement::Parallel => 1.0 / (1.0 + cr),
    }
}

/// NTU from effectiveness (Incropera Table 11.4), or `None` when eps is outside
/// [0, max_effectiveness) and no finite exchanger reaches it.
///
/// Counterflow is evaluated as eps/(1 - eps) x ln(1 + y)/y with y = eps(1 - Cr)/(1 - eps), an
/// exact rearrangement of ln[(eps - 1)/(eps Cr - 1)] / (Cr - 1) that needs no Cr = 1 branch.
pub fn ntu_from_effectiveness(arrangement: Arrangement, eps: f64, cr: f64) -> Option<f64> {
    let in_domain =
        (0.0..=1.0).contains(&cr) && eps >= 0.0 && eps < max_effectiveness(arrangement, cr);
    if !in_domain {
        return None;
    }
    let ntu = match arrangement {
        Arrangement::Counterflow => {
            let y = eps * (1.0 - cr) / (1.0 - eps);
            eps / (1.0 - eps) * ln_1p_over(y)
        }
        Arrangement::Parallel => {
            let s = 1.0 + cr;
            -(-eps * s).ln_1p() / s
        }
    };
    ntu.is_finite().then_some(ntu)
}

/// Request modes, as spelled in `mode`.
pub const MODES: &[&str] = &["lmtd", "rating", "performance"];
/// Duty bases, as spelled in `duty_basis`.
pub const DUTY_BASES: &[&str] = &["hot", "cold", "mean"];

/// A GL-014 request. Temperatures in degC, flows in kg/s, cp in J/(kg K), UA in W/K.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangerRequest {
    /// `lmtd`, `rating` or `performance`.
    pub mode: String,
    /// `counterflow` or `parallel`.
    pub arrangement: String,
    /// Hot stream mass flow, kg/s, > 0.
    pub hot_flow_kg_s: f64,
    /// Hot stream specific heat, J/(kg K), > 0.
    pub hot_cp_j_kg_k: f64,
    /// Hot stream inlet, degC; must be above `cold_inlet_c`.
    pub hot_inlet_c: f64,
    /// Hot stream outlet, degC. Measured in lmtd/performance (one outlet may be omitted);
    /// must be omitted in rating, which computes it.
    #[serde(default)]
    pub hot_outlet_c: Option<f64>,
    /// Cold stream mass flow, kg/s, > 0.
    pub cold_flow_kg_s: f64,
    /// Cold stream specific heat, J/(kg K), > 0.
    pub cold_cp_j_kg_k: f64,
    /// Cold stream inlet, degC.
    pub cold_inlet_c: f64,
    /// Cold stream outlet, degC; same rules as `hot_outlet_c`.
    #[serde(default)]
    pub cold_outlet_c: Option<f64>,
    /// Overall conductance UA, W/K, >= 0. Required in rating, refused elsewhere.
    #[serde(default)]
    pub ua_w_k: Option<f64>,
    /// UA of the clean exchanger, W/K, > 0; lmtd/performance only. Enables the fouling figures.
    #[serde(default)]
    pub ua_clean_w_k: Option<f64>,
    /// Heat-transfer area, m2, > 0. Enables U and the per-area fouling factor.
    #[serde(default)]
    pub area_m2: Option<f64>,
    /// Which stream's duty to trust when both outlets are measured: `hot`, `cold` or `mean`
    /// (default). lmtd/performance only.
    #[serde(default)]
    pub duty_basis: Option<String>,
}

/// A GL-014 result: every figure is filled in whatever the mode; what was input and what was
/// computed depends on `mode`. `_c` fields are degC, `_k` fields temperature differences in K.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangerResult {
    /// The mode that ran.
    pub mode: String,
    /// The arrangement used.
    pub arrangement: String,
    /// Hot inlet, degC (echoed).
    pub hot_inlet_c: f64,
    /// Hot outlet, degC: measured, or computed by rating or the energy balance.
    pub hot_outlet_c: f64,
    /// Cold inlet, degC (echoed).
    pub cold_inlet_c: f64,
    /// Cold outlet, degC: measured, or computed by rating or the energy balance.
    pub cold_outlet_c: f64,
    /// Hot capacity rate m cp, W/K.
    pub hot_capacity_rate_w_k: f64,
    /// Cold capacity rate m cp, W/K.
    pub cold_capacity_rate_w_k: f64,
    /// Smaller capacity rate Cmin, W/K.
    pub c_min_w_k: f64,
    /// Cr = Cmin / Cmax, in (0, 1].
    pub capacity_ratio: f64,
    /// Heat given up by the hot stream, Ch (Th,in - Th,out), W.
    pub hot_duty_w: f64,
    /// Heat taken up by the cold stream, Cc (Tc,out - Tc,in), W.
    pub cold_duty_w: f64,
    /// `hot`, `cold` or `mean` in lmtd/performance; `rating` when the duty came from UA.
    pub duty_basis: String,
    /// The duty the other figures are based on, W.
    pub duty_w: f64,
    /// hot_duty - cold_duty, W; positive when the hot side gave more than the cold took.
    pub heat_balance_mismatch_w: f64,
    /// Mismatch as percent of the hot-side duty (0 when both are 0).
    pub heat_balance_mismatch_pct: f64,
    /// Thermodynamic maximum Cmin (Th,in - Tc,in), W.
    pub max_duty_w: f64,
    /// Effectiveness duty / max duty.
    pub effectiveness: f64,
    /// Number of transfer units UA / Cmin.
    pub ntu: f64,
    /// End difference 1 as defined for the arrangement, K.
    pub dt1_k: f64,
    /// End difference 2 as defined for the arrangement, K.
    pub dt2_k: f64,
    /// Log-mean temperature difference, K.
    pub lmtd_k: f64,
    /// UA, W/K: the input in rating, duty / LMTD in lmtd, NTU Cmin in performance.
    pub ua_w_k: f64,
    /// U = UA / area, W/(m2 K), when the area is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u_w_m2_k: Option<f64>,
    /// The clean UA the fouling figures compare against, W/K (echoed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ua_clean_w_k: Option<f64>,
    /// Fouling resistance 1/UA - 1/UA_clean, K/W. Negative: the exchanger does better than the
    /// clean reference, so the reference or the meters need a look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fouling_resistance_k_w: Option<f64>,
    /// Fouling factor per area, area x fouling resistance = 1/U - 1/U_clean, m2 K/W.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fouling_factor_m2_k_w: Option<f64>,
    /// Cleanliness UA / UA_clean x 100 (the cleanliness factor of the HEI condenser
    /// standards), percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanliness_pct: Option<f64>,
}

/// Marker for the GL-014 calculation.
pub struct HeatExchanger;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Lmtd,
    Rating,
    Performance,
}

#[derive(Clone, Copy, PartialEq)]
enum DutyBasis {
    Hot,
    Cold,
    Mean,
}

impl DutyBasis {
    fn name(self) -> &'static str {
        match self {
            DutyBasis::Hot => "hot",
            DutyBasis::Cold => "cold",
            DutyBasis::Mean => "mean",
        }
    }
}

/// A request that passed validation, with the missing outlet closed by the energy balance.
struct Checked {
    mode: Mode,
    arrangement: Arrangement,
    ch: f64,
    cc: f64,
    th_in: f64,
    tc_in: f64,
    /// Outlets: both known in lmtd/performance, unknown in rating.
    outlets: Option<(f64, f64)>,
    basis: DutyBasis,
    ua: Option<f64>,
    ua_clean: Option<f64>,
    area: Option<f64>,
}

fn capacity_rate(side: &str, flow: f64, cp: f64) -> Result<f64, CalcError> {
    positive(&format!("{side}_flow_kg_s"), flow)?;
    positive(&format!("{side}_cp_j_kg_k"), cp)?;
    let c = flow * cp;
    if !c.is_finite() {
        return Err(CalcError::invalid(
            format!("{side}_flow_kg_s"),
            format!("flow x cp = {flow} x {cp} overflows"),
        ));
    }
    Ok(c)
}

fn refuse(field: &str, value: Option<impl Sized>, mode: &str, why: &str) -> Result<(), CalcError> {
    match value {
        Some(_) => Err(CalcError::invalid(
            field,
            format!("not used in {mode} mode ({why}); omit it"),
        )),
        None => Ok(()),
    }
}

/// Second-law checks on a complete set of temperatures. `computed` names the outlet that was
/// closed by the energy balance, so the message says where the number came from.
fn check_temperatures(
    arr: Arrangement,
    th_in: f64,
    th_out: f64,
    tc_in: f64,
    tc_out: f64,
    computed: Option<&str>,
) -> Result<(), CalcError> {
    let note = |field: &str| match computed {
        Some(c) if c == field => {
            " (computed from the other stream's duty: check the flows and cp)".to_string()
        }
        _ => String::new(),
    };
    if th_out >= th_in {
        return Err(CalcError::invalid(
            "hot_outlet_c",
            format!(
                "outlet beyond inlet: the hot stream must cool, hot_outlet_c {th_out} C >= hot_inlet_c {th_in} C{}",
                note("hot_outlet_c")
            ),
        ));
    }
    if tc_out <= tc_in {
        return Err(CalcError::invalid(
            "cold_outlet_c",
            format!(
                "outlet beyond inlet: the cold stream must warm, cold_outlet_c {tc_out} C <= cold_inlet_c {tc_in} C{}",
                note("cold_outlet_c")
            ),
        ));
    }
    let cross = match arr {
        Arrangement::Counterflow => "temperature cross in counterflow",
        Arrangement::Parallel => "second law",
    };
    if th_out <= tc_in {
        return Err(CalcError::invalid(
            "hot_outlet_c",
            format!(
                "{cross}: hot_outlet_c {th_out} C must stay above cold_inlet_c {tc_in} C{}",
                note("hot_outlet_c")
            ),
        ));
    }
    if tc_out >= th_in {
        return Err(CalcError::invalid(
            "cold_outlet_c",
            format!(
                "{cross}: cold_outlet_c {tc_out} C must stay below hot_inlet_c {th_in} C{}",
                note("cold_outlet_c")
            ),
        ));
    }
    if arr == Arrangement::Parallel && th_out <= tc_out {
        let field = if computed == Some("hot_outlet_c") {
            "hot_outlet_c"
        } else {
            "cold_outlet_c"
        };
        return Err(CalcError::invalid(
            field,
            format!(
                "temperature cross in parallel flow: cold_outlet_c {tc_out} C must stay below hot_outlet_c {th_out} C{}",
                note(field)
            ),
        ));
    }
    Ok(())
}

impl ExchangerRequest {
    fn check(&self) -> Result<Checked, CalcError> {
        let mode = match self.mode.as_str() {
            "lmtd" => Mode::Lmtd,
            "rating" => Mode::Rating,
            "performance" => Mode::Performance,
            other => return Err(one_of("mode", MODES, other)),
        };
        let arrangement = Arrangement::parse("arrangement", &self.arrangement)?;
        let ch = capacity_rate("hot", self.hot_flow_kg_s, self.hot_cp_j_kg_k)?;
        let cc = capacity_rate("cold", self.cold_flow_kg_s, self.cold_cp_j_kg_k)?;
        let th_in = celsius_reading("hot_inlet_c", self.hot_inlet_c)?;
        let tc_in = celsius_reading("cold_inlet_c", self.cold_inlet_c)?;
        if th_in <= tc_in {
            return Err(CalcError::invalid(
                "hot_inlet_c",
                format!(
                    "hot inlet {th_in} C must be above cold inlet {tc_in} C for heat to flow hot to cold"
                ),
            ));
        }
        if th_in - tc_in == f64::INFINITY {
            return Err(CalcError::invalid(
                "hot_inlet_c",
                "inlet difference overflows",
            ));
        }
        let hot_out = self
            .hot_outlet_c
            .map(|t| celsius_reading("hot_outlet_c", t))
            .transpose()?;
        let cold_out = self
            .cold_outlet_c
            .map(|t| celsius_reading("cold_outlet_c", t))
            .transpose()?;
        let ua = self.ua_w_k.map(|v| non_negative("ua_w_k", v)).transpose()?;
        let ua_clean = self
            .ua_clean_w_k
            .map(|v| positive("ua_clean_w_k", v))
            .transpose()?;
        let area = self.area_m2.map(|v| positive("area_m2", v)).transpose()?;
        let basis = self
            .duty_basis
            .as_deref()
            .map(|b| match b {
                "hot" => Ok(DutyBasis::Hot),
                "cold" => Ok(DutyBasis::Cold),
                "mean" => Ok(DutyBasis::Mean),
                other => Err(one_of("duty_basis", DUTY_BASES, other)),
            })
            .transpose()?;

        if mode == Mode::Rating {
            let why = "rating computes the outlets from ua_w_k";
            refuse("hot_outlet_c", hot_out, "rating", why)?;
            refuse("cold_outlet_c", cold_out, "rating", why)?;
            refuse(
                "ua_clean_w_k",
                ua_clean,
                "rating",
                "fouling needs measured outlets",
            )?;
            refuse(
                "duty_basis",
                basis,
                "rating",
                "the rated duty is the same on both sides",
            )?;
            let ua = ua.ok_or_else(|| {
                CalcError::invalid("ua_w_k", "required in rating mode (W/K, >= 0)")
            })?;
            if !(ua / ch.min(cc)).is_finite() {
                return Err(CalcError::invalid(
                    "ua_w_k",
                    format!("NTU = ua_w_k / Cmin = {ua} / {} overflows", ch.min(cc)),
                ));
            }
            return Ok(Checked {
                mode,
                arrangement,
                ch,
                cc,
                th_in,
                tc_in,
                outlets: None,
                basis: DutyBasis::Mean,
                ua: Some(ua),
                ua_clean: None,
                area,
            });
        }

        let mode_name = self.mode.as_str();
        refuse(
            "ua_w_k",
            ua,
            mode_name,
            "UA is computed from the temperatures; the clean reference goes in ua_clean_w_k",
        )?;
        let (th_out, tc_out, basis, computed) = match (hot_out, cold_out) {
            (Some(h), Some(c)) => (h, c, basis.unwrap_or(DutyBasis::Mean), None),
            (Some(h), None) => {
                if matches!(basis, Some(DutyBasis::Cold | DutyBasis::Mean)) {
                    return Err(CalcError::invalid(
                        "duty_basis",
                        "only hot_outlet_c is given, so the duty can only be the hot side's",
                    ));
                }
                let c = tc_in + ch * (th_in - h) / cc;
                (h, c, DutyBasis::Hot, Some("cold_outlet_c"))
            }
            (None, Some(c)) => {
                if matches!(basis, Some(DutyBasis::Hot | DutyBasis::Mean)) {
                    return Err(CalcError::invalid(
                        "duty_basis",
                        "only cold_outlet_c is given, so the duty can only be the cold side's",
                    ));
                }
                let h = th_in - cc * (c - tc_in) / ch;
                (h, c, DutyBasis::Cold, Some("hot_outlet_c"))
            }
            (None, None) => {
                return Err(CalcError::invalid(
                    "hot_outlet_c",
                    format!(
                        "{mode_name} mode needs at least one measured outlet (hot_outlet_c or cold_outlet_c)"
                    ),
                ));
            }
        };
        if let Some(field) = computed {
            let t = if field == "cold_outlet_c" {
                tc_out
            } else {
                th_out
            };
            finite(field, t)?;
        }
        check_temperatures(arrangement, th_in, th_out, tc_in, tc_out, computed)?;
        if mode == Mode::Lmtd {
            refuse(
                "ua_clean_w_k",
                ua_clean,
                "lmtd",
                "fouling is reported by performance mode",
            )?;
        }
        Ok(Checked {
            mode,
            arrangement,
            ch,
            cc,
            th_in,
            tc_in,
            outlets: Some((th_out, tc_out)),
            basis,
            ua: None,
            ua_clean,
            area,
        })
    }
}

fn all_finite(r: &ExchangerResult) -> Result<(), CalcError> {
    let fields = [
        ("hot_outlet_c", Some(r.hot_outlet_c)),
        ("cold_outlet_c", Some(r.cold_outlet_c)),
        ("hot_duty_w", Some(r.hot_duty_w)),
        ("cold_duty_w", Some(r.cold_duty_w)),
        ("duty_w", Some(r.duty_w)),
        ("heat_balance_mismatch_w", Some(r.heat_balance_mismatch_w)),
        (
            "heat_balance_mismatch_pct",
            Some(r.heat_balance_mismatch_pct),
        ),
        ("max_duty_w", Some(r.max_duty_w)),
        ("effectiveness", Some(r.effectiveness)),
        ("ntu", Some(r.ntu)),
        ("dt1_k", Some(r.dt1_k)),
        ("dt2_k", Some(r.dt2_k)),
        ("lmtd_k", Some(r.lmtd_k)),
        ("ua_w_k", Some(r.ua_w_k)),
        ("u_w_m2_k", r.u_w_m2_k),
        ("fouling_resistance_k_w", r.fouling_resistance_k_w),
        ("fouling_factor_m2_k_w", r.fouling_factor_m2_k_w),
        ("cleanliness_pct", r.cleanliness_pct),
    ];
    for (name, v) in fields {
        if let Some(v) = v
            && !v.is_finite()
        {
            return Err(CalcError::invalid(
                "request",
                format!("{name} is not representable ({v}): inputs are out of any physical range"),
            ));
        }
    }
    Ok(())
}

impl Calculation for HeatExchanger {
    const KIND: &'static str = "GL-014";
    type Request = ExchangerRequest;
    type Output = ExchangerResult;

    fn validate(req: &ExchangerRequest) -> Result<(), CalcError> {
        // Some rules (a reachable effectiveness, representable results) only show once the
        // figures are computed; computing is cheap, so validate and run never disagree.
        run_checked(&req.check()?).map(|_| ())
    }

    fn run(req: &ExchangerRequest) -> Result<ExchangerResult, CalcError> {
        run_checked(&req.check()?)
    }
}

fn run_checked(c: &Checked) -> Result<ExchangerResult, CalcError> {
    let arr = c.arrangement;
    let c_min = c.ch.min(c.cc);
    let cr = c_min / c.ch.max(c.cc);
    let max_duty = c_min * (c.th_in - c.tc_in);

    let (th_out, tc_out, duty, eps, ntu, ua, basis_name) = match c.outlets {
        None => {
            let ua = c.ua.unwrap_or(0.0);
            let ntu = ua / c_min;
            let eps = effectiveness(arr, ntu, cr);
            let q = eps * max_duty;
            // Clamp to the bounds rounding can overstep when eps reaches its limit.
            let mut th_out = (c.th_in - q / c.ch).max(c.tc_in);
            let mut tc_out = (c.tc_in + q / c.cc).min(c.th_in);
            if arr == Arrangement::Parallel && tc_out > th_out {
                let mid = 0.5 * (th_out + tc_out);
                th_out = mid;
                tc_out = mid;
            }
            (th_out, tc_out, q, eps, ntu, ua, "rating")
        }
        Some((th_out, tc_out)) => {
            let q_hot = c.ch * (c.th_in - th_out);
            let q_cold = c.cc * (tc_out - c.tc_in);
            let q = match c.basis {
                DutyBasis::Hot => q_hot,
                DutyBasis::Cold => q_cold,
                DutyBasis::Mean => 0.5 * (q_hot + q_cold),
            };
            let eps = q / max_duty;
            let eps_max = max_effectiveness(arr, cr);
            let ntu_inv = ntu_from_effectiveness(arr, eps, cr).ok_or_else(|| {
                CalcError::invalid(
                    match c.basis {
                        DutyBasis::Hot => "hot_outlet_c",
                        DutyBasis::Cold => "cold_outlet_c",
                        DutyBasis::Mean => "duty_basis",
                    },
                    format!(
                        "the {} duty {q} W gives effectiveness {eps}, at or above the {} limit {eps_max} at Cr {cr}: no exchanger can do that, so the flows, cp or temperatures are inconsistent (heat-balance mismatch {} W)",
                        c.basis.name(),
                        arr.name(),
                        q_hot - q_cold
                    ),
                )
            })?;
            let (ntu, ua) = match c.mode {
                Mode::Lmtd => {
                    let ua = q / lmtd(arr, c.th_in, th_out, c.tc_in, tc_out);
                    (ua / c_min, ua)
                }
                _ => (ntu_inv, ntu_inv * c_min),
            };
            (th_out, tc_out, q, eps, ntu, ua, c.basis.name())
        }
    };

    let hot_duty = c.ch * (c.th_in - th_out);
    let cold_duty = c.cc * (tc_out - c.tc_in);
    let mismatch = hot_duty - cold_duty;
    let mismatch_pct = if hot_duty == 0.0 {
        0.0
    } else {
        mismatch / hot_duty * 100.0
    };
    let (dt1, dt2) = end_differences(arr, c.th_in, th_out, c.tc_in, tc_out);
    let (ua_clean, fouling, fouling_area, cleanliness) = match c.ua_clean {
        Some(clean) => {
            let r = 1.0 / ua - 1.0 / clean;
            (
                Some(clean),
                Some(r),
                c.area.map(|a| a * r),
                Some(ua / clean * 100.0),
            )
        }
        None => (None, None, None, None),
    };
    let result = ExchangerResult {
        mode: match c.mode {
            Mode::Lmtd => "lmtd",
            Mode::Rating => "rating",
            Mode::Performance => "performance",
        }
        .to_string(),
        arrangement: arr.name().to_string(),
        hot_inlet_c: c.th_in,
        hot_outlet_c: th_out,
        cold_inlet_c: c.tc_in,
        cold_outlet_c: tc_out,
        hot_capacity_rate_w_k: c.ch,
        cold_capacity_rate_w_k: c.cc,
        c_min_w_k: c_min,
        capacity_ratio: cr,
        hot_duty_w: hot_duty,
        cold_duty_w: cold_duty,
        duty_basis: basis_name.to_string(),
        duty_w: duty,
        heat_balance_mismatch_w: mismatch,
        heat_balance_mismatch_pct: mismatch_pct,
        max_duty_w: max_duty,
        effectiveness: eps,
        ntu,
        dt1_k: dt1,
        dt2_k: dt2,
        lmtd_k: log_mean(dt1, dt2),
        ua_w_k: ua,
        u_w_m2_k: c.area.map(|a| ua / a),
        ua_clean_w_k: ua_clean,
        fouling_resistance_k_w: fouling,
        fouling_factor_m2_k_w: fouling_area,
        cleanliness_pct: cleanliness,
    };
    all_finite(&result)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Incropera Example 11.1: engine oil cooled by water.
    fn incropera(mode: &str, arrangement: &str) -> ExchangerRequest {
        ExchangerRequest {
            mode: mode.into(),
            arrangement: arrangement.into(),
            hot_flow_kg_s: 0.1,
            hot_cp_j_kg_k: 2131.0,
            hot_inlet_c: 100.0,
            hot_outlet_c: Some(60.0),
            cold_flow_kg_s: 0.2,
            cold_cp_j_kg_k: 4178.0,
            cold_inlet_c: 30.0,
            cold_outlet_c: None,
            ua_w_k: None,
            ua_clean_w_k: None,
            area_m2: None,
            duty_basis: None,
        }
    }

    /// Compares at the precision a reference figure is stated to: half a unit in its last digit.
    fn at_precision(got: f64, stated: f64, last_digit: f64) -> bool {
        (got - stated).abs() <= 0.5 * last_digit
    }

    #[test]
    fn incropera_11_1_counterflow() {
        let r = HeatExchanger::run(&incropera("lmtd", "counterflow")).unwrap();
        assert!(at_precision(r.duty_w, 8524.0, 1.0), "{}", r.duty_w);
        assert!(
            at_precision(r.cold_outlet_c, 40.2, 0.1),
            "{}",
            r.cold_outlet_c
        );
        assert!(at_precision(r.lmtd_k, 43.2, 0.1), "{}", r.lmtd_k);
        assert!(at_precision(r.c_min_w_k, 213.1, 0.1), "{}", r.c_min_w_k);
        assert!(
            at_precision(r.capacity_ratio, 0.2550, 1e-4),
            "{}",
            r.capacity_ratio
        );
        assert!(
            at_precision(r.effectiveness, 0.5714, 1e-4),
            "{}",
            r.effectiveness
        );
        assert!(at_precision(r.ntu, 0.9259, 1e-4), "{}", r.ntu);
        assert_eq!(r.duty_basis, "hot");
        assert!(r.heat_balance_mismatch_w.abs() < 1e-9);

        // The inverse eps-NTU route gives the same NTU and UA as duty / LMTD.
        let p = HeatExchanger::run(&incropera("performance", "counterflow")).unwrap();
        assert!(at_precision(p.ntu, 0.9259, 1e-4), "{}", p.ntu);
        assert!((p.ua_w_k - r.ua_w_k).abs() < 1e-9 * r.ua_w_k);
        assert!((p.effectiveness - r.effectiveness).abs() < 1e-15);
    }

    #[test]
    fn incropera_11_1_parallel() {
        let r = HeatExchanger::run(&incropera("lmtd", "parallel")).unwrap();
        assert!(at_precision(r.lmtd_k, 39.8, 0.1), "{}", r.lmtd_k);
        assert!(at_precision(r.duty_w, 8524.0, 1.0));
        let p = HeatExchanger::run(&incropera("performance", "parallel")).unwrap();
        assert!((p.ua_w_k - r.ua_w_k).abs() < 1e-9 * r.ua_w_k);
    }

    #[test]
    fn rating_reproduces_the_example_from_its_ua() {
        let ua = HeatExchanger::run(&incropera("lmtd", "counterflow"))
            .unwrap()
            .ua_w_k;
        let mut req = incropera("rating", "counterflow");
        req.hot_outlet_c = None;
        req.ua_w_k = Some(ua);
        let r = HeatExchanger::run(&req).unwrap();
        assert!((r.hot_outlet_c - 60.0).abs() < 1e-9, "{}", r.hot_outlet_c);
        assert!((r.duty_w - 8524.0).abs() < 1e-7);
        assert_eq!(r.duty_basis, "rating");
        assert!(r.heat_balance_mismatch_pct.abs() < 1e-9);
    }

    #[test]
    fn effectiveness_limits() {
        use Arrangement::*;
        for ntu in [0.0, 0.1, 1.0, 3.0, 20.0] {
            // Cr = 0: both arrangements reduce to 1 - e^-NTU.
            for a in [Counterflow, Parallel] {
                let e = effectiveness(a, ntu, 0.0);
                assert!((e - (1.0 - (-ntu).exp())).abs() < 1e-15, "{a:?} {ntu} {e}");
            }
            // Cr = 1 counterflow: NTU / (1 + NTU), and continuous next to it.
            let e1 = effectiveness(Counterflow, ntu, 1.0);
            assert!((e1 - ntu / (1.0 + ntu)).abs() < 1e-15);
            let near = effectiveness(Counterflow, ntu, 1.0 - 1e-12);
            assert!((near - e1).abs() < 1e-11, "{ntu}: {near} vs {e1}");
            // Cr = 1 parallel: (1 - e^-2NTU) / 2.
            let p = effectiveness(Parallel, ntu, 1.0);
            assert!((p - (1.0 - (-2.0 * ntu).exp()) / 2.0).abs() < 1e-15);
        }
        assert_eq!(effectiveness(Counterflow, f64::INFINITY, 0.5), 1.0);
        assert_eq!(effectiveness(Counterflow, 0.0, 0.5), 0.0);
    }

    #[test]
    fn inverse_ntu_limits() {
        use Arrangement::*;
        // Cr = 1 counterflow: eps / (1 - eps).
        assert!((ntu_from_effectiveness(Counterflow, 0.5, 1.0).unwrap() - 1.0).abs() < 1e-15);
        let near = ntu_from_effectiveness(Counterflow, 0.5, 1.0 - 1e-12).unwrap();
        assert!((near - 1.0).abs() < 1e-11, "{near}");
        // Cr = 0: -ln(1 - eps).
        for a in [Counterflow, Parallel] {
            let n = ntu_from_effectiveness(a, 0.5, 0.0).unwrap();
            assert!((n - 2f64.ln()).abs() < 1e-15);
        }
        assert_eq!(ntu_from_effectiveness(Counterflow, 1.0, 0.5), None);
        assert_eq!(ntu_from_effectiveness(Parallel, 0.5, 1.0), None);
        assert_eq!(ntu_from_effectiveness(Parallel, f64::NAN, 0.5), None);
        assert_eq!(ntu_from_effectiveness(Counterflow, 0.0, 0.5), Some(0.0));
    }

    #[test]
    fn log_mean_equal_and_near_equal() {
        assert_eq!(log_mean(30.0, 30.0), 30.0);
        // (a - b) / ln(a/b) for a = b(1 + u) is b (1 + u/2 - u^2/12 + ...).
        let b = 30.0;
        let u = 1e-9;
        let got = log_mean(b * (1.0 + u), b);
        assert!((got - b * (1.0 + u / 2.0)).abs() < 1e-13, "{got}");
        assert_eq!(log_mean(b, b * (1.0 + u)), got);
        assert_eq!(log_mean(0.0, 10.0), 0.0);
        assert!(log_mean(1e300, 1e-300).is_finite());
        assert!((log_mean(59.8, 30.0) - 29.8 / (59.8f64 / 30.0).ln()).abs() < 1e-12);
    }

    #[test]
    fn performance_fouling_against_clean_ua() {
        let mut req = incropera("performance", "counterflow");
        req.cold_outlet_c = Some(30.0 + 8524.0 / 835.6);
        let ua = HeatExchanger::run(&req).unwrap().ua_w_k;
        req.ua_clean_w_k = Some(250.0);
        req.area_m2 = Some(5.0);
        let r = HeatExchanger::run(&req).unwrap();
        let rf = 1.0 / ua - 1.0 / 250.0;
        assert!((r.fouling_resistance_k_w.unwrap() - rf).abs() < 1e-15);
        assert!((r.fouling_factor_m2_k_w.unwrap() - 5.0 * rf).abs() < 1e-14);
        assert!((r.cleanliness_pct.unwrap() - ua / 250.0 * 100.0).abs() < 1e-12);
        assert!((r.u_w_m2_k.unwrap() - ua / 5.0).abs() < 1e-12);
        assert_eq!(r.duty_basis, "mean");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let field = |req: &ExchangerRequest| {
            HeatExchanger::run(req)
                .unwrap_err()
                .field()
                .map(String::from)
        };
        let base = incropera("lmtd", "counterflow");

        let mut r = base.clone();
        r.mode = "design".into();
        assert_eq!(field(&r).as_deref(), Some("mode"));
        let mut r = base.clone();
        r.arrangement = "crossflow".into();
        assert_eq!(field(&r).as_deref(), Some("arrangement"));
        let mut r = base.clone();
        r.hot_flow_kg_s = -0.1;
        assert_eq!(field(&r).as_deref(), Some("hot_flow_kg_s"));
        let mut r = base.clone();
        r.cold_cp_j_kg_k = f64::NAN;
        assert_eq!(field(&r).as_deref(), Some("cold_cp_j_kg_k"));
        let mut r = base.clone();
        r.hot_inlet_c = 20.0;
        r.hot_outlet_c = Some(10.0);
        assert_eq!(field(&r).as_deref(), Some("hot_inlet_c"));
        let mut r = base.clone();
        r.hot_outlet_c = Some(110.0);
        assert_eq!(field(&r).as_deref(), Some("hot_outlet_c"));
        let mut r = base.clone();
        r.hot_outlet_c = Some(25.0);
        let e = HeatExchanger::run(&r).unwrap_err();
        assert_eq!(e.field(), Some("hot_outlet_c"));
        assert!(e.to_string().contains("temperature cross"), "{e}");
        // Cold outlet closed by the balance crosses the hot inlet when the cold flow is tiny.
        let mut r = base.clone();
        r.cold_flow_kg_s = 0.01;
        let e = HeatExchanger::run(&r).unwrap_err();
        assert_eq!(e.field(), Some("cold_outlet_c"));
        assert!(e.to_string().contains("computed"), "{e}");
        // Parallel flow cannot heat the cold outlet above the hot outlet.
        let mut r = base.clone();
        r.arrangement = "parallel".into();
        r.cold_outlet_c = Some(70.0);
        r.hot_outlet_c = Some(60.0);
        assert_eq!(field(&r).as_deref(), Some("cold_outlet_c"));
        let mut r = base.clone();
        r.hot_outlet_c = None;
        assert_eq!(field(&r).as_deref(), Some("hot_outlet_c"));
        let mut r = base.clone();
        r.ua_w_k = Some(100.0);
        assert_eq!(field(&r).as_deref(), Some("ua_w_k"));
        let mut r = base.clone();
        r.duty_basis = Some("cold".into());
        assert_eq!(field(&r).as_deref(), Some("duty_basis"));
        let mut r = base.clone();
        r.hot_inlet_c = -300.0;
        assert_eq!(field(&r).as_deref(), Some("hot_inlet_c"));
        let mut r = incropera("rating", "counterflow");
        assert_eq!(field(&r).as_deref(), Some("hot_outlet_c"));
        r.hot_outlet_c = None;
        assert_eq!(field(&r).as_deref(), Some("ua_w_k"));
        r.ua_w_k = Some(-1.0);
        assert_eq!(field(&r).as_deref(), Some("ua_w_k"));
        // Measured outlets whose mean duty no exchanger could reach.
        let mut r = incropera("performance", "counterflow");
        r.hot_outlet_c = Some(35.0);
        r.cold_outlet_c = Some(95.0);
        let e = HeatExchanger::run(&r).unwrap_err();
        assert_eq!(e.field(), Some("duty_basis"));
        assert!(HeatExchanger::validate(&r).is_err());
    }

    #[test]
    fn json_shape_is_flat() {
        let req: ExchangerRequest = serde_json::from_str(
            r#"{"mode":"lmtd","arrangement":"counterflow","hot_flow_kg_s":0.1,"hot_cp_j_kg_k":2131,
                "hot_inlet_c":100,"hot_outlet_c":60,"cold_flow_kg_s":0.2,"cold_cp_j_kg_k":4178,
                "cold_inlet_c":30}"#,
        )
        .unwrap();
        assert_eq!(req, incropera("lmtd", "counterflow"));
        assert!(
            serde_json::from_str::<ExchangerRequest>(
                r#"{"mode":"lmtd","arrangement":"counterflow","hot_flow_kg_s":0.1,"hot_cp_j_kg_k":2131,
                "hot_inlet_c":100,"hot_outlet":60,"cold_flow_kg_s":0.2,"cold_cp_j_kg_k":4178,
                "cold_inlet_c":30}"#,
            )
            .is_err(),
            "a misspelt optional field must not be silently ignored"
        );
        let out = serde_json::to_value(HeatExchanger::run(&req).unwrap()).unwrap();
        assert!(
            out.as_object()
                .unwrap()
                .values()
                .all(|v| !v.is_object() && !v.is_array())
        );
        assert!(out.get("cleanliness_pct").is_none());
    }

    fn arrangement() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("counterflow"), Just("parallel")]
    }

    fn rating(arr: &str, [mh, cph, mc, cpc, th, tc, ua]: [f64; 7]) -> ExchangerRequest {
        ExchangerRequest {
            mode: "rating".into(),
            arrangement: arr.into(),
            hot_flow_kg_s: mh,
            hot_cp_j_kg_k: cph,
            hot_inlet_c: th,
            hot_outlet_c: None,
            cold_flow_kg_s: mc,
            cold_cp_j_kg_k: cpc,
            cold_inlet_c: tc,
            cold_outlet_c: None,
            ua_w_k: Some(ua),
            ua_clean_w_k: None,
            area_m2: None,
            duty_basis: None,
        }
    }

    proptest! {
        #[test]
        fn effectiveness_is_a_fraction(ntu in 0f64..1e3, cr in 0f64..=1.0, par in any::<bool>()) {
            let a = if par { Arrangement::Parallel } else { Arrangement::Counterflow };
            let e = effectiveness(a, ntu, cr);
            prop_assert!((0.0..=1.0).contains(&e), "{e}");
            prop_assert!(e <= max_effectiveness(a, cr) * (1.0 + 1e-15));
        }

        #[test]
        fn ntu_inverse_round_trips(ntu in 0f64..8.0, cr in 0f64..=1.0, par in any::<bool>()) {
            let a = if par { Arrangement::Parallel } else { Arrangement::Counterflow };
            let e = effectiveness(a, ntu, cr);
            if let Some(back) = ntu_from_effectiveness(a, e, cr) {
                prop_assert!((back - ntu).abs() <= 1e-6 * ntu.max(1.0), "{ntu} -> {e} -> {back}");
            }
        }

        #[test]
        fn rating_then_performance_gives_back_ua(
            arr in arrangement(),
            mh in 0.05f64..50.0, cph in 500f64..5000.0,
            mc in 0.05f64..50.0, cpc in 500f64..5000.0,
            th in 60f64..600.0, dt in 20f64..300.0,
            ntu in 0.05f64..4.0,
        ) {
            let c_min = (mh * cph).min(mc * cpc);
            let ua = ntu * c_min;
            let r = HeatExchanger::run(&rating(arr, [mh, cph, mc, cpc, th, th - dt, ua])).unwrap();
            prop_assert!((0.0..=1.0).contains(&r.effectiveness));
            // Energy leaves the hot stream exactly as it enters the cold one.
            prop_assert!(r.heat_balance_mismatch_w.abs() <= 1e-9 * r.duty_w.max(1.0),
                "{}", r.heat_balance_mismatch_w);
            let mut p = rating(arr, [mh, cph, mc, cpc, th, th - dt, ua]);
            p.mode = "performance".into();
            p.ua_w_k = None;
            p.hot_outlet_c = Some(r.hot_outlet_c);
            p.cold_outlet_c = Some(r.cold_outlet_c);
            let back = HeatExchanger::run(&p).unwrap();
            prop_assert!((back.ua_w_k - ua).abs() <= 1e-6 * ua, "{} vs {ua}", back.ua_w_k);
            p.mode = "lmtd".into();
            let via_lmtd = HeatExchanger::run(&p).unwrap();
            prop_assert!((via_lmtd.ua_w_k - ua).abs() <= 1e-6 * ua, "{} vs {ua}", via_lmtd.ua_w_k);
            prop_assert!((0.0..=1.0).contains(&back.effectiveness));
        }

        #[test]
        fn balance_closed_outlet_conserves_energy(
            arr in arrangement(),
            mh in 0.05f64..50.0, cph in 500f64..5000.0,
            mc in 0.05f64..50.0, cpc in 500f64..5000.0,
            th in 60f64..600.0, dt in 20f64..300.0, frac in 0.01f64..0.99,
        ) {
            let mut req = rating(arr, [mh, cph, mc, cpc, th, th - dt, 0.0]);
            req.mode = "lmtd".into();
            req.ua_w_k = None;
            req.hot_outlet_c = Some(th - frac * dt);
            if let Ok(r) = HeatExchanger::run(&req) {
                prop_assert!((r.hot_duty_w - r.cold_duty_w).abs() <= 1e-9 * r.hot_duty_w);
                prop_assert!((0.0..=1.0).contains(&r.effectiveness));
                prop_assert!(r.lmtd_k > 0.0);
            }
        }

        #[test]
        fn never_panics_nor_returns_nan(
            mode in prop_oneof![Just("lmtd"), Just("rating"), Just("performance")],
            arr in arrangement(),
            v in proptest::collection::vec(
                prop_oneof![any::<f64>(), -500f64..1000.0, Just(0.0), Just(f64::NAN)], 9),
            some in proptest::collection::vec(any::<bool>(), 5),
        ) {
            let opt = |b: bool, x: f64| b.then_some(x);
            let req = ExchangerRequest {
                mode: mode.into(),
                arrangement: arr.into(),
                hot_flow_kg_s: v[0],
                hot_cp_j_kg_k: v[1],
                hot_inlet_c: v[2],
                hot_outlet_c: opt(some[0], v[3]),
                cold_flow_kg_s: v[4],
                cold_cp_j_kg_k: v[5],
                cold_inlet_c: v[6],
                cold_outlet_c: opt(some[1], v[7]),
                ua_w_k: opt(some[2], v[8]),
                ua_clean_w_k: opt(some[3], v[8]),
                area_m2: opt(some[4], v[0]),
                duty_basis: None,
            };
            if let Ok(r) = HeatExchanger::run(&req) {
                let json = serde_json::to_value(&r).unwrap();
                for (k, x) in json.as_object().unwrap() {
                    if let Some(f) = x.as_f64() {
                        prop_assert!(f.is_finite(), "{k} = {f}");
                    } else {
                        prop_assert!(x.is_string(), "{k} = {x}");
                    }
                }
                prop_assert!(HeatExchanger::validate(&req).is_ok());
            }
        }
    }
}
