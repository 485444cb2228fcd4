//! End-to-end tests of OptimizationService over gRPC on loopback: known answers, the fleet
//! scenario with GL-002 efficiencies, refused scenarios, SetAlgorithm, RelaxConstraints and
//! their expiry.

mod common;

use common::*;
use heatmesh_proto::v1 as pb;
use pb::optimization_service_client::OptimizationServiceClient;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const T: Duration = Duration::from_secs(10);
const TWO_PLANTS: &str = include_str!("../examples/optimize/two-plants.json");
const TWO_PLANTS_TOML: &str = include_str!("../examples/optimize/two-plants.toml");
const TWO_PLANTS_MILP: &str = include_str!("../examples/optimize/two-plants-milp.json");
const GL002_EXAMPLE: &str = include_str!("../examples/calc/gl-002.json");

fn client(h: &Harness) -> OptimizationServiceClient<Channel> {
    OptimizationServiceClient::new(h.channel.clone())
}

fn json_run(scenario: &str) -> pb::RunHeatDistributionRequest {
    pb::RunHeatDistributionRequest {
        scenario_json: scenario.into(),
        ..Default::default()
    }
}

fn fleet_run() -> pb::RunHeatDistributionRequest {
    pb::RunHeatDistributionRequest {
        use_fleet: true,
        ..Default::default()
    }
}

fn unit<'a>(d: &'a pb::HeatDispatch, id: &str) -> &'a pb::HeatUnitSetpoint {
    d.units
        .iter()
        .find(|u| u.id == id)
        .unwrap_or_else(|| panic!("no unit {id}"))
}

fn link<'a>(d: &'a pb::HeatDispatch, id: &str) -> &'a pb::HeatLinkFlow {
    d.links
        .iter()
        .find(|l| l.id == id)
        .unwrap_or_else(|| panic!("no link {id}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Tonnes CO2 per MWh of fuel from a factor in kg/TJ (1 TJ = 1e6/3600 MWh).
fn t_per_mwh(kg_per_tj: f64) -> f64 {
    kg_per_tj * 1e-3 * 3600.0 / 1e6
}

/// The sample fleet's optimum by hand (see config.rs `sample_fleet_heat_scenario_and_its_optimum`):
/// Boiler-1 20 MW, HP-1 5 and WHR-1 3 MW, P3-P2 2 MW sent, P1-P2 `p1p2` MW sent, Boiler-3 the rest.
fn fleet_objective(oil_efficiency: f64, p1p2: f64) -> f64 {
    let gas = (30.0 + 80.0 * t_per_mwh(56_100.0)) / 0.90;
    let oil = (50.0 + 80.0 * t_per_mwh(74_100.0)) / oil_efficiency;
    let oil_mw = 18.0 - 2.0 * 0.92 - p1p2 * 0.95;
    (12.0 + p1p2) * gas + 5.0 * 30.0 + 2.0 * 1.0 + oil_mw * oil
}

fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, parts: &[&str]) {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), code, "{e:?}");
    for p in parts {
        assert!(e.message().contains(p), "{p:?} not in {:?}", e.message());
    }
}

#[tokio::test]
async fn known_answers_from_json_and_toml_scenarios() {
    let h = start(false).await;
    let mut c = client(&h);
    let r = c
        .run_heat_distribution(json_run(TWO_PLANTS))
        .await
        .unwrap()
        .into_inner();
    let d = r.result.clone().unwrap();
    assert_eq!((d.status.as_str(), d.algorithm.as_str()), ("optimal", "lp"));
    assert!(
        close(d.objective_eur_h, 1628.930573),
        "{}",
        d.objective_eur_h
    );
    assert!(close(unit(&d, "gas").heat_mw, 20.0));
    assert!(close(unit(&d, "oil").heat_mw, 5.4));
    assert!(close(unit(&d, "hp").heat_mw, 5.0));
    assert!(close(link(&d, "AB").sent_mw, 8.0));
    let costs = d.costs.unwrap();
    assert!(close(costs.total_eur_h, d.objective_eur_h));
    let b = d.plants.iter().find(|p| p.id == "B").unwrap();
    assert!((b.marginal_cost_eur_mwh.unwrap() - 83.930353).abs() < 1e-5);
    let full: serde_json::Value = serde_json::from_str(&r.result_json).unwrap();
    assert_eq!(full["objective_eur_h"].as_f64(), Some(d.objective_eur_h));
    let run = r.run.unwrap();
    assert_eq!(
        (run.source.as_str(), run.algorithm_source.as_str()),
        ("scenario_json", "scenario")
    );

    let toml = pb::RunHeatDistributionRequest {
        scenario_toml: TWO_PLANTS_TOML.into(),
        ..Default::default()
    };
    let d = c
        .run_heat_distribution(toml)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(close(d.objective_eur_h, 1628.930573));

    let d = c
        .run_heat_distribution(json_run(TWO_PLANTS_MILP))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(d.algorithm, "milp");
    assert!(
        close(d.objective_eur_h, 1371.068219),
        "{}",
        d.objective_eur_h
    );
    assert!((unit(&d, "gas").heat_mw - 17.263158).abs() < 1e-6);
    assert_eq!(unit(&d, "oil").on, Some(true));

    // D_B = 40 in strict mode: infeasible, and the violation names plant B's balance.
    let mut strict = json_run(&TWO_PLANTS.replace("\"demand_mw\": 18.0", "\"demand_mw\": 40.0"));
    strict.strict = true;
    let d = c
        .run_heat_distribution(strict)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(
        (d.status.as_str(), d.mode.as_str()),
        ("infeasible", "strict")
    );
    let v = &d.violations[0];
    assert_eq!(
        (v.constraint.as_str(), v.kind.as_str()),
        ("balance[B]", "unserved")
    );
    assert!(close(v.amount_mw, 12.4));

    let s = c
        .get_status(pb::GetOptimizerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let last = s.last_run.unwrap();
    assert_eq!(
        (last.status.as_str(), last.algorithm.as_str()),
        ("infeasible", "lp")
    );
    assert_eq!(last.violations[0].constraint, "balance[B]");
    assert!(s.fleet_configured);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn fleet_run_uses_the_configuration_and_the_newest_gl002_result() {
    let mut h = start(false).await;
    let mut c = client(&h);
    let r = c
        .run_heat_distribution(fleet_run())
        .await
        .unwrap()
        .into_inner();
    let d = r.result.unwrap();
    assert_eq!(d.status, "optimal");
    let expected = fleet_objective(0.85, 8.0);
    assert!(
        close(d.objective_eur_h, expected),
        "{} vs {expected}",
        d.objective_eur_h
    );
    assert!(close(unit(&d, "WHR-1").heat_mw, 3.0));
    assert!(close(link(&d, "P3-P2").sent_mw, 2.0));
    let run = r.run.unwrap();
    assert_eq!(run.source, "fleet");
    assert!(run.efficiency_substitutions.is_empty());
    let scenario: serde_json::Value = serde_json::from_str(&r.scenario_json).unwrap();
    assert_eq!(scenario["plants"].as_array().unwrap().len(), 3);

    // Two GL-002 results for Plant-002: the newest one replaces Boiler-3's efficiency.
    let gl002 = |json: String| pb::SubmitTaskRequest {
        plant_id: "Plant-002".into(),
        payload: Some(pb::TaskPayload {
            request: Some(pb::task_payload::Request::Json(pb::JsonRequest {
                agent_kind: "GL-002".into(),
                json,
            })),
        }),
        ..Default::default()
    };
    let mut newest = (String::new(), 0.0);
    for radiation in ["1.0", "2.5"] {
        let req = GL002_EXAMPLE.replace(
            "\"radiation_loss_pct\": 1.0",
            &format!("\"radiation_loss_pct\": {radiation}"),
        );
        let id = submit_ok(&mut h, gl002(req)).await;
        let t = wait_terminal(&mut h.tasks, &id, T).await;
        assert_eq!(t.status, pb::TaskStatus::Completed as i32, "{t:?}");
        let res: serde_json::Value = serde_json::from_str(&t.result.unwrap().json).unwrap();
        newest = (id, res["efficiency_pct"].as_f64().unwrap());
    }
    let (task_id, pct) = newest;
    assert!(
        (pct - (82.04 - 1.5)).abs() < 0.01,
        "BEE example with 2.5 % radiation: {pct}"
    );
    let r = c
        .run_heat_distribution(fleet_run())
        .await
        .unwrap()
        .into_inner();
    let run = r.run.unwrap();
    assert_eq!(run.efficiency_substitutions.len(), 1, "{run:?}");
    let s = &run.efficiency_substitutions[0];
    assert_eq!(
        (s.unit.as_str(), s.plant.as_str(), s.task_id.as_str()),
        ("Boiler-3", "Plant-002", task_id.as_str())
    );
    let used = pct / 100.0 * 1.066; // gross -> net with the unit's gcv_ncv_ratio
    assert!(close(s.used_efficiency, used) && close(s.configured_efficiency, 0.85));
    assert_eq!(s.energy_basis, "net");
    let d = r.result.unwrap();
    let expected = fleet_objective(used, 8.0);
    assert!(
        close(d.objective_eur_h, expected),
        "{} vs {expected}",
        d.objective_eur_h
    );
    let scenario: serde_json::Value = serde_json::from_str(&r.scenario_json).unwrap();
    assert!(close(
        scenario["units"][3]["efficiency"].as_f64().unwrap(),
        used
    ));
    let last = c
        .get_status(pb::GetOptimizerStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .last_run
        .unwrap();
    assert_eq!(last.efficiency_substitutions[0].task_id, task_id);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn bad_scenarios_are_invalid_argument_naming_the_field() {
    let h = start(false).await;
    let mut c = client(&h);
    let cases = [
        (
            TWO_PLANTS.replace("\"max_mw\": 25.0", "\"max_mw\": -25.0"),
            vec!["scenario_json.units[0].max_mw", "negative capacity -25"],
        ),
        (
            TWO_PLANTS.replace("\"efficiency\": 0.85", "\"efficiency\": 1.2"),
            vec![
                "scenario_json.units[1].efficiency",
                "efficiency must be in (0, 1] (got 1.2)",
            ],
        ),
        (
            TWO_PLANTS.replace("\"to\": \"B\"", "\"to\": \"C\""),
            vec!["scenario_json.links[0].to", "unknown plant \"C\""],
        ),
        (
            "{ not json".to_string(),
            vec!["scenario_json: cannot parse JSON scenario"],
        ),
    ];
    for (scenario, parts) in &cases {
        expect_code(
            c.run_heat_distribution(json_run(scenario)).await,
            Code::InvalidArgument,
            parts,
        );
    }
    // NaN can only come in through TOML.
    let nan = pb::RunHeatDistributionRequest {
        scenario_toml: TWO_PLANTS_TOML.replace("max_mw = 15.0", "max_mw = nan"),
        ..Default::default()
    };
    expect_code(
        c.run_heat_distribution(nan).await,
        Code::InvalidArgument,
        &["scenario_toml.units[1].max_mw: must be a finite number (got NaN)"],
    );
    // Every broken rule is listed, not just the first.
    let two = TWO_PLANTS
        .replace("\"max_mw\": 25.0", "\"max_mw\": -25.0")
        .replace("\"cop\": 3.0", "\"cop\": 0.0");
    expect_code(
        c.run_heat_distribution(json_run(&two)).await,
        Code::InvalidArgument,
        &["units[0].max_mw", "units[2].cop"],
    );
    expect_code(
        c.run_heat_distribution(pb::RunHeatDistributionRequest::default())
            .await,
        Code::InvalidArgument,
        &["give exactly one of scenario_json, scenario_toml or use_fleet"],
    );
    let mut both = json_run(TWO_PLANTS);
    both.use_fleet = true;
    expect_code(
        c.run_heat_distribution(both).await,
        Code::InvalidArgument,
        &["exactly one"],
    );
    let mut algo = json_run(TWO_PLANTS);
    algo.algorithm = "simplex".into();
    expect_code(
        c.run_heat_distribution(algo).await,
        Code::InvalidArgument,
        &["algorithm: must be auto, lp, milp or greedy"],
    );
    let mut lp = json_run(TWO_PLANTS_MILP);
    lp.algorithm = "lp".into();
    expect_code(
        c.run_heat_distribution(lp).await,
        Code::InvalidArgument,
        &[
            "scenario_json.options.algorithm: lp cannot honour on/off unit",
            "algorithm from the request",
        ],
    );
    let slow = TWO_PLANTS.replace(
        "\"options\": {",
        "\"options\": { \"time_budget_ms\": 3600000,",
    );
    expect_code(
        c.run_heat_distribution(json_run(&slow)).await,
        Code::InvalidArgument,
        &["scenario_json.options.time_budget_ms: at most 60000"],
    );
    let mut setpoints = json_run(TWO_PLANTS);
    setpoints.dispatch_setpoints = true;
    expect_code(
        c.run_heat_distribution(setpoints).await,
        Code::InvalidArgument,
        &["dispatch_setpoints: needs use_fleet"],
    );
    // Nothing refused counts as a run.
    let s = c
        .get_status(pb::GetOptimizerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(s.last_run.is_none(), "{s:?}");
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn set_algorithm_greedy_shows_in_status_and_runs() {
    let h = start(false).await;
    let mut c = client(&h);
    let s = c
        .set_algorithm(pb::SetAlgorithmRequest {
            algorithm: "greedy".into(),
            duration: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let o = s.algorithm_override.unwrap();
    assert_eq!(o.algorithm, "greedy");
    let (set, exp) = (o.set_at.unwrap(), o.expires_at.unwrap());
    assert_eq!(exp.seconds - set.seconds, 600);

    let r = c
        .run_heat_distribution(json_run(TWO_PLANTS))
        .await
        .unwrap()
        .into_inner();
    let d = r.result.unwrap();
    assert_eq!(
        (d.algorithm.as_str(), d.status.as_str()),
        ("greedy", "heuristic")
    );
    // The merit order finds this small case's optimum too, and the LP bound proves it.
    assert!(close(d.objective_eur_h, 1628.930573));
    assert_eq!(r.run.unwrap().algorithm_source, "override");
    // A request naming its algorithm wins over the override.
    let mut lp = json_run(TWO_PLANTS);
    lp.algorithm = "lp".into();
    let r = c.run_heat_distribution(lp).await.unwrap().into_inner();
    assert_eq!(r.result.unwrap().algorithm, "lp");
    assert_eq!(r.run.unwrap().algorithm_source, "request");

    let s = c
        .get_status(pb::GetOptimizerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.algorithm_override.unwrap().algorithm, "greedy");
    let last = s.last_run.unwrap();
    assert_eq!(
        (last.algorithm.as_str(), last.status.as_str()),
        ("lp", "optimal")
    );
    assert!(close(last.objective_eur_h, 1628.930573));
    assert!(last.solve_time_ms > 0.0 && last.fallback_reason.is_none());

    expect_code(
        c.set_algorithm(pb::SetAlgorithmRequest {
            algorithm: "simplex".into(),
            duration: None,
        })
        .await,
        Code::InvalidArgument,
        &["algorithm: must be auto, lp, milp or greedy, got \"simplex\""],
    );
    let s = c
        .set_algorithm(pb::SetAlgorithmRequest {
            algorithm: "auto".into(),
            duration: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(s.algorithm_override.is_none(), "auto clears");
    h.mesh.shutdown().await;
}

fn relax(names: &[&str], factor: f64, ms: i32) -> pb::RelaxConstraintsRequest {
    pb::RelaxConstraintsRequest {
        names: names.iter().map(|n| n.to_string()).collect(),
        factor,
        duration: Some(prost_types::Duration {
            seconds: (ms / 1000) as i64,
            nanos: (ms % 1000) * 1_000_000,
        }),
        clear: false,
    }
}

#[tokio::test]
async fn relax_constraints_raises_a_capacity_and_changes_the_dispatch() {
    let h = start(false).await;
    let mut c = client(&h);
    let s = c
        .relax_constraints(relax(&["link:P1-P2"], 1.5, 600_000))
        .await
        .unwrap()
        .into_inner();
    let r = &s.relaxations[0];
    assert_eq!(
        (r.target.as_str(), r.id.as_str(), r.field.as_str()),
        ("link", "P1-P2", "capacity_mw")
    );
    assert_eq!((r.configured, r.relaxed), (8.0, 12.0));
    assert!(r.expires_at.is_some());

    let r = c
        .run_heat_distribution(fleet_run())
        .await
        .unwrap()
        .into_inner();
    let d = r.result.unwrap();
    // 12 MW now flow from Plant-001 (Boiler-1 at 24 MW) and Boiler-3 makes less.
    assert!(close(link(&d, "P1-P2").sent_mw, 12.0));
    assert!(close(unit(&d, "Boiler-1").heat_mw, 24.0));
    let expected = fleet_objective(0.85, 12.0);
    assert!(
        close(d.objective_eur_h, expected),
        "{} vs {expected}",
        d.objective_eur_h
    );
    assert!(d.objective_eur_h < fleet_objective(0.85, 8.0));
    assert_eq!(r.run.unwrap().relaxations[0].id, "P1-P2");

    // A given scenario is a study, not the fleet: relaxations do not touch it.
    let d = c
        .run_heat_distribution(json_run(TWO_PLANTS))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(close(d.objective_eur_h, 1628.930573));

    expect_code(
        c.relax_constraints(relax(&["Boiler-1", "Pump-7"], 2.0, 1000))
            .await,
        Code::NotFound,
        &[
            "names[1]: the fleet has no unit, link or plant \"Pump-7\"",
            "P3-P2",
        ],
    );
    expect_code(
        c.relax_constraints(relax(&["P1-P2"], f64::NAN, 1000)).await,
        Code::InvalidArgument,
        &["factor: must be > 0"],
    );
    let mut no_duration = relax(&["P1-P2"], 2.0, 1000);
    no_duration.duration = None;
    expect_code(
        c.relax_constraints(no_duration).await,
        Code::InvalidArgument,
        &["duration: required"],
    );
    // Refused requests change nothing; clear ends the relaxation.
    let s = c
        .relax_constraints(pb::RelaxConstraintsRequest {
            names: vec!["P1-P2".into()],
            clear: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(s.relaxations.is_empty(), "{s:?}");
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn overrides_expire() {
    let h = start(false).await;
    let mut c = client(&h);
    c.relax_constraints(relax(&["plant:Plant-002"], 0.5, 400))
        .await
        .unwrap();
    c.set_algorithm(pb::SetAlgorithmRequest {
        algorithm: "greedy".into(),
        duration: Some(prost_types::Duration {
            seconds: 0,
            nanos: 400_000_000,
        }),
    })
    .await
    .unwrap();
    let r = c
        .run_heat_distribution(fleet_run())
        .await
        .unwrap()
        .into_inner();
    let d = r.result.unwrap();
    assert_eq!(d.algorithm, "greedy");
    let p2 = d.plants.iter().find(|p| p.id == "Plant-002").unwrap();
    assert_eq!(p2.demand_mw, 9.0, "demand halved while relaxed");

    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = c
        .get_status(pb::GetOptimizerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        s.algorithm_override.is_none() && s.relaxations.is_empty(),
        "{s:?}"
    );
    let last = s.last_run.unwrap();
    assert_eq!(
        last.relaxations.len(),
        1,
        "the last run still says what it used"
    );
    let d = c
        .run_heat_distribution(fleet_run())
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!((d.algorithm.as_str(), d.status.as_str()), ("lp", "optimal"));
    assert!(close(d.objective_eur_h, fleet_objective(0.85, 8.0)));
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn optimization_service_is_in_health_and_reflection() {
    let h = start(false).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(h.channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "heatmesh.v1.OptimizationService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let msg = ServerReflectionClient::new(h.channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "heatmesh.v1.OptimizationService"),
        "{list:?}"
    );
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn fleet_setpoints_reach_every_plant_as_tasks() {
    let mut h = start(false).await;
    let mut c = client(&h);
    let mut req = fleet_run();
    req.dispatch_setpoints = true;
    let r = c.run_heat_distribution(req).await.unwrap().into_inner();
    assert_eq!(
        r.setpoint_task_ids.len(),
        3,
        "one setpoint task per plant: {:?}",
        r.setpoint_task_ids
    );
    for id in &r.setpoint_task_ids {
        let t = wait_terminal(&mut h.tasks, id, std::time::Duration::from_secs(10)).await;
        assert_eq!(t.status, pb::TaskStatus::Completed as i32, "{t:?}");
        assert_eq!(t.agent_kind, "GL-001");
        let ack: serde_json::Value = serde_json::from_str(&t.result.unwrap().json).unwrap();
        assert_eq!(ack["balance_closes"], true, "{ack}");
        assert!(ack["units_applied"].as_u64().unwrap() >= 1, "{ack}");
    }
    h.mesh.shutdown().await;
}
