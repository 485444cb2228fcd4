//! LP / MILP formulation on good_lp and the solver back ends.
//!
//! Variables: q_u (heat per unit), y_u (on/off, switchable units only), f_l (link flow),
//! s_p / d_p (unserved / dumped heat, elastic mode only). Each plant balance
//! `sum q + sum_in eta f - sum_out f + s - d = D` is one equality row; its dual is the
//! marginal heat cost at that plant.

use std::time::Duration;

use good_lp::constraint::ConstraintReference;
use good_lp::solvers::clarabel::clarabel;
use good_lp::solvers::microlp::microlp;
use good_lp::variable::UnsolvedProblem;
use good_lp::{
    Constraint, DualValues, Expression, ProblemVariables, ResolutionError, Solution,
    SolutionStatus, SolutionWithDual, SolverModel, Variable, WithTimeLimit, variable,
};
use serde::{Deserialize, Serialize};

use super::model::{Dispatch, Model};

/// From this many plants up, `lp_solver = auto` uses clarabel instead of microlp for LPs;
/// chosen from the `optbench` measurements (see docs/optimize.md).
pub const AUTO_CLARABEL_MIN_PLANTS: usize = 200;

/// Which engine produced a solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// microlp: pure-Rust dual simplex with branch and bound.
    Microlp,
    /// clarabel: pure-Rust interior point (LP only).
    Clarabel,
    /// HiGHS via the optional `highs` feature.
    Highs,
}

/// How on/off binaries enter the model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Binaries {
    /// y in {0, 1}.
    Integer,
    /// y in [0, 1]: the LP relaxation, used for lower bounds.
    Relaxed,
    /// Commitment given; the rest is an LP (used for duals of a MILP optimum).
    Fixed(Vec<bool>),
}

/// What to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    /// Total cost including penalties.
    Cost,
    /// Total unserved + dumped heat only, to test whether M was high enough.
    MinSlack,
}

/// One model variant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    pub elastic: bool,
    pub binaries: Binaries,
    pub goal: Goal,
}

/// A solver answer, before cleaning and verification.
#[derive(Debug, Clone)]
pub(crate) struct Solved {
    pub dispatch: Dispatch,
    /// Objective as the solver's expression evaluates it (relaxed binaries count fractionally).
    pub objective: f64,
    /// The solver proved optimality (LP optimum or closed MILP gap).
    pub proven: bool,
    /// Best proven lower bound on the solver objective, when known.
    pub bound: Option<f64>,
    /// Balance-row duals (d objective / d demand) when the engine provides them.
    pub duals: Option<Vec<f64>>,
    pub engine: Engine,
}

/// Why the solver did not return a solution.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    Infeasible,
    Unbounded,
    TimeLimit(String),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Infeasible => f.write_str("solver reports the problem infeasible"),
            Failure::Unbounded => f.write_str("solver reports the problem unbounded"),
            Failure::TimeLimit(s) => write!(f, "time budget exceeded: {s}"),
            Failure::Other(s) => write!(f, "solver error: {s}"),
        }
    }
}

impl From<ResolutionError> for Failure {
    fn from(e: ResolutionError) -> Self {
        match e {
            ResolutionError::Infeasible => Failure::Infeasible,
            ResolutionError::Unbounded => Failure::Unbounded,
            ResolutionError::Other(s) if s.contains("Time limit") => {
                Failure::TimeLimit(s.to_string())
            }
            other => Failure::Other(other.to_string()),
        }
    }
}

/// A unit's output is either a variable or a constant (fixed off, or lo == hi); constants
/// keep degenerate bounds out of the interior-point solver.
#[derive(Debug, Clone, Copy)]
enum Term {
    Var(Variable),
    Const(f64),
}

struct Built {
    problem: UnsolvedProblem,
    objective: Expression,
    constraints: Vec<Constraint>,
    /// Index into `constraints` of each plant's balance row.
    balance_rows: Vec<usize>,
    q: Vec<Term>,
    y: Vec<Option<Variable>>,
    on_fixed: Vec<bool>,
    f: Vec<Term>,
    s: Vec<Option<Variable>>,
    d: Vec<Option<Variable>>,
}

const FIXED_EPS: f64 = 1e-12;

fn build(m: &Model, spec: &Spec) -> Built {
    let mut vars = ProblemVariables::new();
    let mut obj = Expression::with_capacity(m.units.len() + m.links.len() + 2 * m.plants.len());
    let mut constraints = Vec::new();
    let cost_goal = spec.goal == Goal::Cost;
    let mut q = Vec::with_capacity(m.units.len());
    let mut y = Vec::with_capacity(m.units.len());
    let mut on_fixed = Vec::with_capacity(m.units.len());
    for (k, u) in m.units.iter().enumerate() {
        let (qt, yt, on) = if u.switchable {
            match &spec.binaries {
                Binaries::Integer | Binaries::Relaxed => {
                    let qv = vars.add(variable().min(0.0).max(u.hi));
                    let yd = if spec.binaries == Binaries::Integer {
                        variable().binary()
                    } else {
                        variable().clamp(0.0, 1.0)
                    };
                    let yv = vars.add(yd);
                    constraints.push((qv - u.hi * yv).leq(0.0));
                    if u.lo > 0.0 {
                        constraints.push((qv - u.lo * yv).geq(0.0));
                    }
                    if cost_goal {
                        obj.add_mul(u.startup, yv);
                    }
                    (Term::Var(qv), Some(yv), true)
                }
                Binaries::Fixed(on) => {
                    let is_on = on.get(k).copied().unwrap_or(false);
                    if !is_on {
                        (Term::Const(0.0), None, false)
                    } else if u.hi - u.lo <= FIXED_EPS {
                        (Term::Const(u.hi), None, true)
                    } else {
                        (
                            Term::Var(vars.add(variable().clamp(u.lo, u.hi))),
                            None,
                            true,
                        )
                    }
                }
            }
        } else if u.hi - u.lo <= FIXED_EPS {
            (Term::Const(u.hi), None, true)
        } else {
            (
                Term::Var(vars.add(variable().clamp(u.lo, u.hi))),
                None,
                true,
            )
        };
        if cost_goal && let Term::Var(v) = qt {
            obj.add_mul(u.cost.total_eur_mwh, v);
        }
        q.push(qt);
        y.push(yt);
        on_fixed.push(on);
    }
    let f: Vec<Term> = m
        .links
        .iter()
        .map(|l| {
            if l.cap <= FIXED_EPS {
                Term::Const(0.0)
            } else {
                let v = vars.add(variable().clamp(0.0, l.cap));
                if cost_goal {
                    obj.add_mul(l.cost, v);
                }
                Term::Var(v)
            }
        })
        .collect();
    let mut s = Vec::with_capacity(m.plants.len());
    let mut d = Vec::with_capacity(m.plants.len());
    for _ in &m.plants {
        if spec.elastic {
            let sv = vars.add(variable().min(0.0));
            let dv = vars.add(variable().min(0.0));
            let (ws, wd) = if cost_goal { (m.m, m.dump) } else { (1.0, 1.0) };
            obj.add_mul(ws, sv);
            obj.add_mul(wd, dv);
            s.push(Some(sv));
            d.push(Some(dv));
        } else {
            s.push(None);
            d.push(None);
        }
    }
    let mut balance_rows = Vec::with_capacity(m.plants.len());
    for (p, plant) in m.plants.iter().enumerate() {
        let mut e = Expression::with_capacity(
            m.units_at[p].len() + m.links_in[p].len() + m.links_out[p].len() + 2,
        );
        let mut rhs = plant.demand;
        let mut add = |t: Term, coef: f64, e: &mut Expression| match t {
            Term::Var(v) => e.add_mul(coef, v),
            Term::Const(c) => rhs -= coef * c,
        };
        for &u in &m.units_at[p] {
            add(q[u], 1.0, &mut e);
        }
        for &l in &m.links_in[p] {
            add(f[l], m.links[l].eta, &mut e);
        }
        for &l in &m.links_out[p] {
            add(f[l], -1.0, &mut e);
        }
        if let (Some(sv), Some(dv)) = (s[p], d[p]) {
            e.add_mul(1.0, sv);
            e.add_mul(-1.0, dv);
        }
        balance_rows.push(constraints.len());
        constraints.push(e.eq(rhs));
    }
    let problem = vars.minimise(obj.clone());
    Built {
        problem,
        objective: obj,
        constraints,
        balance_rows,
        q,
        y,
        on_fixed,
        f,
        s,
        d,
    }
}

fn add_all<M: SolverModel>(model: &mut M, cons: Vec<Constraint>) -> Vec<ConstraintReference> {
    cons.into_iter().map(|c| model.add_constraint(c)).collect()
}

/// Read values back; binaries are rounded because solvers return them within a tolerance.
fn extract(b: &Built, value: &dyn Fn(Variable) -> f64) -> Dispatch {
    let term = |t: &Term| match *t {
        Term::Var(v) => value(v),
        Term::Const(c) => c,
    };
    let on: Vec<bool> =
        b.y.iter()
            .zip(&b.on_fixed)
            .map(|(yv, &fixed)| match yv {
                Some(v) => value(*v) > 0.5,
                None => fixed,
            })
            .collect();
    Dispatch {
        q: b.q.iter().map(term).collect(),
        on,
        f: b.f.iter().map(term).collect(),
        s: b.s.iter().map(|v| v.map_or(0.0, value)).collect(),
        d: b.d.iter().map(|v| v.map_or(0.0, value)).collect(),
    }
}

/// Build and solve one model variant. Runs on the caller's thread; `optimize` wraps it in a
/// worker thread for the wall-clock budget.
pub(crate) fn solve(
    m: &Model,
    spec: &Spec,
    engine: Engine,
    time_limit: Duration,
) -> Result<Solved, Failure> {
    let secs = time_limit.as_secs_f64().max(1e-3);
    let mut b = build(m, spec);
    let cons = std::mem::take(&mut b.constraints);
    let problem = std::mem::replace(&mut b.problem, ProblemVariables::new().minimise(0.0));
    match engine {
        Engine::Microlp => {
            // microlp (0.6) checks this deadline every 1000 simplex pivots and between
            // branch-and-bound nodes, so it usually stops close to the budget by itself.
            let mut model = problem.using(microlp).with_time_limit(secs);
            add_all(&mut model, cons);
            let sol = model.solve()?;
            let proven = matches!(sol.status(), SolutionStatus::Optimal);
            let dispatch = extract(&b, &|v| sol.value(v));
            let objective = b.objective.eval_with(&sol);
            let stats = sol.into_inner().stats();
            Ok(Solved {
                dispatch,
                objective,
                proven,
                bound: if proven {
                    Some(objective)
                } else {
                    stats.best_bound
                },
                duals: None,
                engine,
            })
        }
        Engine::Clarabel => {
            if spec.binaries == Binaries::Integer && m.has_binaries() {
                return Err(Failure::Other(
                    "clarabel cannot solve integer programs".to_string(),
                ));
            }
            let mut model = problem.using(clarabel);
            model.settings().time_limit(secs).max_iter(500);
            let refs = add_all(&mut model, cons);
            let mut sol = model.solve()?;
            use clarabel::solver::SolverStatus as S;
            match sol.inner().status {
                S::Solved | S::AlmostSolved => {}
                S::MaxTime => return Err(Failure::TimeLimit("clarabel time limit".into())),
                other => return Err(Failure::Other(format!("clarabel status {other:?}"))),
            }
            let dispatch = extract(&b, &|v| sol.value(v));
            let objective = b.objective.eval_with(&sol);
            let dual = sol.compute_dual();
            let duals: Vec<f64> = b
                .balance_rows
                .iter()
                .map(|&r| dual.dual(refs[r].clone()))
                .collect();
            Ok(Solved {
                dispatch,
                objective,
                proven: true,
                bound: Some(objective),
                duals: duals.iter().all(|v| v.is_finite()).then_some(duals),
                engine,
            })
        }
        Engine::Highs => solve_highs(&b, problem, cons, secs),
    }
}

#[cfg(feature = "highs")]
fn solve_highs(
    b: &Built,
    problem: UnsolvedProblem,
    cons: Vec<Constraint>,
    secs: f64,
) -> Result<Solved, Failure> {
    let mut model = problem.using(good_lp::highs);
    model.set_verbose(false);
    let mut model = model.set_time_limit(secs);
    add_all(&mut model, cons);
    let sol = model.solve()?;
    let proven = matches!(sol.status(), SolutionStatus::Optimal);
    let dispatch = extract(b, &|v| sol.value(v));
    let objective = b.objective.eval_with(&sol);
    Ok(Solved {
        dispatch,
        objective,
        proven,
        bound: proven.then_some(objective),
        duals: None,
        engine: Engine::Highs,
    })
}

#[cfg(not(feature = "highs"))]
fn solve_highs(
    _b: &Built,
    _problem: UnsolvedProblem,
    _cons: Vec<Constraint>,
    _secs: f64,
) -> Result<Solved, Failure> {
    Err(Failure::Other(
        "HiGHS support not compiled in (enable the `highs` feature)".to_string(),
    ))
}
