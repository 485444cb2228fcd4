//! The double power series sum n x^I y^J of the IF97 basic equations, laid out at compile
//! time for fast evaluation with its first and second derivatives.
//!
//! Summing term by term costs, per term, two integer-to-float conversions and about a dozen
//! multiplications for the derivative factors, and chains every term through six running
//! sums. Instead the terms (sorted by I, as IF97 prints them) are split into groups of equal
//! I: within a group only the y part varies, so each group needs three sums (the value and
//! the first and second y factors, all with precomputed coefficients); the x powers and the
//! I factors are applied once per group. That is about half the arithmetic, and the running
//! sums are a dozen groups long instead of some forty terms.

/// One term of a series: the index of y^J in the y power table and n, n J, n J (J - 1).
type Term = (usize, f64, f64, f64);

/// One group of terms with equal I: its first term, the index of x^I in the x power table,
/// I and I (I - 1).
type Group = (usize, usize, f64, f64);

/// A series of N terms in G groups of equal I.
pub(super) struct Series<const N: usize, const G: usize> {
    terms: [Term; N],
    groups: [Group; G],
}

/// The six sums a basic equation needs, each derivative multiplied by its own variables:
/// s = sum n x^I y^J, x s_x, x^2 s_xx, y s_y, y^2 s_yy, x y s_xy.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sums {
    /// s = sum n x^I y^J.
    pub s: f64,
    /// x ds/dx = sum n I x^I y^J.
    pub x_sx: f64,
    /// x^2 d2s/dx2 = sum n I (I - 1) x^I y^J.
    pub x2_sxx: f64,
    /// y ds/dy = sum n J x^I y^J.
    pub y_sy: f64,
    /// y^2 d2s/dy2 = sum n J (J - 1) x^I y^J.
    pub y2_syy: f64,
    /// x y d2s/dxdy = sum n I J x^I y^J.
    pub xy_sxy: f64,
}

impl<const N: usize, const G: usize> Series<N, G> {
    /// Lays out an IF97 (I, J, n) table whose power tables start at x^x_lo and y^y_lo.
    /// Fails to compile unless the table is sorted by I and has exactly G distinct I.
    pub(super) const fn new(table: &[(i32, i32, f64); N], x_lo: i32, y_lo: i32) -> Self {
        let mut terms = [(0, 0.0, 0.0, 0.0); N];
        let mut groups = [(0, 0, 0.0, 0.0); G];
        let mut g = 0;
        let mut k = 0;
        while k < N {
            let (i, j, n) = table[k];
            if k == 0 || i != table[k - 1].0 {
                assert!(k == 0 || i > table[k - 1].0, "table must be sorted by I");
                assert!(g < G, "more groups of equal I than G");
                let fi = i as f64;
                groups[g] = (k, (i - x_lo) as usize, fi, fi * (fi - 1.0));
                g += 1;
            }
            let fj = j as f64;
            terms[k] = ((j - y_lo) as usize, n, n * fj, n * fj * (fj - 1.0));
            k += 1;
        }
        assert!(g == G, "fewer groups of equal I than G");
        Series { terms, groups }
    }

    /// Per group of equal I: (sum n y^J, sum n J y^J, sum n J (J - 1) y^J), the y part
    /// without the factor x^I. Region 3 keeps these apart as the coefficients of a
    /// polynomial in delta.
    #[inline(always)]
    pub(super) fn group_sums(&self, yp: &[f64]) -> [(f64, f64, f64); G] {
        let mut out = [(0.0, 0.0, 0.0); G];
        for (g, o) in out.iter_mut().enumerate() {
            let end = if g + 1 < G { self.groups[g + 1].0 } else { N };
            let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
            for &(j, n, nj, njj) in &self.terms[self.groups[g].0..end] {
                let y = yp[j];
                a += n * y;
                b += nj * y;
                c += njj * y;
            }
            *o = (a, b, c);
        }
        out
    }

    /// The series and its scaled derivatives from power tables of x and y.
    #[inline(always)]
    pub(super) fn eval(&self, xp: &[f64], yp: &[f64]) -> Sums {
        let mut r = Sums {
            s: 0.0,
            x_sx: 0.0,
            x2_sxx: 0.0,
            y_sy: 0.0,
            y2_syy: 0.0,
            xy_sxy: 0.0,
        };
        for (&(a, b, c), &(_, xi, fi, fii)) in self.group_sums(yp).iter().zip(&self.groups) {
            let x = xp[xi];
            let (a, b, c) = (a * x, b * x, c * x);
            r.s += a;
            r.x_sx += fi * a;
            r.x2_sxx += fii * a;
            r.y_sy += b;
            r.y2_syy += c;
            r.xy_sxy += fi * b;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::super::powers;
    use super::*;

    /// The grouped evaluation equals the plain term-by-term sum, derivatives included.
    #[test]
    fn grouped_sums_match_term_by_term() {
        const TABLE: [(i32, i32, f64); 7] = [
            (0, -2, 0.7),
            (0, 3, -1.1),
            (1, 0, 0.3),
            (1, 5, 2.0),
            (3, -1, -0.4),
            (3, 2, 0.9),
            (4, 4, 0.05),
        ];
        const S: Series<7, 4> = Series::new(&TABLE, 0, -2);
        let (x, y) = (1.3, 0.8);
        let xp: [f64; 5] = powers(x, 0);
        let yp: [f64; 8] = powers(y, -2);
        let got = S.eval(&xp, &yp);
        let mut want = [0.0; 6];
        for (i, j, n) in TABLE {
            let t = n * x.powi(i) * y.powi(j);
            let (fi, fj) = (f64::from(i), f64::from(j));
            for (w, f) in
                want.iter_mut()
                    .zip([1.0, fi, fi * (fi - 1.0), fj, fj * (fj - 1.0), fi * fj])
            {
                *w += f * t;
            }
        }
        let got = [
            got.s, got.x_sx, got.x2_sxx, got.y_sy, got.y2_syy, got.xy_sxy,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-14 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
}
