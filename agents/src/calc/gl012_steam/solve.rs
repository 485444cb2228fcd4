//! Safeguarded Newton iteration on a bracket, shared by every inversion in this module.

use super::CalcError;

/// Relative step (or bracket width) at which an iteration is considered converged.
const TOL: f64 = 1e-13;
/// Bisection alone halves a 2000 K bracket to 1e-13 relative in about 55 steps.
const MAX_ITER: usize = 200;

/// One evaluation of the equation being solved at x.
pub(super) struct Eval {
    /// f(x) - target.
    pub residual: f64,
    /// df/dx; Newton steps are only taken where it is positive and finite.
    pub slope: f64,
    /// True when x lies above the wanted root. Usually `residual > 0`, but callers with a
    /// non-monotone f (the region-3 loop) supply a predicate that stays monotone in x.
    pub above: bool,
}

/// Finds the root of an increasing function inside [lo, hi], starting at x0.
///
/// Newton steps that leave the current bracket or do not at least halve the previous step
/// are replaced by bisection, so the iteration always converges; a root outside [lo, hi]
/// converges to the nearer end, which callers use to clamp at IF97 region boundaries.
pub(super) fn bracketed_newton(
    mut f: impl FnMut(f64) -> Result<Eval, CalcError>,
    mut lo: f64,
    mut hi: f64,
    x0: f64,
    what: &str,
) -> Result<f64, CalcError> {
    let mut x = if x0.is_finite() && x0 > lo && x0 < hi {
        x0
    } else {
        0.5 * (lo + hi)
    };
    let mut last_step = hi - lo;
    for _ in 0..MAX_ITER {
        let e = f(x)?;
        if !e.residual.is_finite() {
            break;
        }
        if e.residual == 0.0 {
            return Ok(x);
        }
        if e.above {
            hi = x;
        } else {
            lo = x;
        }
        let step = e.residual / e.slope;
        let newton = x - step;
        let next = if e.slope > 0.0
            && e.slope.is_finite()
            && newton > lo
            && newton < hi
            && step.abs() <= 0.5 * last_step.abs()
        {
            newton
        } else {
            0.5 * (lo + hi)
        };
        last_step = next - x;
        let scale = x.abs().max(f64::MIN_POSITIVE);
        if last_step.abs() <= TOL * scale || hi - lo <= TOL * scale {
            return Ok(next);
        }
        x = next;
    }
    Err(CalcError::NotConverged { what: what.into() })
}
