//! A simulated network between in-process nodes and the master.
//!
//! Each node reaches the master through a [`SimDialer`], which hands the node's frames to the
//! master's [`NodeServer::accept`]: the same attach, lease, fencing and reconnection code as
//! over gRPC, with the transport replaced by two in-memory pipes per connection. Every pipe
//! obeys its node's [`LinkFaults`]: a cut direction holds its frames (as a black-holed TCP
//! path does), delay and jitter postpone them in order, and a connection whose path stays cut
//! longer than the keepalive timeout breaks on both ends, as HTTP/2 keepalive would break it.
//!
//! The network also watches what it carries ([`Observation`]), so a drill can check that
//! every result a node delivered answers an assignment that node was given.

use heatmesh_mesh::BoxFuture;
use heatmesh_mesh::attach::{Dialer, MasterStream};
use heatmesh_mesh::remote::{NodeFrames, NodeServer};
use heatmesh_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Faults on one node's path to the master.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Frames from the node to the master are held.
    pub up_cut: bool,
    /// Frames from the master to the node are held.
    pub down_cut: bool,
    /// Added to every frame's transit, both directions.
    pub delay: Duration,
    /// Up to this much more, drawn per frame (order is kept).
    pub jitter: Duration,
}

impl LinkFaults {
    fn cut(&self, dir: Dir) -> bool {
        match dir {
            Dir::Up => self.up_cut,
            Dir::Down => self.down_cut,
        }
    }
}

/// Direction of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Node to master.
    Up,
    /// Master to node.
    Down,
}

/// A frame the network delivered, reduced to what the checker needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The master assigned a task to this node.
    Assign {
        /// Task id.
        task: u64,
        /// Attempt.
        attempt: u32,
        /// Placement epoch.
        epoch: u64,
    },
    /// The node reported a task's outcome to the master.
    Result {
        /// Task id.
        task: u64,
        /// Attempt it answers.
        attempt: u32,
        /// Epoch it answers.
        epoch: u64,
        /// completed | failed | orphaned.
        outcome: &'static str,
    },
    /// The master placed a plant on this node.
    Spawn {
        /// Plant id.
        plant: String,
        /// Placement epoch.
        epoch: u64,
    },
    /// The node reported a plant incarnation down (a supervisor gave up: escalation).
    PlantDown {
        /// Plant id.
        plant: String,
        /// Its epoch.
        epoch: u64,
    },
    /// The master welcomed this node under a node epoch.
    Welcome {
        /// Node epoch.
        node_epoch: u64,
    },
}

/// One delivered frame: when, on which node's path.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// When it was delivered.
    pub at: Instant,
    /// Node whose path carried it.
    pub node: String,
    /// What it was.
    pub what: Observation,
}

fn observe_up(f: &pb::NodeFrame) -> Option<Observation> {
    use pb::node_frame::Frame;
    use pb::task_done::Outcome;
    match f.frame.as_ref()? {
        Frame::TaskDone(t) => Some(Observation::Result {
            task: t.task_id,
            attempt: t.attempt,
            epoch: t.epoch,
            outcome: match t.outcome {
                Some(Outcome::CompletedJson(_)) => "completed",
                Some(Outcome::Failed(_)) => "failed",
                _ => "orphaned",
            },
        }),
        Frame::PlantDown(d) => Some(Observation::PlantDown {
            plant: d.plant_id.clone(),
            epoch: d.epoch,
        }),
        _ => None,
    }
}

fn observe_down(f: &pb::MasterFrame) -> Option<Observation> {
    use pb::master_frame::Frame;
    match f.frame.as_ref()? {
        Frame::Assign(a) => Some(Observation::Assign {
            task: a.task_id,
            attempt: a.attempt,
            epoch: a.epoch,
        }),
        Frame::SpawnPlant(s) => Some(Observation::Spawn {
            plant: s.plant_id.clone(),
            epoch: s.epoch,
        }),
        Frame::Welcome(w) => Some(Observation::Welcome {
            node_epoch: w.node_epoch,
        }),
        _ => None,
    }
}

/// One node's path: its faults and its open connections.
struct Link {
    faults: watch::Sender<LinkFaults>,
    /// When the path became cut (either direction), for the keepalive model.
    cut_since: Mutex<Option<Instant>>,
    /// Break switches of the connections open on this path.
    conns: Mutex<Vec<watch::Sender<bool>>>,
}

impl Link {
    fn new() -> Link {
        Link {
            faults: watch::channel(LinkFaults::default()).0,
            cut_since: Mutex::new(None),
            conns: Mutex::new(Vec::new()),
        }
    }

    fn break_all(&self) {
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.send(true);
        }
    }
}

/// The simulated network of one in-process mesh.
pub struct SimNet {
    master: RwLock<Option<NodeServer>>,
    links: Mutex<HashMap<String, Arc<Link>>>,
    keepalive: Duration,
    log: Mutex<Vec<Delivered>>,
    seed: Mutex<crate::rng::Rng>,
}

impl SimNet {
    /// A network whose connections break after `keepalive` of a cut path; `seed` drives jitter.
    pub fn new(keepalive: Duration, seed: u64) -> Arc<SimNet> {
        Arc::new(SimNet {
            master: RwLock::new(None),
            links: Mutex::new(HashMap::new()),
            keepalive,
            log: Mutex::new(Vec::new()),
            seed: Mutex::new(crate::rng::Rng::new(seed)),
        })
    }

    /// Connects the network to a (re)started master; None takes it away (a crash): every
    /// open connection breaks and dials are refused until a master is set again.
    pub fn set_master(&self, server: Option<NodeServer>) {
        let gone = server.is_none();
        *self.master.write().unwrap_or_else(|e| e.into_inner()) = server;
        if gone {
            for l in self
                .links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
            {
                l.break_all();
            }
        }
    }

    fn link(&self, node: &str) -> Arc<Link> {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.to_string())
            .or_insert_with(|| Arc::new(Link::new()))
            .clone()
    }

    /// Sets one node's path faults.
    pub fn set_faults(&self, node: &str, f: LinkFaults) {
        let link = self.link(node);
        {
            let mut since = link.cut_since.lock().unwrap_or_else(|e| e.into_inner());
            match (f.up_cut || f.down_cut, since.is_some()) {
                (true, false) => *since = Some(Instant::now()),
                (false, true) => *since = None,
                _ => {}
            }
        }
        link.faults.send_replace(f);
    }

    /// One node's path faults.
    pub fn faults(&self, node: &str) -> LinkFaults {
        *self.link(node).faults.borrow()
    }

    /// Breaks every connection of one node at once (the node's process died: its peer sees
    /// the connection reset).
    pub fn reset(&self, node: &str) {
        self.link(node).break_all();
    }

    /// Everything delivered so far, in delivery order.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, node: &str, what: Observation) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Delivered {
                at: Instant::now(),
                node: node.to_string(),
                what,
            });
    }

    fn next_jitter(&self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let r = self
            .seed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_u64();
        Duration::from_micros(r % (max.as_micros() as u64 + 1))
    }

    /// A dialer for node `node`.
    pub fn dialer(self: &Arc<Self>, node: &str) -> SimDialer {
        SimDialer {
            net: self.clone(),
            node: node.to_string(),
        }
    }
}

/// Carries frames of one direction of one connection, obeying the path's faults. Frames are
/// stamped on arrival and released at arrival + delay + jitter, never before an earlier one.
fn pipe<T, S>(
    net: Arc<SimNet>,
    node: String,
    dir: Dir,
    mut from: S,
    observe: fn(&T) -> Option<Observation>,
    broken: watch::Receiver<bool>,
) -> UnboundedReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
{
    let (out, rx) = mpsc::unbounded_channel();
    let (stamped_tx, mut stamped) = mpsc::unbounded_channel::<(Instant, Result<T, Status>)>();
    let link = net.link(&node);
    let mut b1 = broken.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                item = from.next() => match item {
                    Some(item) => {
                        if stamped_tx.send((Instant::now(), item)).is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                _ = b1.wait_for(|b| *b) => return,
            }
        }
    });
    let mut b2 = broken;
    tokio::spawn(async move {
        let mut faults = link.faults.subscribe();
        let mut last_due = Instant::now();
        let reset = || {
            Err(Status::unavailable(
                "connection reset (simulated path broke)",
            ))
        };
        loop {
            let (arrived, item) = tokio::select! {
                x = stamped.recv() => match x {
                    Some(x) => x,
                    None => return, // the sender ended: the stream ends for the peer too
                },
                _ = b2.wait_for(|b| *b) => {
                    let _ = out.send(reset());
                    return;
                }
            };
            // Held while this direction is cut; lost if the connection breaks meanwhile.
            tokio::select! {
                r = faults.wait_for(|f| !f.cut(dir)) => if r.is_err() { return },
                _ = b2.wait_for(|b| *b) => {
                    let _ = out.send(reset());
                    return;
                }
            }
            let f = *faults.borrow();
            let due = (arrived + f.delay + net.next_jitter(f.jitter)).max(last_due);
            last_due = due;
            if due > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = b2.wait_for(|b| *b) => {
                        let _ = out.send(reset());
                        return;
                    }
                }
            }
            let end = item.is_err();
            if let Ok(frame) = &item
                && let Some(o) = observe(frame)
            {
                net.record(&node, o);
            }
            if out.send(item).is_err() || end {
                return;
            }
        }
    });
    UnboundedReceiverStream::new(rx)
}

/// Breaks a connection once its path has been cut for longer than the keepalive timeout.
fn keepalive(net: Arc<SimNet>, node: String, brk: watch::Sender<bool>) {
    tokio::spawn(async move {
        let link = net.link(&node);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            if *brk.borrow() || brk.is_closed() {
                return;
            }
            let since = *link.cut_since.lock().unwrap_or_else(|e| e.into_inner());
            if since.is_some_and(|t| t.elapsed() > net.keepalive) {
                let _ = brk.send(true);
                return;
            }
        }
    });
}

/// Dials the master through the simulated network.
pub struct SimDialer {
    net: Arc<SimNet>,
    node: String,
}

impl Dialer for SimDialer {
    fn dial(
        &self,
        up: UnboundedReceiverStream<pb::NodeFrame>,
    ) -> BoxFuture<'_, Result<MasterStream, Status>> {
        Box::pin(async move {
            let server = self
                .net
                .master
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .ok_or_else(|| Status::unavailable("connect: connection refused (master down)"))?;
            let f = self.net.faults(&self.node);
            if f.up_cut || f.down_cut {
                // A SYN into a black hole: nothing answers until the connect timeout.
                tokio::time::sleep(self.net.keepalive).await;
                return Err(Status::unavailable("connect timed out (path cut)"));
            }
            let (brk, broken) = watch::channel(false);
            let link = self.net.link(&self.node);
            link.conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(brk.clone());
            keepalive(self.net.clone(), self.node.clone(), brk);
            let inbound: NodeFrames = Box::pin(pipe(
                self.net.clone(),
                self.node.clone(),
                Dir::Up,
                up.map(Ok),
                observe_up,
                broken.clone(),
            ));
            let down = server.accept(format!("sim:{}", self.node), inbound).await?;
            Ok(Box::pin(pipe(
                self.net.clone(),
                self.node.clone(),
                Dir::Down,
                down,
                observe_down,
                broken,
            )) as MasterStream)
        })
    }
}
