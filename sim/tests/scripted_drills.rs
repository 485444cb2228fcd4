//! Every shipped drill (drills/*.toml) passes in-process, with the figures each one is about.

use heatmesh_master::server::StartOptions;
use heatmesh_sim::drill::{self, Report};
use heatmesh_sim::harness::InProcMesh;
use heatmesh_sim::scenario::Scenario;
use heatmesh_sim::workload::Progress;
use std::sync::Arc;

async fn run(file: &str) -> Report {
    let path = format!("{}/../drills/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let s = Scenario::from_toml(&text).unwrap();
    let opts = StartOptions {
        remote_only: true,
        ..Default::default()
    };
    let mesh = InProcMesh::start(&s, 1, opts).await.unwrap();
    let r = drill::run(&s, 1, Box::new(mesh), Arc::new(Progress::default())).await;
    let failed: Vec<_> = r.verdicts.iter().filter(|v| !v.ok).collect();
    assert!(
        r.passed,
        "{file}: error {:?}, faults {:?}, failed verdicts {failed:#?}",
        r.error, r.faults
    );
    assert!(r.tasks.acked > 100, "{file}: {:?}", r.tasks);
    assert_eq!(r.tasks.acked, r.tasks.completed + r.tasks.failed, "{file}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipped_drills_pass_in_process() {
    let r = run("plant-node-loss.toml").await;
    // The slow agent keeps work in flight on node-1: the kill must be detected, and that
    // work orphaned and re-dispatched (all of it completed, checked in `run`).
    let kill = r.faults.iter().find(|f| f.action == "kill-node").unwrap();
    assert!(kill.error.is_none() && kill.untimed.is_none(), "{kill:?}");
    assert!(
        kill.detected_ms.is_some() && kill.recovered_ms.is_some(),
        "{kill:?}"
    );
    assert!(r.tasks.orphaned > 0, "{:?}", r.tasks);
    assert_eq!(r.tasks.failed, 0);

    let r = run("master-crash.toml").await;
    assert_eq!(r.tasks.failed, 0);
    assert!(r.faults[0].recovered_ms.is_some(), "{:?}", r.faults);

    let r = run("partition-heal.toml").await;
    assert!(r.tasks.stale_rejected.unwrap() >= 1, "{:?}", r.tasks);
    let d = r.faults.iter().find(|f| f.action == "partition").unwrap();
    let detected = d.detected_ms.expect("the partition was detected");
    // Lease 600 ms: fenced after the lease, within 1.5 x lease + slack.
    assert!((500.0..2_400.0).contains(&detected), "{detected}");

    let r = run("agent-crash-loop.toml").await;
    assert!(r.plant_escalations.unwrap() >= 1);
    assert!(r.tasks.retried > 0, "{:?}", r.tasks);

    let r = run("rolling-restart.toml").await;
    assert_eq!(r.faults.len(), 4);
    assert_eq!(r.tasks.failed, 0);

    let r = run("disk-full.toml").await;
    assert!(r.tasks.refused > 100, "{:?}", r.tasks);
    assert_eq!(r.tasks.failed, 0);

    // 5,000 idle connections, past the connection limit: clients and nodes keep working.
    let r = run("connection-flood.toml").await;
    let flood = r
        .faults
        .iter()
        .find(|f| f.action == "connection-flood")
        .unwrap();
    assert!(flood.error.is_none(), "{flood:?}");
    assert_eq!((r.tasks.refused, r.tasks.orphaned), (0, 0), "{:?}", r.tasks);
}
