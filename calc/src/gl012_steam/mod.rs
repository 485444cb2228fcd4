//! GL-012 SteamSystem: IAPWS-IF97 water and steam properties, flash steam and desuperheater
//! spray water.
//!
//! Implements IAPWS R7-97(2012): the basic equations of regions 1, 2, 3 and 5, the saturation
//! line (region 4), the B23 and B2bc boundaries, and the backward equations T(p,h), T(p,s) of
//! regions 1 and 2. The backward equations are only start values: every (p,h) and (p,s) result
//! is refined by Newton on the forward equation, so it is consistent with (p,T) to rounding.
//! Region 3 from (p,T), (p,h), (p,s) is solved on the basic equation by bracketed iteration
//! (Halley's method for the density at given T, Newton's for the temperature).
//! The metastable-vapour equation of region 2 is not implemented.
//!
//! Units are those of IF97: T K, p MPa, v m3/kg, h kJ/kg, s kJ/(kg K), u kJ/kg.

mod region1;
mod region2;
mod region3;
mod region4;
mod region5;
mod series;
mod solve;

use super::{CalcError, Calculation, finite, in_range, non_negative, positive};
use region3::Helmholtz;
use serde::{Deserialize, Serialize};
use solve::{Eval, bracketed_newton};

/// Specific gas constant of IF97, kJ/(kg K) (Eq. 1).
const R: f64 = 0.461_526;
/// Critical temperature, K (Eq. 3).
pub const T_CRITICAL_K: f64 = 647.096;
/// Critical pressure, MPa (Eq. 4).
pub const P_CRITICAL_MPA: f64 = 22.064;
/// Critical density, kg/m3 (Eq. 5).
pub const RHO_CRITICAL_KG_M3: f64 = 322.0;
/// Lowest temperature IF97 covers, K.
pub const T_MIN_K: f64 = 273.15;
/// Highest temperature IF97 covers (region 5), K.
pub const T_MAX_K: f64 = 2273.15;
/// Highest pressure IF97 covers up to 1073.15 K, MPa.
pub const P_MAX_MPA: f64 = 100.0;
/// Highest pressure of region 5 (above 1073.15 K), MPa.
pub const P_MAX_REGION5_MPA: f64 = 50.0;
/// Lowest pressure accepted, MPa: IF97 region 2 runs down to p -> 0, but below about 1e-306
/// MPa the specific volume overflows, so a floor far below any plant pressure is enforced.
pub const P_MIN_MPA: f64 = 1e-12;
/// Saturation pressure at 273.15 K, MPa: below it IF97 has no liquid (IF97 Sect. 8.1).
pub const P_SAT_MIN_MPA: f64 = 0.000_611_212_677;

/// Boundary between regions 1 and 3, K.
const T_13: f64 = 623.15;
/// Boundary between regions 2 and 5, K.
const T_25: f64 = 1073.15;
/// Upper end of region 3 (T_B23 at 100 MPa), K.
const T_B23_MAX: f64 = 863.15;

/// Which part of the phase diagram a state lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Compressed or saturated liquid (below T_c, or region 1).
    Liquid,
    /// Superheated or saturated vapour, and gas below p_c above T_c.
    Vapour,
    /// Above both the critical temperature and the critical pressure.
    Supercritical,
    /// Liquid-vapour mixture on the saturation line; `quality` is the vapour mass fraction.
    TwoPhase,
}

/// A water/steam state with its IF97 properties.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SteamState {
    /// Pressure, MPa.
    pub pressure_mpa: f64,
    /// Temperature, K.
    pub temperature_k: f64,
    /// Specific volume, m3/kg.
    pub specific_volume_m3_kg: f64,
    /// Density, kg/m3.
    pub density_kg_m3: f64,
    /// Specific enthalpy, kJ/kg (IF97 reference: u = s = 0 for liquid at the triple point).
    pub enthalpy_kj_kg: f64,
    /// Specific entropy, kJ/(kg K).
    pub entropy_kj_kg_k: f64,
    /// Specific internal energy, kJ/kg.
    pub internal_energy_kj_kg: f64,
    /// Isobaric heat capacity, kJ/(kg K); absent in two-phase states (it is unbounded there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cp_kj_kg_k: Option<f64>,
    /// Isochoric heat capacity, kJ/(kg K); absent in two-phase states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv_kj_kg_k: Option<f64>,
    /// Speed of sound, m/s; absent in two-phase states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_of_sound_m_s: Option<f64>,
    /// IF97 region whose equation gave the state: 1, 2, 3, 5, or 4 for a two-phase mixture.
    pub region: u8,
    /// Phase of the state.
    pub phase: Phase,
    /// Vapour mass fraction: 0..1 in two-phase states, 0 / 1 for saturated liquid / vapour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<f64>,
}

/// Dimensionless Gibbs energy gamma(pi, tau) and its derivatives, each multiplied by its own
/// variables (pi gamma_pi, tau^2 gamma_tautau, ...): the ideal-gas parts of regions 2 and 5
/// then become exact constants and no property formula divides by a small pi.
#[derive(Debug, Clone, Copy)]
struct Gibbs {
    g: f64,
    pi_g_p: f64,
    pi2_g_pp: f64,
    tau_g_t: f64,
    tau2_g_tt: f64,
    pi_tau_g_pt: f64,
}

/// Keeps derived quantities that can blow up (cp at the critical point, w inside the loop)
/// out of the result instead of reporting inf or NaN.
fn positive_finite(x: f64) -> Option<f64> {
    (x.is_finite() && x > 0.0).then_some(x)
}

impl Gibbs {
    fn h(&self, t: f64) -> f64 {
        R * t * self.tau_g_t
    }

    fn s(&self) -> f64 {
        R * (self.tau_g_t - self.g)
    }

    fn cp(&self) -> f64 {
        -R * self.tau2_g_tt
    }

    /// IF97 Tables 3, 12 and 39, written in the scaled derivatives.
    fn state(&self, p: f64, t: f64, region: u8) -> SteamState {
        let v = R * t * self.pi_g_p / (1000.0 * p);
        let d = self.pi_g_p - self.pi_tau_g_pt;
        let cv = R * (-self.tau2_g_tt + d * d / self.pi2_g_pp);
        let w2 =
            1000.0 * R * t * self.pi_g_p * self.pi_g_p / (d * d / self.tau2_g_tt - self.pi2_g_pp);
        let phase = if region == 1 {
            Phase::Liquid
        } else if t > T_CRITICAL_K && p > P_CRITICAL_MPA {
            Phase::Supercritical
        } else {
            Phase::Vapour
        };
        SteamState {
            pressure_mpa: p,
            temperature_k: t,
            specific_volume_m3_kg: v,
            density_kg_m3: 1.0 / v,
            enthalpy_kj_kg: self.h(t),
            entropy_kj_kg_k: self.s(),
            internal_energy_kj_kg: R * t * (self.tau_g_t - self.pi_g_p),
            cp_kj_kg_k: positive_finite(self.cp()),
            cv_kj_kg_k: positive_finite(cv),
            speed_of_sound_m_s: positive_finite(w2).map(f64::sqrt),
            region,
            phase,
            quality: None,
        }
    }
}

impl Helmholtz {
    fn h(&self, t: f64) -> f64 {
        R * t * (self.t_ft + self.d_fd)
    }

    fn s(&self) -> f64 {
        R * (self.t_ft - self.phi)
    }

    fn cp(&self) -> f64 {
        let b = self.d_fd - self.dt_fdt;
        R * (-self.t2_ftt + b * b / (2.0 * self.d_fd + self.d2_fdd))
    }

    /// IF97 Table 31, written in the scaled derivatives.
    fn state(&self, rho: f64, t: f64) -> SteamState {
        let p = self.pressure(rho, t);
        let a = 2.0 * self.d_fd + self.d2_fdd;
        let b = self.d_fd - self.dt_fdt;
        let w2 = 1000.0 * R * t * (a - b * b / self.t2_ftt);
        // Below T_c the liquid branch lies entirely above rho_c and the vapour branch below
        // (region3 tests check this), so density alone tells the phase.
        let phase = if t > T_CRITICAL_K && p > P_CRITICAL_MPA {
            Phase::Supercritical
        } else if t < T_CRITICAL_K && rho > RHO_CRITICAL_KG_M3 {
            Phase::Liquid
        } else {
            Phase::Vapour
        };
        SteamState {
            pressure_mpa: p,
            temperature_k: t,
            specific_volume_m3_kg: 1.0 / rho,
            density_kg_m3: rho,
            enthalpy_kj_kg: self.h(t),
            entropy_kj_kg_k: self.s(),
            internal_energy_kj_kg: R * t * self.t_ft,
            cp_kj_kg_k: positive_finite(self.cp()),
            cv_kj_kg_k: positive_finite(-R * self.t2_ftt),
            speed_of_sound_m_s: positive_finite(w2).map(f64::sqrt),
            region: 3,
            phase,
            quality: None,
        }
    }
}

/// Fills x^lo ..= x^(lo + N - 1): every IF97 series is a sum of monomials, and one table per
/// variable is far cheaper than a `powi` (or `powf`) per term. Requires lo <= 0 < lo + N.
/// The table sits on the critical path of every evaluation, so it is not built as a chain of
/// N dependent multiplications (see [`fill_powers`]).
#[inline(always)]
fn powers<const N: usize>(x: f64, lo: i32) -> [f64; N] {
    let mut out = [0.0; N];
    let zero = (-lo) as usize;
    let (neg, pos) = out.split_at_mut(zero);
    fill_powers(pos, x);
    if zero > 0 {
        // Built upward in a scratch table, where the indexing is as simple as on the
        // positive side, then stored in descending order.
        let mut inv = [0.0; N];
        fill_powers(&mut inv[..=zero], 1.0 / x);
        for (o, &v) in neg.iter_mut().rev().zip(&inv[1..]) {
            *o = v;
        }
    }
    out
}

/// `t[k] = x^k` for every k in t, as x^(8m + r) = (x^8)^m x^r: the eight x^r come from three
/// squarings, every block of eight is one independent multiplication per entry (two per
/// instruction once vectorised), and the only chain is the one through the powers of x^8,
/// 7 long for the largest table (59 entries) instead of 58.
#[inline(always)]
fn fill_powers(t: &mut [f64], x: f64) {
    let x2 = x * x;
    let x4 = x2 * x2;
    let base = [1.0, x, x2, x2 * x, x4, x4 * x, x4 * x2, x4 * x2 * x];
    let x8 = x4 * x4;
    let mut block = 1.0;
    for chunk in t.chunks_mut(8) {
        for (o, &b) in chunk.iter_mut().zip(&base) {
            *o = block * b;
        }
        block *= x8;
    }
}

/// sum n x^I y^J over an (I, J, n) table, for the backward equations.
#[inline(always)]
fn sum_table<const NX: usize, const NY: usize>(
    table: &[(i32, i32, f64)],
    x: f64,
    x_lo: i32,
    y: f64,
    y_lo: i32,
) -> f64 {
    let xp: [f64; NX] = powers(x, x_lo);
    let yp: [f64; NY] = powers(y, y_lo);
    table
        .iter()
        .map(|&(i, j, n)| n * xp[(i - x_lo) as usize] * yp[(j - y_lo) as usize])
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn check_pressure(field: &str, p: f64) -> Result<f64, CalcError> {
    positive(field, p)?;
    if p < P_MIN_MPA {
        return Err(CalcError::invalid(
            field,
            format!("must be >= {P_MIN_MPA} MPa (specific volume would overflow), got {p}"),
        ));
    }
    if p > P_MAX_MPA {
        return Err(CalcError::invalid(
            field,
            format!("must be <= {P_MAX_MPA} MPa (IF97 upper limit), got {p}"),
        ));
    }
    Ok(p)
}

fn check_pt(p_field: &str, p: f64, t_field: &str, t: f64) -> Result<(), CalcError> {
    check_pressure(p_field, p)?;
    in_range(t_field, t, T_MIN_K, T_MAX_K)?;
    if t > T_25 && p > P_MAX_REGION5_MPA {
        return Err(CalcError::invalid(
            p_field,
            format!(
                "must be <= {P_MAX_REGION5_MPA} MPa above {T_25} K (IF97 region 5), got {p} at {t} K"
            ),
        ));
    }
    Ok(())
}

fn check_sat_pressure(field: &str, p: f64) -> Result<f64, CalcError> {
    finite(field, p)?;
    if !(P_SAT_MIN_MPA..=P_CRITICAL_MPA).contains(&p) {
        return Err(CalcError::invalid(
            field,
            format!(
                "must be within [{P_SAT_MIN_MPA}, {P_CRITICAL_MPA}] MPa (IF97 saturation line), got {p}"
            ),
        ));
    }
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Forward: (p, T)
// ---------------------------------------------------------------------------------------------

/// IF97 region of a validated (p, T) (Sect. 2); the saturation line itself counts as liquid.
fn region_pt(p: f64, t: f64) -> u8 {
    if t <= T_13 {
        if p >= region4::p_sat(t) { 1 } else { 2 }
    } else if t <= T_B23_MAX && p > region4::p_b23(t) {
        3
    } else if t <= T_25 {
        2
    } else {
        5
    }
}

fn gibbs_region(region: u8) -> fn(f64, f64) -> Gibbs {
    match region {
        1 => region1::gibbs,
        2 => region2::gibbs,
        _ => region5::gibbs,
    }
}

/// Region-3 density branch for a (p, T) state: liquid above the saturation pressure.
fn region3_liquid(p: f64, t: f64) -> bool {
    t >= T_CRITICAL_K || p >= region4::p_sat(t)
}

fn state_pt(p: f64, t: f64) -> Result<SteamState, CalcError> {
    match region_pt(p, t) {
        3 => {
            let (rho, f) = region3::solve_pt(p, t, region3_liquid(p, t))?;
            Ok(f.state(rho, t))
        }
        r => Ok(gibbs_region(r)(p, t).state(p, t, r)),
    }
}

/// All IF97 properties at pressure `p_mpa` (MPa) and temperature `t_k` (K).
/// Errors name `pressure_mpa` / `temperature_k` when outside the IF97 range.
pub fn props_pt(p_mpa: f64, t_k: f64) -> Result<SteamState, CalcError> {
    check_pt("pressure_mpa", p_mpa, "temperature_k", t_k)?;
    state_pt(p_mpa, t_k)
}

/// Specific enthalpy, kJ/kg, at (p MPa, T K): the hot path of energy balances, so it skips
/// the derived properties that `props_pt` also computes.
pub fn enthalpy_pt(p_mpa: f64, t_k: f64) -> Result<f64, CalcError> {
    check_pt("pressure_mpa", p_mpa, "temperature_k", t_k)?;
    match region_pt(p_mpa, t_k) {
        3 => {
            let (_, f) = region3::solve_pt(p_mpa, t_k, region3_liquid(p_mpa, t_k))?;
            Ok(f.h(t_k))
        }
        r => Ok(gibbs_region(r)(p_mpa, t_k).h(t_k)),
    }
}

/// Region-3 properties from density `rho_kg_m3` and temperature `t_k` (the form in which
/// IF97 states its basic equation); T must be within [623.15, 863.15] K and the resulting
/// pressure within region 3.
pub fn region_3_rho_t(rho_kg_m3: f64, t_k: f64) -> Result<SteamState, CalcError> {
    in_range("temperature_k", t_k, T_13, T_B23_MAX)?;
    positive("density_kg_m3", rho_kg_m3)?;
    let st = region3::helmholtz(rho_kg_m3, t_k).state(rho_kg_m3, t_k);
    let p = st.pressure_mpa;
    let p_min = region4::p_b23(t_k);
    if !(p.is_finite() && p >= p_min * (1.0 - 1e-9) && p <= P_MAX_MPA) {
        return Err(CalcError::invalid(
            "density_kg_m3",
            format!("gives p = {p} MPa at {t_k} K, outside region 3 [{p_min}, {P_MAX_MPA}] MPa"),
        ));
    }
    Ok(st)
}

// ---------------------------------------------------------------------------------------------
// Saturation
// ---------------------------------------------------------------------------------------------

/// Saturation pressure, MPa, at `t_k` in [273.15, 647.096] K (IF97 Eq. 30).
pub fn p_sat(t_k: f64) -> Result<f64, CalcError> {
    in_range("temperature_k", t_k, T_MIN_K, T_CRITICAL_K)?;
    Ok(region4::p_sat(t_k))
}

/// Saturation temperature, K, at `p_mpa` in [611.212677 Pa, 22.064 MPa] (IF97 Eq. 31).
pub fn t_sat(p_mpa: f64) -> Result<f64, CalcError> {
    check_sat_pressure("pressure_mpa", p_mpa)?;
    Ok(region4::t_sat(p_mpa))
}

/// Saturated liquid and vapour at a validated saturation pressure. Above p_sat(623.15 K) both
/// come from the region-3 equation on its two density branches.
fn sat_states(p: f64) -> Result<(SteamState, SteamState), CalcError> {
    let t = region4::t_sat(p);
    let (mut liq, mut vap) = if t <= T_13 {
        (
            region1::gibbs(p, t).state(p, t, 1),
            region2::gibbs(p, t).state(p, t, 2),
        )
    } else {
        let (rl, fl) = region3::solve_pt(p, t, true)?;
        let (rv, fv) = region3::solve_pt(p, t, false)?;
        (fl.state(rl, t), fv.state(rv, t))
    };
    // The equations are evaluated at p itself, not at p_sat(T_sat(p)), so report p exactly.
    liq.pressure_mpa = p;
    vap.pressure_mpa = p;
    liq.phase = Phase::Liquid;
    liq.quality = Some(0.0);
    vap.phase = Phase::Vapour;
    vap.quality = Some(1.0);
    Ok((liq, vap))
}

/// Saturated liquid at `p_mpa` (boiling point), within [611.212677 Pa, 22.064 MPa].
pub fn saturated_liquid(p_mpa: f64) -> Result<SteamState, CalcError> {
    check_sat_pressure("pressure_mpa", p_mpa)?;
    Ok(sat_states(p_mpa)?.0)
}

/// Saturated vapour at `p_mpa` (dew point), within [611.212677 Pa, 22.064 MPa].
pub fn saturated_vapour(p_mpa: f64) -> Result<SteamState, CalcError> {
    check_sat_pressure("pressure_mpa", p_mpa)?;
    Ok(sat_states(p_mpa)?.1)
}

/// A two-phase mixture of vapour mass fraction `x`: extensive properties are mass-weighted,
/// heat capacities and the speed of sound are left out.
fn mixture(liq: &SteamState, vap: &SteamState, x: f64) -> SteamState {
    let x = x.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| a + x * (b - a);
    let v = mix(liq.specific_volume_m3_kg, vap.specific_volume_m3_kg);
    SteamState {
        pressure_mpa: liq.pressure_mpa,
        temperature_k: liq.temperature_k,
        specific_volume_m3_kg: v,
        density_kg_m3: 1.0 / v,
        enthalpy_kj_kg: mix(liq.enthalpy_kj_kg, vap.enthalpy_kj_kg),
        entropy_kj_kg_k: mix(liq.entropy_kj_kg_k, vap.entropy_kj_kg_k),
        internal_energy_kj_kg: mix(liq.internal_energy_kj_kg, vap.internal_energy_kj_kg),
        cp_kj_kg_k: None,
        cv_kj_kg_k: None,
        speed_of_sound_m_s: None,
        region: 4,
        phase: Phase::TwoPhase,
        quality: Some(x),
    }
}

// ---------------------------------------------------------------------------------------------
// Backward: (p, h) and (p, s)
// ---------------------------------------------------------------------------------------------

/// The property given with p: both inversions share one classification and solver.
#[derive(Debug, Clone, Copy)]
enum Given {
    Enthalpy,
    Entropy,
}

impl Given {
    fn field(self) -> &'static str {
        match self {
            Given::Enthalpy => "enthalpy_kj_kg",
            Given::Entropy => "entropy_kj_kg_k",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Given::Enthalpy => "kJ/kg",
            Given::Entropy => "kJ/(kg K)",
        }
    }

    fn of(self, st: &SteamState) -> f64 {
        match self {
            Given::Enthalpy => st.enthalpy_kj_kg,
            Given::Entropy => st.entropy_kj_kg_k,
        }
    }

    /// Value and its temperature derivative at constant p (cp, or cp/T for entropy).
    fn gibbs(self, g: &Gibbs, t: f64) -> (f64, f64) {
        match self {
            Given::Enthalpy => (g.h(t), g.cp()),
            Given::Entropy => (g.s(), g.cp() / t),
        }
    }

    fn helmholtz(self, f: &Helmholtz, t: f64) -> (f64, f64) {
        match self {
            Given::Enthalpy => (f.h(t), f.cp()),
            Given::Entropy => (f.s(), f.cp() / t),
        }
    }

    fn at(self, region: u8, p: f64, t: f64) -> f64 {
        self.gibbs(&gibbs_region(region)(p, t), t).0
    }

    /// IF97 backward equation of region 1 or 2 as the Newton start value.
    fn backward(self, region: u8, p: f64, x: f64) -> f64 {
        match (self, region) {
            (Given::Enthalpy, 1) => region1::t_ph(p, x),
            (Given::Entropy, 1) => region1::t_ps(p, x),
            (Given::Enthalpy, _) => region2::t_ph(p, x),
            (Given::Entropy, _) => region2::t_ps(p, x),
        }
    }
}

/// Linear interpolation of T between two (T, value) points, a start value where IF97 has
/// no backward equation (regions 3 and 5 here).
fn interpolate(t0: f64, x0: f64, t1: f64, x1: f64, x: f64) -> f64 {
    t0 + (x - x0) / (x1 - x0) * (t1 - t0)
}

/// Solves value(p, T) = x for T in [t_lo, t_hi] with a Gibbs-form region equation.
fn solve_gibbs(
    given: Given,
    region: u8,
    p: f64,
    x: f64,
    (t_lo, t_hi): (f64, f64),
    guess: f64,
) -> Result<SteamState, CalcError> {
    let gibbs = gibbs_region(region);
    let t = bracketed_newton(
        |t| {
            let (value, slope) = given.gibbs(&gibbs(p, t), t);
            Ok(Eval {
                residual: value - x,
                slope,
                curvature: 0.0,
                above: value > x,
            })
        },
        t_lo,
        t_hi,
        guess,
        "temperature from (p, h) or (p, s)",
    )?;
    Ok(gibbs(p, t).state(p, t, region))
}

/// Solves value(p, T) = x for T in [t_lo, t_hi] in region 3, each step solving rho(p, T) on
/// the given density branch.
fn solve_region3(
    given: Given,
    p: f64,
    x: f64,
    (t_lo, t_hi): (f64, f64),
    liquid: bool,
    guess: f64,
) -> Result<SteamState, CalcError> {
    let t = bracketed_newton(
        |t| {
            let (_, f) = region3::solve_pt(p, t, liquid)?;
            let (value, slope) = given.helmholtz(&f, t);
            Ok(Eval {
                residual: value - x,
                slope,
                curvature: 0.0,
                above: value > x,
            })
        },
        t_lo,
        t_hi,
        guess,
        "region 3 temperature from (p, h) or (p, s)",
    )?;
    let (rho, f) = region3::solve_pt(p, t, liquid)?;
    Ok(f.state(rho, t))
}

/// Mixture on the saturation line; at p_c, where the saturated values coincide, quality 0.5.
fn two_phase(given: Given, liq: &SteamState, vap: &SteamState, x: f64) -> SteamState {
    let (xf, xg) = (given.of(liq), given.of(vap));
    let q = if xg > xf { (x - xf) / (xg - xf) } else { 0.5 };
    mixture(liq, vap, q)
}

/// Vapour side of the isobar from t_lo upward: region 2 up to 1073.15 K, then region 5.
fn vapour_side(
    given: Given,
    p: f64,
    x: f64,
    t_lo: f64,
    x25: f64,
    x_max: f64,
) -> Result<SteamState, CalcError> {
    if x <= x25 {
        let guess = given.backward(2, p, x);
        solve_gibbs(given, 2, p, x, (t_lo, T_25), guess)
    } else {
        let guess = interpolate(T_25, x25, T_MAX_K, x_max, x);
        solve_gibbs(given, 5, p, x, (T_25, T_MAX_K), guess)
    }
}

/// Walks the isobar through the regions in order of rising temperature: since h and s both
/// rise with T at constant p, comparing x with their values at the region boundaries and
/// the saturation line picks the region, and the boundary temperatures bracket the root.
fn props_given(given: Given, p: f64, x: f64) -> Result<SteamState, CalcError> {
    check_pressure("pressure_mpa", p)?;
    finite(given.field(), x)?;
    let field = given.field();
    let unit = given.unit();

    let x_min = given.of(&state_pt(p, T_MIN_K)?);
    if x < x_min {
        return Err(CalcError::invalid(
            field,
            format!("must be >= {x_min} {unit} at {p} MPa (IF97 lower limit {T_MIN_K} K), got {x}"),
        ));
    }
    let x25 = given.at(2, p, T_25);
    let (x_max, t_max) = if p <= P_MAX_REGION5_MPA {
        (given.at(5, p, T_MAX_K), T_MAX_K)
    } else {
        (x25, T_25)
    };
    if x > x_max {
        return Err(CalcError::invalid(
            field,
            format!("must be <= {x_max} {unit} at {p} MPa (IF97 upper limit {t_max} K), got {x}"),
        ));
    }

    if p < P_SAT_MIN_MPA {
        return vapour_side(given, p, x, T_MIN_K, x25, x_max);
    }
    let p13 = region4::p_sat(T_13);
    if p <= p13 {
        let ts = region4::t_sat(p);
        let xf = given.at(1, p, ts);
        if x < xf {
            let guess = given.backward(1, p, x);
            return solve_gibbs(given, 1, p, x, (T_MIN_K, ts), guess);
        }
        let xg = given.at(2, p, ts);
        if x <= xg {
            let (liq, vap) = sat_states(p)?;
            return Ok(two_phase(given, &liq, &vap, x));
        }
        return vapour_side(given, p, x, ts, x25, x_max);
    }

    let x13 = given.at(1, p, T_13);
    if x <= x13 {
        let guess = given.backward(1, p, x);
        return solve_gibbs(given, 1, p, x, (T_MIN_K, T_13), guess);
    }
    let tb = region4::t_b23(p);
    let xb = given.at(2, p, tb);
    if x >= xb {
        return vapour_side(given, p, x, tb, x25, x_max);
    }
    if p < P_CRITICAL_MPA {
        let ts = region4::t_sat(p);
        let (liq, vap) = sat_states(p)?;
        let (xf, xg) = (given.of(&liq), given.of(&vap));
        if x < xf {
            let guess = interpolate(T_13, x13, ts, xf, x);
            solve_region3(given, p, x, (T_13, ts), true, guess)
        } else if x <= xg {
            Ok(two_phase(given, &liq, &vap, x))
        } else {
            let guess = interpolate(ts, xg, tb, xb, x);
            solve_region3(given, p, x, (ts, tb), false, guess)
        }
    } else {
        let guess = interpolate(T_13, x13, tb, xb, x);
        solve_region3(given, p, x, (T_13, tb), true, guess)
    }
}

/// All IF97 properties at pressure `p_mpa` (MPa) and specific enthalpy `h_kj_kg` (kJ/kg),
/// including two-phase states (region 4, with quality).
pub fn props_ph(p_mpa: f64, h_kj_kg: f64) -> Result<SteamState, CalcError> {
    props_given(Given::Enthalpy, p_mpa, h_kj_kg)
}

/// All IF97 properties at pressure `p_mpa` (MPa) and specific entropy `s_kj_kg_k`
/// (kJ/(kg K)), including two-phase states (region 4, with quality).
pub fn props_ps(p_mpa: f64, s_kj_kg_k: f64) -> Result<SteamState, CalcError> {
    props_given(Given::Entropy, p_mpa, s_kj_kg_k)
}

// ---------------------------------------------------------------------------------------------
// Process calculations
// ---------------------------------------------------------------------------------------------

fn flash_from(h1: f64, liq: &SteamState, vap: &SteamState) -> Result<f64, CalcError> {
    let (hf, hg) = (liq.enthalpy_kj_kg, vap.enthalpy_kj_kg);
    if h1 <= hf {
        return Ok(0.0);
    }
    if h1 > hg {
        return Err(CalcError::invalid(
            "enthalpy_kj_kg",
            format!(
                "must be <= the saturated vapour enthalpy {hg} kJ/kg at the flash pressure \
                 (the stream is not condensate), got {h1}"
            ),
        ));
    }
    Ok((h1 - hf) / (hg - hf))
}

/// Mass fraction of condensate of enthalpy `h1_kj_kg` that flashes to steam when let down
/// to `p2_mpa`: (h1 - hf(p2)) / hfg(p2), 0 when h1 <= hf(p2).
pub fn flash_fraction(h1_kj_kg: f64, p2_mpa: f64) -> Result<f64, CalcError> {
    finite("enthalpy_kj_kg", h1_kj_kg)?;
    check_sat_pressure("flash_pressure_mpa", p2_mpa)?;
    let (liq, vap) = sat_states(p2_mpa)?;
    flash_from(h1_kj_kg, &liq, &vap)
}

/// Flash fraction of saturated condensate at `p1_mpa` let down to `p2_mpa` (< p1).
pub fn flash_fraction_saturated(p1_mpa: f64, p2_mpa: f64) -> Result<f64, CalcError> {
    check_sat_pressure("pressure_mpa", p1_mpa)?;
    check_sat_pressure("flash_pressure_mpa", p2_mpa)?;
    check_flash_drop(p1_mpa, p2_mpa)?;
    flash_fraction(sat_states(p1_mpa)?.0.enthalpy_kj_kg, p2_mpa)
}

fn check_flash_drop(p1: f64, p2: f64) -> Result<(), CalcError> {
    if p2 >= p1 {
        return Err(CalcError::invalid(
            "flash_pressure_mpa",
            format!("must be below pressure_mpa ({p1} MPa) for condensate to flash, got {p2}"),
        ));
    }
    Ok(())
}

/// Steam at p and T known to be at or above saturation: at T_sat itself `props_pt` would
/// return the liquid, so the saturated vapour is used instead.
fn vapour_pt(p: f64, t: f64) -> Result<SteamState, CalcError> {
    if (P_SAT_MIN_MPA..P_CRITICAL_MPA).contains(&p) && t <= region4::t_sat(p) * (1.0 + 1e-12) {
        return Ok(sat_states(p)?.1);
    }
    state_pt(p, t)
}

/// Inlet steam, outlet steam and spray water of a desuperheater, and the spray ratio.
struct Desuperheat {
    ratio: f64,
    inlet: SteamState,
    outlet: SteamState,
    water: SteamState,
}

fn desuperheat(
    p: f64,
    t_in: f64,
    t_out: f64,
    p_w: f64,
    t_w: f64,
) -> Result<Desuperheat, CalcError> {
    check_pt("pressure_mpa", p, "temperature_k", t_in)?;
    check_pt("pressure_mpa", p, "outlet_temperature_k", t_out)?;
    check_pt("water_pressure_mpa", p_w, "water_temperature_k", t_w)?;
    if (P_SAT_MIN_MPA..P_CRITICAL_MPA).contains(&p) {
        let ts = region4::t_sat(p);
        if t_out < ts * (1.0 - 1e-12) {
            return Err(CalcError::invalid(
                "outlet_temperature_k",
                format!(
                    "must be >= the saturation temperature {ts} K at {p} MPa \
                     (spray below saturation would condense steam), got {t_out}"
                ),
            ));
        }
    }
    if t_out > t_in {
        return Err(CalcError::invalid(
            "outlet_temperature_k",
            format!("must be <= temperature_k ({t_in} K): spray water only cools, got {t_out}"),
        ));
    }
    let inlet = vapour_pt(p, t_in)?;
    let outlet = vapour_pt(p, t_out)?;
    let water = state_pt(p_w, t_w)?;
    let (h_in, h_out, h_w) = (
        inlet.enthalpy_kj_kg,
        outlet.enthalpy_kj_kg,
        water.enthalpy_kj_kg,
    );
    if h_w >= h_out {
        return Err(CalcError::invalid(
            "water_temperature_k",
            format!(
                "spray water enthalpy {h_w} kJ/kg must be below the outlet steam enthalpy \
                 {h_out} kJ/kg, got {t_w} K"
            ),
        ));
    }
    Ok(Desuperheat {
        ratio: (h_in - h_out) / (h_out - h_w),
        inlet,
        outlet,
        water,
    })
}

/// Spray water per kg of inlet steam to cool steam at (`p_mpa`, `t_in_k`) to `t_out_k` with
/// water at (`p_w_mpa`, `t_w_k`): (h_in - h_out) / (h_out - h_w), from the energy balance.
pub fn desuperheater_spray_ratio(
    p_mpa: f64,
    t_in_k: f64,
    t_out_k: f64,
    p_w_mpa: f64,
    t_w_k: f64,
) -> Result<f64, CalcError> {
    Ok(desuperheat(p_mpa, t_in_k, t_out_k, p_w_mpa, t_w_k)?.ratio)
}

// ---------------------------------------------------------------------------------------------
// GL-012 request / result
// ---------------------------------------------------------------------------------------------

/// A GL-012 request. `mode` selects the calculation; each mode reads only its own fields
/// (see docs/calc/gl-012.md). Flat on purpose: it is mirrored field for field in protobuf.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteamRequest {
    /// One of `pt`, `ph`, `ps`, `flash`, `desuperheater`.
    #[serde(default)]
    pub mode: String,
    /// Pressure, MPa: the state pressure (pt/ph/ps), the condensate pressure before flashing
    /// (flash), or the steam pressure (desuperheater).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure_mpa: Option<f64>,
    /// Temperature, K: the state (pt) or the inlet steam (desuperheater).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_k: Option<f64>,
    /// Specific enthalpy, kJ/kg: the state (ph) or the condensate before flashing (flash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enthalpy_kj_kg: Option<f64>,
    /// Specific entropy, kJ/(kg K) (ps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_kj_kg_k: Option<f64>,
    /// Pressure the condensate is let down to, MPa (flash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_pressure_mpa: Option<f64>,
    /// Steam temperature wanted after the desuperheater, K.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlet_temperature_k: Option<f64>,
    /// Spray water pressure, MPa (desuperheater; defaults to `pressure_mpa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water_pressure_mpa: Option<f64>,
    /// Spray water temperature, K (desuperheater).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water_temperature_k: Option<f64>,
    /// Mass flow, kg/s: of the state (pt/ph/ps), the condensate (flash) or the inlet steam
    /// (desuperheater). Optional; without it only specific figures are returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_flow_kg_s: Option<f64>,
}

/// A GL-012 result: the main state plus the figures of the mode that was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteamResult {
    /// The mode that was run, normalised to lower case.
    pub mode: String,
    /// pt/ph/ps: the state; flash: the mixture after let-down; desuperheater: the outlet steam.
    pub state: SteamState,
    /// flash: the condensate before let-down (when `pressure_mpa` was given);
    /// desuperheater: the inlet steam.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inlet_state: Option<SteamState>,
    /// desuperheater: the spray water.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water_state: Option<SteamState>,
    /// flash: mass fraction of the condensate that flashes to steam, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_fraction: Option<f64>,
    /// flash: latent heat hfg at the flash pressure, kJ/kg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_heat_kj_kg: Option<f64>,
    /// flash: flash steam flow, kg/s (with `mass_flow_kg_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_steam_kg_s: Option<f64>,
    /// flash: condensate left after flashing, kg/s (with `mass_flow_kg_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_condensate_kg_s: Option<f64>,
    /// desuperheater: spray water per kg of inlet steam.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spray_water_ratio: Option<f64>,
    /// desuperheater: spray water flow, kg/s (with `mass_flow_kg_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spray_water_kg_s: Option<f64>,
    /// desuperheater: outlet steam flow = inlet + spray, kg/s (with `mass_flow_kg_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlet_flow_kg_s: Option<f64>,
    /// Mass flow of `state` times its enthalpy, kW (with `mass_flow_kg_s`), on the IF97
    /// enthalpy datum (liquid at the triple point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enthalpy_flow_kw: Option<f64>,
}

/// Marker for the GL-012 calculation.
pub struct SteamProperties;

fn required(value: Option<f64>, field: &str, mode: &str) -> Result<f64, CalcError> {
    value.ok_or_else(|| CalcError::invalid(field, format!("is required for mode '{mode}'")))
}

impl SteamResult {
    fn of(mode: &str, state: SteamState) -> Self {
        SteamResult {
            mode: mode.into(),
            state,
            inlet_state: None,
            water_state: None,
            flash_fraction: None,
            latent_heat_kj_kg: None,
            flash_steam_kg_s: None,
            residual_condensate_kg_s: None,
            spray_water_ratio: None,
            spray_water_kg_s: None,
            outlet_flow_kg_s: None,
            enthalpy_flow_kw: None,
        }
    }
}

impl SteamRequest {
    /// Runs the requested mode; every rule is checked on the way and named by field.
    pub fn compute(&self) -> Result<SteamResult, CalcError> {
        let mode = self.mode.trim().to_ascii_lowercase();
        let flow = self
            .mass_flow_kg_s
            .map(|m| non_negative("mass_flow_kg_s", m))
            .transpose()?;
        let p = self.pressure_mpa;
        match mode.as_str() {
            "pt" | "ph" | "ps" => {
                let p = required(p, "pressure_mpa", &mode)?;
                let state = match mode.as_str() {
                    "pt" => props_pt(p, required(self.temperature_k, "temperature_k", &mode)?)?,
                    "ph" => props_ph(p, required(self.enthalpy_kj_kg, "enthalpy_kj_kg", &mode)?)?,
                    _ => props_ps(p, required(self.entropy_kj_kg_k, "entropy_kj_kg_k", &mode)?)?,
                };
                let mut r = SteamResult::of(&mode, state);
                r.enthalpy_flow_kw = flow.map(|m| m * state.enthalpy_kj_kg);
                Ok(r)
            }
            "flash" => self.flash(&mode, flow),
            "desuperheater" => {
                let p = required(p, "pressure_mpa", &mode)?;
                let t_in = required(self.temperature_k, "temperature_k", &mode)?;
                let t_out = required(self.outlet_temperature_k, "outlet_temperature_k", &mode)?;
                let t_w = required(self.water_temperature_k, "water_temperature_k", &mode)?;
                let p_w = self.water_pressure_mpa.unwrap_or(p);
                let d = desuperheat(p, t_in, t_out, p_w, t_w)?;
                let mut r = SteamResult::of(&mode, d.outlet);
                r.inlet_state = Some(d.inlet);
                r.water_state = Some(d.water);
                r.spray_water_ratio = Some(d.ratio);
                r.spray_water_kg_s = flow.map(|m| m * d.ratio);
                r.outlet_flow_kg_s = flow.map(|m| m * (1.0 + d.ratio));
                r.enthalpy_flow_kw = flow.map(|m| m * (1.0 + d.ratio) * d.outlet.enthalpy_kj_kg);
                Ok(r)
            }
            "" => Err(CalcError::invalid(
                "mode",
                "is required: one of pt, ph, ps, flash, desuperheater",
            )),
            other => Err(CalcError::invalid(
                "mode",
                format!("must be one of pt, ph, ps, flash, desuperheater, got '{other}'"),
            )),
        }
    }

    fn flash(&self, mode: &str, flow: Option<f64>) -> Result<SteamResult, CalcError> {
        let p2 = required(self.flash_pressure_mpa, "flash_pressure_mpa", mode)?;
        check_sat_pressure("flash_pressure_mpa", p2)?;
        let (inlet, h1) = match (self.pressure_mpa, self.enthalpy_kj_kg) {
            (None, None) => {
                return Err(CalcError::invalid(
                    "pressure_mpa",
                    "flash needs pressure_mpa (saturated condensate) or enthalpy_kj_kg",
                ));
            }
            (Some(p1), h1) => {
                let state = match h1 {
                    Some(h1) => props_ph(p1, h1)?,
                    None => saturated_liquid(p1)?,
                };
                check_flash_drop(p1, p2)?;
                (Some(state), state.enthalpy_kj_kg)
            }
            (None, Some(h1)) => (None, finite("enthalpy_kj_kg", h1)?),
        };
        let (liq, vap) = sat_states(p2)?;
        let x = flash_from(h1, &liq, &vap)?;
        let after = props_ph(p2, h1)?;
        let mut r = SteamResult::of(mode, after);
        r.inlet_state = inlet;
        r.flash_fraction = Some(x);
        r.latent_heat_kj_kg = Some(vap.enthalpy_kj_kg - liq.enthalpy_kj_kg);
        r.flash_steam_kg_s = flow.map(|m| m * x);
        r.residual_condensate_kg_s = flow.map(|m| m * (1.0 - x));
        r.enthalpy_flow_kw = flow.map(|m| m * h1);
        Ok(r)
    }
}

impl Calculation for SteamProperties {
    const KIND: &'static str = "GL-012";
    type Request = SteamRequest;
    type Output = SteamResult;

    /// The h and s limits depend on the equations themselves, so validation evaluates them;
    /// it is the same work as `run`, which is cheap.
    fn validate(req: &SteamRequest) -> Result<(), CalcError> {
        req.compute().map(|_| ())
    }

    fn run(req: &SteamRequest) -> Result<SteamResult, CalcError> {
        req.compute()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[track_caller]
    fn assert_rel(what: &str, got: f64, want: f64, tol: f64) {
        assert!(
            rel(got, want) <= tol,
            "{what}: got {got}, want {want} (relative error {:e})",
            rel(got, want)
        );
    }

    fn field_of(r: Result<impl std::fmt::Debug, CalcError>) -> String {
        match r {
            Err(CalcError::Invalid { field, .. }) => field,
            other => panic!("expected CalcError::Invalid, got {other:?}"),
        }
    }

    /// IAPWS R7-97(2012) Table 5 (region 1), Table 15 (region 2), Table 42 (region 5); the
    /// v, h, s columns are the GL-012 reference table, u, cp, w come from the same tables.
    #[test]
    fn verification_regions_1_2_5_from_pt() {
        #[rustfmt::skip]
        let table = [
            // (region, T, p, v, h, u, s, cp, w)
            (1, 300.0, 3.0, 0.100_215_168e-2, 0.115_331_273e3, 0.112_324_818e3, 0.392_294_792, 0.417_301_218e1, 0.150_773_921e4),
            (1, 300.0, 80.0, 0.971_180_894e-3, 0.184_142_828e3, 0.106_448_356e3, 0.368_563_852, 0.401_008_987e1, 0.163_469_054e4),
            (1, 500.0, 3.0, 0.120_241_800e-2, 0.975_542_239e3, 0.971_934_985e3, 0.258_041_912e1, 0.465_580_682e1, 0.124_071_337e4),
            (2, 300.0, 0.0035, 0.394_913_866e2, 0.254_991_145e4, 0.241_169_160e4, 0.852_238_967e1, 0.191_300_162e1, 0.427_920_172e3),
            (2, 700.0, 0.0035, 0.923_015_898e2, 0.333_568_375e4, 0.301_262_819e4, 0.101_749_996e2, 0.208_141_274e1, 0.644_289_068e3),
            (2, 700.0, 30.0, 0.542_946_619e-2, 0.263_149_474e4, 0.246_861_076e4, 0.517_540_298e1, 0.103_505_092e2, 0.480_386_523e3),
            (5, 1500.0, 0.5, 0.138_455_090e1, 0.521_976_855e4, 0.452_749_310e4, 0.965_408_875e1, 0.261_609_445e1, 0.917_068_690e3),
            (5, 1500.0, 30.0, 0.230_761_299e-1, 0.516_723_514e4, 0.447_495_124e4, 0.772_970_133e1, 0.272_724_317e1, 0.928_548_002e3),
            (5, 2000.0, 30.0, 0.311_385_219e-1, 0.657_122_604e4, 0.563_707_038e4, 0.853_640_523e1, 0.288_569_882e1, 0.106_736_948e4),
        ];
        for (region, t, p, v, h, u, s, cp, w) in table {
            let st = props_pt(p, t).unwrap();
            let at = format!("region {region} T {t} p {p}");
            assert_eq!(st.region, region, "{at}");
            assert_rel(&format!("{at} v"), st.specific_volume_m3_kg, v, 1e-8);
            assert_rel(&format!("{at} h"), st.enthalpy_kj_kg, h, 1e-8);
            assert_rel(&format!("{at} u"), st.internal_energy_kj_kg, u, 1e-8);
            assert_rel(&format!("{at} s"), st.entropy_kj_kg_k, s, 1e-8);
            assert_rel(&format!("{at} cp"), st.cp_kj_kg_k.unwrap(), cp, 1e-8);
            assert_rel(&format!("{at} w"), st.speed_of_sound_m_s.unwrap(), w, 1e-8);
            assert_rel(
                &format!("{at} enthalpy_pt"),
                enthalpy_pt(p, t).unwrap(),
                h,
                1e-8,
            );
        }
    }

    /// IAPWS R7-97(2012) Table 33 (region 3 from rho, T), and the same states from (p, T).
    #[test]
    fn verification_region_3() {
        #[rustfmt::skip]
        let table = [
            // (T, rho, p, h, u, s, cp, w)
            (650.0, 500.0, 0.255_837_018e2, 0.186_343_019e4, 0.181_226_279e4, 0.405_427_273e1, 0.138_935_717e2, 0.502_005_554e3),
            (650.0, 200.0, 0.222_930_643e2, 0.237_512_401e4, 0.226_365_868e4, 0.485_438_792e1, 0.446_579_342e2, 0.383_444_594e3),
            (750.0, 500.0, 0.783_095_639e2, 0.225_868_845e4, 0.210_206_932e4, 0.446_971_906e1, 0.634_165_359e1, 0.760_696_041e3),
        ];
        for (t, rho, p, h, u, s, cp, w) in table {
            let at = format!("region 3 T {t} rho {rho}");
            let st = region_3_rho_t(rho, t).unwrap();
            assert_rel(&format!("{at} p"), st.pressure_mpa, p, 1e-8);
            assert_rel(&format!("{at} h"), st.enthalpy_kj_kg, h, 1e-8);
            assert_rel(&format!("{at} u"), st.internal_energy_kj_kg, u, 1e-8);
            assert_rel(&format!("{at} s"), st.entropy_kj_kg_k, s, 1e-8);
            assert_rel(&format!("{at} cp"), st.cp_kj_kg_k.unwrap(), cp, 1e-8);
            assert_rel(&format!("{at} w"), st.speed_of_sound_m_s.unwrap(), w, 1e-8);
            // Inverting at the tabulated p must give back the tabulated density.
            let back = props_pt(st.pressure_mpa, t).unwrap();
            assert_eq!(back.region, 3, "{at}");
            assert_rel(&format!("{at} rho(p,T)"), back.density_kg_m3, rho, 1e-10);
        }
    }

    /// IAPWS R7-97(2012) Tables 35 and 36.
    #[test]
    fn verification_saturation() {
        for (t, p) in [
            (300.0, 0.353_658_941e-2),
            (500.0, 0.263_889_776e1),
            (600.0, 0.123_443_146e2),
        ] {
            assert_rel(&format!("p_sat({t})"), p_sat(t).unwrap(), p, 1e-8);
        }
        for (p, t) in [
            (0.1, 0.372_755_919e3),
            (1.0, 0.453_035_632e3),
            (10.0, 0.584_149_488e3),
        ] {
            assert_rel(&format!("t_sat({p})"), t_sat(p).unwrap(), t, 1e-8);
        }
        // IF97 Sect. 8.1: p_sat(273.15 K) = 611.212677 Pa, and p_sat(623.15 K) equals the B23
        // pressure there.
        assert_rel("p_sat(273.15)", p_sat(273.15).unwrap(), P_SAT_MIN_MPA, 1e-9);
        assert_rel(
            "p_sat(623.15)",
            p_sat(623.15).unwrap(),
            0.165_291_643e2,
            1e-8,
        );
    }

    /// The regions meet within the IF97 consistency limits (R7-97 Sect. 4-6: |dv/v| <= 0.05 %,
    /// |dh| <= 0.2 kJ/kg, |ds| <= 0.2 J/(kg K) on the B13, B23 and 2-5 boundaries); a typo in
    /// a coefficient table would show here.
    #[test]
    fn regions_agree_at_their_boundaries() {
        let check = |a: SteamState, b: SteamState, at: String| {
            assert!(
                rel(a.specific_volume_m3_kg, b.specific_volume_m3_kg) < 5e-4,
                "v {at}"
            );
            assert!((a.enthalpy_kj_kg - b.enthalpy_kj_kg).abs() < 0.2, "h {at}");
            assert!(
                (a.entropy_kj_kg_k - b.entropy_kj_kg_k).abs() < 2e-4,
                "s {at}"
            );
        };
        let mut p = 16.6;
        while p <= 100.0 {
            // Region 1 / 3 at 623.15 K.
            let r1 = region1::gibbs(p, T_13).state(p, T_13, 1);
            let rho = region3::rho_pt(p, T_13, true).unwrap();
            check(
                r1,
                region3::helmholtz(rho, T_13).state(rho, T_13),
                format!("B13 p {p}"),
            );
            // Region 2 / 3 on B23.
            let t = region4::t_b23(p);
            let r2 = region2::gibbs(p, t).state(p, t, 2);
            let rho = region3::rho_pt(p, t, false).unwrap();
            check(
                r2,
                region3::helmholtz(rho, t).state(rho, t),
                format!("B23 p {p}"),
            );
            p += 0.7;
        }
        let mut p = 0.001;
        while p <= 50.0 {
            let r2 = region2::gibbs(p, T_25).state(p, T_25, 2);
            let r5 = region5::gibbs(p, T_25).state(p, T_25, 5);
            check(r2, r5, format!("2-5 p {p}"));
            p *= 1.5;
        }
    }

    #[test]
    fn saturation_line_is_consistent_up_to_the_critical_point() {
        for p in [
            P_SAT_MIN_MPA,
            0.001,
            0.101_325,
            1.0,
            10.0,
            16.529,
            16.53,
            18.0,
            20.0,
            21.5,
            22.0,
            22.06,
            22.0639,
            P_CRITICAL_MPA,
        ] {
            let l = saturated_liquid(p).unwrap();
            let v = saturated_vapour(p).unwrap();
            let t = t_sat(p).unwrap();
            assert_eq!(l.temperature_k, t);
            assert_eq!(v.temperature_k, t);
            assert_eq!((l.phase, v.phase), (Phase::Liquid, Phase::Vapour));
            assert!(v.enthalpy_kj_kg >= l.enthalpy_kj_kg, "p {p}");
            assert!(v.entropy_kj_kg_k >= l.entropy_kj_kg_k, "p {p}");
            assert!(v.density_kg_m3 <= l.density_kg_m3, "p {p}");
            // Clausius-Clapeyron: the Gibbs energies of the two phases agree on the line.
            let g = |s: &SteamState| s.enthalpy_kj_kg - t * s.entropy_kj_kg_k;
            assert!(
                (g(&l) - g(&v)).abs() < 0.05,
                "g' - g'' at p {p}: {}",
                g(&l) - g(&v)
            );
        }
        // IF97 saturation table at 0.1 MPa (as published with XSteam, an independent IF97
        // implementation): hf 417.4364858, hg 2674.9496 kJ/kg.
        let l = saturated_liquid(0.1).unwrap();
        let v = saturated_vapour(0.1).unwrap();
        assert!(
            (l.enthalpy_kj_kg - 417.436_485_8).abs() < 1e-6,
            "{}",
            l.enthalpy_kj_kg
        );
        assert!(
            (v.enthalpy_kj_kg - 2674.9496).abs() < 1e-3,
            "{}",
            v.enthalpy_kj_kg
        );
    }

    #[test]
    fn two_phase_states_from_ph_and_ps() {
        for p in [0.001, 0.1, 1.0, 10.0, 16.0, 18.0, 21.0, 22.0] {
            let l = saturated_liquid(p).unwrap();
            let v = saturated_vapour(p).unwrap();
            for x in [0.0, 0.3, 0.75, 1.0] {
                let h = l.enthalpy_kj_kg + x * (v.enthalpy_kj_kg - l.enthalpy_kj_kg);
                let st = props_ph(p, h).unwrap();
                assert_eq!((st.region, st.phase), (4, Phase::TwoPhase), "p {p} x {x}");
                assert!((st.quality.unwrap() - x).abs() < 1e-12, "p {p} x {x}");
                assert_eq!(st.temperature_k, l.temperature_k);
                assert!(st.cp_kj_kg_k.is_none());
                let s = l.entropy_kj_kg_k + x * (v.entropy_kj_kg_k - l.entropy_kj_kg_k);
                let st = props_ps(p, s).unwrap();
                assert!((st.quality.unwrap() - x).abs() < 1e-12, "p {p} x {x}");
                assert!(rel(st.enthalpy_kj_kg, h) < 1e-12, "p {p} x {x}");
            }
        }
    }

    #[test]
    fn phases_are_classified() {
        assert_eq!(props_pt(1.0, 300.0).unwrap().phase, Phase::Liquid);
        assert_eq!(props_pt(1.0, 500.0).unwrap().phase, Phase::Vapour);
        assert_eq!(props_pt(30.0, 700.0).unwrap().phase, Phase::Supercritical);
        assert_eq!(props_pt(25.0, 650.0).unwrap().phase, Phase::Supercritical);
        assert_eq!(props_pt(25.0, 640.0).unwrap().phase, Phase::Liquid);
        assert_eq!(props_pt(19.0, 640.0).unwrap().phase, Phase::Vapour);
        // p_sat(640 K) = 20.27 MPa.
        assert_eq!(props_pt(21.0, 640.0).unwrap().phase, Phase::Liquid);
        assert_eq!(props_pt(10.0, 1500.0).unwrap().phase, Phase::Vapour);
        assert_eq!(props_pt(40.0, 1500.0).unwrap().phase, Phase::Supercritical);
        // Exactly at the critical point the region-3 cp is unbounded: absent, never NaN.
        let c = props_pt(P_CRITICAL_MPA, T_CRITICAL_K).unwrap();
        assert!(c.enthalpy_kj_kg.is_finite() && c.density_kg_m3.is_finite());
        assert!(c.cp_kj_kg_k.is_none_or(f64::is_finite));
    }

    /// Backward results are the forward root, not the raw backward equation: at the IF97
    /// backward check points they lie within the permitted 25 mK (region 1) / 10 mK (region
    /// 2) of the tabulated backward value and reproduce h and s to rounding.
    #[test]
    fn backward_states_refine_the_check_values() {
        #[rustfmt::skip]
        let ph = [
            (3.0, 500.0, 391.798_509), (80.0, 500.0, 378.108_626), (80.0, 1500.0, 611.041_229),
            (0.001, 3000.0, 534.433_241), (3.0, 3000.0, 575.373_370), (3.0, 4000.0, 1_010.775_77),
            (5.0, 3500.0, 801.299_102), (5.0, 4000.0, 1_015.315_83), (25.0, 3500.0, 875.279_054),
            (40.0, 2700.0, 743.056_411), (60.0, 2700.0, 791.137_067), (60.0, 3200.0, 882.756_860),
        ];
        for (p, h, t) in ph {
            let st = props_ph(p, h).unwrap();
            assert!(
                (st.temperature_k - t).abs() < 0.025,
                "T(p {p}, h {h}) = {}",
                st.temperature_k
            );
            assert!(rel(st.enthalpy_kj_kg, h) < 1e-12, "h at p {p} h {h}");
        }
        #[rustfmt::skip]
        let ps = [
            (3.0, 0.5, 307.842_258), (80.0, 0.5, 309.979_785), (80.0, 3.0, 565.899_909),
            (0.1, 7.5, 399.517_097), (0.1, 8.0, 514.127_081), (2.5, 8.0, 1_039.849_17),
            (8.0, 6.0, 600.484_040), (8.0, 7.5, 1_064.955_56), (90.0, 6.0, 1_038.011_26),
            (20.0, 5.75, 697.992_849), (80.0, 5.25, 854.011_484), (80.0, 5.75, 949.017_998),
        ];
        for (p, s, t) in ps {
            let st = props_ps(p, s).unwrap();
            assert!(
                (st.temperature_k - t).abs() < 0.025,
                "T(p {p}, s {s}) = {}",
                st.temperature_k
            );
            assert!(rel(st.entropy_kj_kg_k, s) < 1e-12, "s at p {p} s {s}");
        }
    }

    /// Around the critical point the region-3 isotherms are flat and the saturation loop
    /// vanishes; (p,T), (p,h) and (p,s) must still solve and round-trip.
    #[test]
    fn near_critical_states_solve_and_round_trip() {
        for dt in [-0.5, -0.05, -0.005, -5e-4, 0.0, 5e-4, 0.005, 0.05, 0.5] {
            for dp in [-0.3, -0.03, -0.003, -3e-4, 0.0, 3e-4, 0.003, 0.03, 0.3] {
                let (p, t) = (P_CRITICAL_MPA + dp, T_CRITICAL_K + dt);
                let st = props_pt(p, t).unwrap();
                assert_eq!(st.region, 3);
                if t < T_CRITICAL_K {
                    let liquid = p >= p_sat(t).unwrap();
                    assert_eq!(st.phase == Phase::Liquid, liquid, "p {p} T {t}");
                }
                let by_h = props_ph(p, st.enthalpy_kj_kg).unwrap();
                let by_s = props_ps(p, st.entropy_kj_kg_k).unwrap();
                assert!(
                    (by_h.temperature_k - t).abs() < 1e-6,
                    "T(p,h) at p {p} T {t}"
                );
                assert!(
                    (by_s.temperature_k - t).abs() < 1e-6,
                    "T(p,s) at p {p} T {t}"
                );
            }
        }
    }

    /// Temperature ranges of each region with margins off the region boundaries, where the
    /// neighbouring equations differ by up to the IF97 consistency limits.
    fn region_1() -> impl Strategy<Value = (f64, f64)> {
        (273.15..623.15f64, 0.0..1.0f64).prop_map(|(t, f)| {
            let lo = region4::p_sat(t) * (1.0 + 1e-6);
            (lo + f * (P_MAX_MPA - lo), t)
        })
    }

    fn region_2() -> impl Strategy<Value = (f64, f64)> {
        (273.15..1073.15f64, 1e-6..14.0f64).prop_map(|(t, k)| {
            let top = if t <= T_13 {
                region4::p_sat(t)
            } else if t <= T_B23_MAX {
                region4::p_b23(t)
            } else {
                P_MAX_MPA
            };
            (top * (-k).exp(), t)
        })
    }

    fn region_3() -> impl Strategy<Value = (f64, f64)> {
        (625.15..861.0f64, 0.0..1.0f64).prop_map(|(t, f)| {
            let lo = region4::p_b23(t + 2.0);
            (lo + f * (P_MAX_MPA - lo), t)
        })
    }

    fn region_5() -> impl Strategy<Value = (f64, f64)> {
        (1080.0..2273.15f64, 1e-6..14.0f64).prop_map(|(t, k)| (50.0 * (-k).exp(), t))
    }

    fn round_trip(p: f64, t: f64, region: u8) -> Result<(), TestCaseError> {
        let st = props_pt(p, t).unwrap();
        prop_assert_eq!(st.region, region);
        let by_h = props_ph(p, st.enthalpy_kj_kg).unwrap();
        prop_assert!(
            (by_h.temperature_k - t).abs() < 1e-6,
            "T(p,h) {} vs {t} at p {p}",
            by_h.temperature_k
        );
        prop_assert_eq!(by_h.region, region);
        let by_s = props_ps(p, st.entropy_kj_kg_k).unwrap();
        prop_assert!(
            (by_s.temperature_k - t).abs() < 1e-6,
            "T(p,s) {} vs {t} at p {p}",
            by_s.temperature_k
        );
        prop_assert_eq!(by_s.region, region);
        prop_assert!(rel(by_h.density_kg_m3, st.density_kg_m3) < 1e-8);
        Ok(())
    }

    proptest! {
        #[test]
        fn round_trip_region_1((p, t) in region_1()) { round_trip(p, t, 1)?; }

        #[test]
        fn round_trip_region_2((p, t) in region_2()) { round_trip(p, t, 2)?; }

        #[test]
        fn round_trip_region_3((p, t) in region_3()) { round_trip(p, t, 3)?; }

        #[test]
        fn round_trip_region_5((p, t) in region_5()) { round_trip(p, t, 5)?; }

        /// Any (p, T) in the IF97 domain gives finite properties; anything else a named error.
        #[test]
        fn pt_never_panics_or_nans(
            p in prop_oneof![0.0..100.0f64, proptest::num::f64::ANY],
            t in prop_oneof![273.15..2273.15f64, proptest::num::f64::ANY],
        ) {
            match props_pt(p, t) {
                Ok(st) => {
                    for v in [st.pressure_mpa, st.temperature_k, st.specific_volume_m3_kg,
                              st.density_kg_m3, st.enthalpy_kj_kg, st.entropy_kj_kg_k,
                              st.internal_energy_kj_kg] {
                        prop_assert!(v.is_finite());
                    }
                    prop_assert!(st.cp_kj_kg_k.is_some() && st.speed_of_sound_m_s.is_some());
                }
                Err(e) => prop_assert!(matches!(e, CalcError::Invalid { .. }), "{e:?}"),
            }
        }

        /// Any (p, h) or (p, s) either solves to a finite state or is refused by name.
        #[test]
        fn ph_ps_never_panic_or_nan(
            p in prop_oneof![1e-5..100.0f64, 15.0..23.0f64, proptest::num::f64::ANY],
            h in prop_oneof![-50.0..7500.0f64, 1500.0..2800.0f64, proptest::num::f64::ANY],
            s in prop_oneof![-0.1..13.0f64, 3.0..6.0f64, proptest::num::f64::ANY],
        ) {
            for r in [props_ph(p, h), props_ps(p, s)] {
                match r {
                    Ok(st) => {
                        prop_assert!(st.temperature_k.is_finite() && st.density_kg_m3.is_finite());
                        prop_assert!(st.enthalpy_kj_kg.is_finite() && st.entropy_kj_kg_k.is_finite());
                        if let Some(x) = st.quality { prop_assert!((0.0..=1.0).contains(&x)); }
                    }
                    Err(e) => prop_assert!(matches!(e, CalcError::Invalid { .. }), "{e:?}"),
                }
            }
        }
    }

    /// Known answer, computed by hand from IF97 saturation tables: saturated condensate at
    /// 1 MPa has hf = 762.68 kJ/kg; at 0.1 MPa hf = 417.44 and hg = 2674.95 kJ/kg, so
    /// x = (762.68 - 417.44) / (2674.95 - 417.44) = 345.24 / 2257.51 = 0.15293.
    /// (IAPWS-95 tables, e.g. Cengel A-5, give 762.51 / 417.51 / 2257.5 -> 0.1528.)
    #[test]
    fn flash_steam_known_answer() {
        let x = flash_fraction_saturated(1.0, 0.1).unwrap();
        assert!((x - 0.152_93).abs() < 1e-4, "{x}");
        // The same through h1, and the let-down state carries the same quality.
        let h1 = saturated_liquid(1.0).unwrap().enthalpy_kj_kg;
        assert_eq!(flash_fraction(h1, 0.1).unwrap(), x);
        let req = SteamRequest {
            mode: "flash".into(),
            pressure_mpa: Some(1.0),
            flash_pressure_mpa: Some(0.1),
            mass_flow_kg_s: Some(2.0),
            ..Default::default()
        };
        let r = SteamProperties::run(&req).unwrap();
        assert!((r.flash_fraction.unwrap() - x).abs() < 1e-15);
        assert!((r.state.quality.unwrap() - x).abs() < 1e-12);
        assert!((r.flash_steam_kg_s.unwrap() - 2.0 * x).abs() < 1e-12);
        assert!((r.residual_condensate_kg_s.unwrap() - 2.0 * (1.0 - x)).abs() < 1e-12);
        assert!((r.latent_heat_kj_kg.unwrap() - 2257.5).abs() < 0.5);
        // Condensate already below the flash pressure's boiling point does not flash.
        assert_eq!(flash_fraction(300.0, 0.1).unwrap(), 0.0);
        let sub = SteamRequest {
            mode: "flash".into(),
            enthalpy_kj_kg: Some(300.0),
            flash_pressure_mpa: Some(0.1),
            ..Default::default()
        };
        let r = SteamProperties::run(&sub).unwrap();
        assert_eq!(r.flash_fraction, Some(0.0));
        assert_eq!(r.state.phase, Phase::Liquid);
    }

    /// Known answer, computed by hand from steam tables (Cengel A-6 / A-7): steam at 4 MPa,
    /// 400 C has h = 3214.5 kJ/kg, at 4 MPa, 300 C h = 2961.7 kJ/kg; water at 5 MPa, 100 C
    /// has h = 422.8 kJ/kg. m_w / m_in = (3214.5 - 2961.7) / (2961.7 - 422.8)
    /// = 252.8 / 2538.9 = 0.0996.
    #[test]
    fn desuperheater_known_answer() {
        let ratio = desuperheater_spray_ratio(4.0, 673.15, 573.15, 5.0, 373.15).unwrap();
        assert!((ratio - 0.0996).abs() < 3e-4, "{ratio}");
        let req = SteamRequest {
            mode: "desuperheater".into(),
            pressure_mpa: Some(4.0),
            temperature_k: Some(673.15),
            outlet_temperature_k: Some(573.15),
            water_pressure_mpa: Some(5.0),
            water_temperature_k: Some(373.15),
            mass_flow_kg_s: Some(10.0),
            ..Default::default()
        };
        let r = SteamProperties::run(&req).unwrap();
        let (hi, ho, hw) = (
            r.inlet_state.unwrap().enthalpy_kj_kg,
            r.state.enthalpy_kj_kg,
            r.water_state.unwrap().enthalpy_kj_kg,
        );
        let mw = r.spray_water_kg_s.unwrap();
        // Energy balance closes: m_in h_in + m_w h_w = (m_in + m_w) h_out.
        assert!((10.0 * hi + mw * hw - (10.0 + mw) * ho).abs() < 1e-9);
        assert!((r.outlet_flow_kg_s.unwrap() - 10.0 - mw).abs() < 1e-12);
        assert_eq!(r.water_state.unwrap().phase, Phase::Liquid);
        // Cooling exactly to saturation uses the saturated vapour, not the liquid.
        let ts = t_sat(4.0).unwrap();
        let ratio_sat = desuperheater_spray_ratio(4.0, 673.15, ts, 5.0, 373.15).unwrap();
        assert!(ratio_sat > ratio && ratio_sat < 0.2, "{ratio_sat}");
        assert_eq!(
            desuperheater_spray_ratio(4.0, 673.15, 673.15, 5.0, 373.15).unwrap(),
            0.0
        );
    }

    #[test]
    fn out_of_range_inputs_name_the_field() {
        assert_eq!(field_of(props_pt(f64::NAN, 300.0)), "pressure_mpa");
        assert_eq!(field_of(props_pt(0.0, 300.0)), "pressure_mpa");
        assert_eq!(field_of(props_pt(-1.0, 300.0)), "pressure_mpa");
        assert_eq!(field_of(props_pt(1e-300, 1500.0)), "pressure_mpa");
        assert!(
            props_pt(P_MIN_MPA, T_MAX_K)
                .unwrap()
                .specific_volume_m3_kg
                .is_finite()
        );
        assert_eq!(field_of(props_pt(100.1, 300.0)), "pressure_mpa");
        assert_eq!(field_of(props_pt(60.0, 1200.0)), "pressure_mpa");
        assert_eq!(field_of(props_pt(1.0, 273.0)), "temperature_k");
        assert_eq!(field_of(props_pt(1.0, 2273.2)), "temperature_k");
        assert_eq!(field_of(props_pt(1.0, f64::INFINITY)), "temperature_k");
        assert_eq!(field_of(props_ph(1.0, -100.0)), "enthalpy_kj_kg");
        assert_eq!(field_of(props_ph(1.0, 1e5)), "enthalpy_kj_kg");
        assert_eq!(field_of(props_ph(60.0, 5000.0)), "enthalpy_kj_kg");
        assert_eq!(field_of(props_ps(1.0, f64::NAN)), "entropy_kj_kg_k");
        assert_eq!(field_of(props_ps(1.0, 20.0)), "entropy_kj_kg_k");
        assert_eq!(field_of(p_sat(700.0)), "temperature_k");
        assert_eq!(field_of(t_sat(23.0)), "pressure_mpa");
        assert_eq!(field_of(t_sat(0.0005)), "pressure_mpa");
        assert_eq!(field_of(saturated_vapour(-1.0)), "pressure_mpa");
        assert_eq!(field_of(region_3_rho_t(500.0, 600.0)), "temperature_k");
        assert_eq!(field_of(region_3_rho_t(-1.0, 650.0)), "density_kg_m3");
        assert_eq!(field_of(region_3_rho_t(10.0, 650.0)), "density_kg_m3");
        assert_eq!(field_of(flash_fraction(3000.0, 0.1)), "enthalpy_kj_kg");
        assert_eq!(
            field_of(flash_fraction_saturated(0.1, 1.0)),
            "flash_pressure_mpa"
        );
        assert_eq!(
            field_of(desuperheater_spray_ratio(4.0, 673.15, 500.0, 5.0, 373.15)),
            "outlet_temperature_k"
        );
        assert_eq!(
            field_of(desuperheater_spray_ratio(4.0, 573.15, 673.15, 5.0, 373.15)),
            "outlet_temperature_k"
        );
        assert_eq!(
            field_of(desuperheater_spray_ratio(4.0, 673.15, 573.15, 5.0, 600.0)),
            "water_temperature_k"
        );
        assert_eq!(
            field_of(desuperheater_spray_ratio(4.0, 673.15, 573.15, 0.0, 373.15)),
            "water_pressure_mpa"
        );
    }

    #[test]
    fn requests_missing_or_bad_fields_name_them() {
        let run = |json: &str| {
            let req: SteamRequest = serde_json::from_str(json).unwrap();
            SteamProperties::validate(&req)
        };
        assert_eq!(field_of(run(r#"{}"#)), "mode");
        assert_eq!(field_of(run(r#"{"mode":"tp"}"#)), "mode");
        assert_eq!(
            field_of(run(r#"{"mode":"pt","temperature_k":300}"#)),
            "pressure_mpa"
        );
        assert_eq!(
            field_of(run(r#"{"mode":"pt","pressure_mpa":1}"#)),
            "temperature_k"
        );
        assert_eq!(
            field_of(run(r#"{"mode":"ph","pressure_mpa":1}"#)),
            "enthalpy_kj_kg"
        );
        assert_eq!(
            field_of(run(r#"{"mode":"ps","pressure_mpa":1}"#)),
            "entropy_kj_kg_k"
        );
        assert_eq!(
            field_of(run(r#"{"mode":"flash","pressure_mpa":1}"#)),
            "flash_pressure_mpa"
        );
        assert_eq!(
            field_of(run(r#"{"mode":"flash","flash_pressure_mpa":0.1}"#)),
            "pressure_mpa"
        );
        assert_eq!(
            field_of(run(
                r#"{"mode":"flash","pressure_mpa":0.1,"flash_pressure_mpa":0.5}"#
            )),
            "flash_pressure_mpa"
        );
        assert_eq!(
            field_of(run(
                r#"{"mode":"desuperheater","pressure_mpa":4,"temperature_k":673.15,"water_temperature_k":373.15}"#
            )),
            "outlet_temperature_k"
        );
        assert_eq!(
            field_of(run(
                r#"{"mode":"pt","pressure_mpa":1,"temperature_k":300,"mass_flow_kg_s":-1}"#
            )),
            "mass_flow_kg_s"
        );
        assert!(serde_json::from_str::<SteamRequest>(r#"{"mode":"pt","pressure_bar":1}"#).is_err());
        assert!(run(r#"{"mode":" PT ","pressure_mpa":1,"temperature_k":300}"#).is_ok());
    }
}
