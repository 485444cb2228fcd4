//! StreamEvents with a resume point: a client that drops its feed and calls again with the
//! last `seq` it received gets every change it missed, from the ledger, then live ones, with
//! nothing repeated and nothing lost; each task's changes are its journal.

mod common;

use common::*;
use heatmesh_proto::v1 as pb;
use std::collections::BTreeMap;
use std::time::Duration;

type Feed = tonic::Streaming<pb::TaskEvent>;

async fn feed(h: &Harness, terminal_only: bool, resume_after_seq: Option<u64>) -> Feed {
    h.tasks
        .clone()
        .stream_events(pb::StreamEventsRequest {
            terminal_only,
            resume_after_seq,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Reads events until every task in `ids` has been seen completed.
async fn until_completed(f: &mut Feed, ids: &[String], got: &mut Vec<pb::TaskEvent>) {
    let done = |got: &Vec<pb::TaskEvent>| {
        ids.iter().all(|id| {
            got.iter()
                .any(|e| &e.task_id == id && e.status == pb::TaskStatus::Completed as i32)
        })
    };
    while !done(got) {
        let e = tokio::time::timeout(Duration::from_secs(10), f.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the feed stays open");
        got.push(e);
    }
}

async fn submit_n(h: &mut Harness, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut r = submit(["Plant-001", "Plant-002"][i % 2], seed_balance());
        r.idempotency_key = format!("{tag}-{i}");
        ids.push(submit_ok(h, r).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_feed_resumed_after_its_last_event_misses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start_with(test_config(dir.path()), tempfile::tempdir().unwrap(), false).await;
    let mut got = Vec::new();

    let mut live = feed(&h, false, None).await;
    let first = submit_n(&mut h, "first", 6).await;
    until_completed(&mut live, &first, &mut got).await;
    drop(live);

    // Disconnected: these changes happen while nobody listens.
    let missed = submit_n(&mut h, "missed", 6).await;
    for id in &missed {
        wait_terminal(&mut h.tasks, id, Duration::from_secs(10)).await;
    }
    let last = got.iter().map(|e| e.seq).max().unwrap();
    let mut resumed = feed(&h, false, Some(last)).await;
    until_completed(&mut resumed, &missed, &mut got).await;
    // And live again after the replay.
    let after = submit_n(&mut h, "after", 2).await;
    until_completed(&mut resumed, &after, &mut got).await;

    // One stream of changes in sequence order, none twice.
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Each task's changes are exactly its journal.
    let mut by_task: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for e in &got {
        by_task.entry(e.task_id.clone()).or_default().push(e.status);
    }
    for id in first.iter().chain(&missed).chain(&after) {
        let t = h
            .tasks
            .get_task(pb::GetTaskRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        let journal: Vec<i32> = t.history.iter().map(|x| x.to).collect();
        assert_eq!(by_task.get(id), Some(&journal), "task {id}");
    }

    // From the start, terminal changes only: one completion per task, in sequence order.
    let mut all = feed(&h, true, Some(0)).await;
    let mut terminal = Vec::new();
    let every: Vec<String> = first.iter().chain(&missed).chain(&after).cloned().collect();
    until_completed(&mut all, &every, &mut terminal).await;
    assert_eq!(terminal.len(), every.len(), "{terminal:?}");
    assert!(terminal.windows(2).all(|w| w[0].seq < w[1].seq));
    drop((resumed, all));
    h.mesh.shutdown().await;
}
