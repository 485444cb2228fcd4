//! GL-001 heat distribution as the master runs it, around the pure optimizer: the fleet
//! scenario (plant configuration, GL-002 efficiencies from the ledger, operator relaxations),
//! the operator overrides with their expiry, and the record of the last run.
//!
//! State choice: overrides and the last run are operator settings, not task state, so they
//! live in an [`OptimizerState`] behind a `Mutex` owned by the gRPC service instead of in the
//! master actor. Nothing here is journaled, the lock is only held to copy or replace small
//! values (never across a solve or an `.await`), and the scheduler stays free of GL-001
//! dispatch concerns. The state is not persisted: a restarted master starts with no
//! overrides (each of them expires anyway) and no last run.

use crate::config::{Config, FleetHeat};
use crate::ledger::{Ledger, LedgerError};
use crate::optimize::{Algorithm, Basis, DispatchResult, Scenario, UnitKind};
use crate::task::Status;
use heatmesh_agents::registry;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Longest a SetAlgorithm or RelaxConstraints override may last.
pub const MAX_OVERRIDE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest relaxation factor accepted.
pub const MAX_FACTOR: f64 = 100.0;
/// Most ledger records one fleet run scans for GL-002 results.
pub const GL002_MAX_SCAN: usize = 100_000;
/// The agent kind whose results replace configured boiler efficiencies.
pub const GL002: &str = "GL-002";

/// Why an optimizer operation was refused; the gRPC layer maps each variant to a code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimizerError {
    /// A request value breaks a rule; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// A named unit, link or plant does not exist in the fleet.
    #[error("{0}")]
    NotFound(String),
    /// The operation cannot apply now (no fleet heat data, no agent accepts setpoints).
    #[error("{0}")]
    FailedPrecondition(String),
}

use OptimizerError::{FailedPrecondition, InvalidArgument, NotFound};

/// The fleet limit a relaxation multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A unit's `max_mw`.
    Unit,
    /// A link's `capacity_mw`.
    Link,
    /// A plant's `demand_mw`.
    Plant,
}

impl Target {
    /// `unit`, `link` or `plant`, as in names like `link:P1-P2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Unit => "unit",
            Target::Link => "link",
            Target::Plant => "plant",
        }
    }

    /// The scenario field multiplied: `max_mw`, `capacity_mw` or `demand_mw`.
    pub fn field(self) -> &'static str {
        match self {
            Target::Unit => "max_mw",
            Target::Link => "capacity_mw",
            Target::Plant => "demand_mw",
        }
    }

    fn parse(s: &str) -> Option<Target> {
        match s.trim().to_ascii_lowercase().as_str() {
            "unit" => Some(Target::Unit),
            "link" => Some(Target::Link),
            "plant" => Some(Target::Plant),
            _ => None,
        }
    }

    /// The limit's value in a scenario, when the id exists there.
    fn value(self, s: &Scenario, id: &str) -> Option<f64> {
        match self {
            Target::Unit => s.units.iter().find(|u| u.id == id).map(|u| u.max_mw),
            Target::Link => s.links.iter().find(|l| l.id == id).map(|l| l.capacity_mw),
            Target::Plant => s.plants.iter().find(|p| p.id == id).map(|p| p.demand_mw),
        }
    }

    fn value_mut<'a>(self, s: &'a mut Scenario, id: &str) -> Option<&'a mut f64> {
        match self {
            Target::Unit => s
                .units
                .iter_mut()
                .find(|u| u.id == id)
                .map(|u| &mut u.max_mw),
            Target::Link => s
                .links
                .iter_mut()
                .find(|l| l.id == id)
                .map(|l| &mut l.capacity_mw),
            Target::Plant => s
                .plants
                .iter_mut()
                .find(|p| p.id == id)
                .map(|p| &mut p.demand_mw),
        }
    }
}

/// An active SetAlgorithm override.
#[derive(Debug, Clone, PartialEq)]
pub struct AlgorithmOverride {
    /// Algorithm every run uses unless the request names one.
    pub algorithm: Algorithm,
    /// When it was set, unix microseconds.
    pub set_us: u64,
    /// When it ends, unix microseconds; `None`: until changed.
    pub expires_us: Option<u64>,
}

/// An active relaxation of one fleet limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Relaxation {
    /// The name as the operator gave it.
    pub name: String,
    /// What it multiplies.
    pub target: Target,
    /// Id of the unit, link or plant.
    pub id: String,
    /// Multiplier.
    pub factor: f64,
    /// The configured value.
    pub configured: f64,
    /// The value runs use meanwhile (`configured x factor`).
    pub relaxed: f64,
    /// When it was set, unix microseconds.
    pub set_us: u64,
    /// When it ends, unix microseconds.
    pub expires_us: u64,
}

/// A configured boiler efficiency replaced by a GL-002 result.
#[derive(Debug, Clone, PartialEq)]
pub struct EfficiencySubstitution {
    /// Unit id.
    pub unit: String,
    /// Plant id.
    pub plant: String,
    /// The completed GL-002 task the value comes from.
    pub task_id: u64,
    /// GL-002's efficiency, percent of GCV (gross basis).
    pub gl002_efficiency_pct: f64,
    /// Configured efficiency, on the unit's basis (0-1).
    pub configured: f64,
    /// Efficiency used, on the unit's basis (0-1).
    pub used: f64,
    /// The unit's energy basis.
    pub basis: Basis,
}

/// Where a run's scenario came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Built from the fleet configuration and agent results.
    Fleet,
    /// Given as JSON text.
    Json,
    /// Given as TOML text.
    Toml,
}

impl Source {
    /// `fleet`, `scenario_json` or `scenario_toml`: also the request field it came from.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Fleet => "fleet",
            Source::Json => "scenario_json",
            Source::Toml => "scenario_toml",
        }
    }
}

/// Who chose a run's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmSource {
    /// The run request.
    Request,
    /// The SetAlgorithm override.
    Override,
    /// The scenario's own `options.algorithm`.
    Scenario,
}

impl AlgorithmSource {
    /// `request`, `override` or `scenario`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlgorithmSource::Request => "request",
            AlgorithmSource::Override => "override",
            AlgorithmSource::Scenario => "scenario",
        }
    }
}

/// One run as the master records it; GetStatus shows the last one.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Start of the run, unix microseconds.
    pub at_us: u64,
    /// Where the scenario came from.
    pub source: Source,
    /// The scenario's name.
    pub scenario_name: Option<String>,
    /// Algorithm asked for.
    pub algorithm_requested: Algorithm,
    /// Who asked for it.
    pub algorithm_source: AlgorithmSource,
    /// The dispatch, or why none was produced.
    pub outcome: Result<DispatchResult, String>,
    /// Fleet runs: boiler efficiencies taken from GL-002.
    pub substitutions: Vec<EfficiencySubstitution>,
    /// Fleet runs: relaxations applied.
    pub relaxations: Vec<Relaxation>,
    /// Other findings (GL-002 results not used, and why).
    pub notes: Vec<String>,
    /// Tasks that carried the setpoints to plants.
    pub setpoint_task_ids: Vec<u64>,
}

/// Operator overrides and the last run (see the module comment for why a `Mutex` holds it).
#[derive(Debug, Default)]
pub struct OptimizerState {
    algorithm: Option<AlgorithmOverride>,
    relaxations: Vec<Relaxation>,
    last_run: Option<RunRecord>,
}

/// Parses an algorithm name; empty is `None`.
pub fn parse_algorithm(field: &str, s: &str) -> Result<Option<Algorithm>, OptimizerError> {
    Ok(Some(match s.trim().to_ascii_lowercase().as_str() {
        "" => return Ok(None),
        "auto" => Algorithm::Auto,
        "lp" => Algorithm::Lp,
        "milp" => Algorithm::Milp,
        "greedy" => Algorithm::Greedy,
        _ => {
            return Err(InvalidArgument(format!(
                "{field}: must be auto, lp, milp or greedy, got {s:?}"
            )));
        }
    }))
}

/// The spelling of an algorithm in scenarios and the API.
pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Auto => "auto",
        Algorithm::Lp => "lp",
        Algorithm::Milp => "milp",
        Algorithm::Greedy => "greedy",
    }
}

fn check_duration(d: Duration) -> Result<(), OptimizerError> {
    if d.is_zero() || d > MAX_OVERRIDE {
        return Err(InvalidArgument(format!(
            "duration: must be > 0 and at most {} days, got {d:?}",
            MAX_OVERRIDE.as_secs() / 86_400
        )));
    }
    Ok(())
}

impl OptimizerState {
    /// Drops overrides that have expired by `now_us`.
    pub fn prune(&mut self, now_us: u64) {
        if self
            .algorithm
            .as_ref()
            .is_some_and(|a| a.expires_us.is_some_and(|e| e <= now_us))
        {
            self.algorithm = None;
        }
        self.relaxations.retain(|r| r.expires_us > now_us);
    }

    /// The algorithm override active at `now_us`.
    pub fn algorithm(&mut self, now_us: u64) -> Option<AlgorithmOverride> {
        self.prune(now_us);
        self.algorithm.clone()
    }

    /// The relaxations active at `now_us`.
    pub fn relaxations(&mut self, now_us: u64) -> Vec<Relaxation> {
        self.prune(now_us);
        self.relaxations.clone()
    }

    /// The last recorded run.
    pub fn last_run(&self) -> Option<&RunRecord> {
        self.last_run.as_ref()
    }

    /// Records a run as the last one.
    pub fn record(&mut self, run: RunRecord) {
        self.last_run = Some(run);
    }

    /// Sets the algorithm for later runs, for `duration` or until changed; `auto` clears the
    /// override. `lp` is refused when the fleet has switchable units (it could not run).
    pub fn set_algorithm(
        &mut self,
        algorithm: Algorithm,
        duration: Option<Duration>,
        fleet: Option<&FleetHeat>,
        now_us: u64,
    ) -> Result<(), OptimizerError> {
        if let Some(d) = duration {
            check_duration(d)?;
        }
        if algorithm == Algorithm::Auto {
            self.algorithm = None;
            return Ok(());
        }
        if algorithm == Algorithm::Lp
            && let Some(u) = fleet.and_then(|f| f.scenario.units.iter().find(|u| u.is_switchable()))
        {
            return Err(FailedPrecondition(format!(
                "algorithm: lp cannot honour the fleet's on/off unit {:?}; use milp or greedy",
                u.id
            )));
        }
        self.algorithm = Some(AlgorithmOverride {
            algorithm,
            set_us: now_us,
            expires_us: duration.map(|d| now_us + d.as_micros() as u64),
        });
        Ok(())
    }

    /// Multiplies the named fleet limits by `factor` for `duration`. A name already relaxed
    /// gets the new factor and expiry. Refused as a whole if any name is unknown or the
    /// relaxed fleet would break a scenario rule (e.g. `max_mw` below `min_mw`).
    pub fn relax(
        &mut self,
        fleet: &FleetHeat,
        names: &[String],
        factor: f64,
        duration: Duration,
        now_us: u64,
    ) -> Result<(), OptimizerError> {
        if names.is_empty() {
            return Err(InvalidArgument(
                "names: at least one unit, link or plant is required".into(),
            ));
        }
        if !factor.is_finite() || factor <= 0.0 || factor > MAX_FACTOR {
            return Err(InvalidArgument(format!(
                "factor: must be > 0 and at most {MAX_FACTOR}, got {factor}"
            )));
        }
        check_duration(duration)?;
        self.prune(now_us);
        let mut next = self.relaxations.clone();
        for (i, name) in names.iter().enumerate() {
            let (target, id) = resolve(&fleet.scenario, i, name)?;
            let configured = target.value(&fleet.scenario, &id).unwrap_or_default();
            next.retain(|r| !(r.target == target && r.id == id));
            next.push(Relaxation {
                name: name.trim().to_string(),
                target,
                id,
                factor,
                configured,
                relaxed: configured * factor,
                set_us: now_us,
                expires_us: now_us + duration.as_micros() as u64,
            });
        }
        let mut trial = fleet.scenario.clone();
        apply_relaxations(&mut trial, &next);
        if let Err(e) = trial.validate()
            && let Some(first) = e.field_errors().first()
        {
            return Err(InvalidArgument(format!(
                "factor: {factor} would make the fleet scenario invalid: {}",
                fleet.config_error(first)
            )));
        }
        self.relaxations = next;
        Ok(())
    }

    /// Ends the relaxations of these names (all when `names` is empty); returns how many.
    pub fn clear_relaxations(
        &mut self,
        fleet: &FleetHeat,
        names: &[String],
        now_us: u64,
    ) -> Result<usize, OptimizerError> {
        self.prune(now_us);
        let before = self.relaxations.len();
        if names.is_empty() {
            self.relaxations.clear();
            return Ok(before);
        }
        let mut drop = Vec::new();
        for (i, name) in names.iter().enumerate() {
            drop.push(resolve(&fleet.scenario, i, name)?);
        }
        self.relaxations
            .retain(|r| !drop.iter().any(|(t, id)| *t == r.target && *id == r.id));
        Ok(before - self.relaxations.len())
    }
}

/// Resolves `unit:ID`, `link:ID`, `plant:ID` or a bare ID (when exactly one unit, link or
/// plant has it) against a scenario; errors name `names[index]`.
pub fn resolve(s: &Scenario, index: usize, name: &str) -> Result<(Target, String), OptimizerError> {
    let field = format!("names[{index}]");
    let name = name.trim();
    let known = || {
        let ids = |v: Vec<&str>| v.join(", ");
        format!(
            "units: {}; links: {}; plants: {}",
            ids(s.units.iter().map(|u| u.id.as_str()).collect()),
            ids(s.links.iter().map(|l| l.id.as_str()).collect()),
            ids(s.plants.iter().map(|p| p.id.as_str()).collect()),
        )
    };
    if name.is_empty() {
        return Err(InvalidArgument(format!("{field}: must not be empty")));
    }
    if let Some((prefix, id)) = name.split_once(':') {
        let Some(target) = Target::parse(prefix) else {
            return Err(InvalidArgument(format!(
                "{field}: unknown prefix {prefix:?} in {name:?}; use unit:, link: or plant:"
            )));
        };
        let id = id.trim();
        return match target.value(s, id) {
            Some(_) => Ok((target, id.to_string())),
            None => Err(NotFound(format!(
                "{field}: the fleet has no {} {id:?}; {}",
                target.as_str(),
                known()
            ))),
        };
    }
    let hits: Vec<Target> = [Target::Unit, Target::Link, Target::Plant]
        .into_iter()
        .filter(|t| t.value(s, name).is_some())
        .collect();
    match hits.as_slice() {
        [t] => Ok((*t, name.to_string())),
        [] => Err(NotFound(format!(
            "{field}: the fleet has no unit, link or plant {name:?}; {}",
            known()
        ))),
        many => Err(InvalidArgument(format!(
            "{field}: {name:?} names a {}; write {}",
            many.iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" and a "),
            many.iter()
                .map(|t| format!("{}:{name}", t.as_str()))
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

/// Multiplies each relaxed limit present in `s` by its factor.
pub fn apply_relaxations(s: &mut Scenario, relaxations: &[Relaxation]) {
    for r in relaxations {
        if let Some(v) = r.target.value_mut(s, &r.id) {
            *v *= r.factor;
        }
    }
}

/// The newest completed GL-002 task of a plant and what its result says.
#[derive(Debug, Clone, PartialEq)]
pub struct Gl002Result {
    /// Task id.
    pub task_id: u64,
    /// `efficiency_pct` (gross basis), or why the result cannot be used.
    pub efficiency_pct: Result<f64, String>,
}

/// The newest completed GL-002 task of each of `plants`, by task id (acceptance order),
/// scanning at most `max_scan` records newest first; the flag says the scan hit that cap.
pub fn latest_gl002(
    ledger: &Ledger,
    plants: &HashSet<String>,
    max_scan: usize,
) -> Result<(HashMap<String, Gl002Result>, bool), LedgerError> {
    let mut found = HashMap::new();
    if plants.is_empty() {
        return Ok((found, false));
    }
    for (scanned, rec) in ledger.scan_newest_first(None).enumerate() {
        if scanned >= max_scan {
            return Ok((found, true));
        }
        let rec = rec?;
        if rec.agent_kind != GL002
            || rec.status != Status::Completed
            || !plants.contains(&rec.plant_id)
            || found.contains_key(&rec.plant_id)
        {
            continue;
        }
        let efficiency_pct = rec
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
            .and_then(|v| v.get("efficiency_pct").and_then(|e| e.as_f64()))
            .filter(|e| e.is_finite() && *e > 0.0 && *e <= 100.0)
            .ok_or_else(|| "result has no efficiency_pct in (0, 100]".to_string());
        found.insert(
            rec.plant_id.clone(),
            Gl002Result {
                task_id: rec.id,
                efficiency_pct,
            },
        );
        if found.len() == plants.len() {
            break;
        }
    }
    Ok((found, false))
}

/// Replaces the efficiency of every boiler of a plant with a GL-002 result by that result,
/// converted to the unit's basis (net needs the unit's `gcv_ncv_ratio`: eta_net = eta_gross x
/// GCV/NCV). Returns the substitutions and notes on results that could not be used.
pub fn apply_gl002(
    s: &mut Scenario,
    found: &HashMap<String, Gl002Result>,
) -> (Vec<EfficiencySubstitution>, Vec<String>) {
    let mut subs = Vec::new();
    let mut notes = Vec::new();
    let plants: Vec<String> = s.plants.iter().map(|p| p.id.clone()).collect();
    for plant in plants {
        let Some(g) = found.get(&plant) else { continue };
        let pct = match &g.efficiency_pct {
            Ok(p) => *p,
            Err(why) => {
                notes.push(format!(
                    "GL-002 task {} of {plant}: {why}; configured boiler efficiencies kept",
                    g.task_id
                ));
                continue;
            }
        };
        for u in s
            .units
            .iter_mut()
            .filter(|u| u.plant == plant && u.kind == UnitKind::Boiler)
        {
            let Some(configured) = u.efficiency else {
                continue;
            };
            let gross = pct / 100.0;
            let used = match (u.energy_basis, u.gcv_ncv_ratio) {
                (Basis::Gross, _) => gross,
                (Basis::Net, Some(r)) => gross * r,
                (Basis::Net, None) => {
                    notes.push(format!(
                        "GL-002 task {} of {plant} ({pct:.4} % gross) not used for unit {}: its \
                         efficiency is on the net basis and it has no gcv_ncv_ratio to convert",
                        g.task_id, u.id
                    ));
                    continue;
                }
            };
            if !(used > 0.0 && used <= 1.0) {
                notes.push(format!(
                    "GL-002 task {} of {plant} ({pct:.4} % gross) not used for unit {}: it \
                     gives efficiency {used:.6} on the {} basis, outside (0, 1]",
                    g.task_id,
                    u.id,
                    u.energy_basis.as_str()
                ));
                continue;
            }
            u.efficiency = Some(used);
            subs.push(EfficiencySubstitution {
                unit: u.id.clone(),
                plant: plant.clone(),
                task_id: g.task_id,
                gl002_efficiency_pct: pct,
                configured,
                used,
                basis: u.energy_basis,
            });
        }
    }
    (subs, notes)
}

/// The current fleet scenario with what went into it.
#[derive(Debug, Clone)]
pub struct FleetScenario {
    /// Configuration + GL-002 efficiencies + relaxations.
    pub scenario: Scenario,
    /// Boiler efficiencies taken from GL-002.
    pub substitutions: Vec<EfficiencySubstitution>,
    /// Relaxations applied.
    pub relaxations: Vec<Relaxation>,
    /// GL-002 results not used, and why.
    pub notes: Vec<String>,
}

/// Builds the current fleet scenario: the configured one, each boiler plant's newest GL-002
/// efficiency from the ledger, then the active relaxations. Blocking (reads the ledger).
pub fn fleet_scenario(
    fleet: &FleetHeat,
    ledger: &Ledger,
    relaxations: &[Relaxation],
) -> Result<FleetScenario, LedgerError> {
    let mut scenario = fleet.scenario.clone();
    let boiler_plants: HashSet<String> = scenario
        .units
        .iter()
        .filter(|u| u.kind == UnitKind::Boiler)
        .map(|u| u.plant.clone())
        .collect();
    let (found, capped) = latest_gl002(ledger, &boiler_plants, GL002_MAX_SCAN)?;
    let (substitutions, mut notes) = apply_gl002(&mut scenario, &found);
    if capped {
        notes.push(format!(
            "GL-002 lookup stopped after the newest {GL002_MAX_SCAN} tasks; plants without a \
             result among them keep their configured efficiencies"
        ));
    }
    apply_relaxations(&mut scenario, relaxations);
    Ok(FleetScenario {
        scenario,
        substitutions,
        relaxations: relaxations.to_vec(),
        notes,
    })
}

/// (plant, agent kind) pairs of fleet plants that run a kind accepting GL-001 setpoints.
pub fn setpoint_consumers(cfg: &Config, fleet: &FleetHeat) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for p in &cfg.plants {
        if !fleet.scenario.plants.iter().any(|sp| sp.id == p.id) {
            continue;
        }
        for a in &p.agents {
            if let Some(k) = registry::lookup(a).filter(|k| k.accepts_setpoints) {
                out.push((p.id.clone(), k.id));
            }
        }
    }
    out
}

/// The setpoints of one plant as a request JSON for a setpoint-consuming agent: its units'
/// heat output (and on/off state) and its balance.
pub fn plant_setpoints(result: &DispatchResult, plant: &str) -> Option<serde_json::Value> {
    let p = result.plant(plant)?;
    let units: Vec<serde_json::Value> = result
        .units
        .iter()
        .filter(|u| u.plant == plant)
        .map(|u| serde_json::json!({ "id": u.id, "heat_mw": u.heat_mw, "on": u.on }))
        .collect();
    Some(serde_json::json!({
        "source": "GL-001",
        "status": result.status,
        "plant": plant,
        "units": units,
        "demand_mw": p.demand_mw,
        "imported_mw": p.imported_mw,
        "exported_mw": p.exported_mw,
        "unserved_mw": p.unserved_mw,
        "dumped_mw": p.dumped_mw,
        "marginal_cost_eur_mwh": p.marginal_cost_eur_mwh,
    }))
}

#[cfg(test)]
mod tests;
