//! IF97 region 3 (near-critical, 623.15 K < T <= T_B23(p)): basic Helmholtz equation
//! (Eq. 28, Table 30) and its inversion rho(p, T) by a bracketed Halley iteration.
//!
//! The iteration is cheap because T is fixed while it runs: [`Isotherm`] collects the tau
//! part of Eq. 28 once, after which each step evaluates three 12-coefficient polynomials in
//! delta. A whole region-3 (p,T) call takes about four steps and some 250 ns in release.
//!
//! The IAPWS backward equations v(p,T) (SR5-05) would give a start value good enough for one
//! or two steps instead of about four. They are not used: choosing among their 20-odd
//! subregions and evaluating a 30-odd-term equation with fractional powers is estimated (not
//! measured) to cost about what the two or three saved steps do, and would add roughly a
//! thousand coefficients, each needing its published check values.

use super::series::Series;
use super::solve::{Eval, bracketed_newton};
use super::{CalcError, R, powers};

/// Critical density, kg/m3, the reducing density of region 3.
pub(super) const RHO_C: f64 = 322.0;
/// Critical temperature, K, the reducing temperature of region 3.
pub(super) const T_C: f64 = 647.096;

/// 1 / RHO_C: delta = rho / rho_c sits at the head of every step's dependency chain, and a
/// multiplication is several times quicker than a division.
const INV_RHO_C: f64 = 1.0 / RHO_C;

/// Lowest density searched; p(1 kg/m3) is far below any region-3 pressure (>= 16.5 MPa).
const RHO_LO: f64 = 1.0;
/// Highest density searched: p(RHO_HI) exceeds 100 MPa with dp/drho > 0 at every region-3
/// temperature (tested). The basic equation turns over near 830 kg/m3 at 863 K, so this
/// must not be raised carelessly.
const RHO_HI: f64 = 800.0;

/// n1 of Table 30, the coefficient of ln(delta).
const N1: f64 = 0.106_580_700_285_13e1;

/// (I, J, n) of IF97 Table 30, terms 2..40: phi = n1 ln delta + sum n delta^I tau^J.
const TERMS: [(i32, i32, f64); 39] = [
    (0, 0, -0.157_328_452_902_39e2),
    (0, 1, 0.209_443_969_743_07e2),
    (0, 2, -0.768_677_078_787_16e1),
    (0, 7, 0.261_859_477_879_54e1),
    (0, 10, -0.280_807_811_486_20e1),
    (0, 12, 0.120_533_696_965_17e1),
    (0, 23, -0.845_668_128_125_02e-2),
    (1, 2, -0.126_543_154_777_14e1),
    (1, 6, -0.115_244_078_066_81e1),
    (1, 15, 0.885_210_439_843_18),
    (1, 17, -0.642_077_651_816_07),
    (2, 0, 0.384_934_601_866_71),
    (2, 2, -0.852_147_088_242_06),
    (2, 6, 0.489_722_815_418_77e1),
    (2, 7, -0.305_026_172_569_65e1),
    (2, 22, 0.394_205_368_791_54e-1),
    (2, 26, 0.125_584_084_243_08),
    (3, 0, -0.279_993_296_987_10),
    (3, 2, 0.138_997_995_694_60e1),
    (3, 4, -0.201_899_150_235_70e1),
    (3, 16, -0.821_476_371_739_63e-2),
    (3, 26, -0.475_960_357_349_23),
    (4, 0, 0.439_840_744_735_00e-1),
    (4, 2, -0.444_764_354_287_39),
    (4, 4, 0.905_720_707_197_33),
    (4, 26, 0.705_224_500_879_67),
    (5, 1, 0.107_705_126_263_32),
    (5, 3, -0.329_136_232_589_54),
    (5, 26, -0.508_710_620_411_58),
    (6, 0, -0.221_754_008_730_96e-1),
    (6, 2, 0.942_607_516_650_92e-1),
    (6, 26, 0.164_362_784_479_61),
    (7, 2, -0.135_033_722_413_48e-1),
    (8, 26, -0.148_343_453_524_72e-1),
    (9, 2, 0.579_229_536_280_84e-3),
    (9, 26, 0.323_089_047_037_11e-2),
    (10, 0, 0.809_648_029_962_15e-4),
    (10, 1, -0.165_576_797_950_37e-3),
    (11, 26, -0.449_238_990_618_15e-4),
];

/// Dimensionless Helmholtz energy phi and its derivatives, each scaled by its own variables
/// (delta phi_delta, tau^2 phi_tautau, ...) so no property formula divides by delta or tau.
#[derive(Debug, Clone, Copy)]
pub(super) struct Helmholtz {
    pub phi: f64,
    pub d_fd: f64,
    pub d2_fdd: f64,
    pub t_ft: f64,
    pub t2_ftt: f64,
    pub dt_fdt: f64,
}

impl Helmholtz {
    /// Pressure, MPa.
    pub fn pressure(&self, rho: f64, t: f64) -> f64 {
        rho * R * t * self.d_fd / 1000.0
    }

    /// (dp/drho)_T, MPa per kg/m3; <= 0 inside the spinodal loop below T_c. The solver
    /// takes it from [`Isotherm::pressure_slope`]; the tests check the roots with it.
    #[cfg(test)]
    pub fn dp_drho(&self, t: f64) -> f64 {
        R * t * (2.0 * self.d_fd + self.d2_fdd) / 1000.0
    }
}

/// Number of delta powers in Eq. 28 (I = 0..=11).
const N_DELTA: usize = 12;

/// TERMS laid out for evaluation: one group per power of delta, tau powers from tau^0.
const SERIES: Series<39, N_DELTA> = Series::new(&TERMS, 0, 0);

/// Eq. 28 along one isotherm. At fixed T the equation is a polynomial in delta (plus the
/// n1 ln delta term): phi = n1 ln delta + sum_i c_i delta^i with c_i = sum_{I=i} n tau^J.
/// Collecting the tau part once per temperature leaves a 12-coefficient polynomial per
/// density, so every step of the rho(p, T) iteration costs a few short polynomials instead
/// of the full 39-term double sum with its 27-entry tau power table. Each coefficient array
/// already carries the factor its derivative needs, so every quantity is one polynomial.
#[derive(Debug, Clone, Copy)]
pub(super) struct Isotherm {
    /// R T in MPa per kg/m3 (kJ/kg = 1000 Pa m3/kg), the scale of p = rho R T delta phi_delta.
    rt: f64,
    /// c_i: phi = n1 ln delta + sum c_i delta^i.
    c: [f64; N_DELTA],
    /// i c_i: delta phi_delta = n1 + sum i c_i delta^i.
    ic: [f64; N_DELTA],
    /// i (i - 1) c_i: delta^2 phi_deltadelta = -n1 + sum i (i - 1) c_i delta^i.
    i2c: [f64; N_DELTA],
    /// i (i + 1) c_i: 2 delta phi_delta + delta^2 phi_deltadelta = n1 + sum i (i + 1) c_i
    /// delta^i, the combination dp/drho is proportional to.
    iic: [f64; N_DELTA],
    /// (i + 1)^2 (i + 2) c_(i+1): the delta-derivative of the previous polynomial, for the
    /// curvature d2p/drho2 Halley's method uses.
    curv: [f64; N_DELTA],
    /// sum_{I=i} n J tau^J: tau phi_tau = sum cj_i delta^i.
    cj: [f64; N_DELTA],
    /// i cj_i: delta tau phi_deltatau = sum i cj_i delta^i.
    icj: [f64; N_DELTA],
    /// sum_{I=i} n J (J - 1) tau^J: tau^2 phi_tautau = sum cjj_i delta^i.
    cjj: [f64; N_DELTA],
}

/// delta, delta^2, delta^4, delta^8: shared by every polynomial of one evaluation.
#[derive(Clone, Copy)]
struct DeltaPowers([f64; 4]);

impl DeltaPowers {
    #[inline(always)]
    fn new(delta: f64) -> Self {
        let d2 = delta * delta;
        let d4 = d2 * d2;
        DeltaPowers([delta, d2, d4, d4 * d4])
    }

    /// sum a_i delta^i by Estrin's scheme: pairs, then pairs of pairs. Horner's rule would be
    /// a chain of 11 dependent multiply-adds; this is 4 deep, and the rho(p, T) iteration is
    /// latency-bound. Plain multiply and add, not `mul_add`: the crate is built for baseline
    /// x86-64, where `mul_add` is a call into a software FMA.
    #[inline(always)]
    fn poly(&self, a: &[f64; N_DELTA]) -> f64 {
        let [d, d2, d4, d8] = self.0;
        let p0 = a[0] + a[1] * d;
        let p1 = a[2] + a[3] * d;
        let p2 = a[4] + a[5] * d;
        let p3 = a[6] + a[7] * d;
        let p4 = a[8] + a[9] * d;
        let p5 = a[10] + a[11] * d;
        let q0 = p0 + p1 * d2;
        let q1 = p2 + p3 * d2;
        let q2 = p4 + p5 * d2;
        (q0 + q1 * d4) + q2 * d8
    }
}

impl Isotherm {
    /// Collects the tau part of Eq. 28 at T (K).
    pub(super) fn new(t: f64) -> Self {
        let tau = T_C / t;
        let tp: [f64; 27] = powers(tau, 0);
        let mut c = [0.0; N_DELTA];
        let mut cj = [0.0; N_DELTA];
        let mut cjj = [0.0; N_DELTA];
        for (i, (s, sj, sjj)) in SERIES.group_sums(&tp).into_iter().enumerate() {
            c[i] = s;
            cj[i] = sj;
            cjj[i] = sjj;
        }
        let mut ic = [0.0; N_DELTA];
        let mut i2c = [0.0; N_DELTA];
        let mut iic = [0.0; N_DELTA];
        let mut curv = [0.0; N_DELTA];
        let mut icj = [0.0; N_DELTA];
        for i in 0..N_DELTA {
            let fi = i as f64;
            ic[i] = fi * c[i];
            i2c[i] = fi * (fi - 1.0) * c[i];
            iic[i] = fi * (fi + 1.0) * c[i];
            icj[i] = fi * cj[i];
            if i > 0 {
                curv[i - 1] = fi * fi * (fi + 1.0) * c[i];
            }
        }
        Isotherm {
            rt: R * t / 1000.0,
            c,
            ic,
            i2c,
            iic,
            curv,
            cj,
            icj,
            cjj,
        }
    }

    /// Pressure p (MPa), dp/drho (MPa per kg/m3) and d2p/drho2 at density rho (kg/m3): all a
    /// step of the density iteration needs, without the logarithm or the tau derivatives.
    #[inline(always)]
    pub(super) fn pressure_slope(&self, rho: f64) -> (f64, f64, f64) {
        let d = DeltaPowers::new(rho * INV_RHO_C);
        let rt = self.rt;
        let d_fd = N1 + d.poly(&self.ic);
        let a = N1 + d.poly(&self.iic);
        (rho * rt * d_fd, rt * a, rt * INV_RHO_C * d.poly(&self.curv))
    }

    /// Eq. 28 and all its scaled derivatives at density rho (kg/m3).
    pub(super) fn at(&self, rho: f64) -> Helmholtz {
        let delta = rho * INV_RHO_C;
        let d = DeltaPowers::new(delta);
        Helmholtz {
            phi: N1 * delta.ln() + d.poly(&self.c),
            d_fd: N1 + d.poly(&self.ic),
            d2_fdd: -N1 + d.poly(&self.i2c),
            t_ft: d.poly(&self.cj),
            t2_ftt: d.poly(&self.cjj),
            dt_fdt: d.poly(&self.icj),
        }
    }
}

/// Evaluates Eq. 28 at (rho kg/m3, T K).
pub(super) fn helmholtz(rho: f64, t: f64) -> Helmholtz {
    Isotherm::new(t).at(rho)
}

/// Saturated liquid density estimate (IAPWS SR1-86(1992) auxiliary equation), a start value.
fn aux_rho_liquid(t: f64) -> f64 {
    let c = (1.0 - t / T_C).max(0.0).cbrt();
    RHO_C
        * (1.0 + 1.992_740_64 * c + 1.099_653_42 * c * c
            - 0.510_839_303 * c.powi(5)
            - 1.754_934_79 * c.powi(16)
            - 45.517_035_2 * c.powi(43)
            - 6.746_944_50e5 * c.powi(110))
}

/// Saturated vapour density estimate (IAPWS SR1-86(1992) auxiliary equation), a start value.
fn aux_rho_vapour(t: f64) -> f64 {
    let d = (1.0 - t / T_C).max(0.0).cbrt().sqrt();
    RHO_C
        * (-2.031_502_40 * d.powi(2)
            - 2.683_029_40 * d.powi(4)
            - 5.386_264_92 * d.powi(8)
            - 17.299_160_5 * d.powi(18)
            - 44.758_658_1 * d.powi(37)
            - 63.920_106_3 * d.powi(71))
        .exp()
}

/// Density, kg/m3, at (p MPa, T K) in region 3. Below T_c the isotherm has a van der Waals
/// loop; `liquid` picks the branch (the caller knows which side of p_sat it is on). The
/// module itself uses [`solve_pt`], which also returns Eq. 28 at the root.
#[cfg(test)]
pub(super) fn rho_pt(p: f64, t: f64, liquid: bool) -> Result<f64, CalcError> {
    solve_pt(p, t, liquid).map(|(rho, _)| rho)
}

/// Density, kg/m3, at (p MPa, T K) in region 3 and Eq. 28 evaluated there, so callers get
/// the state without setting up the isotherm a second time. Below T_c the isotherm has a van
/// der Waals loop; `liquid` picks the branch (the caller knows which side of p_sat it is on).
///
/// The search keeps a bracket [lo, hi] on a predicate that is false below the wanted root and
/// true above it even inside the loop: on the liquid branch "dp/drho > 0 and p > target", on
/// the vapour branch "not (dp/drho > 0 and p < target)". Halley or Newton steps are taken
/// only where dp/drho > 0, so the iteration cannot wander onto the other branch.
pub(super) fn solve_pt(p: f64, t: f64, liquid: bool) -> Result<(f64, Helmholtz), CalcError> {
    #[derive(Clone, Copy)]
    enum Branch {
        Supercritical,
        Liquid,
        Vapour,
    }
    let (branch, lo, hi, guess) = if t >= T_C {
        // Not rho_c: the critical isochore is where the isotherm is flattest, so the first
        // step from there is thrown away. Above T_c most of region 3 lies on the liquid-like
        // side (roots of 130 to 730 kg/m3, mostly above 400); starting half way up that side
        // saves about half an evaluation on average over the region (counted on the grid of
        // density_reproduces_pressure_on_a_grid).
        (
            Branch::Supercritical,
            RHO_LO,
            RHO_HI,
            0.5 * (RHO_C + RHO_HI),
        )
    } else if liquid {
        (Branch::Liquid, RHO_C, RHO_HI, aux_rho_liquid(t))
    } else {
        (Branch::Vapour, RHO_LO, RHO_C, aux_rho_vapour(t))
    };
    let iso = Isotherm::new(t);
    let rho = bracketed_newton(
        |rho| {
            // With the curvature the steps are Halley's: over the grid of the test
            // density_reproduces_pressure_on_a_grid they take 4.4 evaluations on average
            // (Newton's steps from rho_c: 6.3), for one more short polynomial in each.
            let (pressure, slope, curvature) = iso.pressure_slope(rho);
            let residual = pressure - p;
            let above = match branch {
                Branch::Supercritical => residual > 0.0,
                Branch::Liquid => slope > 0.0 && residual > 0.0,
                Branch::Vapour => !(slope > 0.0 && residual < 0.0),
            };
            Ok(Eval {
                residual,
                slope,
                curvature,
                above,
            })
        },
        lo,
        hi,
        guess,
        "region 3 density from (p, T)",
    )?;
    // Near the critical point the branch may end (spinodal) before reaching p; refuse rather
    // than return a density that does not reproduce the pressure.
    let f = iso.at(rho);
    if (f.pressure(rho, t) - p).abs() > 1e-7 * p {
        return Err(CalcError::NotConverged {
            what: format!("region 3 density at p = {p} MPa, T = {t} K"),
        });
    }
    Ok((rho, f))
}

#[cfg(test)]
mod tests {
    use super::super::region4::{p_b23, p_sat};
    use super::*;

    /// The bracket ends must bound every region-3 root: p(RHO_HI) > 100 MPa with positive
    /// slope, and the critical isochore lies inside the loop below T_c.
    #[test]
    fn bracket_ends_hold_over_region_3() {
        let mut t = 623.15;
        while t <= 863.15 {
            let f = helmholtz(RHO_HI, t);
            assert!(f.pressure(RHO_HI, t) > 100.0 && f.dp_drho(t) > 0.0, "T {t}");
            if t < T_C {
                assert!(helmholtz(RHO_C, t).dp_drho(t) < 0.0, "T {t}");
            }
            t += 0.25;
        }
    }

    #[test]
    fn density_reproduces_pressure_on_a_grid() {
        let mut t = 623.2;
        while t < 863.15 {
            let mut p = p_b23(t).max(16.53) + 1e-6;
            while p <= 100.0 {
                let liquid = t >= T_C || p >= p_sat(t);
                let rho = rho_pt(p, t, liquid).unwrap();
                let f = helmholtz(rho, t);
                assert!((f.pressure(rho, t) / p - 1.0).abs() < 1e-12, "p {p} T {t}");
                assert!(f.dp_drho(t) >= 0.0, "unstable root at p {p} T {t}");
                if t < T_C {
                    assert_eq!(rho > RHO_C, liquid, "wrong branch at p {p} T {t}");
                }
                p += 0.37;
            }
            t += 1.3;
        }
    }
}
