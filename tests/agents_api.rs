//! Every sub-agent kind answers through SubmitTask on a plant that runs it, with the same
//! result as the calculation run directly, and refuses bad input with INVALID_ARGUMENT.

mod common;

use common::*;
use heatmesh_agents::registry;
use heatmesh_proto::v1 as pb;
use pb::task_payload::Request;
use std::time::Duration;
use tonic::Code;

const T: Duration = Duration::from_secs(10);

fn example(kind: &str) -> String {
    let path = format!(
        "{}/examples/calc/{}.json",
        env!("CARGO_MANIFEST_DIR"),
        kind.to_ascii_lowercase()
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The typed protobuf request built from an example (field names match the JSON).
fn typed(kind: &str, json: &str) -> Request {
    match kind {
        "GL-002" => Request::Gl002BoilerEfficiency(serde_json::from_str(json).unwrap()),
        "GL-003" => Request::Gl003Combustion(serde_json::from_str(json).unwrap()),
        "GL-004" => Request::Gl004Emissions(serde_json::from_str(json).unwrap()),
        "GL-006" => Request::Gl006HeatRecovery(serde_json::from_str(json).unwrap()),
        "GL-012" => Request::Gl012Steam(serde_json::from_str(json).unwrap()),
        "GL-014" => Request::Gl014HeatExchanger(serde_json::from_str(json).unwrap()),
        k => panic!("no typed request for {k}"),
    }
}

fn request(plant: &str, r: Request) -> pb::SubmitTaskRequest {
    pb::SubmitTaskRequest {
        plant_id: plant.into(),
        payload: Some(pb::TaskPayload { request: Some(r) }),
        ..Default::default()
    }
}

fn direct(kind: &str, json: &str) -> serde_json::Value {
    let k = registry::lookup(kind).unwrap();
    serde_json::from_slice(&(k.run_json)(json.as_bytes()).unwrap()).unwrap()
}

#[tokio::test]
async fn every_kind_answers_through_submit_task() {
    let mut h = start(false).await;
    let cases = [
        ("Plant-001", "GL-002"),
        ("Plant-001", "GL-003"),
        ("Plant-001", "GL-004"),
        ("Plant-003", "GL-006"),
        ("Plant-001", "GL-012"),
        ("Plant-002", "GL-014"),
    ];
    for (plant, kind) in cases {
        let json = example(kind);
        for payload in [
            typed(kind, &json),
            Request::Json(pb::JsonRequest {
                agent_kind: kind.to_ascii_lowercase(),
                json: json.clone(),
            }),
        ] {
            let id = submit_ok(&mut h, request(plant, payload)).await;
            let t = wait_terminal(&mut h.tasks, &id, T).await;
            assert_eq!(t.status, pb::TaskStatus::Completed as i32, "{kind}: {t:?}");
            assert_eq!(t.agent, format!("{plant}/{kind}"));
            let r = t.result.unwrap();
            assert_eq!(r.agent_kind, kind);
            let got: serde_json::Value = serde_json::from_str(&r.json).unwrap();
            assert_eq!(
                got,
                direct(kind, &json),
                "{kind}: mesh and direct results differ"
            );
            assert!(r.typed.is_some(), "{kind}: typed result missing");
        }
    }
    // GL-002 through the mesh reproduces the BEE worked example (82.04 %).
    let id = submit_ok(
        &mut h,
        request("Plant-002", typed("GL-002", &example("GL-002"))),
    )
    .await;
    let t = wait_terminal(&mut h.tasks, &id, T).await;
    let Some(pb::task_result::Typed::Gl002BoilerEfficiency(b)) = t.result.unwrap().typed else {
        panic!()
    };
    assert!(
        (b.efficiency_pct - 82.04).abs() < 0.005,
        "{}",
        b.efficiency_pct
    );
    assert_eq!(b.basis, "gross");
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn invalid_inputs_name_the_field_for_every_kind() {
    let mut h = start(false).await;
    let mut steam: pb::SteamRequest = serde_json::from_str(&example("GL-012")).unwrap();
    steam.temperature_k = Some(5000.0);
    let mut comb: pb::CombustionRequest = serde_json::from_str(&example("GL-003")).unwrap();
    comb.flue_o2_pct = 21.0;
    let mut hx: pb::ExchangerRequest = serde_json::from_str(&example("GL-014")).unwrap();
    hx.hot_flow_kg_s = -1.0;
    let mut rec: pb::RecoveryRequest = serde_json::from_str(&example("GL-006")).unwrap();
    rec.waste_flow_kg_s = -4.0;
    let mut boiler: pb::BoilerEfficiencyRequest = serde_json::from_str(&example("GL-002")).unwrap();
    boiler.flue_gas_temp_c = Some(10.0);
    let mut em: pb::EmissionsRequest = serde_json::from_str(&example("GL-004")).unwrap();
    em.fuel = "unobtainium".into();
    let cases = [
        (
            "Plant-001",
            Request::Gl012Steam(steam),
            "payload.gl012_steam.temperature_k",
        ),
        (
            "Plant-001",
            Request::Gl003Combustion(comb),
            "payload.gl003_combustion.flue_o2_pct",
        ),
        (
            "Plant-002",
            Request::Gl014HeatExchanger(hx),
            "payload.gl014_heat_exchanger.hot_flow_kg_s",
        ),
        (
            "Plant-003",
            Request::Gl006HeatRecovery(rec),
            "payload.gl006_heat_recovery.waste_flow_kg_s",
        ),
        (
            "Plant-001",
            Request::Gl002BoilerEfficiency(boiler),
            "payload.gl002_boiler_efficiency.flue_gas_temp_c",
        ),
        (
            "Plant-001",
            Request::Gl004Emissions(em),
            "payload.gl004_emissions.fuel",
        ),
    ];
    for (plant, req, field) in cases {
        let e = h.tasks.submit_task(request(plant, req)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {}", e.message());
        assert!(
            e.message().starts_with(field),
            "{:?} should name {field}",
            e.message()
        );
    }
    // A kind the plant does not run is NOT_FOUND, naming what it runs.
    let e = h
        .tasks
        .submit_task(request("Plant-003", typed("GL-003", &example("GL-003"))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message().contains("plant Plant-003 runs no GL-003 agent"),
        "{}",
        e.message()
    );
    let held = tasks_held(&mut h).await;
    assert!(held.is_empty(), "refused requests reached the ledger");
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn unknown_fields_in_a_json_payload_are_refused_naming_them() {
    let mut h = start(true).await;
    let cases = [
        ("Plant-001", "GL-009", "closure_treshold_pct"),
        ("Plant-001", "GL-001", "setpionts"),
        ("Plant-001", "GL-002", "not_a_field"),
        ("Plant-001", "GL-003", "not_a_field"),
        ("Plant-001", "GL-004", "not_a_field"),
        ("Plant-003", "GL-006", "not_a_field"),
        ("Plant-001", "GL-012", "not_a_field"),
        ("Plant-002", "GL-014", "not_a_field"),
    ];
    for (plant, kind, typo) in cases {
        let mut v: serde_json::Value = serde_json::from_str(&example(kind)).unwrap();
        v[typo] = serde_json::json!(3.0);
        let req = request(
            plant,
            Request::Json(pb::JsonRequest {
                agent_kind: kind.into(),
                json: v.to_string(),
            }),
        );
        let e = h.tasks.submit_task(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{kind}: {}", e.message());
        assert!(
            e.message().starts_with("payload.json.json")
                && e.message().contains(&format!("unknown field `{typo}`")),
            "{kind}: {}",
            e.message()
        );
    }
    assert!(
        tasks_held(&mut h).await.is_empty(),
        "a refused payload reached the ledger"
    );
    h.mesh.shutdown().await;
}
