//! The scheduler driven by hand: a real ledger in a temporary directory, nodes and plants
//! that record what they are sent, and a clock the test moves. Each test replays one story
//! of the task lifecycle and checks the states, the journal and the counts it leaves.

use super::*;
use crate::config::SAMPLE_FLEET;
use crate::ledger::Ledger;
use crate::task::{Status, now_us};
use heatmesh_agents::{Assignment, Outcome};
use heatmesh_ingest::PlantFeeds;
use heatmesh_mesh::{BoxFuture, MeshError};
use std::sync::Mutex;

type Sent = Arc<Mutex<Vec<(String, Assignment)>>>;

struct TestNode {
    id: String,
}

impl NodeLink for TestNode {
    fn id(&self) -> &str {
        &self.id
    }
    fn address(&self) -> String {
        String::new()
    }
    fn inject_fault(&self, _: &str, _: &str, _: Fault) -> Result<(), MeshError> {
        Ok(())
    }
    fn set_feeds(&self, _: &str, _: &PlantFeeds) -> Result<(), MeshError> {
        Ok(())
    }
    fn spawn_plant(
        &self,
        _: PlantSpec,
        _: u64,
        _: EventSink,
    ) -> BoxFuture<'_, Result<Arc<dyn PlantLink>, MeshError>> {
        unreachable!("placements are effects the rig answers itself")
    }
}

/// A plant that records its assignments in the rig's list.
struct TestPlant {
    plant: String,
    sent: Sent,
}

impl PlantLink for TestPlant {
    fn dispatch(&self, a: Assignment) -> Result<(), MeshError> {
        self.sent.lock().unwrap().push((self.plant.clone(), a));
        Ok(())
    }
    fn stop(&self) {}
}

struct Rig {
    st: MasterState,
    sent: Sent,
    /// Timers the handlers set, not yet fired.
    timers: Vec<(Duration, MasterMsg)>,
    t0: Instant,
    /// Added to the wall clock: moves retention's cutoffs without waiting.
    skew_us: u64,
    ledger: Ledger,
    _dir: tempfile::TempDir,
}

fn session(node: &str, node_epoch: u64) -> NodeSession {
    NodeSession {
        node: node.into(),
        node_epoch,
    }
}

impl Rig {
    /// A master over the sample fleet with no nodes yet; `tune` adjusts the config.
    fn new(tune: impl FnOnce(&mut Config)) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::from_toml(SAMPLE_FLEET).unwrap();
        tune(&mut config);
        let ledger = Ledger::open(dir.path()).unwrap();
        let args = MasterArgs {
            config,
            ledger: Arc::new(ledger.clone()),
            local_node: None,
            paused: false,
            #[cfg(feature = "planted-bugs")]
            planted: PlantedBugs::default(),
        };
        let t0 = Instant::now();
        let st = MasterState::start(args, None, t0, now_us()).unwrap();
        let mut rig = Rig {
            st,
            sent: Sent::default(),
            timers: Vec::new(),
            t0,
            skew_us: 0,
            ledger,
            _dir: dir,
        };
        rig.settle();
        rig
    }

    /// Handles `msg` at `at_ms` after the rig's start, then carries out its effects.
    fn at(&mut self, at_ms: u64, msg: MasterMsg) {
        let now = self.t0 + Duration::from_millis(at_ms);
        let wall = now_us() + self.skew_us;
        self.st.set_clock(now, wall);
        self.st.handle(msg);
        self.settle();
    }

    /// Answers placements at once (the plant starts) and keeps timers for the test to fire.
    fn settle(&mut self) {
        loop {
            let fx = self.st.take_effects();
            if fx.is_empty() {
                return;
            }
            for f in fx {
                match f {
                    Effect::After(d, m) => self.timers.push((d, m)),
                    Effect::Spawn { spec, epoch, .. } => {
                        let link = Arc::new(TestPlant {
                            plant: spec.id.clone(),
                            sent: self.sent.clone(),
                        });
                        self.st.handle(MasterMsg::Placed {
                            plant: spec.id,
                            epoch,
                            result: Ok(link),
                        });
                    }
                }
            }
        }
    }

    /// Fires every timer set so far, at `at_ms`.
    fn fire_timers(&mut self, at_ms: u64) {
        for (_, m) in std::mem::take(&mut self.timers) {
            self.at(at_ms, m);
        }
    }

    fn join(&mut self, node: &str, node_epoch: u64, preferred: &[&str]) {
        self.at(
            0,
            MasterMsg::NodeJoined {
                link: Arc::new(TestNode { id: node.into() }),
                node_epoch,
                preferred: preferred.iter().map(|p| p.to_string()).collect(),
                running: Vec::new(),
            },
        );
    }

    /// Submits a GL-009 task and makes it durable; returns its id.
    async fn submit(&mut self, plant: &str) -> u64 {
        self.submit_keyed(plant, None).await.unwrap().0
    }

    /// Submits a GL-009 task with an idempotency key and makes it durable; returns its id
    /// and whether the key named an earlier task.
    async fn submit_keyed(
        &mut self,
        plant: &str,
        key: Option<&str>,
    ) -> Result<(u64, bool), ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = NewTask {
            plant_id: plant.into(),
            agent_kind: "GL-009".into(),
            payload: "{}".into(),
            priority: Priority::Normal,
            idempotency_key: key.map(str::to_string),
            deadline: None,
            max_attempts: None,
        };
        self.at(0, MasterMsg::Submit(task, tx.into()));
        let s = rx.await.unwrap()?;
        if !s.duplicate {
            self.at(0, MasterMsg::Durable(s.task.id, Ok(())));
        }
        Ok((s.task.id, s.duplicate))
    }

    /// Finishes `id` on `node` (its dispatch must be the last one sent) and drops it from
    /// memory, as the ledger's applied callback would.
    async fn finish(&mut self, id: u64, node: &str, outcome: Outcome) {
        let (_, a) = self.take_sent().pop().expect("dispatched");
        assert_eq!(a.task_id, id);
        self.done(0, session(node, 1), &a, outcome);
        let seq = self.st.active[&id].rec.seq;
        self.ledger.barrier().await.unwrap();
        self.at(0, MasterMsg::Retired(id, seq));
        assert!(!self.st.active.contains_key(&id));
    }

    /// The assignments sent so far, taken.
    fn take_sent(&self) -> Vec<(String, Assignment)> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }

    fn status(&self, id: u64) -> Status {
        self.st.active[&id].rec.status
    }

    fn done(&mut self, at_ms: u64, from: NodeSession, a: &Assignment, outcome: Outcome) {
        let ev = PlantEvent::TaskDone {
            plant: String::new(),
            task_id: a.task_id,
            attempt: a.attempt,
            epoch: a.epoch,
            agent: format!("{}/GL-009", from.node),
            outcome,
        };
        self.at(at_ms, MasterMsg::Plant(from, ev));
    }

    /// The task's journal as the ledger holds it: (from, to) per entry.
    async fn journal(&self, id: u64) -> Vec<(Option<Status>, Status, String)> {
        self.ledger.barrier().await.unwrap();
        let h = self.ledger.history(id).unwrap();
        h.into_iter().map(|t| (t.from, t.to, t.detail)).collect()
    }
}

/// A real GL-009 result, as an agent would return it.
fn gl009_result() -> Vec<u8> {
    let kind = heatmesh_agents::registry::lookup("GL-009").unwrap();
    let req = br#"{"inputs":[{"name":"fuel","energy_kwh":1000}],"outputs":[{"name":"steam","energy_kwh":900}]}"#;
    (kind.run_json)(req).unwrap()
}

fn completed() -> Outcome {
    Outcome::Completed(gl009_result())
}

#[tokio::test]
async fn a_task_is_accepted_dispatched_and_completed_with_its_journal() {
    let mut rig = Rig::new(|_| {});
    rig.join("node-1", 1, &["Plant-001"]);
    let id = rig.submit("Plant-001").await;
    let sent = rig.take_sent();
    assert_eq!(sent.len(), 1);
    let (plant, a) = &sent[0];
    assert_eq!((plant.as_str(), a.task_id, a.attempt), ("Plant-001", id, 1));
    assert_eq!(rig.status(id), Status::Dispatched);
    assert_eq!(rig.st.counts.get(Status::Dispatched), 1);
    rig.done(5, session("node-1", 1), a, completed());
    assert_eq!(rig.status(id), Status::Completed);
    let j = rig.journal(id).await;
    let moves: Vec<_> = j.iter().map(|(f, t, _)| (*f, *t)).collect();
    assert_eq!(
        moves,
        [
            (None, Status::Pending),
            (Some(Status::Pending), Status::Dispatched),
            (Some(Status::Dispatched), Status::Completed),
        ]
    );
    assert_eq!(
        rig.st
            .ledger
            .get(id)
            .unwrap()
            .unwrap()
            .result
            .unwrap()
            .as_bytes(),
        gl009_result()
    );
    assert_eq!(rig.st.refused, 0);
}

#[tokio::test]
async fn reports_from_a_node_that_does_not_hold_the_dispatch_are_rejected() {
    let mut rig = Rig::new(|_| {});
    rig.join("node-1", 1, &["Plant-001"]);
    rig.join("node-2", 1, &["Plant-002"]);
    let id = rig.submit("Plant-001").await;
    let (_, a) = rig.take_sent().pop().unwrap();
    let epoch = rig.st.plants["Plant-001"].epoch;

    // node-2 holds valid credentials but not this dispatch: its forged result, its claim
    // that Plant-001 went down, and an older session of node-1 change nothing.
    rig.done(1, session("node-2", 1), &a, completed());
    let down = PlantEvent::PlantDown {
        plant: "Plant-001".into(),
        epoch,
        reason: "forged".into(),
    };
    rig.at(2, MasterMsg::Plant(session("node-2", 1), down));
    rig.done(3, session("node-1", 0), &a, completed());
    assert_eq!(rig.status(id), Status::Dispatched);
    assert_eq!(rig.st.plants["Plant-001"].status, PlantStatus::Running);
    assert_eq!(rig.st.plants["Plant-001"].epoch, epoch);

    rig.done(4, session("node-1", 1), &a, completed());
    assert_eq!(rig.status(id), Status::Completed);
    let j = rig.journal(id).await;
    assert_eq!(
        j.len(),
        3,
        "only accept, dispatch and the real result: {j:?}"
    );
    assert!(j[2].2.contains("node-1"), "{j:?}");
    assert_eq!(rig.st.refused, 0);
}

#[tokio::test]
async fn a_late_result_of_an_earlier_attempt_is_stale_after_the_lease_expired() {
    let mut rig = Rig::new(|c| {
        c.scheduler.lease_ms = 100;
        c.scheduler.retry_backoff_initial_ms = 50;
    });
    rig.join("node-1", 1, &["Plant-001"]);
    let id = rig.submit("Plant-001").await;
    let (_, first) = rig.take_sent().pop().unwrap();
    rig.at(99, MasterMsg::Tick);
    assert_eq!(rig.status(id), Status::Dispatched, "the lease runs 100 ms");
    rig.at(100, MasterMsg::Tick);
    assert_eq!(
        rig.status(id),
        Status::Pending,
        "lease expired: a failed attempt"
    );
    assert_eq!(rig.st.active[&id].rec.failures, 1);
    rig.at(124, MasterMsg::Tick);
    assert!(
        rig.take_sent().is_empty(),
        "the retry waits at least half its 50 ms backoff"
    );
    rig.at(150, MasterMsg::Tick);
    let (_, second) = rig.take_sent().pop().unwrap();
    assert_eq!(second.attempt, 2);

    rig.done(160, session("node-1", 1), &first, completed());
    assert_eq!(
        rig.status(id),
        Status::Dispatched,
        "attempt 1's answer is stale"
    );
    rig.done(170, session("node-1", 1), &second, completed());
    assert_eq!(rig.status(id), Status::Completed);
    assert_eq!(rig.st.refused, 0);
}

#[tokio::test]
async fn failed_attempts_retry_until_max_attempts_then_fail() {
    let mut rig = Rig::new(|c| {
        c.scheduler.max_attempts = 2;
        c.scheduler.retry_backoff_initial_ms = 10;
    });
    rig.join("node-1", 1, &["Plant-001"]);
    let id = rig.submit("Plant-001").await;
    let fail = || Outcome::Failed {
        error: "agent crashed".into(),
        retryable: true,
    };
    let (_, a) = rig.take_sent().pop().unwrap();
    rig.done(1, session("node-1", 1), &a, fail());
    assert_eq!(rig.status(id), Status::Pending);
    rig.at(20, MasterMsg::Tick);
    let (_, a) = rig.take_sent().pop().unwrap();
    assert_eq!(a.attempt, 2);
    rig.done(21, session("node-1", 1), &a, fail());
    assert_eq!(rig.status(id), Status::Failed);
    let j = rig.journal(id).await;
    assert!(j.last().unwrap().2.contains("no attempts left"), "{j:?}");

    // A refusal of the input is not retried at all.
    let id = rig.submit("Plant-001").await;
    let (_, a) = rig.take_sent().pop().unwrap();
    let refuse = Outcome::Failed {
        error: "closure: must be finite".into(),
        retryable: false,
    };
    rig.done(30, session("node-1", 1), &a, refuse);
    assert_eq!(rig.status(id), Status::Failed);
    assert_eq!(rig.st.refused, 0);
}

#[tokio::test]
async fn a_task_orphaned_more_than_max_orphaned_times_fails_and_says_why() {
    let mut rig = Rig::new(|c| c.scheduler.max_orphaned = 2);
    rig.join("node-1", 1, &["Plant-001"]);
    let id = rig.submit("Plant-001").await;
    for round in 1..=3u64 {
        let (_, a) = rig.take_sent().pop().expect("dispatched again");
        assert_eq!(u64::from(a.attempt), round);
        let down = PlantEvent::PlantDown {
            plant: "Plant-001".into(),
            epoch: a.epoch,
            reason: "supervisor gave up".into(),
        };
        rig.at(round * 1000, MasterMsg::Plant(session("node-1", 1), down));
        rig.fire_timers(round * 1000 + 500);
    }
    assert_eq!(rig.status(id), Status::Failed);
    assert!(rig.take_sent().is_empty(), "not dispatched a fourth time");
    let j = rig.journal(id).await;
    let moves: Vec<_> = j
        .iter()
        .map(|(f, t, _)| (f.unwrap_or(Status::Pending), *t))
        .collect();
    let orphanings = moves.iter().filter(|m| m.1 == Status::Orphaned).count();
    assert_eq!(orphanings, 3, "{j:?}");
    assert_eq!(moves.last(), Some(&(Status::Orphaned, Status::Failed)));
    let why = &j.last().unwrap().2;
    assert!(
        why.contains("orphaned 3 times") && why.contains("scheduler.max_orphaned = 2"),
        "{why}"
    );
    let rec = rig.ledger.get(id).unwrap().unwrap();
    assert_eq!(rec.error.as_deref(), Some(why.as_str()));
    assert_eq!(rig.st.refused, 0);
}

#[tokio::test]
async fn a_lost_node_orphans_its_tasks_and_its_plant_moves_to_a_live_node() {
    let mut rig = Rig::new(|c| c.placement.startup_grace_ms = 0);
    rig.join("node-1", 1, &["Plant-001"]);
    rig.join("spare", 1, &[]);
    let id = rig.submit("Plant-001").await;
    let (_, a) = rig.take_sent().pop().unwrap();
    rig.at(
        10,
        MasterMsg::NodeLost {
            node_id: "node-1".into(),
            node_epoch: 1,
            reason: "lease expired".into(),
        },
    );
    let p = &rig.st.plants["Plant-001"];
    assert_eq!(p.node.as_deref(), Some("spare"));
    assert_eq!(p.session, Some(session("spare", 1)));
    let (_, b) = rig.take_sent().pop().expect("re-dispatched on the spare");
    assert_eq!((b.attempt, b.epoch), (2, a.epoch + 1));
    // The fenced node's late answer is stale; the spare's is current.
    rig.done(20, session("node-1", 1), &a, completed());
    assert_eq!(rig.status(id), Status::Dispatched);
    rig.done(30, session("spare", 1), &b, completed());
    assert_eq!(rig.status(id), Status::Completed);
    let j = rig.journal(id).await;
    let tos: Vec<Status> = j.iter().map(|e| e.1).collect();
    use Status::*;
    assert_eq!(
        tos,
        [
            Pending, Dispatched, Orphaned, Pending, Dispatched, Completed
        ]
    );
    assert_eq!(rig.st.refused, 0);
}

#[tokio::test]
async fn cancel_and_retry_failed_go_through_the_table() {
    let mut rig = Rig::new(|c| c.scheduler.max_attempts = 1);
    rig.join("node-1", 1, &["Plant-001"]);
    let id = rig.submit("Plant-001").await;
    let (_, a) = rig.take_sent().pop().unwrap();
    let fail = Outcome::Failed {
        error: "agent crashed".into(),
        retryable: true,
    };
    rig.done(1, session("node-1", 1), &a, fail);
    assert_eq!(rig.status(id), Status::Failed);
    rig.ledger.barrier().await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    rig.at(2, MasterMsg::RetryFailed(None, None, tx.into()));
    assert_eq!(rx.await.unwrap().unwrap(), [id]);
    let (_, a) = rig.take_sent().pop().expect("dispatched again");
    assert_eq!(a.attempt, 2);
    assert_eq!(rig.st.counts.get(Status::Failed), 0);
    assert_eq!(rig.st.counts.get(Status::Dispatched), 1);

    let (tx, rx) = tokio::sync::oneshot::channel();
    rig.at(3, MasterMsg::Cancel(id, "not needed".into(), tx.into()));
    let rec = rx.await.unwrap().unwrap();
    assert_eq!(rec.status, Status::Cancelled);
    let (tx, rx) = tokio::sync::oneshot::channel();
    rig.at(4, MasterMsg::Cancel(id, String::new(), tx.into()));
    let e = rx.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("already cancelled"), "{e}");
    rig.done(5, session("node-1", 1), &a, completed());
    assert_eq!(
        rig.ledger.get(id).unwrap().unwrap().status,
        Status::Cancelled
    );
    assert_eq!(rig.st.refused, 0);
}

#[tokio::test]
async fn a_result_that_is_not_the_kinds_result_type_is_refused_and_retried() {
    let mut rig = Rig::new(|c| c.scheduler.retry_backoff_initial_ms = 10);
    rig.join("node-1", 1, &["Plant-001"]);
    let id = rig.submit("Plant-001").await;
    let (_, a) = rig.take_sent().pop().unwrap();
    let garbage = Outcome::Completed(br#"{"efficiency_pct":"high"}"#.to_vec());
    rig.done(1, session("node-1", 1), &a, garbage);
    assert_eq!(
        rig.status(id),
        Status::Pending,
        "refused, and the attempt counts as failed"
    );
    let rec = &rig.st.active[&id].rec;
    assert_eq!(rec.result, None);
    assert_eq!(rec.failures, 1);
    let error = rec.error.clone().unwrap();
    assert!(
        error.starts_with("result refused: result: not a valid GL-009 result"),
        "{error}"
    );
    rig.at(20, MasterMsg::Tick);
    let (_, b) = rig.take_sent().pop().expect("retried");
    rig.done(21, session("node-1", 1), &b, completed());
    assert_eq!(rig.status(id), Status::Completed);
    assert_eq!(rig.st.refused, 0);
}

#[tokio::test]
async fn retention_removes_finished_tasks_keeps_keys_for_their_window_and_never_reuses_ids() {
    let hour = 3_600_000_000;
    let mut rig = Rig::new(|c| {
        c.retention.tasks = "1h".parse().unwrap();
        c.retention.idempotency_keys = "2h".parse().unwrap();
        c.scheduler.max_attempts = 1;
    });
    rig.join("node-1", 1, &["Plant-001"]);
    let (done, _) = rig.submit_keyed("Plant-001", Some("k-1")).await.unwrap();
    rig.finish(done, "node-1", completed()).await;
    let failed = rig.submit("Plant-001").await;
    let boom = Outcome::Failed {
        error: "boom".into(),
        retryable: false,
    };
    rig.finish(failed, "node-1", boom).await;
    assert!(rig.st.failed.contains(&failed));
    // Plant-002 has no node: this one stays pending, however old.
    let pending = rig.submit("Plant-002").await;

    // Not yet due: nothing goes.
    rig.skew_us = hour - 60_000_000;
    rig.at(1, MasterMsg::Sweep);
    rig.ledger.barrier().await.unwrap();
    assert!(rig.ledger.get(done).unwrap().is_some());

    rig.skew_us = hour + 1_000_000;
    rig.at(2, MasterMsg::Sweep);
    rig.ledger.barrier().await.unwrap();
    for id in [done, failed] {
        assert_eq!(rig.ledger.get(id).unwrap(), None, "task {id} removed");
        assert!(
            rig.ledger.history(id).unwrap().is_empty(),
            "journal of {id} removed"
        );
    }
    assert_eq!(
        rig.ledger.get(pending).unwrap().unwrap().status,
        Status::Pending
    );
    assert!(
        !rig.st.failed.contains(&failed),
        "RetryFailed no longer sees it"
    );
    // The key outlives its task: the same request is refused, not run twice.
    assert_eq!(rig.ledger.idempotent("k-1").unwrap(), Some(done));
    let e = rig
        .submit_keyed("Plant-001", Some("k-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ApiError::Conflict(m) if m.contains("\"k-1\" was first used for task 1, which retention has since removed") && m.contains("2h")),
        "{e}"
    );

    // Past the key's window it goes too, and the key names a new task with a new id.
    rig.skew_us = 2 * hour + 1_000_000;
    rig.at(3, MasterMsg::Sweep);
    rig.ledger.barrier().await.unwrap();
    assert_eq!(rig.ledger.idempotent("k-1").unwrap(), None);
    let (again, dup) = rig.submit_keyed("Plant-001", Some("k-1")).await.unwrap();
    assert_eq!((again, dup), (pending + 1, false));
    rig.finish(again, "node-1", completed()).await;
    rig.skew_us = 4 * hour;
    rig.at(4, MasterMsg::Sweep);
    rig.ledger.barrier().await.unwrap();
    assert_eq!(rig.ledger.get(again).unwrap(), None);

    // A master started on this ledger, whose highest task is gone, goes on after it.
    let args = MasterArgs::new(rig.st.cfg.clone(), Arc::new(rig.ledger.clone()));
    let st = MasterState::start(args, None, Instant::now(), now_us()).unwrap();
    assert_eq!(st.next_id, again + 1);
    assert!(st.seq >= rig.st.seq);
}
