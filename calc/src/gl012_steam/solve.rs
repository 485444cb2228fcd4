//! Safeguarded Newton iteration on a bracket, shared by every inversion in this module.

use super::CalcError;

/// Relative step (or bracket width) at which an iteration is considered converged.
const TOL: f64 = 1e-13;
/// Relative step below which a Newton step that fails to halve is taken as noise (see below).
const STALL: f64 = 1e-9;
/// Bisection alone halves a 2000 K bracket to 1e-13 relative in about 55 steps.
const MAX_ITER: usize = 200;

/// One evaluation of the equation being solved at x.
pub(super) struct Eval {
    /// f(x) - target.
    pub residual: f64,
    /// df/dx; Newton steps are only taken where it is positive and finite.
    pub slope: f64,
    /// d2f/dx2 if the caller has it cheaply, else 0. When given, the step is Halley's
    /// (cubic convergence) instead of Newton's.
    pub curvature: f64,
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
        // Halley: 2 f f' / (2 f'^2 - f f''), one division like Newton's f / f'. Far from the
        // root the denominator can change sign; Newton's step is used there.
        let halley = 2.0 * e.slope * e.slope - e.residual * e.curvature;
        let step = if e.curvature != 0.0 && halley > 0.0 {
            2.0 * e.residual * e.slope / halley
        } else {
            e.residual / e.slope
        };
        let newton = x - step;
        let usable = e.slope > 0.0 && e.slope.is_finite();
        let scale = x.abs().max(f64::MIN_POSITIVE);
        // A step below the tolerance means x is the root to rounding. Test this before the
        // bracket: approaching from one side, the step can round to nothing (newton == x ==
        // lo or hi), and treating that as a step out of the bracket would bisect a bracket
        // whose far end has not moved: up to some 45 wasted evaluations in region 3.
        if usable && step.abs() <= TOL * scale {
            return Ok(newton.max(lo).min(hi));
        }
        let inside = usable && newton > lo && newton < hi;
        // After a step already below STALL the error left is below TOL (quadratic or better
        // convergence); a step that then fails to halve is rounding noise in the residual,
        // as where dp/drho nearly vanishes around the critical point. Stop at x rather than
        // bisect a bracket whose far end has not moved.
        if inside && step.abs() > 0.5 * last_step.abs() && last_step.abs() <= STALL * scale {
            return Ok(x);
        }
        let next = if inside && step.abs() <= 0.5 * last_step.abs() {
            newton
        } else {
            0.5 * (lo + hi)
        };
        last_step = next - x;
        if last_step.abs() <= TOL * scale || hi - lo <= TOL * scale {
            return Ok(next);
        }
        x = next;
    }
    Err(CalcError::NotConverged { what: what.into() })
}
