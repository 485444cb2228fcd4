//! The command line as an operator uses it: demo, calc, and the client verbs against `up`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn heatmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heatmesh"))
        .args(args)
        .env_remove("HEATMESH_CONFIG")
        .env_remove("HEATMESH_ADDR")
        .output()
        .expect("run heatmesh")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn demo_prints_the_known_answer_and_its_alert() {
    let o = heatmesh(&["demo", "--bulk", "60"]);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "demo failed: {}\n{}",
        out,
        String::from_utf8_lossy(&o.stderr)
    );
    let row = out
        .lines()
        .find(|l| l.contains("seed: fuel+electricity"))
        .expect("known-answer row");
    assert!(
        row.contains("90.48") && row.contains("9.52") && row.contains("ALERT"),
        "{row}"
    );
    assert!(out.contains("Plant-001 task 1: 9.52 % of input unaccounted (100.0 kWh) exceeds the plant's 5 % closure threshold"), "{out}");
    assert!(out.contains("60/60 heat balances completed"), "{out}");
    assert!(
        out.contains(
            "InvalidArgument: payload.gl009_heat_balance.inputs[0].energy_kwh: must be >= 0"
        ),
        "{out}"
    );
}

#[test]
fn calc_runs_every_shipped_example() {
    for kind in [
        "gl-002", "gl-003", "gl-004", "gl-006", "gl-009", "gl-012", "gl-014",
    ] {
        let path = format!("{}/examples/calc/{kind}.json", env!("CARGO_MANIFEST_DIR"));
        let o = heatmesh(&["calc", kind, "--input", &path]);
        assert!(
            o.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v.is_object(), "{kind}: {v}");
    }
}

#[test]
fn calc_runs_without_a_mesh_and_names_bad_fields() {
    let o = heatmesh(&[
        "calc",
        "gl-009",
        "--input",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/calc/gl-009.json"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["efficiency_pct"].as_f64().unwrap() > 0.0);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"inputs":[{"name":"fuel","energy_kwh":-3}]}"#).unwrap();
    let o = heatmesh(&["calc", "gl-009", "--input", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("inputs[0].energy_kwh: must be >= 0, got -3"),
        "{err}"
    );
    let o = heatmesh(&["calc", "gl-999", "--input", bad.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown agent kind \"gl-999\""));
}

#[test]
fn client_verbs_against_a_running_master() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut up = Command::new(env!("CARGO_BIN_EXE_heatmesh"))
        .args([
            "up",
            "--listen",
            &addr,
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("HEATMESH_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while !heatmesh(&["plants", "--addr", &addr]).status.success() {
        assert!(Instant::now() < end, "master did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let input = dir.path().join("balance.json");
    std::fs::write(
        &input,
        r#"{"inputs":[{"name":"fuel","energy_kwh":1000},{"name":"electricity","energy_kwh":50}],
            "outputs":[{"name":"steam","energy_kwh":750},{"name":"electricity","energy_kwh":200}]}"#,
    )
    .unwrap();
    let input = input.to_str().unwrap();
    let o = heatmesh(&[
        "submit",
        "--addr",
        &addr,
        "--plant",
        "Plant-001",
        "--kind",
        "gl-009",
        "--input",
        input,
        "--wait",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t["status"], "completed");
    assert!((t["result"]["efficiency_pct"].as_f64().unwrap() - 90.476_190_476).abs() < 1e-6);
    let id = t["id"].as_str().unwrap().to_string();

    let o = heatmesh(&["task", &id, "--addr", &addr, "--watch"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("completed"), "{}", stdout(&o));

    let o = heatmesh(&["tasks", "--addr", &addr, "--status", "completed", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);

    let o = heatmesh(&["tasks", "--addr", &addr, "--status", "bogus"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--status: unknown state \"bogus\""));

    let o = heatmesh(&[
        "submit",
        "--addr",
        &addr,
        "--plant",
        "Plant-404",
        "--kind",
        "gl-009",
        "--input",
        input,
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("NotFound: plant_id: no plant \"Plant-404\"")
    );

    let o = heatmesh(&["tasks", "retry-failed", "--addr", &addr]);
    assert_eq!(stdout(&o).trim(), "retried 0 tasks");
    let o = heatmesh(&[
        "tasks",
        "clear-orphaned",
        "--older-than",
        "60m",
        "--addr",
        &addr,
    ]);
    assert_eq!(stdout(&o).trim(), "cleared 0 tasks");

    let o = heatmesh(&["agents", "--addr", &addr, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        17,
        "every agent of the three sample plants"
    );
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "running")
    );
    let o = heatmesh(&["plants", "--addr", &addr]);
    assert!(stdout(&o).contains("North steam plant"));
    let o = heatmesh(&["nodes", "--addr", &addr, "--json"]);
    assert!(stdout(&o).contains("\"master\""));
    up.kill().unwrap();
    up.wait().unwrap();

    let o = heatmesh(&["plants", "--addr", &addr]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is `heatmesh up` running?"));
}
