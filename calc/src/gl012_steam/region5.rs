//! IF97 region 5 (high-temperature vapour, 1073.15-2273.15 K, p <= 50 MPa): basic Gibbs
//! equation (Eqs. 32-34, Tables 37-38 as revised in 2007 for the extension to 50 MPa).

use super::{Gibbs, powers};

const T_STAR: f64 = 1000.0;

/// (J, n) of IF97 Table 37, ideal-gas part: gamma0 = ln pi + sum n tau^J.
const IDEAL: [(i32, f64); 6] = [
    (0, -0.131_799_836_742_01e2),
    (1, 0.685_408_416_344_34e1),
    (-3, -0.248_051_489_334_66e-1),
    (-2, 0.369_015_349_803_33),
    (-1, -0.311_613_182_139_25e1),
    (2, -0.329_616_265_389_17),
];

/// (I, J, n) of IF97 Table 38, residual part: gammar = sum n pi^I tau^J.
const RESIDUAL: [(i32, i32, f64); 6] = [
    (1, 1, 0.157_364_048_552_59e-2),
    (1, 2, 0.901_537_616_739_44e-3),
    (1, 3, -0.502_700_776_776_48e-2),
    (2, 3, 0.224_400_374_094_85e-5),
    (2, 9, -0.411_632_754_534_71e-5),
    (3, 7, 0.379_194_548_229_55e-7),
];

/// Dimensionless Gibbs energy (ideal + residual) and its scaled derivatives at (p MPa, T K).
pub(super) fn gibbs(p: f64, t: f64) -> Gibbs {
    let pi = p;
    let tau = T_STAR / t;
    let tp: [f64; 13] = powers(tau, -3);
    let xp: [f64; 4] = powers(pi, 0);
    let mut g = pi.ln();
    let (mut sj, mut sjj) = (0.0, 0.0);
    for &(j, n) in &IDEAL {
        let term = n * tp[(j + 3) as usize];
        let fj = f64::from(j);
        g += term;
        sj += fj * term;
        sjj += fj * (fj - 1.0) * term;
    }
    let (mut si, mut sii, mut sij) = (0.0, 0.0, 0.0);
    for &(i, j, n) in &RESIDUAL {
        let term = n * xp[i as usize] * tp[(j + 3) as usize];
        let (fi, fj) = (f64::from(i), f64::from(j));
        g += term;
        si += fi * term;
        sii += fi * (fi - 1.0) * term;
        sj += fj * term;
        sjj += fj * (fj - 1.0) * term;
        sij += fi * fj * term;
    }
    Gibbs {
        g,
        pi_g_p: 1.0 + si,
        pi2_g_pp: -1.0 + sii,
        tau_g_t: sj,
        tau2_g_tt: sjj,
        pi_tau_g_pt: sij,
    }
}
