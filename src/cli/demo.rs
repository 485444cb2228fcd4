//! `heatmesh demo`: the embedded default. Starts the master with the sample fleet in this
//! process, drives a sample workload through the real gRPC API on loopback and prints the
//! results, the balance alerts and what the supervision tree did.

use super::client::{connect, indent, rpc_err, status_name, watch_until_done};
use super::mesh::MeshOpts;
use super::table::Table;
use anyhow::{Context, bail};
use heatmesh_master::server::{self, StartOptions};
use heatmesh_proto::v1 as pb;
use pb::mesh_service_client::MeshServiceClient;
use pb::task_service_client::TaskServiceClient;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `heatmesh demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the ledger here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Fleet configuration (default: the embedded sample fleet).
    #[arg(long, env = "HEATMESH_CONFIG")]
    config: Option<PathBuf>,
    /// Size of the bulk workload submitted after the named cases.
    #[arg(long, default_value_t = 300)]
    bulk: usize,
}

fn flow(name: &str, kwh: f64) -> pb::EnergyFlow {
    pb::EnergyFlow {
        name: name.into(),
        energy_kwh: kwh,
        ..Default::default()
    }
}

fn balance(
    inputs: Vec<pb::EnergyFlow>,
    outputs: Vec<pb::EnergyFlow>,
    losses: Vec<pb::EnergyFlow>,
) -> pb::HeatBalanceRequest {
    pb::HeatBalanceRequest {
        inputs,
        outputs,
        losses,
        ..Default::default()
    }
}

/// The named cases: (plant, description, request).
fn cases() -> Vec<(&'static str, &'static str, pb::HeatBalanceRequest)> {
    let mut exergy = balance(
        vec![pb::EnergyFlow {
            kind: Some("fuel".into()),
            fuel: Some("natural_gas".into()),
            ..flow("natural gas", 1000.0)
        }],
        vec![pb::EnergyFlow {
            kind: Some("steam".into()),
            temperature_k: Some(453.15),
            ..flow("steam 10 bar", 850.0)
        }],
        vec![
            flow("stack", 100.0),
            flow("radiation", 30.0),
            flow("blowdown", 20.0),
        ],
    );
    exergy.equipment = Some("Boiler-1".into());
    vec![
        (
            "Plant-001",
            "seed: fuel+electricity in, steam+electricity out",
            balance(
                vec![flow("fuel", 1000.0), flow("electricity", 50.0)],
                vec![flow("steam", 750.0), flow("electricity", 200.0)],
                vec![],
            ),
        ),
        (
            "Plant-001",
            "seed: gas boiler, losses metered (exergy)",
            exergy,
        ),
        (
            "Plant-002",
            "CHP: heat + power out, 6 % unmetered",
            balance(
                vec![flow("natural gas", 2000.0)],
                vec![flow("heat", 900.0), flow("electricity", 700.0)],
                vec![flow("stack", 160.0), flow("radiation", 120.0)],
            ),
        ),
        (
            "Plant-003",
            "heat pump: ambient heat counted as input",
            balance(
                vec![flow("electricity", 1000.0), flow("ambient heat", 2000.0)],
                vec![flow("process heat", 2850.0)],
                vec![flow("distribution", 100.0)],
            ),
        ),
        (
            "Plant-003",
            "waste-heat recovery, meter drift 12 %",
            balance(
                vec![flow("waste heat", 500.0)],
                vec![flow("hot water", 380.0)],
                vec![flow("exchanger loss", 60.0)],
            ),
        ),
    ]
}

fn submit_req(plant: &str, req: pb::HeatBalanceRequest, key: String) -> pb::SubmitTaskRequest {
    pb::SubmitTaskRequest {
        plant_id: plant.into(),
        payload: Some(pb::TaskPayload {
            request: Some(pb::task_payload::Request::Gl009HeatBalance(req)),
        }),
        idempotency_key: key,
        ..Default::default()
    }
}

fn typed(t: &pb::Task) -> Option<&pb::HeatBalanceResult> {
    match t.result.as_ref()?.typed.as_ref()? {
        pb::task_result::Typed::Gl009HeatBalance(r) => Some(r),
        _ => None,
    }
}

/// Runs the demo; fails (non-zero exit) if any named case does not complete.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary data directory")?;
    let opts = MeshOpts {
        config: args.config,
        data_dir: Some(args.data_dir.unwrap_or_else(|| tmp.path().to_path_buf())),
        listen: Some("127.0.0.1:0".parse()?),
        metrics_listen: Some("127.0.0.1:0".parse()?),
    };
    let mut cfg = opts.load()?;
    cfg.allow_fault_injection = true;
    let started = Instant::now();
    // The plants' SCADA, simulated: their Modbus devices and OPC UA server on free loopback
    // ports.
    let sim = match heatmesh_sim::plantsim::start_on_free_ports(&mut cfg, 1).await {
        Ok(s) => Some(s),
        Err(heatmesh_sim::plantsim::SimError::Nothing) => None,
        Err(e) => return Err(e).context("starting the plant simulator"),
    };
    let mesh = server::start(cfg.clone(), StartOptions::default()).await?;
    if !mesh.wait_ready(Duration::from_secs(10)).await {
        bail!("plants were not placed within 10 s");
    }
    println!(
        "heatmesh demo: master + {} plants in-process, gRPC on {}, ledger in {} (ready in {} ms)\n",
        cfg.plants.len(),
        mesh.grpc_addr,
        cfg.data_dir.display(),
        started.elapsed().as_millis()
    );
    let channel = connect(&mesh.grpc_addr.to_string()).await?;
    let mut tasks = TaskServiceClient::new(channel.clone());
    let mut mesh_api = MeshServiceClient::new(channel);

    // Named cases, each followed with WatchTask until it completes.
    let mut rows = Vec::new();
    for (i, (plant, label, req)) in cases().into_iter().enumerate() {
        let r = tasks
            .submit_task(submit_req(plant, req, format!("demo-case-{i}")))
            .await
            .map_err(rpc_err)?
            .into_inner();
        let id = r.task.context("no task returned")?.id;
        let done = watch_until_done(&mut tasks, &id, |_| {}).await?;
        rows.push((plant, label, done));
    }

    // Supervision drill: the Plant-002 GL-009 agent panics on its next task.
    mesh_api
        .inject_fault(pb::InjectFaultRequest {
            plant_id: "Plant-002".into(),
            kind: "GL-009".into(),
            panic_next: 1,
            delay_ms: 0,
        })
        .await
        .map_err(rpc_err)?;
    let drill_req = balance(
        vec![flow("natural gas", 1200.0)],
        vec![flow("steam", 1000.0)],
        vec![flow("stack", 150.0)],
    );
    let r = tasks
        .submit_task(submit_req("Plant-002", drill_req, "demo-drill".into()))
        .await
        .map_err(rpc_err)?
        .into_inner();
    let drill_id = r.task.context("no task returned")?.id;
    watch_until_done(&mut tasks, &drill_id, |_| {}).await?;
    let drill = tasks
        .get_task(pb::GetTaskRequest {
            id: drill_id.clone(),
        })
        .await
        .map_err(rpc_err)?
        .into_inner();
    rows.push((
        "Plant-002",
        "supervision drill: agent panics once",
        drill.clone(),
    ));

    // Idempotent resubmit returns the first task.
    let (plant, _, req) = cases().swap_remove(0);
    let again = tasks
        .submit_task(submit_req(plant, req, "demo-case-0".into()))
        .await
        .map_err(rpc_err)?
        .into_inner();

    // Bad input is refused before it reaches the ledger.
    let bad = tasks
        .submit_task(submit_req(
            "Plant-001",
            balance(vec![flow("fuel", -5.0)], vec![flow("steam", 1.0)], vec![]),
            String::new(),
        ))
        .await;
    let unknown = tasks
        .submit_task(submit_req(
            "Plant-999",
            balance(vec![flow("fuel", 5.0)], vec![], vec![]),
            String::new(),
        ))
        .await;

    // The other sub-agents on the same mesh, each with its shipped example.
    let mut others = Vec::new();
    for (plant, kind) in OTHER_AGENTS {
        let json = heatmesh_agents::registry::lookup(kind).map_or("{}", |k| k.example);
        let r = tasks
            .submit_task(pb::SubmitTaskRequest {
                plant_id: plant.to_string(),
                payload: Some(pb::TaskPayload {
                    request: Some(pb::task_payload::Request::Json(pb::JsonRequest {
                        agent_kind: kind.to_string(),
                        json: json.to_string(),
                    })),
                }),
                ..Default::default()
            })
            .await
            .map_err(rpc_err)?
            .into_inner();
        let id = r.task.context("no task returned")?.id;
        let done = watch_until_done(&mut tasks, &id, |_| {}).await?;
        others.push((plant, kind, done));
    }

    // GL-001: dispatch the fleet's heat (GL-002 efficiencies from the ledger included) and send
    // each plant its setpoints as a task.
    let mut optimizer = pb::optimization_service_client::OptimizationServiceClient::new(
        connect(&mesh.grpc_addr.to_string()).await?,
    );
    let dispatch = optimizer
        .run_heat_distribution(pb::RunHeatDistributionRequest {
            use_fleet: true,
            dispatch_setpoints: true,
            ..Default::default()
        })
        .await
        .map_err(rpc_err)?
        .into_inner();
    for id in &dispatch.setpoint_task_ids {
        watch_until_done(&mut tasks, id, |_| {}).await?;
    }

    // Bulk workload across the fleet.
    let bulk_started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..args.bulk {
        let mut c = tasks.clone();
        let plant = cfg.plants[i % cfg.plants.len()].id.clone();
        let fuel = 800.0 + (i % 17) as f64 * 25.0;
        let steam = fuel * (0.78 + (i % 7) as f64 * 0.015);
        let req = balance(
            vec![flow("fuel", fuel)],
            vec![flow("steam", steam)],
            vec![flow("stack", fuel * 0.12)],
        );
        handles.push(tokio::spawn(async move {
            let r = c
                .submit_task(submit_req(&plant, req, String::new()))
                .await?
                .into_inner();
            let id = r.task.map(|t| t.id).unwrap_or_default();
            let mut s = c.watch_task(pb::GetTaskRequest { id }).await?.into_inner();
            let mut last = None;
            while let Some(t) = s.message().await? {
                last = Some(t.status);
            }
            Ok::<_, tonic::Status>(last)
        }));
    }
    let mut bulk_done = 0;
    for h in handles {
        if let Ok(Ok(Some(s))) = h.await
            && s == pb::TaskStatus::Completed as i32
        {
            bulk_done += 1;
        }
    }
    let bulk_secs = bulk_started.elapsed().as_secs_f64();

    // Report.
    let mut tb = Table::new(&[
        "task",
        "plant",
        "case",
        "in kWh",
        "out kWh",
        "eff %",
        "2nd-law %",
        "closure %",
        "limit %",
        "alert",
        "attempt",
    ]);
    let mut alerts = Vec::new();
    let mut failures = 0;
    for (plant, label, t) in &rows {
        let Some(r) = typed(t) else {
            failures += 1;
            tb.row(vec![
                t.id.clone(),
                plant.to_string(),
                label.to_string(),
                format!("{} {}", status_name(t.status), t.error),
            ]);
            continue;
        };
        let second = r
            .second_law_efficiency_pct
            .map_or("-".to_string(), |v| format!("{v:.2}"));
        tb.row(vec![
            t.id.clone(),
            plant.to_string(),
            label.to_string(),
            format!("{:.1}", r.total_input_kwh),
            format!("{:.1}", r.total_output_kwh),
            format!("{:.2}", r.efficiency_pct),
            second,
            format!("{:.2}", r.closure_pct),
            format!("{}", r.closure_threshold_pct),
            if r.balance_alert {
                "ALERT".into()
            } else {
                "ok".into()
            },
            t.attempt.to_string(),
        ]);
        if r.balance_alert {
            alerts.push(format!(
                "  {plant} task {}: {:.2} % of input unaccounted ({:.1} kWh) exceeds the plant's {} % closure threshold; check meters for {}",
                t.id,
                r.closure_pct,
                r.unaccounted_kwh,
                r.closure_threshold_pct,
                label
            ));
        }
    }
    println!("GL-009 heat balances (submitted over gRPC, results from the plants' agents):\n");
    print!("{}", tb.render());
    println!("\nBalance alerts:");
    if alerts.is_empty() {
        println!("  none");
    }
    for a in &alerts {
        println!("{a}");
    }
    println!(
        "\nSupervision drill: Plant-002/GL-009 panicked on task {drill_id}; it was restarted and the task retried:"
    );
    for h in &drill.history {
        println!(
            "  {} -> {}: {}",
            status_name(h.from).replace("unspecified", "new"),
            status_name(h.to),
            h.detail
        );
    }
    println!("\nThe other sub-agents, same mesh (examples/calc/<kind>.json through SubmitTask):");
    let mut ot = Table::new(&["task", "plant", "agent", "status", "key figures"]);
    for (plant, kind, t) in &others {
        let figures = t
            .result
            .as_ref()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.json).ok())
            .map(|v| key_figures(kind, &v))
            .unwrap_or_else(|| t.error.clone());
        if t.status != pb::TaskStatus::Completed as i32 {
            failures += 1;
        }
        ot.row(vec![
            t.id.clone(),
            plant.to_string(),
            kind.to_string(),
            status_name(t.status),
            figures,
        ]);
    }
    println!("{}", indent(&ot.render(), 2));
    let d: serde_json::Value = serde_json::from_str(&dispatch.result_json).unwrap_or_default();
    println!(
        "\nGL-001 fleet heat distribution: {} by {} in {:.1} ms, {:.2} EUR/h, {:.3} t CO2/h; setpoints sent to {} plants as tasks {}",
        d["status"].as_str().unwrap_or("?"),
        d["algorithm"].as_str().unwrap_or("?"),
        d["solve_time_ms"].as_f64().unwrap_or(f64::NAN),
        d["objective_eur_h"].as_f64().unwrap_or(f64::NAN),
        d["co2_t_h"].as_f64().unwrap_or(f64::NAN),
        dispatch.setpoint_task_ids.len(),
        dispatch.setpoint_task_ids.join(", ")
    );
    if let Some(units) = d["units"].as_array() {
        let mut ut = Table::new(&["unit", "plant", "heat MW"]);
        for u in units {
            ut.row(vec![
                u["id"].as_str().unwrap_or("").to_string(),
                u["plant"].as_str().unwrap_or("").to_string(),
                format!("{:.3}", u["heat_mw"].as_f64().unwrap_or(0.0)),
            ]);
        }
        println!("{}", indent(&ut.render(), 2));
    }
    println!(
        "\nIdempotent resubmit of key demo-case-0: returned task {} (duplicate = {})",
        again.task.map(|t| t.id).unwrap_or_default(),
        again.duplicate
    );
    println!("Bad input refused, nothing stored:");
    for r in [bad.map(|_| ()), unknown.map(|_| ())] {
        match r {
            Err(s) => println!("  {:?}: {}", s.code(), s.message()),
            Ok(()) => bail!("bad input was accepted"),
        }
    }
    println!(
        "\nBulk workload: {bulk_done}/{} heat balances completed across {} plants in {:.2} s ({:.0} tasks/s, each submitted, durable, dispatched and watched over gRPC)",
        args.bulk,
        cfg.plants.len(),
        bulk_secs,
        args.bulk as f64 / bulk_secs.max(1e-9)
    );
    if let Some(sim) = &sim {
        live_readings(&mesh.grpc_addr.to_string(), sim).await?;
    }
    let agents = mesh_api
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .map_err(rpc_err)?
        .into_inner();
    println!("\nAgents:");
    let mut at = Table::new(&["agent", "status", "restarts", "completed", "epoch"]);
    for a in &agents.agents {
        at.row(vec![
            a.name.clone(),
            a.status.clone(),
            a.restarts.to_string(),
            a.tasks_completed.to_string(),
            a.epoch.to_string(),
        ]);
    }
    println!("{}", indent(&at.render(), 2));
    if let Some(addr) = mesh.metrics_addr {
        println!("\nMetrics were served at http://{addr}/metrics while the demo ran.");
    }
    mesh.shutdown().await;
    if failures > 0 || bulk_done != args.bulk {
        bail!(
            "{failures} named cases and {} bulk tasks did not complete",
            args.bulk - bulk_done
        );
    }
    Ok(())
}

/// Waits until every meter read over Modbus or OPC UA has readings in the ledger, then prints the
/// latest of each: the simulated plants' data, polled by the connectors, durable at the
/// master, read back through QueryReadings.
async fn live_readings(addr: &str, sim: &heatmesh_sim::plantsim::Simulator) -> anyhow::Result<()> {
    use pb::reading_service_client::ReadingServiceClient;
    let mut c = ReadingServiceClient::new(connect(addr).await?);
    let meters: Vec<pb::Meter> = c
        .list_meters(pb::ListMetersRequest::default())
        .await
        .map_err(rpc_err)?
        .into_inner()
        .meters
        .into_iter()
        .filter(|m| m.source_kind == "modbus" || m.source_kind == "opcua")
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rows = Vec::new();
    for m in &meters {
        let r = loop {
            let r = c
                .query_readings(pb::QueryReadingsRequest {
                    plant_id: m.plant_id.clone(),
                    meter: m.id.clone(),
                    ..Default::default()
                })
                .await
                .map_err(rpc_err)?
                .into_inner();
            if r.readings.len() >= 2 || Instant::now() >= deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let Some(last) = r.readings.last() else {
            bail!(
                "no readings of {} {} arrived over {} within 15 s",
                m.plant_id,
                m.id,
                protocol(&m.source_kind)
            );
        };
        rows.push(vec![
            m.plant_id.clone(),
            m.id.clone(),
            protocol(&m.source_kind).to_string(),
            m.quantity.clone(),
            format!("{:.3} {}", last.value, r.unit),
            r.readings.len().to_string(),
            if last.flags.is_empty() {
                "good".into()
            } else {
                last.flags.join(",")
            },
        ]);
    }
    let served = sim.endpoints().await.len();
    println!(
        "\nLive plant data: {} meters read over Modbus TCP and OPC UA from the plant simulator ({served} server{}), durable in the ledger:",
        meters.len(),
        if served == 1 { "" } else { "s" }
    );
    let mut t = Table::new(&[
        "plant", "meter", "via", "quantity", "latest", "readings", "quality",
    ]);
    for r in rows {
        t.row(r);
    }
    println!("{}", indent(&t.render(), 2));
    for (plant, s) in sim.state() {
        println!(
            "  {plant} (simulated): fuel {:.1} kWh in = heat {:.1} kWh + losses {:.1} kWh since start",
            s.fuel_kwh, s.heat_kwh, s.loss_kwh
        );
    }
    Ok(())
}

fn protocol(kind: &str) -> &'static str {
    match kind {
        "opcua" => "OPC UA",
        "modbus" => "Modbus TCP",
        _ => "push",
    }
}

/// The other agent kinds and a plant that runs each; requests are the registry's examples.
const OTHER_AGENTS: [(&str, &str); 6] = [
    ("Plant-001", "GL-002"),
    ("Plant-001", "GL-003"),
    ("Plant-001", "GL-004"),
    ("Plant-003", "GL-006"),
    ("Plant-001", "GL-012"),
    ("Plant-002", "GL-014"),
];

/// A one-line summary of an agent's result for the demo table.
fn key_figures(kind: &str, v: &serde_json::Value) -> String {
    let f = |k: &str| v[k].as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    match kind {
        "GL-002" => format!(
            "efficiency {} % ({} basis, {} method)",
            f("efficiency_pct"),
            s("basis"),
            s("method")
        ),
        "GL-003" => format!(
            "excess air {} %, flue-gas loss {} % (net), O2 target gain {} %",
            f("excess_air_pct"),
            f("flue_gas_loss_pct"),
            f("efficiency_gain_pct")
        ),
        "GL-004" => format!(
            "CO2 {} kg, intensity {} kg/MWh, {}",
            f("co2_kg"),
            f("intensity_kg_mwh"),
            s("compliance_status")
        ),
        "GL-006" => format!(
            "recoverable {} kW, limited by {}",
            f("recoverable_heat_kw"),
            s("limited_by")
        ),
        "GL-012" => {
            let st = &v["state"];
            format!(
                "h {:.2} kJ/kg, s {:.4} kJ/(kg K), region {}",
                st["enthalpy_kj_kg"].as_f64().unwrap_or(f64::NAN),
                st["entropy_kj_kg_k"].as_f64().unwrap_or(f64::NAN),
                st["region"]
            )
        }
        "GL-014" => format!(
            "duty {} W, UA {} W/K, cleanliness {} %",
            f("duty_w"),
            f("ua_w_k"),
            f("cleanliness_pct")
        ),
        _ => v.to_string(),
    }
}
