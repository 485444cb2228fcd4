//! OptimizationService: the GL-001 heat-distribution optimizer over gRPC. Validation and
//! error codes live here; the fleet scenario, overrides and run records in
//! [`crate::heat_dispatch`]; the solve itself in [`crate::optimize`].

use super::Api;
use super::convert::{
    dispatch_to_proto, duration_from_proto, override_to_proto, relaxation_to_proto, run_to_proto,
};
use crate::config::FleetHeat;
use crate::heat_dispatch::{
    self as hd, AlgorithmSource, OptimizerError, OptimizerState, RunRecord, Source,
};
use crate::optimize::{Mode, OptimizeError, Scenario, ScenarioError, optimize};
use crate::scheduler::{MasterMsg, NewTask};
use crate::task::{Priority, now_us};
use heatmesh_agents::registry;
use heatmesh_proto::v1 as pb;
use pb::optimization_service_server::OptimizationService;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status as GrpcStatus};

/// Largest scenario text accepted (JSON or TOML).
pub const MAX_SCENARIO_BYTES: usize = 8 * 1024 * 1024;
/// Largest `options.time_budget_ms` of a scenario given over gRPC, so one request cannot
/// hold a solver slot for long (the fleet's configured budget is not capped).
pub const MAX_TIME_BUDGET_MS: u64 = 60_000;
/// Solves running at once; further requests wait for a slot.
pub const SOLVE_SLOTS: usize = 2;

impl From<OptimizerError> for GrpcStatus {
    fn from(e: OptimizerError) -> Self {
        match e {
            OptimizerError::InvalidArgument(m) => GrpcStatus::invalid_argument(m),
            OptimizerError::NotFound(m) => GrpcStatus::not_found(m),
            OptimizerError::FailedPrecondition(m) => GrpcStatus::failed_precondition(m),
        }
    }
}

/// The OptimizationService: the task API's handles plus the optimizer's operator state.
#[derive(Clone)]
pub struct OptimizerApi {
    api: Api,
    /// Overrides and the last run; a `Mutex` rather than master-actor state, as explained in
    /// [`crate::heat_dispatch`]. Never held across an `.await`.
    state: Arc<Mutex<OptimizerState>>,
    /// The configured fleet scenario, when the configuration has heat data.
    fleet: Option<Arc<FleetHeat>>,
    /// Bounds concurrent solves so the optimizer cannot take every core from the mesh.
    slots: Arc<Semaphore>,
}

impl OptimizerApi {
    /// The service over a running master's API handles.
    pub fn new(api: Api) -> Self {
        let fleet = api.config.fleet_heat().map(Arc::new);
        OptimizerApi {
            api,
            state: Arc::default(),
            fleet,
            slots: Arc::new(Semaphore::new(SOLVE_SLOTS)),
        }
    }

    fn state(&self) -> MutexGuard<'_, OptimizerState> {
        // A panic while holding the lock cannot leave these plain values half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fleet(&self, field: &str) -> Result<Arc<FleetHeat>, GrpcStatus> {
        self.fleet.clone().ok_or_else(|| {
            GrpcStatus::failed_precondition(format!(
                "{field}: no plant has a [plants.heat] table in the master's configuration, so \
                 there is no fleet scenario"
            ))
        })
    }

    fn status(&self) -> pb::OptimizerStatus {
        let now = now_us();
        let mut st = self.state();
        pb::OptimizerStatus {
            algorithm_override: st.algorithm(now).as_ref().map(override_to_proto),
            relaxations: st
                .relaxations(now)
                .iter()
                .map(relaxation_to_proto)
                .collect(),
            last_run: st.last_run().map(run_to_proto),
            fleet_configured: self.fleet.is_some(),
        }
    }

    /// Submits each consuming plant's setpoints through the master's normal Submit path.
    async fn dispatch_setpoints(
        &self,
        consumers: &[(String, &'static str)],
        result: &crate::optimize::DispatchResult,
    ) -> Result<Vec<u64>, GrpcStatus> {
        let mut ids = Vec::new();
        for (plant, kind) in consumers {
            let Some(json) = hd::plant_setpoints(result, plant) else {
                continue;
            };
            let payload = json.to_string();
            if let Some(k) = registry::lookup(kind) {
                (k.validate_json)(payload.as_bytes()).map_err(|e| {
                    GrpcStatus::internal(format!("setpoints for {plant} ({kind}) rejected: {e}"))
                })?;
            }
            let task = NewTask {
                plant_id: plant.clone(),
                agent_kind: kind.to_string(),
                payload,
                priority: Priority::High,
                idempotency_key: None,
                deadline: None,
                max_attempts: None,
            };
            let s = self.api.call(|r| MasterMsg::Submit(task, r)).await??;
            ids.push(s.task.id);
        }
        Ok(ids)
    }
}

/// A scenario error as INVALID_ARGUMENT naming each field under the request field it came
/// from (`scenario_json.units[1].efficiency: ...`).
fn scenario_error(field: &str, e: &ScenarioError) -> GrpcStatus {
    let errs = e.field_errors();
    if errs.is_empty() {
        return GrpcStatus::invalid_argument(format!("{field}: {e}"));
    }
    let msg: Vec<String> = errs
        .iter()
        .map(|f| format!("{field}.{}: {}", f.path, f.rule))
        .collect();
    GrpcStatus::invalid_argument(msg.join("; "))
}

#[tonic::async_trait]
impl OptimizationService for OptimizerApi {
    async fn run_heat_distribution(
        &self,
        req: Request<pb::RunHeatDistributionRequest>,
    ) -> Result<Response<pb::RunHeatDistributionResponse>, GrpcStatus> {
        let req = req.into_inner();
        let given = [
            !req.scenario_json.is_empty(),
            !req.scenario_toml.is_empty(),
            req.use_fleet,
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(GrpcStatus::invalid_argument(
                "scenario_json: give exactly one of scenario_json, scenario_toml or use_fleet = true",
            ));
        }
        for (field, text) in [
            ("scenario_json", &req.scenario_json),
            ("scenario_toml", &req.scenario_toml),
        ] {
            if text.len() > MAX_SCENARIO_BYTES {
                return Err(GrpcStatus::invalid_argument(format!(
                    "{field}: {} bytes exceeds the limit of {MAX_SCENARIO_BYTES} bytes",
                    text.len()
                )));
            }
        }
        let requested = hd::parse_algorithm("algorithm", &req.algorithm)?;
        if req.dispatch_setpoints && !req.use_fleet {
            return Err(GrpcStatus::invalid_argument(
                "dispatch_setpoints: needs use_fleet = true (setpoints go to the fleet's plants)",
            ));
        }
        let at_us = now_us();
        let (over, relaxations) = {
            let mut st = self.state();
            (st.algorithm(at_us), st.relaxations(at_us))
        };

        let mut consumers = Vec::new();
        let mut fleet = None;
        let (source, mut scenario, substitutions, applied, notes) = if req.use_fleet {
            let f = self.fleet("use_fleet")?;
            if req.dispatch_setpoints {
                consumers = hd::setpoint_consumers(&self.api.config, &f);
                if consumers.is_empty() {
                    let kinds: Vec<&str> = registry::KINDS.iter().map(|k| k.id).collect();
                    return Err(GrpcStatus::failed_precondition(format!(
                        "dispatch_setpoints: no plant agent accepts setpoints: none of the agent \
                         kinds ({}) consumes GL-001 setpoints yet; run without dispatch_setpoints \
                         and read the setpoints from the result",
                        kinds.join(", ")
                    )));
                }
            }
            // Include results whose commit is still queued.
            self.api
                .ledger
                .barrier()
                .await
                .map_err(|e| GrpcStatus::unavailable(e.to_string()))?;
            let (ff, ledger) = (f.clone(), self.api.ledger.clone());
            let built =
                tokio::task::spawn_blocking(move || hd::fleet_scenario(&ff, &ledger, &relaxations))
                    .await
                    .map_err(|e| GrpcStatus::internal(format!("fleet scenario: {e}")))?
                    .map_err(|e| GrpcStatus::unavailable(e.to_string()))?;
            fleet = Some(f);
            (
                Source::Fleet,
                built.scenario,
                built.substitutions,
                built.relaxations,
                built.notes,
            )
        } else if !req.scenario_json.is_empty() {
            let s = Scenario::from_json_str(&req.scenario_json)
                .map_err(|e| scenario_error("scenario_json", &e))?;
            (Source::Json, s, vec![], vec![], vec![])
        } else {
            let s = Scenario::from_toml_str(&req.scenario_toml)
                .map_err(|e| scenario_error("scenario_toml", &e))?;
            (Source::Toml, s, vec![], vec![], vec![])
        };

        let (algorithm, algorithm_source) = match (requested, &over) {
            (Some(a), _) => (a, AlgorithmSource::Request),
            (None, Some(o)) => (o.algorithm, AlgorithmSource::Override),
            (None, None) => (scenario.options.algorithm, AlgorithmSource::Scenario),
        };
        scenario.options.algorithm = algorithm;
        if req.strict {
            scenario.options.mode = Mode::Strict;
        }
        if let Err(e) = scenario.validate() {
            // Only the overrides can break a scenario that validated before (or, for the
            // fleet, a configuration that validated at start).
            let why = match algorithm_source {
                AlgorithmSource::Request => " (algorithm from the request)",
                AlgorithmSource::Override => " (algorithm from SetAlgorithm)",
                AlgorithmSource::Scenario => "",
            };
            let msg: Vec<String> = e
                .field_errors()
                .iter()
                .map(|f| match &fleet {
                    Some(fl) => fl.config_error(f),
                    None => format!("{}.{}: {}", source.as_str(), f.path, f.rule),
                })
                .collect();
            return Err(GrpcStatus::invalid_argument(format!(
                "{}{why}",
                msg.join("; ")
            )));
        }
        // The fleet's budget is the operator's configuration; a client's is capped.
        if fleet.is_none() && scenario.options.time_budget_ms > MAX_TIME_BUDGET_MS {
            return Err(GrpcStatus::invalid_argument(format!(
                "{}.options.time_budget_ms: at most {MAX_TIME_BUDGET_MS} over gRPC, got {}",
                source.as_str(),
                scenario.options.time_budget_ms
            )));
        }

        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| GrpcStatus::unavailable(format!("optimizer: {e}")))?;
        let solve = scenario.clone();
        let out = tokio::task::spawn_blocking(move || optimize(&solve))
            .await
            .map_err(|e| GrpcStatus::internal(format!("optimizer: {e}")))?;
        drop(permit);

        let mut record = RunRecord {
            at_us,
            source,
            scenario_name: scenario.name.clone(),
            algorithm_requested: algorithm,
            algorithm_source,
            outcome: Err(String::new()),
            substitutions,
            relaxations: applied,
            notes,
            setpoint_task_ids: vec![],
        };
        let result = match out {
            Ok(r) => r,
            Err(OptimizeError::Scenario(e)) => return Err(scenario_error(source.as_str(), &e)),
            Err(e @ OptimizeError::NoVerifiedDispatch(_)) => {
                record.outcome = Err(e.to_string());
                self.state().record(record);
                return Err(GrpcStatus::internal(e.to_string()));
            }
        };
        if !consumers.is_empty() {
            record.setpoint_task_ids = self.dispatch_setpoints(&consumers, &result).await?;
        }
        let typed = dispatch_to_proto(&result)?;
        let result_json = serde_json::to_string(&result)
            .map_err(|e| GrpcStatus::internal(format!("result encoding: {e}")))?;
        record.outcome = Ok(result);
        let run = run_to_proto(&record);
        self.state().record(record);
        Ok(Response::new(pb::RunHeatDistributionResponse {
            result: Some(typed),
            result_json,
            setpoint_task_ids: run.setpoint_task_ids.clone(),
            run: Some(run),
            scenario_json: scenario.to_json_string(),
        }))
    }

    async fn set_algorithm(
        &self,
        req: Request<pb::SetAlgorithmRequest>,
    ) -> Result<Response<pb::OptimizerStatus>, GrpcStatus> {
        let req = req.into_inner();
        let algorithm = hd::parse_algorithm("algorithm", &req.algorithm)?
            .unwrap_or(crate::optimize::Algorithm::Auto);
        let duration = duration_from_proto("duration", req.duration)?;
        self.state()
            .set_algorithm(algorithm, duration, self.fleet.as_deref(), now_us())?;
        Ok(Response::new(self.status()))
    }

    async fn relax_constraints(
        &self,
        req: Request<pb::RelaxConstraintsRequest>,
    ) -> Result<Response<pb::OptimizerStatus>, GrpcStatus> {
        let req = req.into_inner();
        let fleet = self.fleet("names")?;
        if req.clear {
            self.state()
                .clear_relaxations(&fleet, &req.names, now_us())?;
        } else {
            let duration = duration_from_proto("duration", req.duration)?.ok_or_else(|| {
                GrpcStatus::invalid_argument("duration: required (relaxations always expire)")
            })?;
            self.state()
                .relax(&fleet, &req.names, req.factor, duration, now_us())?;
        }
        Ok(Response::new(self.status()))
    }

    async fn get_status(
        &self,
        _: Request<pb::GetOptimizerStatusRequest>,
    ) -> Result<Response<pb::OptimizerStatus>, GrpcStatus> {
        Ok(Response::new(self.status()))
    }
}
