//! `heatmesh backup` under load and `heatmesh restore`, as an operator runs them: real
//! processes of the binary against a running master, then a master started on the restored
//! directory. Every task acknowledged before the backup began is in it, and completes there.

mod common;

use common::*;
use heatmesh_master::ledger::{Ledger, LedgerError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_heatmesh");

fn run(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("runs the heatmesh binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_every_task_acknowledged_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_with(test_config(dir.path()), tempfile::tempdir().unwrap(), false).await;
    let addr = h.mesh.grpc_addr.to_string();

    // Eight clients submit as fast as the master acknowledges, each noting when.
    let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for c in 0..8 {
        let (mut client, acked, stop) = (h.tasks.clone(), acked.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut req = submit(["Plant-001", "Plant-002"][i % 2], seed_balance());
                req.idempotency_key = format!("load-{c}-{i}");
                i += 1;
                if let Ok(r) = client.submit_task(req).await {
                    let id: u64 = r.into_inner().task.unwrap().id.parse().unwrap();
                    acked.lock().unwrap().push((id, Instant::now()));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("ledger.hmbak");
    let began = Instant::now();
    let (ok, said) = {
        let (addr, file) = (addr.clone(), file.display().to_string());
        tokio::task::spawn_blocking(move || run(&["--addr", &addr, "backup", "--out", &file]))
            .await
            .unwrap()
    };
    let ended = Instant::now();
    assert!(ok, "{said}");
    assert!(said.starts_with("backup "), "{said}");
    // The load goes on after the backup, so the live ledger moves past it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before: Vec<u64> = acked
        .iter()
        .filter(|(_, t)| *t < began)
        .map(|(id, _)| *id)
        .collect();
    let after = acked.iter().filter(|(_, t)| *t > ended).count();
    assert!(
        before.len() > 200,
        "only {} acknowledged before",
        before.len()
    );
    assert!(after > 50, "only {after} acknowledged after the backup");
    eprintln!(
        "{} acknowledged before the backup began, {after} after it ended, backup took {} ms: {said}",
        before.len(),
        (ended - began).as_millis()
    );
    h.mesh.shutdown().await;

    let restored = work.path().join("restored");
    let (ok, said) = run(&[
        "restore",
        &file.display().to_string(),
        "--data-dir",
        &restored.display().to_string(),
    ]);
    assert!(ok, "{said}");
    assert!(said.starts_with("restored "), "{said}");
    {
        let end = Instant::now() + Duration::from_secs(10);
        let l = loop {
            match Ledger::open(&restored) {
                Err(LedgerError::Storage(_)) if Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => break r.unwrap(),
            }
        };
        let missing: Vec<u64> = before
            .iter()
            .copied()
            .filter(|id| l.get(*id).unwrap().is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged before the backup, missing: {missing:?}"
        );
        // The copy is the state at one log position: each record agrees with its journal.
        let tasks = heatmesh_sim::check::read_ledger(&l).unwrap();
        let torn: Vec<u64> = tasks
            .iter()
            .filter(|t| t.journal.last().map(|x| x.to) != Some(t.rec.status))
            .map(|t| t.rec.id)
            .take(5)
            .collect();
        assert!(
            torn.is_empty(),
            "records that disagree with their journal: {torn:?}"
        );
        let held = tasks.len();
        assert!(
            held >= before.len() && held < acked.len(),
            "{held} of {}",
            acked.len()
        );
    }

    // A master on the restored directory finishes every one of them.
    let mut h = start_with(test_config(&restored), tempfile::tempdir().unwrap(), false).await;
    for id in &before {
        let t = wait_terminal(&mut h.tasks, &id.to_string(), Duration::from_secs(20)).await;
        assert_eq!(
            t.status,
            heatmesh_proto::v1::TaskStatus::Completed as i32,
            "{t:?}"
        );
    }
    h.mesh.shutdown().await;
}

#[test]
fn backup_and_restore_refuse_what_would_lose_or_overwrite_data() {
    let d = tempfile::tempdir().unwrap();
    // Restoring a file that is not a backup names it and leaves no directory.
    let junk = d.path().join("junk.hmbak");
    std::fs::write(&junk, b"not a backup at all").unwrap();
    let target = d.path().join("data");
    let (ok, said) = run(&[
        "restore",
        &junk.display().to_string(),
        "--data-dir",
        &target.display().to_string(),
    ]);
    assert!(!ok);
    assert!(
        said.contains("junk.hmbak at byte 0: not a heatmesh backup"),
        "{said}"
    );
    assert!(!target.exists());
    // An existing --out is kept unless --force; nothing listens, so the error says where.
    let (ok, said) = run(&["backup", "--out", &junk.display().to_string()]);
    assert!(!ok);
    assert!(
        said.contains("exists; give another --out, or --force"),
        "{said}"
    );
    let (ok, said) = run(&[
        "--addr",
        "127.0.0.1:1",
        "backup",
        "--out",
        &d.path().join("new.hmbak").display().to_string(),
    ]);
    assert!(!ok);
    assert!(said.contains("connecting to the heatmesh master"), "{said}");
    assert!(!d.path().join("new.hmbak").exists());
}
