//! The deterministic simulation: one seed replays exactly, and its drills pass.

use heatmesh_sim::dst;
use heatmesh_sim::scenario::Scenario;

fn failures(r: &heatmesh_sim::drill::Report) -> String {
    let mut out = format!("seed {}: error {:?}\n", r.seed, r.error);
    for v in r.verdicts.iter().filter(|v| !v.ok) {
        out += &format!("  {}: {:?}\n", v.name, v.examples);
    }
    for f in &r.faults {
        out += &format!("  fault {} {} {:?}\n", f.action, f.target, f.error);
    }
    out
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let s = Scenario::random(7);
    let a = dst::run(&s, 7);
    let b = dst::run(&s, 7);
    assert_eq!(a.trace_hash, b.trace_hash, "seed 7 replayed differently");
    assert_eq!(a.events, b.events);
    assert!(
        a.events > 1_000,
        "a drill is thousands of events: {}",
        a.events
    );
    let c = dst::run(&Scenario::random(8), 8);
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn random_seeds_pass_in_simulated_time() {
    for seed in 1..=40 {
        let s = Scenario::random(seed);
        let r = dst::run(&s, seed);
        assert!(r.report.passed, "{}", failures(&r.report));
        assert!(
            r.report.tasks.acked > 100,
            "seed {seed}: {:?}",
            r.report.tasks
        );
        assert_eq!(
            r.report.tasks.acked, r.report.tasks.completed,
            "seed {seed}"
        );
    }
}

#[test]
fn the_planted_stale_epoch_bug_is_caught_and_its_seed_replays_the_same_failing_trace() {
    let opts = dst::Options {
        tune: Some(|m| m.planted.accept_stale_results = true),
    };
    let caught = (1..=200u64).find_map(|seed| {
        let r = dst::run_with(&Scenario::random(seed), seed, opts);
        let v = r
            .report
            .verdicts
            .iter()
            .find(|v| v.name == "no_fenced_result_accepted" && !v.ok)
            .cloned();
        v.map(|v| (seed, r, v))
    });
    let (seed, first, v) = caught.expect("200 seeds ran and none caught the planted bug");
    assert!(
        v.examples[0].contains("committed while"),
        "{:?}",
        v.examples
    );
    let again = dst::run_with(&Scenario::random(seed), seed, opts);
    assert_eq!(
        first.trace_hash, again.trace_hash,
        "seed {seed} did not replay"
    );
    let v2 = again
        .report
        .verdicts
        .iter()
        .find(|v| v.name == "no_fenced_result_accepted")
        .unwrap();
    assert_eq!((v.violations, &v.examples), (v2.violations, &v2.examples));
    // Without the defect the same seed passes: the checker caught the bug, not the seed.
    let clean = dst::run(&Scenario::random(seed), seed);
    assert!(clean.report.passed, "{}", failures(&clean.report));
    eprintln!(
        "seed {seed} caught the planted bug ({} violations, trace {}): {}",
        v.violations, first.trace_hash, v.examples[0]
    );
}

#[test]
fn every_shipped_drill_passes_simulated_with_what_it_is_about() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../drills");
    let run = |file: &str| {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let r = dst::run(&Scenario::from_toml(&text).unwrap(), 1).report;
        assert!(r.passed, "{file}: {}", failures(&r));
        assert_eq!(r.tasks.acked, r.tasks.completed, "{file}");
        r
    };
    let r = run("plant-node-loss.toml");
    let kill = r.faults.iter().find(|f| f.action == "kill-node").unwrap();
    assert!(kill.detected_ms.is_some_and(|d| d < 100.0), "{kill:?}");
    assert!(r.tasks.orphaned > 0, "{:?}", r.tasks);
    let r = run("partition-heal.toml");
    let cut = r.faults.iter().find(|f| f.action == "partition").unwrap();
    // Lease 600 ms, checked every 60 ms, from the last heartbeat (every 100 ms) before the cut.
    assert!(
        cut.detected_ms.is_some_and(|d| (450.0..800.0).contains(&d)),
        "{cut:?}"
    );
    assert!(r.tasks.stale_rejected.unwrap() > 0, "{:?}", r.tasks);
    let r = run("agent-crash-loop.toml");
    assert!(r.plant_escalations.unwrap() >= 1, "{r:?}");
    let r = run("master-crash.toml");
    assert!(r.faults[0].recovered_ms.is_some(), "{:?}", r.faults);
    let r = run("rolling-restart.toml");
    assert_eq!(r.faults.len(), 4);
    // Refused while full; what was in flight completes once space is back, with no submit
    // after it (the load ended before).
    let r = run("disk-full.toml");
    assert!(r.tasks.refused > 100, "{:?}", r.tasks);
    assert!(r.tasks.acked > 100, "{:?}", r.tasks);
}
