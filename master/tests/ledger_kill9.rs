//! kill -9 a process in the middle of group commits, 100 times, and find every write it
//! acknowledged in the ledger afterwards.
//!
//! The writer is this test binary run again as a child (`HEATMESH_KILL9_CHILD` set), so
//! the process that dies is a real one with the ledger's real threads, files and fsyncs.
//! It commits tasks from many concurrent writers and prints each id on stdout only from
//! the commit's callback; the parent reads the ids, kills the child at a random moment,
//! reopens the directory and checks that every printed id is there, that ids never repeat
//! and that the next child continues from there.

mod common;
use common::rec;

use heatmesh_master::ledger::{Commit, Ledger, Op};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "HEATMESH_KILL9_CHILD";

/// The child: commits tasks with ids after the highest already in the ledger, forever.
#[test]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    // The parent's own handle may still be releasing the directory's lock.
    let end = Instant::now() + Duration::from_secs(10);
    let ledger = loop {
        match Ledger::open(Path::new(&dir)) {
            Ok(l) => break l,
            Err(e) if Instant::now() < end => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("child opens the ledger: {e}"),
        }
    };
    let start = ledger
        .scan_newest_first(None)
        .next()
        .map(|r| r.expect("readable").id)
        .unwrap_or(0);
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        for id in rx {
            let _ = writeln!(out, "{id}");
            let _ = out.flush();
        }
    });
    // Bursts of commits from "many clients": groups of varying size, one at a time or a
    // few hundred at once, so kills land inside groups of every size.
    let mut id = start;
    loop {
        let burst = 1 + (id % 300);
        for _ in 0..burst {
            id += 1;
            let tx = tx.clone();
            let ack = id;
            ledger
                .submit(Commit {
                    ops: vec![Op::Put(rec(id)), Op::Idem(format!("k{id}"), id)],
                    done: Some(Box::new(move |r| {
                        if r.is_ok() {
                            let _ = tx.send(ack);
                        }
                    })),
                    ..Commit::default()
                })
                .expect("ledger open");
        }
        std::thread::sleep(Duration::from_micros(200));
        if printer.is_finished() {
            return;
        }
    }
}

#[test]
fn every_acknowledged_write_survives_100_kills() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("HEATMESH_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(heatmesh_base::now_us);
    let mut rng = heatmesh_base::Rng::new(seed);
    eprintln!("kill -9 test seed {seed} (HEATMESH_KILL9_SEED={seed} replays the kill moments)");
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    for round in 0..100 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill9_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(id) = line.trim().parse::<u64>() {
                    let _ = tx.send(id);
                }
            }
        });
        // Wait for the first acknowledgement, then kill after a random 0-40 ms more.
        let first = rx.recv_timeout(Duration::from_secs(30));
        assert!(
            first.is_ok(),
            "round {round}: the child acknowledged nothing"
        );
        let mut this_round = vec![first.unwrap()];
        let wait = Duration::from_micros(rng.next_u64() % 40_000);
        let end = Instant::now() + wait;
        while Instant::now() < end {
            if let Ok(id) = rx.recv_timeout(end - Instant::now()) {
                this_round.push(id);
            }
        }
        // SIGKILL: no destructor, no final flush, no checkpoint.
        child.kill().unwrap();
        let _ = child.wait();
        reader.join().unwrap();
        this_round.extend(rx.try_iter());
        for id in &this_round {
            assert!(
                acked.insert(*id),
                "round {round}: id {id} acknowledged twice"
            );
        }
        let ledger = Ledger::open(dir.path()).unwrap_or_else(|e| {
            panic!("round {round} (seed {seed}): reopening after kill -9: {e}")
        });
        // Every tenth round and the last, everything acknowledged so far; otherwise this
        // round's acknowledgements (a full check each round is slow in a debug build).
        let check: Vec<u64> = if round % 10 == 9 {
            acked.iter().copied().collect()
        } else {
            this_round.clone()
        };
        let missing: Vec<u64> = check
            .into_iter()
            .filter(|id| ledger.get(*id).map(|r| r.is_none()).unwrap_or(true))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "round {round} (seed {seed}): acknowledged ids {missing:?} are gone after kill -9"
        );
        let got = ledger.get(*this_round.last().unwrap()).unwrap().unwrap();
        assert_eq!(got, rec(got.id), "round {round}: record read back whole");
    }
    assert!(
        acked.len() >= 100,
        "only {} acknowledgements in 100 rounds",
        acked.len()
    );
    eprintln!(
        "{} acknowledged writes, all found after 100 kills",
        acked.len()
    );
}
