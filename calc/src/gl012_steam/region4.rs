//! IF97 region 4 (saturation line, Eqs. 30-31, Table 34) and the B23 boundary between
//! regions 2 and 3 (Eqs. 5-6, Table 1).

/// n1..n10 of IF97 Table 34.
const N: [f64; 10] = [
    0.116_705_214_527_67e4,
    -0.724_213_167_032_06e6,
    -0.170_738_469_400_92e2,
    0.120_208_247_024_70e5,
    -0.323_255_503_223_33e7,
    0.149_151_086_135_30e2,
    -0.482_326_573_615_91e4,
    0.405_113_405_420_57e6,
    -0.238_555_575_678_49,
    0.650_175_348_447_98e3,
];

/// n1..n5 of IF97 Table 1 (B23).
const B23: [f64; 5] = [
    0.348_051_856_289_69e3,
    -0.116_718_598_799_75e1,
    0.101_929_700_393_26e-2,
    0.572_544_598_627_46e3,
    0.139_188_397_788_70e2,
];

/// Saturation pressure, MPa, at T in [273.15, 647.096] K (Eq. 30).
pub(super) fn p_sat(t: f64) -> f64 {
    let th = t + N[8] / (t - N[9]);
    let a = th * th + N[0] * th + N[1];
    let b = N[2] * th * th + N[3] * th + N[4];
    let c = N[5] * th * th + N[6] * th + N[7];
    let r = 2.0 * c / (-b + (b * b - 4.0 * a * c).sqrt());
    let r2 = r * r;
    r2 * r2
}

/// Saturation temperature, K, at p in [611.212677 Pa, 22.064 MPa] (Eq. 31).
pub(super) fn t_sat(p: f64) -> f64 {
    let beta = p.sqrt().sqrt();
    let e = beta * beta + N[2] * beta + N[5];
    let f = N[0] * beta * beta + N[3] * beta + N[6];
    let g = N[1] * beta * beta + N[4] * beta + N[7];
    let d = 2.0 * g / (-f - (f * f - 4.0 * e * g).sqrt());
    let nd = N[9] + d;
    0.5 * (nd - (nd * nd - 4.0 * (N[8] + N[9] * d)).sqrt())
}

/// Pressure, MPa, on the B23 line at T in [623.15, 863.15] K (Eq. 5).
pub(super) fn p_b23(t: f64) -> f64 {
    B23[0] + B23[1] * t + B23[2] * t * t
}

/// Temperature, K, on the B23 line at p in [16.529, 100] MPa (Eq. 6).
pub(super) fn t_b23(p: f64) -> f64 {
    B23[3] + ((p - B23[4]) / B23[2]).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IAPWS R7-97(2012), check value below Eq. 6.
    #[test]
    fn b23_check_values() {
        assert!((p_b23(0.623_15e3) / 0.165_291_643e2 - 1.0).abs() < 1e-8);
        assert!((t_b23(0.165_291_643e2) / 0.623_15e3 - 1.0).abs() < 1e-8);
    }
}
