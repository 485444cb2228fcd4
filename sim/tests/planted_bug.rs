//! The checker can fail: with the master's planted defect switched on (results accepted
//! whatever their attempt and epoch), random drills catch it within 200 seeds.

use heatmesh_master::scheduler::PlantedBugs;
use heatmesh_master::server::StartOptions;
use heatmesh_sim::drill;
use heatmesh_sim::harness::InProcMesh;
use heatmesh_sim::scenario::Scenario;
use heatmesh_sim::workload::Progress;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_epoch_bug_is_caught_within_200_seeds() {
    let opts = StartOptions {
        remote_only: true,
        planted: PlantedBugs {
            accept_stale_results: true,
        },
        ..Default::default()
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(3));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Seeds run three at a time in order; the test stops at the first caught one.
    let feeder = tokio::spawn(async move {
        for seed in 1..=200u64 {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _p = permit;
                let s = Scenario::random(seed);
                let mesh = InProcMesh::start(&s, seed, opts).await.unwrap();
                let r = drill::run(&s, seed, Box::new(mesh), Arc::new(Progress::default())).await;
                let _ = tx.send(r);
            });
        }
    });
    let mut ran = 0;
    let caught = loop {
        let Some(r) = rx.recv().await else { break None };
        ran += 1;
        let v = r
            .verdicts
            .iter()
            .find(|v| v.name == "no_fenced_result_accepted")
            .cloned();
        if let Some(v) = v.filter(|v| !v.ok) {
            break Some((r.seed, v));
        }
        if ran == 200 {
            break None;
        }
    };
    feeder.abort();
    let (seed, v) = caught.expect("200 seeds ran and none caught the planted stale-epoch bug");
    assert!(v.violations >= 1);
    assert!(
        v.examples[0].contains("committed while"),
        "seed {seed}: {:?}",
        v.examples
    );
    eprintln!(
        "planted bug caught by seed {seed} after {ran} drills: {}",
        v.examples[0]
    );
}
