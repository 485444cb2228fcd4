//! `heatmesh loadtest` end to end: the shipped smoke scenario, shortened, against a master and
//! three node processes it starts on loopback; the JSON report must hold real, consistent
//! figures; and the same against a running master, its CPU and memory read from /metrics.

mod common;

use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_heatmesh");

fn u(v: &Value, path: &str) -> u64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path} is not a count: {cur}"))
}

fn f(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    let x = cur
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"));
    assert!(x.is_finite(), "{path} = {x}");
    x
}

/// Paths of every null in the report (NaN is written as null too).
fn nulls(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Null => out.push(path.to_string()),
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                nulls(x, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                nulls(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn smoke_scenario_against_real_processes() {
    let out = Command::new(BIN)
        .args([
            "loadtest",
            concat!(env!("CARGO_MANIFEST_DIR"), "/drills/loadtest/smoke.json"),
            "--duration-minutes",
            "0.15",
            "--ramp-up-minutes",
            "0.05",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert_eq!(
        out.status.success(),
        r["verdict"]["pass"].as_bool().unwrap(),
        "exit status follows the verdict; stderr:\n{stderr}"
    );

    let mut null = Vec::new();
    nulls(&r, "", &mut null);
    assert_eq!(null, vec!["mesh.logs"], "unmeasured or NaN figures");

    assert_eq!(r["mesh"]["mode"], "started");
    assert_eq!((u(&r, "mesh.plants"), u(&r, "mesh.sub_agents")), (3, 15));
    assert_eq!(u(&r, "mesh.nodes"), 3);
    assert_eq!(f(&r, "duration_minutes"), 0.15);

    // Coordination: 20/s ramped over 3 s and held to 9 s = 30 + 120 tasks, all completed.
    let c = &r["coordination"];
    assert_eq!(u(c, "planned"), 150);
    assert_eq!(u(c, "scheduled"), u(c, "planned"));
    assert_eq!(
        u(c, "scheduled"),
        u(c, "accepted") + u(c, "submit_errors") + u(c, "dropped")
    );
    assert_eq!(
        u(c, "accepted"),
        u(c, "completed") + u(c, "failed") + u(c, "unfinished")
    );
    assert!(u(c, "completed") > 0);
    assert_eq!(u(c, "completed"), 150, "every task completed");
    assert_eq!(f(c, "success_rate_pct"), 100.0);
    assert_eq!(f(c, "error_pct"), 0.0);
    assert_eq!(u(c, "latency_all.count"), u(c, "completed"));
    assert!(u(c, "latency_steady.count") > 0 && u(c, "latency_steady.count") < 150);
    let (p50, p95, p99, max) = (
        f(c, "latency_all.p50_ms"),
        f(c, "latency_all.p95_ms"),
        f(c, "latency_all.p99_ms"),
        f(c, "latency_all.max_ms"),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{c}");
    let by_kind = c["by_kind"].as_object().unwrap();
    assert!(
        !by_kind.contains_key("GL-001"),
        "setpoint agents get no coordination tasks"
    );
    let kinds_accepted: u64 = by_kind
        .values()
        .map(|k| k["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(kinds_accepted, u(c, "accepted"));
    assert!(f(c, "accepted_per_s_steady") > 0.0);

    // Fleet runs: 1/s over the same schedule = 1.5 + 6 = 7 runs, each dispatching the three
    // plants' setpoints.
    let o = &r["optimization"];
    assert_eq!(u(o, "planned"), 7);
    assert_eq!(
        u(o, "scheduled"),
        u(o, "completed") + u(o, "errors") + u(o, "dropped")
    );
    assert_eq!((u(o, "completed"), u(o, "errors")), (7, 0));
    assert!(o["dispatch_setpoints"].as_bool().unwrap());
    assert_eq!(u(o, "setpoints.submitted"), 3 * u(o, "completed"));
    assert_eq!(u(o, "setpoints.completed"), u(o, "setpoints.submitted"));
    assert_eq!(u(o, "latency_all.count"), 7);
    assert!(f(o, "optimizer_time.p95_ms") <= f(o, "latency_all.max_ms"));

    // Processes: measured from /proc over the load window.
    let p = &r["processes"];
    assert!(f(p, "master.cpu_pct_mean") > 0.0);
    assert!(f(p, "master.rss_mib_peak") > 1.0);
    assert!(f(p, "master.rss_mib_peak") >= f(p, "master.rss_mib_mean"));
    assert_eq!(u(p, "nodes.processes"), 3);
    assert!(f(p, "nodes.rss_mib_peak") > f(p, "master.rss_mib_peak") / 10.0);
    assert!(u(p, "master.samples") >= 5);
    assert!(p["exited"].as_array().unwrap().is_empty());
    assert!(u(p, "ledger_bytes") > 0);
    assert!(f(p, "machine.cpu_pct_mean") > 0.0 && f(p, "machine.mem_used_mib_peak") > 0.0);

    let checks = r["verdict"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3);
    assert_eq!(checks[2]["metric"], "agent_coordination_errors");
    assert_eq!(checks[2]["ok"], true);
}

#[test]
fn a_bad_scenario_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        r#"{"test_name": "x", "duration_minutes": 30, "plants": 15, "sub_agents": 10,
            "heat_optimization_requests_per_minute": 100,
            "agent_coordination_events_per_second": 50, "ramp_up_minutes": 5}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["loadtest", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sub_agents: must be at least one per plant (10 < 15 plants)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_master_reports_its_process_figures_from_metrics() {
    let h = common::start(false).await;
    let grpc = h.mesh.grpc_addr.to_string();
    let metrics = h.mesh.metrics_addr.unwrap().to_string();
    // A wrong metrics address is refused before any load is sent.
    let wrong = grpc.clone();
    let bad = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "loadtest",
                concat!(env!("CARGO_MANIFEST_DIR"), "/drills/loadtest/smoke.json"),
                "--master",
                &wrong,
                "--master-metrics",
                &wrong,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains(&format!(
            "--master-metrics {}: no process_cpu_seconds_total",
            grpc
        )),
        "{err}"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "loadtest",
                concat!(env!("CARGO_MANIFEST_DIR"), "/drills/loadtest/smoke.json"),
                "--duration-minutes",
                "0.1",
                "--ramp-up-minutes",
                "0",
                "--master",
                &grpc,
                "--master-metrics",
                &metrics,
                "--json",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    assert_eq!(r["mesh"]["mode"], "running", "{r}");
    assert!(u(&r, "coordination.completed") > 0, "{r}");
    // The master is this test process: its figures came from its /metrics page.
    let p = &r["processes"];
    assert!(u(p, "master.samples") >= 4, "{p}");
    assert!(f(p, "master.cpu_pct_mean") > 0.0, "{p}");
    assert!(f(p, "master.rss_mib_peak") > 1.0, "{p}");
    assert_eq!(
        f(p, "master.memory_pct_peak"),
        0.0,
        "a remote master's share is not known"
    );
    assert!(p["nodes"].is_null(), "{p}");
    h.mesh.shutdown().await;
}
