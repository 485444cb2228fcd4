//! `heatmesh optimize`: the GL-001 heat-distribution optimizer.
//!
//! `--scenario FILE` solves a scenario file here, without a mesh (like `heatmesh calc`);
//! `--fleet` and the `set-algorithm`, `relax` and `status` verbs talk to a running master's
//! OptimizationService at `--addr`. Tables by default, `--json` for scripts.

use super::client::{JsonFlag, connect, rpc_err, time};
use super::table::Table;
use anyhow::{Context, bail};
use heatmesh_master::optimize::{Algorithm, DispatchResult, Mode, Scenario, optimize};
use heatmesh_proto::v1 as pb;
use pb::optimization_service_client::OptimizationServiceClient;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Algorithm names accepted on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AlgorithmArg {
    /// LP, or MILP when a unit is switchable.
    Auto,
    /// Linear program.
    Lp,
    /// Mixed-integer program.
    Milp,
    /// Merit-order heuristic.
    Greedy,
}

impl AlgorithmArg {
    fn name(self) -> &'static str {
        match self {
            AlgorithmArg::Auto => "auto",
            AlgorithmArg::Lp => "lp",
            AlgorithmArg::Milp => "milp",
            AlgorithmArg::Greedy => "greedy",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            AlgorithmArg::Auto => Algorithm::Auto,
            AlgorithmArg::Lp => Algorithm::Lp,
            AlgorithmArg::Milp => Algorithm::Milp,
            AlgorithmArg::Greedy => Algorithm::Greedy,
        }
    }
}

/// Arguments of `heatmesh optimize`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct OptimizeArgs {
    #[command(subcommand)]
    action: Option<OptimizeAction>,
    /// Scenario file (.json or .toml, format in docs/optimize.md) to solve here, no mesh.
    #[arg(long, conflicts_with = "fleet")]
    scenario: Option<PathBuf>,
    /// Solve the running master's current fleet (plant configuration, GL-002 efficiencies,
    /// active relaxations).
    #[arg(long)]
    fleet: bool,
    /// Algorithm for this run (default: the master's override, else the scenario's).
    #[arg(long, value_enum)]
    algorithm: Option<AlgorithmArg>,
    /// Strict mode: balances must close; an infeasible problem is diagnosed.
    #[arg(long)]
    strict: bool,
    /// Send each plant its setpoints as a task (--fleet; refused while no agent kind accepts
    /// setpoints).
    #[arg(long, requires = "fleet")]
    dispatch_setpoints: bool,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(clap::Subcommand)]
enum OptimizeAction {
    /// Set the master's algorithm for later runs (`auto` clears the override).
    SetAlgorithm {
        /// auto, lp, milp or greedy.
        #[arg(value_enum)]
        algorithm: AlgorithmArg,
        /// How long it lasts, e.g. 30m (default: until changed).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Multiply fleet limits for a while: unit:ID (max_mw), link:ID (capacity_mw),
    /// plant:ID (demand_mw), or a bare ID.
    Relax {
        /// The limits, e.g. link:P1-P2 Boiler-3.
        names: Vec<String>,
        /// Multiplier, e.g. 1.5.
        #[arg(long, required_unless_present = "clear")]
        factor: Option<f64>,
        /// How long it lasts, e.g. 30m.
        #[arg(long = "for", value_parser = humantime::parse_duration, required_unless_present = "clear")]
        duration: Option<Duration>,
        /// End the relaxations of these names instead (all when none is named).
        #[arg(long, conflicts_with_all = ["factor", "duration"])]
        clear: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Active overrides and the diagnostics of the master's last run.
    Status {
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `heatmesh optimize ...`.
pub async fn run(addr: &str, a: OptimizeArgs) -> anyhow::Result<()> {
    match a.action {
        Some(OptimizeAction::SetAlgorithm {
            algorithm,
            duration,
            out,
        }) => {
            let mut c = OptimizationServiceClient::new(connect(addr).await?);
            let s = c
                .set_algorithm(pb::SetAlgorithmRequest {
                    algorithm: algorithm.name().into(),
                    duration: duration.map(proto_duration),
                })
                .await
                .map_err(rpc_err)?
                .into_inner();
            print_status(&s, out.json)
        }
        Some(OptimizeAction::Relax {
            names,
            factor,
            duration,
            clear,
            out,
        }) => {
            let mut c = OptimizationServiceClient::new(connect(addr).await?);
            let s = c
                .relax_constraints(pb::RelaxConstraintsRequest {
                    names,
                    factor: factor.unwrap_or(0.0),
                    duration: duration.map(proto_duration),
                    clear,
                })
                .await
                .map_err(rpc_err)?
                .into_inner();
            print_status(&s, out.json)
        }
        Some(OptimizeAction::Status { out }) => {
            let mut c = OptimizationServiceClient::new(connect(addr).await?);
            let s = c
                .get_status(pb::GetOptimizerStatusRequest {})
                .await
                .map_err(rpc_err)?
                .into_inner();
            print_status(&s, out.json)
        }
        None => match (&a.scenario, a.fleet) {
            (Some(path), _) => local(path, a.algorithm, a.strict, a.out.json),
            (None, true) => fleet(addr, &a).await,
            (None, false) => bail!(
                "give --scenario FILE (solve here) or --fleet (the running master's fleet), or \
                 a verb: set-algorithm, relax, status"
            ),
        },
    }
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Solves a scenario file in this process.
fn local(
    path: &PathBuf,
    algorithm: Option<AlgorithmArg>,
    strict: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut scenario =
        Scenario::from_path(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(a) = algorithm {
        scenario.options.algorithm = a.algorithm();
    }
    if strict {
        scenario.options.mode = Mode::Strict;
    }
    scenario
        .validate()
        .map_err(|e| anyhow::anyhow!("{} with the given options: {e}", path.display()))?;
    let r = optimize(&scenario).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_dispatch(&r);
    }
    Ok(())
}

/// RunHeatDistribution on the master's fleet.
async fn fleet(addr: &str, a: &OptimizeArgs) -> anyhow::Result<()> {
    let mut c = OptimizationServiceClient::new(connect(addr).await?);
    let r = c
        .run_heat_distribution(pb::RunHeatDistributionRequest {
            use_fleet: true,
            algorithm: a
                .algorithm
                .map(|x| x.name().to_string())
                .unwrap_or_default(),
            strict: a.strict,
            dispatch_setpoints: a.dispatch_setpoints,
            ..Default::default()
        })
        .await
        .map_err(rpc_err)?
        .into_inner();
    let result: DispatchResult =
        serde_json::from_str(&r.result_json).context("decoding the master's result")?;
    if a.out.json {
        let v = json!({
            "result": serde_json::to_value(&result)?,
            "run": r.run.as_ref().map(run_json),
            "scenario": serde_json::from_str::<Value>(&r.scenario_json).unwrap_or(Value::Null),
            "setpoint_task_ids": r.setpoint_task_ids,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if let Some(run) = &r.run {
        print_run_inputs(run);
    }
    print_dispatch(&result);
    if !r.setpoint_task_ids.is_empty() {
        println!(
            "\nsetpoints sent as tasks {}",
            r.setpoint_task_ids.join(", ")
        );
    }
    Ok(())
}

fn f3(v: f64) -> String {
    format!("{v:.3}")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn name_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The dispatch as tables: units, links, plants, costs, then findings.
fn print_dispatch(r: &DispatchResult) {
    let engine = r
        .engine
        .map(|e| format!(", {}", name_of(&e)))
        .unwrap_or_default();
    println!(
        "status {}  algorithm {}{engine}  objective {:.6} EUR/h  CO2 {:.4} t/h",
        name_of(&r.status),
        name_of(&r.algorithm),
        r.objective_eur_h,
        r.co2_t_h
    );
    println!(
        "solve {:.2} ms  total {:.2} ms  mode {}",
        r.solve_time_ms,
        r.total_time_ms,
        name_of(&r.mode)
    );
    if let Some(b) = r.lower_bound_eur_h {
        println!(
            "lower bound {b:.6} EUR/h  gap {}",
            opt(r.gap.map(|g| g * 100.0), 3) + " %"
        );
    }
    println!();
    let mut t = Table::new(&[
        "unit",
        "plant",
        "on",
        "heat MW",
        "input MW",
        "EUR/MWh heat",
        "energy EUR/h",
        "carbon EUR/h",
        "CO2 t/h",
    ]);
    for u in &r.units {
        t.row(vec![
            u.id.clone(),
            u.plant.clone(),
            u.on.map(|o| if o { "on" } else { "off" }.to_string())
                .unwrap_or_else(|| "-".into()),
            f3(u.heat_mw),
            f3(u.input_mw),
            format!("{:.4}", u.heat_cost_eur_mwh),
            format!("{:.2}", u.energy_cost_eur_h),
            format!("{:.2}", u.carbon_cost_eur_h),
            format!("{:.4}", u.co2_t_h),
        ]);
    }
    print!("{}", t.render());
    if !r.links.is_empty() {
        println!();
        let mut t = Table::new(&[
            "link",
            "from",
            "to",
            "sent MW",
            "delivered MW",
            "loss MW",
            "EUR/h",
        ]);
        for l in &r.links {
            t.row(vec![
                l.id.clone(),
                l.from.clone(),
                l.to.clone(),
                f3(l.sent_mw),
                f3(l.delivered_mw),
                f3(l.loss_mw),
                format!("{:.2}", l.cost_eur_h),
            ]);
        }
        print!("{}", t.render());
    }
    println!();
    let mut t = Table::new(&[
        "plant",
        "demand MW",
        "produced MW",
        "imported MW",
        "exported MW",
        "unserved MW",
        "dumped MW",
        "marginal EUR/MWh",
    ]);
    for p in &r.plants {
        t.row(vec![
            p.id.clone(),
            f3(p.demand_mw),
            f3(p.produced_mw),
            f3(p.imported_mw),
            f3(p.exported_mw),
            f3(p.unserved_mw),
            f3(p.dumped_mw),
            opt(p.marginal_cost_eur_mwh, 4),
        ]);
    }
    print!("{}", t.render());
    let c = &r.costs;
    println!(
        "\ncosts EUR/h: fuel {:.2}  electricity {:.2}  carbon {:.2}  startup {:.2}  links {:.2}  \
         unserved penalty {:.2}  dump penalty {:.2}  total {:.6}",
        c.fuel_eur_h,
        c.electricity_eur_h,
        c.carbon_eur_h,
        c.startup_eur,
        c.links_eur_h,
        c.unserved_penalty_eur_h,
        c.dump_penalty_eur_h,
        c.total_eur_h
    );
    if let Some(m) = &r.marginal_cost_method {
        println!("marginal costs: {m}");
    }
    if let Some(f) = &r.fallback_reason {
        println!("fallback: {f}");
    }
    for v in &r.violations {
        println!(
            "violation {} ({}): {:.6} MW: {}",
            v.constraint,
            name_of(&v.kind),
            v.amount_mw,
            v.detail
        );
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
}

/// What went into a fleet run: GL-002 substitutions, relaxations, notes.
fn print_run_inputs(run: &pb::OptimizerRun) {
    println!(
        "source {}  algorithm asked {} ({})",
        run.source, run.algorithm_requested, run.algorithm_source
    );
    for s in &run.efficiency_substitutions {
        println!(
            "efficiency of {} ({}) {:.6} -> {:.6} ({}) from GL-002 task {} ({:.4} % gross)",
            s.unit,
            s.plant,
            s.configured_efficiency,
            s.used_efficiency,
            s.energy_basis,
            s.task_id,
            s.gl002_efficiency_pct
        );
    }
    for r in &run.relaxations {
        println!(
            "relaxed {} {} {} {} -> {} (x{}) until {}",
            r.target,
            r.id,
            r.field,
            r.configured,
            r.relaxed,
            r.factor,
            time(&r.expires_at)
        );
    }
    for n in &run.notes {
        println!("note: {n}");
    }
    println!();
}

fn relaxation_json(r: &pb::ConstraintRelaxation) -> Value {
    json!({"name": r.name, "target": r.target, "id": r.id, "field": r.field, "factor": r.factor,
           "configured": r.configured, "relaxed": r.relaxed, "set_at": time(&r.set_at),
           "expires_at": time(&r.expires_at)})
}

fn run_json(r: &pb::OptimizerRun) -> Value {
    let subs: Vec<Value> = r
        .efficiency_substitutions
        .iter()
        .map(|s| {
            json!({"unit": s.unit, "plant": s.plant, "task_id": s.task_id,
                   "gl002_efficiency_pct": s.gl002_efficiency_pct,
                   "configured_efficiency": s.configured_efficiency,
                   "used_efficiency": s.used_efficiency, "energy_basis": s.energy_basis})
        })
        .collect();
    let violations: Vec<Value> = r
        .violations
        .iter()
        .map(|v| {
            json!({"constraint": v.constraint, "kind": v.kind, "amount_mw": v.amount_mw,
                   "detail": v.detail})
        })
        .collect();
    json!({
        "at": time(&r.at), "source": r.source, "scenario_name": r.scenario_name,
        "algorithm_requested": r.algorithm_requested, "algorithm_source": r.algorithm_source,
        "algorithm": r.algorithm, "engine": r.engine, "status": r.status,
        "objective_eur_h": r.objective_eur_h, "solve_time_ms": r.solve_time_ms,
        "total_time_ms": r.total_time_ms, "violations": violations,
        "fallback_reason": r.fallback_reason, "warnings": r.warnings,
        "efficiency_substitutions": subs,
        "relaxations": r.relaxations.iter().map(relaxation_json).collect::<Vec<_>>(),
        "notes": r.notes, "error": r.error, "setpoint_task_ids": r.setpoint_task_ids,
    })
}

fn print_status(s: &pb::OptimizerStatus, json: bool) -> anyhow::Result<()> {
    if json {
        let v = json!({
            "fleet_configured": s.fleet_configured,
            "algorithm_override": s.algorithm_override.as_ref().map(|o| json!({
                "algorithm": o.algorithm, "set_at": time(&o.set_at),
                "expires_at": o.expires_at.as_ref().map(|_| time(&o.expires_at)),
            })),
            "relaxations": s.relaxations.iter().map(relaxation_json).collect::<Vec<_>>(),
            "last_run": s.last_run.as_ref().map(run_json),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match &s.algorithm_override {
        Some(o) if o.expires_at.is_some() => println!(
            "algorithm override: {} until {}",
            o.algorithm,
            time(&o.expires_at)
        ),
        Some(o) => println!("algorithm override: {} until changed", o.algorithm),
        None => println!("algorithm override: none (each scenario's own algorithm)"),
    }
    if s.relaxations.is_empty() {
        println!("relaxations: none");
    } else {
        let mut t = Table::new(&[
            "name",
            "target",
            "id",
            "field",
            "factor",
            "configured",
            "relaxed",
            "expires",
        ]);
        for r in &s.relaxations {
            t.row(vec![
                r.name.clone(),
                r.target.clone(),
                r.id.clone(),
                r.field.clone(),
                r.factor.to_string(),
                r.configured.to_string(),
                r.relaxed.to_string(),
                time(&r.expires_at),
            ]);
        }
        println!("relaxations:\n{}", t.render().trim_end());
    }
    if !s.fleet_configured {
        println!("fleet: no plant has a [plants.heat] table, so --fleet cannot run");
    }
    let Some(r) = &s.last_run else {
        println!("last run: none since the master started");
        return Ok(());
    };
    println!(
        "last run {}  source {}  status {}  algorithm {} (asked {} by {}){}",
        time(&r.at),
        r.source,
        r.status,
        r.algorithm,
        r.algorithm_requested,
        r.algorithm_source,
        if r.engine.is_empty() {
            String::new()
        } else {
            format!(", {}", r.engine)
        }
    );
    if r.status == "error" {
        println!("  error: {}", r.error);
    } else {
        println!(
            "  objective {:.6} EUR/h  solve {:.2} ms  total {:.2} ms",
            r.objective_eur_h, r.solve_time_ms, r.total_time_ms
        );
    }
    if let Some(f) = &r.fallback_reason {
        println!("  fallback: {f}");
    }
    for v in &r.violations {
        println!(
            "  violation {} ({}): {:.6} MW: {}",
            v.constraint, v.kind, v.amount_mw, v.detail
        );
    }
    for s in &r.efficiency_substitutions {
        println!(
            "  efficiency of {} from GL-002 task {}: {:.6} -> {:.6}",
            s.unit, s.task_id, s.configured_efficiency, s.used_efficiency
        );
    }
    for x in &r.relaxations {
        println!("  relaxed {} {} {} x{}", x.target, x.id, x.field, x.factor);
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
    Ok(())
}
