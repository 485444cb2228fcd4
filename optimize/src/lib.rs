//! heatmesh-optimize: GL-001 multi-plant heat distribution: scenario format, LP/MILP
//! dispatch, greedy fallback, independent verification and reporting. Pure computation: no
//! I/O beyond reading a scenario file, no async, no global state; its dependency list (no
//! tokio, ractor, proto or storage) keeps it so.
//!
//! Entry point: [`optimize`]. Format and output are documented in `docs/optimize.md`.

pub mod bench;
pub mod formulate;
mod greedy;
mod model;
pub mod scenario;
pub mod solution;
pub mod verify;

#[cfg(test)]
mod tests;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

pub use bench::{BenchFigures, GeneratorParams, bench, generate};
pub use formulate::Engine;
pub use scenario::{
    Algorithm, Basis, EmissionFactor, EmissionUnit, FieldError, HeatCost, Link, LpSolverChoice,
    Mode, Options, Plant, Scenario, ScenarioError, Unit, UnitKind,
};
pub use solution::{
    AlgorithmUsed, CostBreakdown, DispatchResult, LinkFlow, PlantResult, Status, UnitSetpoint,
};
pub use verify::{TOLERANCE, Violation, ViolationKind, verify};

use formulate::{AUTO_CLARABEL_MIN_PLANTS, Binaries, Failure, Goal, Solved, Spec};
use model::{Dispatch, Model};

/// Why `optimize` returned no dispatch at all.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    /// The scenario is malformed or breaks a validation rule.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Neither the solver nor the heuristic produced a dispatch that passes verification;
    /// returned instead of an unverified answer.
    #[error("no verified dispatch: {0}")]
    NoVerifiedDispatch(String),
}

/// Values closer than this to a bound are snapped onto it before verification, so reports do
/// not show solver round-off such as -3e-12 MW.
const SNAP: f64 = 1e-9;

/// Solve a scenario: LP, or MILP when a unit is switchable, with greedy fallback; every
/// returned dispatch has passed [`verify()`]-level checks.
pub fn optimize(scenario: &Scenario) -> Result<DispatchResult, OptimizeError> {
    let t0 = Instant::now();
    let model = Arc::new(Model::new(scenario)?);
    let opts = &scenario.options;
    let budget = Duration::from_millis(opts.time_budget_ms);
    let mut warnings = Vec::new();
    let want = match opts.algorithm {
        Algorithm::Auto if model.has_binaries() => AlgorithmUsed::Milp,
        Algorithm::Auto | Algorithm::Lp => AlgorithmUsed::Lp,
        Algorithm::Milp => AlgorithmUsed::Milp,
        Algorithm::Greedy => AlgorithmUsed::Greedy,
    };
    let ctx = Ctx {
        model: &model,
        t0,
        budget,
        marginal_costs: opts.marginal_costs,
    };
    if want == AlgorithmUsed::Greedy {
        return ctx.greedy_result(None, want, warnings);
    }
    let engine = pick_engine(&model, want, opts.lp_solver, &mut warnings);
    let spec = Spec {
        elastic: model.elastic,
        binaries: Binaries::Integer,
        goal: Goal::Cost,
    };
    let t_solve = Instant::now();
    let answer = run_budgeted(&model, spec, engine, budget);
    let solve_ms = ms(t_solve.elapsed());
    match answer {
        Ok(solved) => {
            let mut x = solved.dispatch.clone();
            clean(&model, &mut x);
            let violations = verify::check(&model, &x);
            if let Some(bad) = violations.iter().find(|v| !v.is_slack()) {
                let reason = format!(
                    "{engine:?} answer failed verification ({}: {})",
                    bad.constraint, bad.detail
                );
                return ctx.greedy_result(Some(reason), want, warnings);
            }
            ctx.exact_result(&solved, x, violations, want, solve_ms, warnings)
        }
        Err(Failure::Infeasible) if !model.elastic => {
            ctx.diagnose_strict(engine, want, solve_ms, warnings)
        }
        Err(failure) => ctx.greedy_result(Some(failure.to_string()), want, warnings),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pick_engine(
    m: &Model,
    want: AlgorithmUsed,
    choice: LpSolverChoice,
    warnings: &mut Vec<String>,
) -> Engine {
    let integer = want == AlgorithmUsed::Milp && m.has_binaries();
    match choice {
        LpSolverChoice::Highs => Engine::Highs,
        LpSolverChoice::Clarabel if integer => {
            warnings.push("clarabel cannot solve MILPs; microlp used instead".to_string());
            Engine::Microlp
        }
        _ if integer => Engine::Microlp,
        LpSolverChoice::Microlp => Engine::Microlp,
        LpSolverChoice::Clarabel => Engine::Clarabel,
        LpSolverChoice::Auto => lp_engine_by_size(m),
    }
}

/// The faster LP engine for this size, per the `optbench` measurements.
fn lp_engine_by_size(m: &Model) -> Engine {
    if m.plants.len() >= AUTO_CLARABEL_MIN_PLANTS {
        Engine::Clarabel
    } else {
        Engine::Microlp
    }
}

/// Snap round-off and, in elastic mode, recompute slack so each balance closes exactly.
fn clean(m: &Model, x: &mut Dispatch) {
    x.snap(m, SNAP);
    if m.elastic {
        x.close_slack(m);
        for v in x.s.iter_mut().chain(x.d.iter_mut()) {
            if *v <= SNAP {
                *v = 0.0;
            }
        }
    }
}

/// Most solver threads at once, abandoned ones included. A solve past its budget keeps its
/// thread until the solver's own deadline stops it (shortly after); a new solve waits for a
/// slot (within its budget, then the greedy merit order answers with a warning), so threads
/// never pile up.
pub const MAX_SOLVER_THREADS: usize = 4;

static SOLVERS: Slots = Slots::new();

/// Solver threads running now (abandoned ones included).
pub fn solver_threads() -> usize {
    SOLVERS.running()
}

/// A counted pool of solver-thread slots.
struct Slots {
    running: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Slots {
    const fn new() -> Slots {
        Slots {
            running: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
        }
    }

    fn running(&self) -> usize {
        *self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `wait` for one of `max` slots.
    fn claim(&'static self, max: usize, wait: Duration) -> Option<SolverSlot> {
        let guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let (mut n, _) = self
            .freed
            .wait_timeout_while(guard, wait, |n| *n >= max)
            .unwrap_or_else(|e| e.into_inner());
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SolverSlot(self))
    }
}

/// A claim on a slot, released when dropped (its thread ends, answered or abandoned).
struct SolverSlot(&'static Slots);

impl Drop for SolverSlot {
    fn drop(&mut self) {
        *self.0.running.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

/// Run one solve on a worker thread and wait at most `budget`.
///
/// microlp 0.6 checks its deadline every 1000 simplex pivots and between branch-and-bound
/// nodes and clarabel checks `time_limit` per iteration, so both are given 90 % of the budget.
/// Model construction, LU factorisations and the pivots between checks are not interruptible,
/// so the caller also stops waiting at the budget and abandons the thread (Rust cannot kill a
/// thread); it finishes on its own shortly after and its answer is dropped.
fn run_budgeted(
    model: &Arc<Model>,
    spec: Spec,
    engine: Engine,
    budget: Duration,
) -> Result<Solved, Failure> {
    let t0 = Instant::now();
    let Some(slot) = SOLVERS.claim(MAX_SOLVER_THREADS, budget / 2) else {
        return Err(Failure::Other(format!(
            "{MAX_SOLVER_THREADS} solver threads still running (earlier solves past their budget)"
        )));
    };
    let budget = budget.saturating_sub(t0.elapsed());
    let (tx, rx) = mpsc::channel();
    let m = Arc::clone(model);
    let inner = budget.mul_f64(0.9);
    let spawned = std::thread::Builder::new()
        .name("gl001-solver".to_string())
        .spawn(move || {
            let _slot = slot;
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                formulate::solve(&m, &spec, engine, inner)
            }))
            .unwrap_or_else(|_| Err(Failure::Other(format!("{engine:?} panicked"))));
            // The receiver may have given up already; that is the abandonment case.
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(Failure::Other(format!("cannot start solver thread: {e}")));
    }
    match rx.recv_timeout(budget) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Failure::TimeLimit(format!(
            "{engine:?} gave no answer within {} ms; solver thread abandoned",
            budget.as_millis()
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Failure::Other(format!(
            "{engine:?} thread ended without an answer"
        ))),
    }
}

/// Everything about a run except the dispatch itself, gathered before reporting.
struct Outcome {
    status: Status,
    algorithm: AlgorithmUsed,
    engine: Option<Engine>,
    /// Per-plant marginal costs and how they were obtained.
    marginal: (Option<Vec<f64>>, Option<String>),
    bound: Option<f64>,
    fallback_reason: Option<String>,
    violations: Vec<Violation>,
    warnings: Vec<String>,
    solve_ms: f64,
}

struct Ctx<'a> {
    model: &'a Arc<Model>,
    t0: Instant,
    budget: Duration,
    /// Whether an extra solve for marginal costs is wanted (free duals are always kept).
    marginal_costs: bool,
}

impl Ctx<'_> {
    /// Budget left for auxiliary solves, with a floor so marginal costs are not starved by a
    /// primal solve that used most of a short budget.
    fn remaining(&self) -> Duration {
        let left = self.budget.saturating_sub(self.t0.elapsed());
        left.max(self.budget / 5).max(Duration::from_millis(50))
    }

    fn assemble(&self, x: &Dispatch, o: Outcome) -> DispatchResult {
        let m = self.model;
        let Outcome {
            status,
            algorithm,
            engine,
            marginal,
            bound,
            fallback_reason,
            violations,
            warnings,
            solve_ms,
        } = o;
        let rep = solution::report(m, x, marginal.0.as_deref());
        let objective = rep.costs.total_eur_h;
        let bound = bound.filter(|b| b.is_finite());
        let gap = bound.map(|b| ((objective - b) / objective.abs().max(1.0)).max(0.0));
        DispatchResult {
            status,
            algorithm,
            engine,
            fallback_reason,
            mode: if m.elastic {
                Mode::Elastic
            } else {
                Mode::Strict
            },
            objective_eur_h: objective,
            lower_bound_eur_h: bound,
            gap,
            costs: rep.costs,
            co2_t_h: rep.co2_t_h,
            units: rep.units,
            links: rep.links,
            plants: rep.plants,
            marginal_cost_method: marginal.1,
            violations,
            warnings,
            unserved_penalty_eur_mwh: m.m,
            dump_penalty_eur_mwh: m.dump,
            solve_time_ms: solve_ms,
            total_time_ms: ms(self.t0.elapsed()),
        }
    }

    fn exact_result(
        &self,
        solved: &Solved,
        x: Dispatch,
        violations: Vec<Violation>,
        want: AlgorithmUsed,
        solve_ms: f64,
        mut warnings: Vec<String>,
    ) -> Result<DispatchResult, OptimizeError> {
        let m = self.model;
        let status = if !solved.proven {
            Status::Feasible
        } else if violations.iter().any(Violation::is_slack) {
            Status::FeasibleWithSlack
        } else {
            Status::Optimal
        };
        let marginal = self.marginals(solved, &x, want);
        if m.elastic && want == AlgorithmUsed::Lp {
            self.check_penalty(&x, &mut warnings);
        }
        let bound = if solved.proven {
            Some(x.objective(m))
        } else {
            solved.bound
        };
        Ok(self.assemble(
            &x,
            Outcome {
                status,
                algorithm: want,
                engine: Some(solved.engine),
                marginal,
                bound,
                fallback_reason: None,
                violations,
                warnings,
                solve_ms,
            },
        ))
    }

    /// Balance-row duals: from the primal solve when clarabel produced it, otherwise from a
    /// clarabel LP with the commitment fixed at the solution (the usual MILP pricing rule).
    fn marginals(
        &self,
        solved: &Solved,
        x: &Dispatch,
        want: AlgorithmUsed,
    ) -> (Option<Vec<f64>>, Option<String>) {
        let fixed = want == AlgorithmUsed::Milp && self.model.has_binaries();
        if let Some(d) = &solved.duals {
            return (Some(d.clone()), Some("clarabel_dual".to_string()));
        }
        if !self.marginal_costs {
            return (
                None,
                Some("not requested (options.marginal_costs = false)".into()),
            );
        }
        let spec = Spec {
            elastic: self.model.elastic,
            binaries: Binaries::Fixed(x.on.clone()),
            goal: Goal::Cost,
        };
        if !solved.proven {
            return (
                None,
                Some("not computed: solution is not proven optimal".to_string()),
            );
        }
        match run_budgeted(self.model, spec, Engine::Clarabel, self.remaining()) {
            Ok(s) => match s.duals {
                Some(d) => (
                    Some(d),
                    Some(if fixed {
                        "clarabel_dual_at_fixed_commitment".to_string()
                    } else {
                        "clarabel_dual".to_string()
                    }),
                ),
                None => (None, Some("not available: clarabel gave no duals".into())),
            },
            Err(e) => (None, Some(format!("not available: {e}"))),
        }
    }

    /// Warn when M is so low that the LP preferred unserved heat it could have delivered;
    /// the default M only covers single-hop imports, so long lossy chains can trip this.
    fn check_penalty(&self, x: &Dispatch, warnings: &mut Vec<String>) {
        let ours: f64 = x.s.iter().sum();
        if ours <= TOLERANCE {
            return;
        }
        let spec = Spec {
            elastic: true,
            binaries: Binaries::Integer,
            goal: Goal::MinSlack,
        };
        let engine = lp_engine_by_size(self.model);
        if let Ok(min) = run_budgeted(self.model, spec, engine, self.remaining()) {
            let least: f64 = min.dispatch.s.iter().sum();
            if least < ours - 1e-6 * ours.max(1.0) {
                warnings.push(format!(
                    "unserved_penalty_eur_mwh = {} is below the cost of delivering some heat: \
                     {ours:.6} MW left unserved although {least:.6} MW is the physical minimum",
                    self.model.m
                ));
            }
        }
    }

    /// Strict mode and the solver proved infeasibility: re-solve elastically and name the
    /// plants whose slack is positive.
    fn diagnose_strict(
        &self,
        engine: Engine,
        want: AlgorithmUsed,
        solve_ms: f64,
        mut warnings: Vec<String>,
    ) -> Result<DispatchResult, OptimizeError> {
        let mut elastic = (**self.model).clone();
        elastic.elastic = true;
        let elastic = Arc::new(elastic);
        let spec = Spec {
            elastic: true,
            binaries: Binaries::Integer,
            goal: Goal::Cost,
        };
        let diag = Ctx {
            model: &elastic,
            t0: self.t0,
            budget: self.budget,
            marginal_costs: false,
        };
        let (x, engine_used, algorithm) =
            match run_budgeted(&elastic, spec, engine, self.remaining()) {
                Ok(s) => (s.dispatch, Some(s.engine), want),
                Err(e) => {
                    warnings.push(format!(
                        "elastic diagnosis by {engine:?} failed ({e}); greedy diagnosis shown"
                    ));
                    (greedy::greedy(&elastic), None, AlgorithmUsed::Greedy)
                }
            };
        let mut x = x;
        clean(&elastic, &mut x);
        let violations = verify::check(&elastic, &x);
        if let Some(bad) = violations.iter().find(|v| !v.is_slack()) {
            return Err(OptimizeError::NoVerifiedDispatch(format!(
                "strict problem is infeasible and the elastic diagnosis failed verification \
                 ({}: {})",
                bad.constraint, bad.detail
            )));
        }
        if !violations.iter().any(Violation::is_slack) {
            warnings.push(
                "solver reported the strict problem infeasible but the elastic re-solve needs \
                 no slack; the strict infeasibility is likely numerical"
                    .to_string(),
            );
        }
        let mut r = diag.assemble(
            &x,
            Outcome {
                status: Status::Infeasible,
                algorithm,
                engine: engine_used,
                marginal: (None, Some("not computed: problem infeasible".to_string())),
                bound: None,
                fallback_reason: None,
                violations,
                warnings,
                solve_ms,
            },
        );
        r.mode = Mode::Strict;
        Ok(r)
    }

    /// Greedy dispatch, either requested (`reason == None`) or as fallback.
    fn greedy_result(
        &self,
        reason: Option<String>,
        want: AlgorithmUsed,
        mut warnings: Vec<String>,
    ) -> Result<DispatchResult, OptimizeError> {
        let m = self.model;
        let t = Instant::now();
        let mut x = greedy::greedy(m);
        let solve_ms = ms(t.elapsed());
        clean(m, &mut x);
        let violations = verify::check(m, &x);
        if let Some(bad) = violations.iter().find(|v| !v.is_slack()) {
            return Err(OptimizeError::NoVerifiedDispatch(format!(
                "greedy dispatch failed verification ({}: {}){}",
                bad.constraint,
                bad.detail,
                reason
                    .map(|r| format!(" after solver fallback: {r}"))
                    .unwrap_or_default()
            )));
        }
        // A lower bound is worth one LP relaxation unless the exact path just ran out of time
        // (then the relaxation would likely overrun as well).
        let timed_out = reason.as_deref().is_some_and(|r| r.contains("time"));
        let bound = if timed_out {
            None
        } else {
            let spec = Spec {
                elastic: m.elastic,
                binaries: Binaries::Relaxed,
                goal: Goal::Cost,
            };
            match run_budgeted(m, spec, lp_engine_by_size(m), self.remaining()) {
                Ok(s) if s.proven => Some(s.objective),
                _ => None,
            }
        };
        if let Some(r) = &reason {
            warnings.push(format!(
                "{} solver not used ({r}); greedy heuristic dispatch returned",
                match want {
                    AlgorithmUsed::Milp => "MILP",
                    _ => "LP",
                }
            ));
        }
        Ok(self.assemble(
            &x,
            Outcome {
                status: Status::Heuristic,
                algorithm: AlgorithmUsed::Greedy,
                engine: None,
                marginal: (
                    None,
                    Some("not computed for heuristic dispatch".to_string()),
                ),
                bound,
                fallback_reason: reason,
                violations,
                warnings,
                solve_ms,
            },
        ))
    }
}
