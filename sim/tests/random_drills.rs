//! Seeded random drills pass in-process: a bounded number of seeds for every test run; the
//! 1,000-seed run is in docs/drills.md.

use heatmesh_master::server::StartOptions;
use heatmesh_sim::drill;
use heatmesh_sim::harness::InProcMesh;
use heatmesh_sim::scenario::Scenario;
use heatmesh_sim::workload::Progress;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_random_seeds_pass() {
    let sem = Arc::new(tokio::sync::Semaphore::new(3));
    let mut hs = Vec::new();
    for seed in 1..=50u64 {
        let permit = sem.clone().acquire_owned().await.unwrap();
        hs.push(tokio::spawn(async move {
            let _p = permit;
            let s = Scenario::random(seed);
            let opts = StartOptions {
                remote_only: true,
                ..Default::default()
            };
            let mesh = InProcMesh::start(&s, seed, opts).await.unwrap();
            drill::run(&s, seed, Box::new(mesh), Arc::new(Progress::default())).await
        }));
    }
    let mut failed = Vec::new();
    let (mut faults, mut acked) = (0, 0);
    for h in hs {
        let r = h.await.unwrap();
        faults += r.faults.len();
        acked += r.tasks.acked;
        if !r.passed {
            let bad: Vec<_> = r.verdicts.iter().filter(|v| !v.ok).collect();
            failed.push(format!(
                "seed {}: error {:?} {bad:#?}\nreplay: heatmesh drill --random --seeds {}",
                r.seed, r.error, r.seed
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(faults >= 50, "{faults}");
    assert!(acked > 10_000, "{acked}");
}
