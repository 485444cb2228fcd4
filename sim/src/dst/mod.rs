//! Deterministic simulation: the real master core ([`MasterState`]) with simulated nodes,
//! network, client and ledger, on one thread, in simulated time. Every choice (latencies,
//! service times, which frame lands first) comes from one seeded [`Rng`]; nothing reads the
//! wall clock, spawns or iterates a hashed map, so one seed replays exactly. Each event
//! handled is folded into a trace hash ([`Trace`]); two runs of a seed print the same hash.
//!
//! The world models what surrounds the core as the real parts behave (see the mesh crate's
//! `remote.rs` and `attach.rs`, and agents' `plant.rs`): a node attaches with a node epoch
//! from the ledger and is refused while its old session is live; the master fences a
//! session when the node's connection closes or its lease runs out, and still reads what
//! the node sent before it learnt of the fence; a detached node keeps its plants and an
//! outbox and dials again with backoff; frames on a cut path are held until it heals (TCP)
//! unless their connection was abandoned meanwhile. A crash of the master drops every
//! commit not yet synced ([`MemLedger::crash`]).
//!
//! Architecture Invariant: nothing here sleeps or spawns, and the time is `now`, advanced
//! from one event to the next. The clock is read twice, outside the trace: once to anchor
//! the `Instant`s handed to the master (only differences from it are ever used) and once to
//! time the run for its report. sim/tests/deterministic.rs keeps it so.

mod node;

use crate::drill::{self, Injected, Report, Seen};
use crate::harness::EndState;
use crate::net::{Delivered, Observation};
use crate::scenario::{Action, Direction, Fault, Scenario};
use crate::workload::{self, Log, Outcome, Sent};
use heatmesh_agents::PlantEvent;
use heatmesh_base::{Backoff, Rng};
use heatmesh_master::config::Config;
use heatmesh_master::ledger::MemLedger;
use heatmesh_master::scheduler::{
    ApiError, Effect, Mailbox, MasterArgs, MasterMsg, MasterState, NewTask, Submitted,
};
use heatmesh_master::task::Priority;
use node::{Down, NodeAction, Outgoing, SimNode, SimNodeLink, Up};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The simulated wall clock at time zero, unix µs (2027-01-01): journal times are this
/// plus simulated time, the same in every run.
pub const WALL0_US: u64 = 1_798_761_600_000_000;

/// How long the master's side waits for a spawn's answer (the master's default).
const SPAWN_TIMEOUT_US: u64 = 10_000_000;
/// How long a node keeps a session on which the master answers nothing (its keepalive).
const STALL_US: u64 = heatmesh_mesh::attach::MASTER_STALL_TOLERANCE_S * 1_000_000;
/// The master's view is polled this often, as the real drill's watcher does.
const VIEW_EVERY_US: u64 = 10_000;

/// The event trace: FNV-1a over every event's description, in order.
#[derive(Debug, Clone, Copy)]
pub struct Trace {
    hash: u64,
    /// Events folded in.
    pub events: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
        }
    }
}

impl Trace {
    fn add(&mut self, line: &str) {
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.events += 1;
    }

    /// The hash, 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.hash)
    }

    /// Folds several traces into one, in order (a run of many seeds).
    pub fn combine(traces: impl IntoIterator<Item = String>) -> String {
        let mut t = Trace::default();
        for h in traces {
            t.add(&h);
        }
        t.hex()
    }
}

enum Ev {
    /// A message for the master incarnation `life` (timers, ledger callbacks).
    Master(u32, MasterMsg),
    Tick(u32),
    Sync,
    /// The client sends task n.
    Send(u64),
    /// The client's submit of sent[i] reaches the master (or finds it down).
    Submit(usize),
    Down(String, u64, Down),
    Up(String, u64, Up),
    AgentDone(String, String, String, u64),
    AgentRestart(String, String, String, u64),
    Heartbeat(String, u32),
    LeaseCheck(String, u64),
    Dial(String, u32),
    SpawnTimeout(String, u64, u32),
    Fault(usize),
    View,
    Whole,
}

impl Ev {
    fn describe(&self) -> String {
        match self {
            Ev::Master(g, m) => format!("master{g} {}", describe_msg(m)),
            Ev::Tick(g) => format!("tick{g}"),
            Ev::Sync => "sync".into(),
            Ev::Send(n) => format!("send {n}"),
            Ev::Submit(i) => format!("submit {i}"),
            Ev::Down(n, e, d) => format!("down {n}/{e} {d:?}"),
            Ev::Up(n, e, u) => format!("up {n}/{e} {u:?}"),
            Ev::AgentDone(n, p, k, r) => format!("done {n} {p}/{k} run {r}"),
            Ev::AgentRestart(n, p, k, e) => format!("restart {n} {p}/{k} epoch {e}"),
            Ev::Heartbeat(n, i) => format!("heartbeat {n}#{i}"),
            Ev::LeaseCheck(n, e) => format!("lease {n}/{e}"),
            Ev::Dial(n, i) => format!("dial {n}#{i}"),
            Ev::SpawnTimeout(p, e, g) => format!("spawn-timeout {p}@{e} master{g}"),
            Ev::Fault(i) => format!("fault {i}"),
            Ev::View => "view".into(),
            Ev::Whole => "whole".into(),
        }
    }
}

fn describe_msg(m: &MasterMsg) -> String {
    match m {
        MasterMsg::Durable(id, r) => format!("durable {id} {}", r.is_ok()),
        MasterMsg::Retired(id, seq) => format!("retired {id} {seq}"),
        MasterMsg::WriteFailed(w) => format!("write-failed {w:?}"),
        MasterMsg::Replace(p) => format!("replace {p}"),
        MasterMsg::Tick => "tick".into(),
        MasterMsg::Placed {
            plant,
            epoch,
            result,
        } => {
            format!("placed {plant}@{epoch} {}", result.is_ok())
        }
        _ => "other".into(),
    }
}

/// One direction of a node's path.
#[derive(Default)]
struct Path {
    cut: bool,
    delay_us: u64,
    jitter_us: u64,
    /// Arrival time of the last frame sent: frames never overtake (one TCP stream).
    last_arrival: u64,
    /// Frames held while cut: (node epoch of the connection, frame).
    held_down: Vec<(u64, Down)>,
    held_up: Vec<(u64, Up)>,
}

/// The master's side of one node session.
struct Session {
    node_epoch: u64,
    last_heard: u64,
    link: Arc<SimNodeLink>,
}

/// The client's submit in progress.
struct Pending {
    rx: oneshot::Receiver<Result<Submitted, ApiError>>,
}

struct Client {
    log: Log,
    task: Vec<NewTask>,
    /// When each task is sent, from the workload's start, µs.
    at: Vec<u64>,
    pending: BTreeMap<usize, Pending>,
    backoff: BTreeMap<usize, Backoff>,
}

/// One seed's world.
pub struct World {
    s: Scenario,
    rng: Rng,
    now: u64,
    base: Instant,
    queue: BTreeMap<(u64, u64), Ev>,
    next_seq: u64,
    trace: Trace,
    cfg: Config,
    ledger: MemLedger,
    master: Option<MasterState>,
    life: u32,
    inbox: Arc<Mutex<Vec<MasterMsg>>>,
    out: Outgoing,
    sync_at: Option<u64>,
    nodes: BTreeMap<String, SimNode>,
    to_master: BTreeMap<String, Path>,
    from_master: BTreeMap<String, Path>,
    sessions: BTreeMap<String, Session>,
    /// Sessions fenced by this master incarnation whose frames it still reads.
    draining: BTreeSet<(String, u64)>,
    spawning: BTreeMap<(String, u64), String>,
    client: Client,
    delivered: Vec<Delivered>,
    views: Vec<(u64, u64, Seen)>,
    faults: Vec<Fault>,
    injected: Vec<Injected>,
    /// When the workload started (simulated µs).
    t0: u64,
    escalations: u64,
    tune: Option<fn(&mut MasterArgs)>,
}

/// What one simulated drill produced.
pub struct Simulated {
    /// The drill's report (`mode`: simulated).
    pub report: Report,
    /// The trace hash, 16 hex digits.
    pub trace_hash: String,
    /// Events simulated.
    pub events: u64,
    /// Simulated time, s.
    pub simulated_s: f64,
}

/// Runs scenario `s` under `seed` in simulated time and judges it.
pub fn run(s: &Scenario, seed: u64) -> Simulated {
    run_with(s, seed, Default::default())
}

/// Options of a simulated run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Adjusts every master's start-up arguments (a planted defect switched on, say).
    pub tune: Option<fn(&mut MasterArgs)>,
}

/// [`run`] with options.
pub fn run_with(s: &Scenario, seed: u64, opts: Options) -> Simulated {
    let started = Instant::now();
    let mut report = Report::new(&s.name, seed, "simulated");
    let mut w = match World::new(s, seed, opts) {
        Ok(w) => w,
        Err(e) => {
            report.error = Some(e);
            return Simulated {
                report,
                trace_hash: Trace::default().hex(),
                events: 0,
                simulated_s: 0.0,
            };
        }
    };
    if let Err(e) = w.play(&mut report) {
        report.error = Some(e);
        report.passed = false;
    }
    report.wall_s = started.elapsed().as_secs_f64();
    report.trace_hash = Some(w.trace.hex());
    Simulated {
        trace_hash: w.trace.hex(),
        events: w.trace.events,
        simulated_s: w.now as f64 / 1e6,
        report,
    }
}

impl World {
    fn new(s: &Scenario, seed: u64, opts: Options) -> Result<World, String> {
        let cfg = crate::harness::drill_config(s, std::path::Path::new("."))?;
        let mut nodes = BTreeMap::new();
        let (mut to_master, mut from_master) = (BTreeMap::new(), BTreeMap::new());
        for (id, prefs) in s.mesh.node_ids() {
            nodes.insert(id.clone(), SimNode::new(&id, prefs, cfg.restart));
            to_master.insert(id.clone(), Path::default());
            from_master.insert(id, Path::default());
        }
        let prefix = format!("{}-{seed}", s.name);
        let plants: Vec<(String, Vec<String>)> = cfg
            .plants
            .iter()
            .map(|p| (p.id.clone(), p.agents.clone()))
            .collect();
        let mut client = Client {
            log: Log::default(),
            task: Vec::new(),
            at: Vec::new(),
            pending: BTreeMap::new(),
            backoff: BTreeMap::new(),
        };
        // The real client's choices: the same weighted (plant, kind) pairs and the same
        // schedule, drawn from the seed.
        let choices = workload::task_choices(&s.workload, &plants);
        let mut pick = Rng::new(seed ^ 0x5EED);
        let mut n = 0;
        while let Some(at) = workload::nth_send(&s.workload, n) {
            if at >= Duration::from_millis(s.workload.duration_ms) || choices.is_empty() {
                break;
            }
            let (plant, kind) = choices[pick.range(0, choices.len() as u64 - 1) as usize].clone();
            let key = format!("{prefix}-{n}");
            client.task.push(new_task(&cfg, &plant, &kind, &key)?);
            client.log.sent.push(Sent {
                key,
                plant,
                kind,
                sent_us: 0,
                outcome: Outcome::Unknown("never sent".into()),
            });
            client.at.push(at.as_micros() as u64);
            n += 1;
        }
        let faults = s.timeline();
        let mut w = World {
            s: s.clone(),
            rng: Rng::new(seed),
            now: 0,
            base: Instant::now(),
            queue: BTreeMap::new(),
            next_seq: 0,
            trace: Trace::default(),
            cfg,
            ledger: MemLedger::new(),
            master: None,
            life: 0,
            inbox: Arc::default(),
            out: Arc::default(),
            sync_at: None,
            nodes,
            to_master,
            from_master,
            sessions: BTreeMap::new(),
            draining: BTreeSet::new(),
            spawning: BTreeMap::new(),
            client,
            delivered: Vec::new(),
            views: Vec::new(),
            faults,
            injected: Vec::new(),
            t0: 0,
            escalations: 0,
            tune: opts.tune,
        };
        w.start_master()?;
        let ids: Vec<String> = w.nodes.keys().cloned().collect();
        for id in ids {
            w.start_node(&id);
        }
        Ok(w)
    }

    fn at(&mut self, delay_us: u64, ev: Ev) {
        self.next_seq += 1;
        self.queue.insert((self.now + delay_us, self.next_seq), ev);
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    fn wall(&self) -> u64 {
        WALL0_US + self.now
    }

    /// Plays the drill: a second of settling in, the workload with the fault timeline, the
    /// mesh made whole, the settle, then the judgement.
    fn play(&mut self, report: &mut Report) -> Result<(), String> {
        // Let every plant be placed before the load starts, as the real drill waits.
        self.run_until(|w| w.all_running(), 30_000_000);
        let t0 = self.now;
        self.t0 = t0;
        for i in 0..self.client.at.len() {
            let at = self.client.at[i];
            self.at(at, Ev::Send(i as u64));
        }
        for i in 0..self.faults.len() {
            let at = self.faults[i].at_ms * 1000;
            self.at(at, Ev::Fault(i));
        }
        self.at(0, Ev::View);
        let load_end = t0 + self.s.workload.duration_ms * 1000;
        let settle = self.s.workload.settle_timeout_ms * 1000;
        // The workload, the faults, then long enough for the last fault's recovery to show.
        let whole_at = load_end + self.s.mesh.lease_ms * 2_000;
        self.next_seq += 1;
        self.queue.insert((whole_at, self.next_seq), Ev::Whole);
        self.run_until(
            |w| w.now >= whole_at && w.client.pending.is_empty(),
            whole_at + settle,
        );
        let whole_us = WALL0_US + whole_at;
        // Every accepted task finished, then the placement quiet for two leases.
        self.run_until(|w| w.open_tasks() == 0, self.now + settle);
        let quiet = (2 * self.s.mesh.lease_ms).max(500) * 1000;
        let give_up = self.now + 20_000_000;
        loop {
            let a = self.master_view();
            let until = self.now + quiet;
            self.run_until(|_| false, until);
            let b = self.master_view();
            if (a == b && b.iter().all(|p| p.3 == "running")) || self.now > give_up {
                break;
            }
        }
        let end = self.end_state();
        report.faults = std::mem::take(&mut self.injected);
        drill::fault_ends(&mut report.faults);
        let origin = (self.base, WALL0_US);
        let views = std::mem::take(&mut self.views);
        drill::conclude(
            &self.s,
            report,
            &self.client.log,
            &end,
            whole_us,
            origin,
            &views,
        )?;
        report.plant_escalations =
            Some(self.escalations.max(report.plant_escalations.unwrap_or(0)));
        Ok(())
    }

    fn all_running(&self) -> bool {
        self.master.as_ref().is_some_and(|m| {
            m.snapshot()
                .plants
                .iter()
                .all(|p| p.status.as_str() == "running")
        })
    }

    /// Submits still waiting for an answer plus the master's unfinished tasks (checked
    /// after every event, so from its counts, not a scan of the ledger; the mesh is whole
    /// by then, so a master is running).
    fn open_tasks(&self) -> usize {
        let unfinished = self.master.as_ref().map_or(1, |m| m.unfinished() as usize);
        unfinished + self.client.pending.len()
    }

    fn master_view(&self) -> Vec<(String, String, u64, String)> {
        self.master.as_ref().map_or_else(Vec::new, |m| {
            m.snapshot()
                .plants
                .into_iter()
                .map(|p| (p.spec.id, p.node, p.epoch, p.status.as_str().to_string()))
                .collect()
        })
    }

    /// Handles events in time order until `done` holds or time passes `limit`.
    fn run_until(&mut self, done: impl Fn(&World) -> bool, limit: u64) {
        while !done(self) {
            let Some((&(t, _), _)) = self.queue.first_key_value() else {
                return;
            };
            if t > limit {
                self.now = limit;
                return;
            }
            let ((t, _), ev) = self.queue.pop_first().expect("peeked");
            self.now = t;
            self.trace.add(&format!("{t} {}", ev.describe()));
            self.handle(ev);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Master(life, msg) => {
                if life == self.life {
                    self.deliver(msg);
                }
            }
            Ev::Tick(life) => {
                if life == self.life && self.master.is_some() {
                    self.deliver(MasterMsg::Tick);
                    self.at(self.cfg.scheduler.tick_ms * 1000, Ev::Tick(life));
                }
            }
            Ev::Sync => {
                self.sync_at = None;
                let n = self.ledger.sync();
                self.trace.add(&format!("group {n}"));
                self.after_master();
            }
            Ev::Send(n) => {
                let i = n as usize;
                self.client.log.sent[i].sent_us = self.wall();
                let d = self.client_latency();
                self.at(d, Ev::Submit(i));
            }
            Ev::Submit(i) => self.submit(i),
            Ev::Down(node, e, d) => self.on_down(&node, e, d),
            Ev::Up(node, e, u) => self.on_up(&node, e, u),
            Ev::AgentDone(node, plant, kind, run) => {
                let now = self.instant();
                let mut service = self.service();
                let acts = match self.nodes.get_mut(&node) {
                    Some(n) if n.alive => n.on_done(&plant, &kind, run, now, &mut service),
                    _ => Vec::new(),
                };
                self.node_actions(&node, acts);
            }
            Ev::AgentRestart(node, plant, kind, epoch) => {
                let mut service = self.service();
                let acts = match self.nodes.get_mut(&node) {
                    Some(n) if n.alive => n.on_restart(&plant, &kind, epoch, &mut service),
                    _ => Vec::new(),
                };
                self.node_actions(&node, acts);
            }
            Ev::Heartbeat(node, inc) => self.heartbeat(&node, inc),
            Ev::LeaseCheck(node, e) => self.lease_check(&node, e),
            Ev::Dial(node, inc) => self.dial(&node, inc),
            Ev::SpawnTimeout(plant, epoch, life) => {
                if life == self.life && self.spawning.remove(&(plant.clone(), epoch)).is_some() {
                    let result = Err(format!(
                        "no answer within {} s",
                        SPAWN_TIMEOUT_US / 1_000_000
                    ));
                    self.deliver(MasterMsg::Placed {
                        plant,
                        epoch,
                        result,
                    });
                }
            }
            Ev::Fault(i) => self.fault(i),
            Ev::View => {
                self.record_view();
                self.at(VIEW_EVERY_US, Ev::View);
            }
            Ev::Whole => self.make_whole(),
        }
    }

    fn service(&mut self) -> impl FnMut() -> Duration + use<> {
        let mut r = Rng::new(self.rng.next_u64());
        move || Duration::from_micros(r.range(300, 2_500))
    }

    fn client_latency(&mut self) -> u64 {
        self.rng.range(80, 300)
    }

    // ---- the master ----------------------------------------------------------------

    fn mailbox(&self) -> Mailbox {
        let inbox = self.inbox.clone();
        Arc::new(move |m| inbox.lock().unwrap_or_else(|e| e.into_inner()).push(m))
    }

    fn start_master(&mut self) -> Result<(), String> {
        self.life += 1;
        self.inbox = Arc::default();
        let mut args = MasterArgs::new(self.cfg.clone(), Arc::new(self.ledger.clone()));
        if let Some(tune) = self.tune {
            tune(&mut args);
        }
        let st = MasterState::start(args, Some(self.mailbox()), self.instant(), self.wall())
            .map_err(|e| format!("master start: {e}"))?;
        self.master = Some(st);
        self.after_master();
        self.at(self.cfg.scheduler.tick_ms * 1000, Ev::Tick(self.life));
        Ok(())
    }

    fn crash_master(&mut self) {
        if self.master.take().is_none() {
            return;
        }
        self.ledger.crash();
        self.life += 1;
        self.spawning.clear();
        self.draining.clear();
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // Every connection closes; a node learns it at once where its path carries the close.
        for (id, s) in std::mem::take(&mut self.sessions) {
            s.link.fenced.store(true, Ordering::Release);
            self.send_down(&id, s.node_epoch, Down::Fenced);
        }
        // Submits in flight lose their answer: the client sends them again.
        let pending: Vec<usize> = std::mem::take(&mut self.client.pending)
            .into_keys()
            .collect();
        for i in pending {
            self.client_retry(i, "master connection lost");
        }
    }

    /// Hands `msg` to the master now and carries out what it left.
    fn deliver(&mut self, msg: MasterMsg) {
        let (instant, wall) = (self.instant(), self.wall());
        let Some(m) = self.master.as_mut() else {
            return;
        };
        m.set_clock(instant, wall);
        m.handle(msg);
        self.after_master();
    }

    /// Carries out the master's effects, its frames to nodes and the ledger's callbacks;
    /// schedules the next group commit.
    fn after_master(&mut self) {
        let fx = self
            .master
            .as_mut()
            .map(|m| m.take_effects())
            .unwrap_or_default();
        for e in fx {
            match e {
                Effect::After(d, msg) => {
                    let life = self.life;
                    self.at(d.as_micros() as u64, Ev::Master(life, msg));
                }
                Effect::Spawn {
                    node,
                    spec,
                    epoch,
                    session,
                } => {
                    let plant = spec.id.clone();
                    self.spawning
                        .insert((plant.clone(), epoch), node.id().to_string());
                    let life = self.life;
                    self.at(SPAWN_TIMEOUT_US, Ev::SpawnTimeout(plant, epoch, life));
                    self.send_down(
                        node.id(),
                        session.node_epoch,
                        Down::Spawn(Box::new(spec), epoch),
                    );
                }
            }
        }
        let frames = std::mem::take(&mut *self.out.lock().unwrap_or_else(|e| e.into_inner()));
        for (node, e, d) in frames {
            self.send_down(&node, e, d);
        }
        let msgs = std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        let life = self.life;
        for m in msgs {
            self.at(0, Ev::Master(life, m));
        }
        self.poll_client();
        if self.sync_at.is_none() && self.ledger.queued() > 0 {
            // One fdatasync: what queues meanwhile waits for the next group.
            let d = self.rng.range(300, 1_200);
            self.sync_at = Some(self.now + d);
            self.at(d, Ev::Sync);
        }
    }

    // ---- the client ------------------------------------------------------------------

    fn submit(&mut self, i: usize) {
        if self.master.is_none() {
            self.client_retry(i, "Unavailable: connection refused");
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.client.pending.insert(i, Pending { rx });
        let t = self.client.task[i].clone();
        self.deliver(MasterMsg::Submit(t, tx.into()));
    }

    fn client_retry(&mut self, i: usize, why: &str) {
        let key = self.client.log.sent[i].key.clone();
        let b = self.client.backoff.entry(i).or_insert_with(|| {
            Backoff::named(Duration::from_millis(50), Duration::from_millis(400), &key)
        });
        let d = b.next_delay().as_micros() as u64;
        // Retries stop ten seconds after the last scheduled submit, as the real client's.
        let until = self.t0 + self.s.workload.duration_ms * 1000 + 10_000_000;
        if self.now + d > until {
            self.client.log.sent[i].outcome = Outcome::Unknown(why.to_string());
            return;
        }
        self.at(d, Ev::Submit(i));
    }

    fn poll_client(&mut self) {
        let mut answered = Vec::new();
        for (i, p) in self.client.pending.iter_mut() {
            match p.rx.try_recv() {
                Ok(r) => answered.push((*i, Some(r))),
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => answered.push((*i, None)),
            }
        }
        for (i, r) in answered {
            self.client.pending.remove(&i);
            let at_us = self.wall() + self.client_latency();
            match r {
                Some(Ok(s)) => {
                    self.client.log.sent[i].outcome = Outcome::Acked {
                        id: s.task.id,
                        at_us,
                    };
                }
                Some(Err(ApiError::Ledger(heatmesh_master::ledger::LedgerError::Closed)))
                | None => {
                    self.client_retry(i, "Unavailable: no answer");
                }
                Some(Err(e)) => self.client.log.sent[i].outcome = Outcome::Refused(e.to_string()),
            }
        }
    }

    // ---- the network -----------------------------------------------------------------

    fn hop(&mut self, node: &str, down: bool) -> Option<u64> {
        let base = self.rng.range(100, 400);
        let jitter_draw = self.rng.next_u64();
        let now = self.now;
        let path = if down {
            self.from_master.get_mut(node)?
        } else {
            self.to_master.get_mut(node)?
        };
        if path.cut {
            return None;
        }
        let jitter = if path.jitter_us > 0 {
            jitter_draw % (path.jitter_us + 1)
        } else {
            0
        };
        let arrive = (now + base + path.delay_us + jitter).max(path.last_arrival);
        path.last_arrival = arrive;
        Some(arrive - now)
    }

    fn send_down(&mut self, node: &str, node_epoch: u64, d: Down) {
        match self.hop(node, true) {
            Some(delay) => self.at(delay, Ev::Down(node.to_string(), node_epoch, d)),
            None => {
                if let Some(p) = self.from_master.get_mut(node) {
                    p.held_down.push((node_epoch, d));
                }
            }
        }
    }

    fn send_up(&mut self, node: &str, node_epoch: u64, u: Up) {
        match self.hop(node, false) {
            Some(delay) => self.at(delay, Ev::Up(node.to_string(), node_epoch, u)),
            None => {
                if let Some(p) = self.to_master.get_mut(node) {
                    p.held_up.push((node_epoch, u));
                }
            }
        }
    }

    fn observe(&mut self, node: &str, what: Observation) {
        self.delivered.push(Delivered {
            at: self.instant(),
            node: node.to_string(),
            what,
        });
    }

    fn on_down(&mut self, node: &str, node_epoch: u64, d: Down) {
        let current = self
            .nodes
            .get(node)
            .is_some_and(|n| n.alive && n.session == Some(node_epoch));
        if current {
            match &d {
                Down::Assign(_, a) => self.observe(
                    node,
                    Observation::Assign {
                        task: a.task_id,
                        attempt: a.attempt,
                        epoch: a.epoch,
                    },
                ),
                Down::Spawn(spec, epoch) => self.observe(
                    node,
                    Observation::Spawn {
                        plant: spec.id.clone(),
                        epoch: *epoch,
                    },
                ),
                _ => {}
            }
        }
        let now = self.now;
        let mut service = self.service();
        let acts = match self.nodes.get_mut(node) {
            Some(n) => n.on_down(node_epoch, d, now, &mut service),
            None => Vec::new(),
        };
        self.node_actions(node, acts);
    }

    fn node_actions(&mut self, node: &str, acts: Vec<NodeAction>) {
        for a in acts {
            match a {
                NodeAction::Send(u) => {
                    let e = self.nodes.get(node).and_then(|n| n.session).unwrap_or(0);
                    self.send_up(node, e, u);
                }
                NodeAction::Busy(plant, kind, run, took) => {
                    self.at(
                        took.as_micros() as u64,
                        Ev::AgentDone(node.into(), plant, kind, run),
                    );
                }
                NodeAction::Restart(plant, kind, epoch, delay) => {
                    self.at(
                        delay.as_micros() as u64,
                        Ev::AgentRestart(node.into(), plant, kind, epoch),
                    );
                }
                NodeAction::Detached => self.schedule_dial(node),
            }
        }
    }

    fn on_up(&mut self, node: &str, node_epoch: u64, u: Up) {
        if self.master.is_none() {
            return;
        }
        let live = self
            .sessions
            .get(node)
            .is_some_and(|s| s.node_epoch == node_epoch);
        let draining = self.draining.contains(&(node.to_string(), node_epoch));
        if !live && !draining {
            return;
        }
        if live && let Some(s) = self.sessions.get_mut(node) {
            s.last_heard = self.now;
        }
        let session = heatmesh_mesh::NodeSession {
            node: node.to_string(),
            node_epoch,
        };
        match u {
            Up::Heartbeat => {
                if live {
                    self.send_down(node, node_epoch, Down::Ack);
                }
            }
            Up::Started(plant, epoch, error) => {
                if !live {
                    return;
                }
                if self.spawning.remove(&(plant.clone(), epoch)).is_some() {
                    let result = if error.is_empty() {
                        let link = self.sessions.get(node).map(|s| s.link.clone());
                        link.map(|l| l.plant(&plant, epoch)).ok_or(error)
                    } else {
                        Err(error)
                    };
                    self.deliver(MasterMsg::Placed {
                        plant,
                        epoch,
                        result,
                    });
                }
            }
            Up::Event(ev) => {
                match &ev {
                    PlantEvent::TaskDone {
                        task_id,
                        attempt,
                        epoch,
                        outcome,
                        ..
                    } => {
                        let outcome = match outcome {
                            heatmesh_agents::Outcome::Completed(_) => "completed",
                            heatmesh_agents::Outcome::Failed { .. } => "failed",
                            heatmesh_agents::Outcome::Orphaned { .. } => "orphaned",
                        };
                        self.observe(
                            node,
                            Observation::Result {
                                task: *task_id,
                                attempt: *attempt,
                                epoch: *epoch,
                                outcome,
                            },
                        );
                    }
                    PlantEvent::PlantDown { plant, epoch, .. } => {
                        self.escalations += 1;
                        let what = Observation::PlantDown {
                            plant: plant.clone(),
                            epoch: *epoch,
                        };
                        self.observe(node, what);
                    }
                    PlantEvent::AgentChanged { .. } => {}
                }
                self.deliver(MasterMsg::Plant(session, ev));
            }
        }
    }

    // ---- node sessions ---------------------------------------------------------------

    fn start_node(&mut self, id: &str) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        n.start();
        let inc = n.incarnation;
        self.at(0, Ev::Dial(id.to_string(), inc));
        let hb = self.s.mesh.heartbeat_interval_ms * 1000;
        self.at(hb, Ev::Heartbeat(id.to_string(), inc));
    }

    fn schedule_dial(&mut self, id: &str) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        let d = n.backoff.next_delay().as_micros() as u64;
        let inc = n.incarnation;
        self.at(d, Ev::Dial(id.to_string(), inc));
    }

    fn dial(&mut self, id: &str, inc: u32) {
        let Some(n) = self.nodes.get(id) else {
            return;
        };
        if !n.alive || n.incarnation != inc || n.session.is_some() {
            return;
        }
        let reachable = self.master.is_some()
            && !self.to_master.get(id).is_some_and(|p| p.cut)
            && !self.from_master.get(id).is_some_and(|p| p.cut);
        // One id holds one live session: a second attach waits until the first is fenced.
        if !reachable || self.sessions.contains_key(id) {
            self.schedule_dial(id);
            return;
        }
        // The master refuses an attach whose node epoch cannot be made durable (a full disk).
        let Ok(node_epoch) = self.ledger.next_node_epoch(id) else {
            self.schedule_dial(id);
            return;
        };
        let link = Arc::new(SimNodeLink {
            id: id.to_string(),
            node_epoch,
            fenced: Arc::new(AtomicBool::new(false)),
            out: self.out.clone(),
        });
        self.sessions.insert(
            id.to_string(),
            Session {
                node_epoch,
                last_heard: self.now,
                link: link.clone(),
            },
        );
        let now = self.now;
        let n = self.nodes.get_mut(id).expect("looked up above");
        n.session = Some(node_epoch);
        n.last_heard = now;
        n.backoff.reset();
        let (preferred, running) = (n.preferred.clone(), n.running());
        let kept: Vec<Up> = n.outbox.drain(..).collect();
        self.observe(id, Observation::Welcome { node_epoch });
        let lease_check = self.s.mesh.lease_ms * 100;
        self.at(lease_check, Ev::LeaseCheck(id.to_string(), node_epoch));
        self.deliver(MasterMsg::NodeJoined {
            link,
            node_epoch,
            preferred,
            running,
        });
        for u in kept {
            self.send_up(id, node_epoch, u);
        }
    }

    fn heartbeat(&mut self, id: &str, inc: u32) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        if !n.alive || n.incarnation != inc {
            return;
        }
        let hb = self.s.mesh.heartbeat_interval_ms * 1000;
        let mut detached = false;
        let mut beat = None;
        if let Some(e) = n.session {
            if now.saturating_sub(n.last_heard) > STALL_US {
                // The master has answered nothing for the keepalive's tolerance.
                n.session = None;
                detached = true;
            } else {
                beat = Some(e);
            }
        }
        if let Some(e) = beat {
            self.send_up(id, e, Up::Heartbeat);
        }
        if detached {
            self.schedule_dial(id);
        }
        self.at(hb, Ev::Heartbeat(id.to_string(), inc));
    }

    fn lease_check(&mut self, id: &str, node_epoch: u64) {
        let lease = self.s.mesh.lease_ms * 1000;
        let Some(s) = self.sessions.get(id).filter(|s| s.node_epoch == node_epoch) else {
            return;
        };
        let silent = self.now - s.last_heard;
        if silent > lease {
            self.fence(
                id,
                format!("lease expired: no heartbeat for {} ms", silent / 1000),
            );
        } else {
            self.at(lease / 10, Ev::LeaseCheck(id.to_string(), node_epoch));
        }
    }

    /// Ends the node's live session: its link refuses sends, spawns waiting on it fail, the
    /// node is told (if its path carries it) and the master learns it lost the node.
    fn fence(&mut self, id: &str, reason: String) {
        let Some(s) = self.sessions.remove(id) else {
            return;
        };
        s.link.fenced.store(true, Ordering::Release);
        self.draining.insert((id.to_string(), s.node_epoch));
        let failed: Vec<(String, u64)> = self
            .spawning
            .iter()
            .filter(|(_, n)| n.as_str() == id)
            .map(|(k, _)| k.clone())
            .collect();
        for (plant, epoch) in failed {
            self.spawning.remove(&(plant.clone(), epoch));
            let result = Err("session ended before the plant started".to_string());
            self.deliver(MasterMsg::Placed {
                plant,
                epoch,
                result,
            });
        }
        self.send_down(id, s.node_epoch, Down::Fenced);
        self.deliver(MasterMsg::NodeLost {
            node_id: id.to_string(),
            node_epoch: s.node_epoch,
            reason,
        });
    }

    // ---- faults ----------------------------------------------------------------------

    fn fault(&mut self, i: usize) {
        let f = self.faults[i].clone();
        let node = f.node.clone().unwrap_or_default();
        let down = self.nodes.get(&node).is_some_and(|n| !n.alive);
        let attached = self.sessions.contains_key(&node);
        let mut untimed = match f.action {
            Action::KillNode | Action::Partition if down => {
                Some(format!("{node} was already down"))
            }
            Action::KillNode | Action::Partition if self.master.is_none() => {
                Some("the master was down".to_string())
            }
            Action::KillNode | Action::Partition if !attached => {
                Some(format!("{node} was not attached"))
            }
            _ => None,
        };
        let error = self.apply(&f).err();
        if error.is_some() {
            untimed = None;
        }
        self.injected.push(Injected {
            at_ms: f.at_ms,
            action: f.action.as_str(),
            target: drill::target(&f),
            detected_ms: None,
            recovered_ms: None,
            error,
            untimed,
            at_us: self.wall(),
            ends_us: u64::MAX,
            step: f,
        });
    }

    fn apply(&mut self, f: &Fault) -> Result<(), String> {
        let node = f.node.clone().unwrap_or_default();
        match f.action {
            Action::KillNode => self.kill_node(&node),
            Action::RestartNode => {
                if self.nodes.get(&node).is_some_and(|n| !n.alive) {
                    self.start_node(&node);
                }
            }
            Action::RestartNodeRolling => {
                self.kill_node(&node);
                self.start_node(&node);
            }
            Action::CrashMaster => self.crash_master(),
            Action::RestartMaster => {
                if self.master.is_none() {
                    self.start_master()?;
                }
            }
            Action::Partition => {
                let (up, down) = match f.direction {
                    Direction::Both => (true, true),
                    Direction::ToMaster => (true, false),
                    Direction::FromMaster => (false, true),
                };
                if up && let Some(p) = self.to_master.get_mut(&node) {
                    p.cut = true;
                }
                if down && let Some(p) = self.from_master.get_mut(&node) {
                    p.cut = true;
                }
            }
            Action::Heal => self.heal(&node),
            Action::StallMaster | Action::ResumeMaster => {
                return Err(format!(
                    "{}: not modelled in simulation; run it with --mode multi-process",
                    f.action.as_str()
                ));
            }
            Action::ConnectionFlood | Action::EndFlood => {
                return Err(format!(
                    "{}: the simulation has no sockets; run it with --mode in-process or multi-process",
                    f.action.as_str()
                ));
            }
            Action::DiskFull => self.ledger.set_disk_full(true),
            Action::FreeDisk => self.ledger.set_disk_full(false),
            Action::Delay => {
                let paths = [
                    self.to_master.get_mut(&node),
                    self.from_master.get_mut(&node),
                ];
                for p in paths.into_iter().flatten() {
                    p.delay_us = f.delay_ms * 1000;
                    p.jitter_us = f.jitter_ms * 1000;
                }
            }
            Action::PanicAgent | Action::SlowAgent => {
                if self.master.is_none() {
                    return Err("inject fault: the master is down".into());
                }
                let fault = heatmesh_agents::fault::Fault {
                    panic_next: if f.action == Action::PanicAgent {
                        f.panics
                    } else {
                        0
                    },
                    delay: Duration::from_millis(if f.action == Action::SlowAgent {
                        f.delay_ms
                    } else {
                        0
                    }),
                };
                let (tx, mut rx) = oneshot::channel();
                let plant = f.plant.clone().unwrap_or_default();
                let kind = f.kind.clone().unwrap_or_default();
                self.deliver(MasterMsg::InjectFault(plant, kind, fault, tx.into()));
                match rx.try_recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("inject fault: {e}")),
                    Err(_) => return Err("inject fault: no answer".into()),
                }
            }
        }
        Ok(())
    }

    fn kill_node(&mut self, id: &str) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        if !n.alive {
            return;
        }
        n.kill();
        for p in [self.to_master.get_mut(id), self.from_master.get_mut(id)]
            .into_iter()
            .flatten()
        {
            p.held_up.clear();
            p.held_down.clear();
        }
        // The master sees the connection close at once, unless the path is cut.
        if !self.to_master.get(id).is_some_and(|p| p.cut) {
            self.fence(id, "connection closed by the node".into());
        }
    }

    fn heal(&mut self, id: &str) {
        let current = self.nodes.get(id).and_then(|n| n.session);
        let (mut ups, mut downs) = (Vec::new(), Vec::new());
        if let Some(p) = self.to_master.get_mut(id) {
            *p = Path {
                last_arrival: p.last_arrival,
                held_up: std::mem::take(&mut p.held_up),
                ..Path::default()
            };
            ups = std::mem::take(&mut p.held_up);
        }
        if let Some(p) = self.from_master.get_mut(id) {
            *p = Path {
                last_arrival: p.last_arrival,
                held_down: std::mem::take(&mut p.held_down),
                ..Path::default()
            };
            downs = std::mem::take(&mut p.held_down);
        }
        // Held frames of a connection the node has since abandoned died with it.
        for (e, u) in ups {
            if current == Some(e) || self.draining.contains(&(id.to_string(), e)) {
                self.send_up(id, e, u);
            }
        }
        for (e, d) in downs {
            if current == Some(e) {
                self.send_down(id, e, d);
            }
        }
    }

    fn make_whole(&mut self) {
        self.ledger.set_disk_full(false);
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in &ids {
            self.heal(id);
            if let Some(n) = self.nodes.get_mut(id) {
                n.clear_faults();
            }
            if self.nodes.get(id).is_some_and(|n| !n.alive) {
                self.start_node(id);
            }
        }
        if self.master.is_none() {
            let _ = self.start_master();
        }
    }

    // ---- the end ---------------------------------------------------------------------

    fn record_view(&mut self) {
        let Some(m) = self.master.as_ref() else {
            return;
        };
        let snap = m.snapshot();
        let mut now = Seen {
            nodes: snap
                .nodes
                .iter()
                .map(|n| (n.id.clone(), n.connected, n.node_epoch))
                .collect(),
            plants: snap
                .plants
                .iter()
                .map(|p| {
                    (
                        p.spec.id.clone(),
                        p.node.clone(),
                        p.epoch,
                        p.status.as_str().into(),
                    )
                })
                .collect(),
        };
        now.nodes.sort();
        now.plants.sort();
        // Answered a microsecond after it was asked, as a real poll is: a view taken at the
        // very instant of a fault shows its effect and must not pass for the state before.
        if self.views.last().is_none_or(|(_, _, last)| *last != now) {
            self.views.push((self.wall(), self.wall() + 1, now));
        }
    }

    fn end_state(&mut self) -> EndState {
        let node_view = self
            .nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(id, n)| (id.clone(), n.running()))
            .collect();
        EndState {
            ledger: Arc::new(self.ledger.clone()),
            master_view: self.master_view(),
            node_view: Some(node_view),
            delivered: Some(std::mem::take(&mut self.delivered)),
            stale_rejected: None,
        }
    }
}

fn new_task(cfg: &Config, plant: &str, kind: &str, key: &str) -> Result<NewTask, String> {
    let spec = cfg
        .plants
        .iter()
        .find(|p| p.id == plant)
        .ok_or_else(|| format!("no plant {plant}"))?;
    let k = heatmesh_agents::registry::lookup(kind).ok_or_else(|| format!("no kind {kind}"))?;
    let text = workload::example_payload(kind).ok_or_else(|| format!("no example for {kind}"))?;
    let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    (k.plant_defaults)(&mut v, spec);
    Ok(NewTask {
        plant_id: plant.to_string(),
        agent_kind: k.id.to_string(),
        payload: v.to_string(),
        priority: Priority::Normal,
        idempotency_key: Some(key.to_string()),
        deadline: None,
        max_attempts: None,
    })
}
