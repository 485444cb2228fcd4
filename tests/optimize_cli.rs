//! `heatmesh optimize` as an operator uses it: a scenario file solved without a mesh, and the
//! fleet verbs against `heatmesh up`.

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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

const TWO_PLANTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/optimize/two-plants.json"
);

#[test]
fn scenario_file_known_answer_as_json_and_table() {
    let v = json(&heatmesh(&["optimize", "--scenario", TWO_PLANTS, "--json"]));
    assert!((v["objective_eur_h"].as_f64().unwrap() - 1628.930573).abs() < 1e-6);
    assert_eq!(v["status"], "optimal");
    let units = v["units"].as_array().unwrap();
    let heat = |id: &str| {
        units.iter().find(|u| u["id"] == id).unwrap()["heat_mw"]
            .as_f64()
            .unwrap()
    };
    assert!((heat("gas") - 20.0).abs() < 1e-6 && (heat("oil") - 5.4).abs() < 1e-6);
    assert!((v["links"][0]["sent_mw"].as_f64().unwrap() - 8.0).abs() < 1e-6);

    let toml = TWO_PLANTS.replace(".json", ".toml");
    let o = heatmesh(&["optimize", "--scenario", &toml]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for part in [
        "status optimal  algorithm lp, microlp  objective 1628.930573 EUR/h",
        "unit  plant  on  heat MW",
        "AB    A     B   8.000    7.600",
        "costs EUR/h: fuel 984.31",
        "B      18.000     10.400       7.600",
    ] {
        assert!(out.contains(part), "{part:?} not in\n{out}");
    }

    let o = heatmesh(&[
        "optimize",
        "--scenario",
        TWO_PLANTS,
        "--algorithm",
        "greedy",
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(
        (v["algorithm"].as_str(), v["status"].as_str()),
        (Some("greedy"), Some("heuristic"))
    );
}

#[test]
fn bad_scenario_files_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    let text = std::fs::read_to_string(TWO_PLANTS)
        .unwrap()
        .replace("\"efficiency\": 0.85", "\"efficiency\": 1.2")
        .replace("\"to\": \"B\"", "\"to\": \"C\"");
    std::fs::write(&bad, text).unwrap();
    let o = heatmesh(&["optimize", "--scenario", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("units[1].efficiency: unit \"oil\": efficiency must be in (0, 1] (got 1.2)")
            && err.contains("links[0].to: link \"AB\" refers to unknown plant \"C\""),
        "{err}"
    );
    let strict = dir.path().join("d40.json");
    let text = std::fs::read_to_string(TWO_PLANTS)
        .unwrap()
        .replace("\"demand_mw\": 18.0", "\"demand_mw\": 40.0");
    std::fs::write(&strict, text).unwrap();
    let o = heatmesh(&[
        "optimize",
        "--scenario",
        strict.to_str().unwrap(),
        "--strict",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("violation balance[B] (unserved): 12.400000 MW"),
        "{}",
        stdout(&o)
    );
    let o = heatmesh(&["optimize"]);
    assert!(
        stderr(&o).contains("give --scenario FILE"),
        "{}",
        stderr(&o)
    );
}

/// `heatmesh up` with the sample fleet on a free port; killed on drop.
struct Up(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn up() -> (Up, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_heatmesh"))
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
    let up = Up(child, dir);
    let end = Instant::now() + Duration::from_secs(20);
    while !heatmesh(&["plants", "--addr", &addr]).status.success() {
        assert!(Instant::now() < end, "master did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (up, addr)
}

#[test]
fn fleet_verbs_against_a_running_master() {
    let (_up, addr) = up();
    let v = json(&heatmesh(&[
        "optimize", "--fleet", "--addr", &addr, "--json",
    ]));
    // The sample fleet's optimum (worked by hand in master/src/config.rs tests).
    assert!((v["result"]["objective_eur_h"].as_f64().unwrap() - 1896.150488).abs() < 1e-5);
    assert_eq!(v["run"]["source"], "fleet");
    assert_eq!(v["scenario"]["plants"].as_array().unwrap().len(), 3);

    let v = json(&heatmesh(&[
        "optimize",
        "set-algorithm",
        "greedy",
        "--for",
        "10m",
        "--addr",
        &addr,
        "--json",
    ]));
    assert_eq!(v["algorithm_override"]["algorithm"], "greedy");
    assert!(v["algorithm_override"]["expires_at"].is_string());
    let o = heatmesh(&[
        "optimize",
        "relax",
        "link:P1-P2",
        "--factor",
        "1.5",
        "--for",
        "10m",
        "--addr",
        &addr,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("link:P1-P2  link    P1-P2  capacity_mw  1.5"),
        "{}",
        stdout(&o)
    );

    let o = heatmesh(&["optimize", "--fleet", "--addr", &addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("algorithm asked greedy (override)"), "{out}");
    assert!(
        out.contains("relaxed link P1-P2 capacity_mw 8 -> 12 (x1.5)"),
        "{out}"
    );
    assert!(out.contains("P1-P2  Plant-001  Plant-002  12.000"), "{out}");

    let v = json(&heatmesh(&[
        "optimize", "status", "--addr", &addr, "--json",
    ]));
    assert_eq!(v["last_run"]["algorithm"], "greedy");
    assert_eq!(v["relaxations"][0]["relaxed"], 12.0);
    let o = heatmesh(&["optimize", "status", "--addr", &addr]);
    assert!(
        stdout(&o).contains("algorithm override: greedy until"),
        "{}",
        stdout(&o)
    );

    let o = heatmesh(&["optimize", "relax", "--clear", "--addr", &addr]);
    assert!(stdout(&o).contains("relaxations: none"), "{}", stdout(&o));
    let o = heatmesh(&[
        "optimize", "relax", "Pump-7", "--factor", "2", "--for", "1m", "--addr", &addr,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("NotFound: names[0]"), "{}", stderr(&o));
    let o = heatmesh(&[
        "optimize",
        "--fleet",
        "--dispatch-setpoints",
        "--addr",
        &addr,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("setpoint"), "{}", stdout(&o));
}
