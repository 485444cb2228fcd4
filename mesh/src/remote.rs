//! The master's side of the node protocol: NodeService.Attach, cookie check, leases,
//! fencing, and [`RemoteNode`], the [`NodeLink`] for a node reached over the network.
//!
//! One session per attached node. The session reads the node's frames, renews the node's
//! lease on every heartbeat, and ends when the stream closes (a killed node: detected at
//! once) or the lease runs out (a partition or a hung node). Ending the session is the
//! fence: the response stream is closed, the node is marked fenced so nothing more is sent
//! to it, and the master is told the node is lost.

use crate::wire::{assignment_to_frame, frame_to_event};
use crate::{BoxFuture, MeshError, NodeLink, NodeSession, PlantLink, SessionSink};
use heatmesh_agents::fault::Fault;
use heatmesh_agents::{Assignment, EventSink, PlantSpec};
use heatmesh_base::now_us;
use heatmesh_ingest::PlantFeeds;
use heatmesh_proto::v1 as pb;
use pb::node_frame::Frame as Up;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Version of the node protocol this build speaks.
pub const PROTOCOL: u32 = 1;

/// Lease and heartbeat settings handed to every node at attach.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The shared secret a node must present; None refuses every node.
    pub cookie: Option<String>,
    /// How often nodes send a heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a node may stay silent before it is fenced.
    pub lease: Duration,
    /// How long a placement may take before it counts as failed.
    pub spawn_timeout: Duration,
}

/// Changes in membership, reported to the master.
pub enum Membership {
    /// A node attached (or re-attached under a new node epoch).
    Joined {
        /// Its link.
        node: RemoteNode,
        /// Plants it prefers to run.
        preferred: Vec<String>,
        /// Plant incarnations it still runs from an earlier session: (plant, epoch).
        running: Vec<(String, u64)>,
    },
    /// A node's session ended; it is fenced.
    Lost {
        /// Node id.
        node_id: String,
        /// The node epoch that ended.
        node_epoch: u64,
        /// Why: connection closed, lease expired.
        reason: String,
        /// Time between its last heartbeat and the detection.
        silent_for: Duration,
    },
}

/// Where membership changes go.
pub type MembershipSink = Arc<dyn Fn(Membership) + Send + Sync>;

/// Hands out node epochs that only increase, also across master restarts.
pub type EpochSource = Arc<dyn Fn(&str) -> Result<u64, String> + Send + Sync>;

/// Why the master did not take a batch of readings: `refused` when it never will.
#[derive(Debug, Clone)]
pub struct ReadingsRefusal {
    /// The batch is invalid, not merely early: the node should drop it.
    pub refused: bool,
    /// Why.
    pub error: String,
}

/// Takes a node's batch of readings for a plant; resolves once they are durable.
pub type ReadingsSink = Arc<
    dyn Fn(String, Vec<pb::Reading>) -> BoxFuture<'static, Result<(), ReadingsRefusal>>
        + Send
        + Sync,
>;

/// Takes a node's report of its meters' health: the node id and, per meter, when the node
/// took the snapshot and what it held.
pub type FeedsSink =
    Arc<dyn Fn(&str, Vec<(i64, heatmesh_connect::feeds::MeterHealth)>) + Send + Sync>;

/// The NodeService implementation the master serves.
#[derive(Clone)]
pub struct NodeServer {
    settings: Arc<ClusterSettings>,
    membership: MembershipSink,
    events: SessionSink,
    epochs: EpochSource,
    readings: ReadingsSink,
    feeds: FeedsSink,
    /// Live sessions by node id: (node epoch, address). One id, one live session.
    live: Arc<Mutex<HashMap<String, (u64, String)>>>,
}

impl NodeServer {
    /// A server reporting membership to `membership` and plant events to `events`.
    pub fn new(
        settings: ClusterSettings,
        membership: MembershipSink,
        events: SessionSink,
        epochs: EpochSource,
        readings: ReadingsSink,
        feeds: FeedsSink,
    ) -> Self {
        NodeServer {
            settings: Arc::new(settings),
            membership,
            events,
            epochs,
            readings,
            feeds,
            live: Arc::default(),
        }
    }
}

/// Constant-time comparison, so the cookie cannot be guessed byte by byte from timing.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type FrameSender = mpsc::UnboundedSender<Result<pb::MasterFrame, Status>>;

/// Frames from one node, however they travel (a gRPC stream, a simulated link).
pub type NodeFrames = std::pin::Pin<Box<dyn Stream<Item = Result<pb::NodeFrame, Status>> + Send>>;

/// Frames to one node, in order; an `Err` ends the session (the fence).
pub type MasterFrames =
    tokio_stream::wrappers::UnboundedReceiverStream<Result<pb::MasterFrame, Status>>;

/// A node attached over the network, as the master sees it.
#[derive(Clone)]
pub struct RemoteNode(Arc<Inner>);

/// Shared state of a [`RemoteNode`] and its plants.
pub struct Inner {
    id: String,
    address: String,
    node_epoch: u64,
    tx: FrameSender,
    fenced: AtomicBool,
    last_heartbeat_us: AtomicU64,
    spawning: Mutex<HashMap<(String, u64), oneshot::Sender<String>>>,
    spawn_timeout: Duration,
}

impl std::ops::Deref for RemoteNode {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl RemoteNode {
    /// Its node epoch (increases on every attach).
    pub fn node_epoch(&self) -> u64 {
        self.node_epoch
    }
}

impl Inner {
    fn send(&self, frame: pb::master_frame::Frame) -> Result<(), MeshError> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(self.unavailable("fenced"));
        }
        self.tx
            .send(Ok(pb::MasterFrame { frame: Some(frame) }))
            .map_err(|_| self.unavailable("session closed"))
    }

    fn unavailable(&self, reason: &str) -> MeshError {
        MeshError::NodeUnavailable {
            node: self.id.clone(),
            reason: format!("{reason} (node epoch {})", self.node_epoch),
        }
    }

    /// Stops a plant incarnation on this node (reconciliation after a reconnect).
    fn stop_plant(&self, plant: &str, epoch: u64, reason: &str) {
        let _ = self.send(pb::master_frame::Frame::StopPlant(pb::StopPlant {
            plant_id: plant.into(),
            epoch,
            reason: reason.into(),
        }));
    }
}

impl RemoteNode {
    /// Stops a plant incarnation on this node (reconciliation after a reconnect).
    pub fn stop_plant(&self, plant: &str, epoch: u64, reason: &str) {
        self.0.stop_plant(plant, epoch, reason);
    }
}

impl NodeLink for RemoteNode {
    fn id(&self) -> &str {
        &self.id
    }

    fn address(&self) -> String {
        self.address.clone()
    }

    fn stop_stale_plant(&self, plant: &str, epoch: u64) {
        self.0
            .stop_plant(plant, epoch, "not current after the node re-attached");
    }

    fn inject_fault(&self, plant: &str, kind: &str, fault: Fault) -> Result<(), MeshError> {
        self.send(pb::master_frame::Frame::InjectFault(pb::InjectFault {
            plant_id: plant.into(),
            kind: kind.into(),
            panic_next: fault.panic_next,
            delay_ms: fault.delay.as_millis() as u32,
        }))
    }

    fn set_feeds(&self, plant: &str, feeds: &PlantFeeds) -> Result<(), MeshError> {
        let feeds_json = serde_json::to_string(feeds).map_err(|e| MeshError::NodeUnavailable {
            node: self.0.id.clone(),
            reason: format!("encoding feeds: {e}"),
        })?;
        self.send(pb::master_frame::Frame::SetFeeds(pb::SetFeeds {
            plant_id: plant.into(),
            feeds_json,
        }))
    }

    fn last_heartbeat_us(&self) -> Option<u64> {
        Some(self.last_heartbeat_us.load(Ordering::Relaxed))
    }

    fn spawn_plant(
        &self,
        spec: PlantSpec,
        epoch: u64,
        _sink: EventSink,
    ) -> BoxFuture<'_, Result<Arc<dyn PlantLink>, MeshError>> {
        // Remote plants report through the session, which forwards to the server's sink.
        Box::pin(async move {
            let plant = spec.id.clone();
            let (tx, rx) = oneshot::channel();
            self.spawning
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((plant.clone(), epoch), tx);
            let spec_json = serde_json::to_string(&spec).map_err(|e| MeshError::SpawnFailed {
                plant: plant.clone(),
                node: self.id.clone(),
                reason: e.to_string(),
            })?;
            self.send(pb::master_frame::Frame::SpawnPlant(pb::SpawnPlant {
                plant_id: plant.clone(),
                epoch,
                spec_json,
            }))?;
            let failed = |reason: String| MeshError::SpawnFailed {
                plant: plant.clone(),
                node: self.id.clone(),
                reason,
            };
            match tokio::time::timeout(self.spawn_timeout, rx).await {
                Ok(Ok(err)) if err.is_empty() => Ok(Arc::new(RemotePlant {
                    plant: plant.clone(),
                    epoch,
                    node: self.0.clone(),
                }) as Arc<dyn PlantLink>),
                Ok(Ok(err)) => Err(failed(err)),
                Ok(Err(_)) => Err(failed("session ended before the plant started".into())),
                Err(_) => Err(failed(format!("no answer within {:?}", self.spawn_timeout))),
            }
        })
    }
}

/// A plant placed on a remote node.
pub struct RemotePlant {
    plant: String,
    epoch: u64,
    node: Arc<Inner>,
}

impl PlantLink for RemotePlant {
    fn dispatch(&self, a: Assignment) -> Result<(), MeshError> {
        let f = assignment_to_frame(&self.plant, a);
        self.node.send(f.frame.expect("assignment frames are set"))
    }

    fn stop(&self) {
        self.node
            .stop_plant(&self.plant, self.epoch, "stopped by master");
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for NodeServer {
    type AttachStream = MasterFrames;

    async fn attach(
        &self,
        req: Request<Streaming<pb::NodeFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let inbound: NodeFrames = Box::pin(req.into_inner());
        self.accept(peer, inbound).await.map(Response::new)
    }
}

impl NodeServer {
    /// Runs the attach handshake on a node's frame stream (cookie, protocol, node epoch),
    /// then serves the session in the background. The transport is the caller's: gRPC in
    /// production, a simulated link in drills, so both run this same code.
    pub async fn accept(
        &self,
        peer: String,
        mut inbound: NodeFrames,
    ) -> Result<MasterFrames, Status> {
        let first = tokio::time::timeout(Duration::from_secs(5), inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("hello: not received within 5 s"))?
            .transpose()?;
        let Some(pb::NodeFrame {
            frame: Some(Up::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "hello: the first frame must be Hello",
            ));
        };
        let Some(cookie) = &self.settings.cookie else {
            metrics::counter!("heatmesh_node_auth_refused_total").increment(1);
            tracing::warn!(node = %hello.node_id, %peer, "node refused: no cluster cookie configured");
            return Err(Status::unauthenticated(
                "cookie: this master has no cluster cookie configured (cluster.cookie, cluster.cookie_file or HEATMESH_CLUSTER__COOKIE)",
            ));
        };
        if !same_secret(&hello.cookie, cookie) {
            metrics::counter!("heatmesh_node_auth_refused_total").increment(1);
            tracing::warn!(node = %hello.node_id, %peer, "node refused: wrong cluster cookie");
            return Err(Status::unauthenticated(
                "cookie: does not match this cluster's cookie",
            ));
        }
        if hello.protocol != PROTOCOL {
            return Err(Status::failed_precondition(format!(
                "protocol: node speaks {}, master speaks {PROTOCOL}",
                hello.protocol
            )));
        }
        if hello.node_id.trim().is_empty() {
            return Err(Status::invalid_argument("node_id: required"));
        }
        let address = if hello.address.is_empty() {
            peer.clone()
        } else {
            hello.address.clone()
        };
        // Claim the id before taking a node epoch, so two attaches racing under one id
        // cannot both pass. The claim is held until the session ends.
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((epoch, at)) = live.get(&hello.node_id) {
                metrics::counter!("heatmesh_node_duplicate_refused_total").increment(1);
                tracing::warn!(node = %hello.node_id, live = %at, refused = %address, "node refused: its id is attached from elsewhere");
                return Err(Status::already_exists(format!(
                    "node_id: {:?} is already attached from {at} (node epoch {epoch}); this attach from {address} is refused while that session is live (give each node its own `heatmesh node --id`)",
                    hello.node_id
                )));
            }
            live.insert(hello.node_id.clone(), (0, address.clone()));
        }
        let node_epoch = match (self.epochs)(&hello.node_id) {
            Ok(e) => e,
            Err(e) => {
                self.release(&hello.node_id, 0);
                return Err(Status::unavailable(e));
            }
        };
        if let Some(claim) = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&hello.node_id)
        {
            claim.0 = node_epoch;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let node = RemoteNode(Arc::new(Inner {
            id: hello.node_id.clone(),
            address,
            node_epoch,
            tx: tx.clone(),
            fenced: AtomicBool::new(false),
            last_heartbeat_us: AtomicU64::new(now_us()),
            spawning: Mutex::new(HashMap::new()),
            spawn_timeout: self.settings.spawn_timeout,
        }));
        let _ = tx.send(Ok(pb::MasterFrame {
            frame: Some(pb::master_frame::Frame::Welcome(pb::Welcome {
                node_epoch,
                heartbeat_interval_ms: self.settings.heartbeat_interval.as_millis() as u32,
                lease_ms: self.settings.lease.as_millis() as u32,
            })),
        }));
        tracing::info!(node = %node.id, node_epoch, address = %node.address, "node attached");
        metrics::counter!("heatmesh_node_attach_total").increment(1);
        (self.membership)(Membership::Joined {
            node: node.clone(),
            preferred: hello.preferred_plants,
            running: hello
                .running
                .into_iter()
                .map(|r| (r.plant_id, r.epoch))
                .collect(),
        });
        let server = self.clone();
        tokio::spawn(async move { server.session(node, inbound).await });
        Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
    }
}

impl NodeServer {
    /// Drops the claim on `id` held by session `node_epoch` (0: a claim not yet given one).
    fn release(&self, id: &str, node_epoch: u64) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.get(id).is_some_and(|(e, _)| *e == node_epoch) {
            live.remove(id);
        }
    }

    /// Reads one node's frames until its stream closes or its lease expires, then fences it.
    async fn session(&self, node: RemoteNode, mut inbound: NodeFrames) {
        let lease = self.settings.lease;
        let mut last = Instant::now();
        let mut check = tokio::time::interval(lease / 10);
        let mut checked = Instant::now();
        let reason = loop {
            tokio::select! {
                msg = inbound.next() => match msg.transpose() {
                    Ok(Some(pb::NodeFrame { frame: Some(frame) })) => {
                        last = Instant::now();
                        node.last_heartbeat_us.store(now_us(), Ordering::Relaxed);
                        match frame {
                            Up::Heartbeat(_) => {}
                            Up::FeedHealth(f) => (self.feeds)(
                                &node.id,
                                f.meters.into_iter().map(crate::wire::feed_from_proto).collect(),
                            ),
                            Up::Readings(b) => {
                                // Acknowledged once durable, without holding up this
                                // node's other frames (heartbeats, task reports).
                                let (sink, tx) = (self.readings.clone(), node.tx.clone());
                                tokio::spawn(async move {
                                    let (error, refused) = match sink(b.plant_id, b.readings).await {
                                        Ok(()) => (String::new(), false),
                                        Err(r) => (r.error, r.refused),
                                    };
                                    let ack = pb::ReadingsAck { seq: b.seq, error, refused };
                                    let _ = tx.send(Ok(pb::MasterFrame {
                                        frame: Some(pb::master_frame::Frame::ReadingsAck(ack)),
                                    }));
                                });
                            }
                            Up::PlantStarted(s) => {
                                let waiter = node
                                    .spawning
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .remove(&(s.plant_id, s.epoch));
                                if let Some(w) = waiter {
                                    let _ = w.send(s.error);
                                }
                            }
                            other => {
                                if let Some((_, _, ev)) = frame_to_event(other) {
                                    let session = NodeSession {
                                        node: node.id.clone(),
                                        node_epoch: node.node_epoch,
                                    };
                                    (self.events)(session, ev);
                                }
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break "connection closed by the node".to_string(),
                    Err(e) => break format!("connection lost: {}", e.message()),
                },
                _ = check.tick() => {
                    let gap = checked.elapsed();
                    checked = Instant::now();
                    if gap > lease / 5 {
                        // The master itself did not run (SIGSTOP, a VM pause, swapping): what
                        // the node sent meanwhile is still unread in the socket. Judge the
                        // lease on what arrived, so it starts again from now, as etcd and
                        // Nomad extend leases after a leader change. A node that really died
                        // is fenced one lease later.
                        metrics::counter!("heatmesh_master_stalls_total").increment(1);
                        tracing::warn!(node = %node.id, stalled_ms = gap.as_millis() as u64, "master stalled; node lease restarted");
                        last = checked;
                        continue;
                    }
                    if last.elapsed() > lease {
                        break format!("lease expired: no heartbeat for {} ms", last.elapsed().as_millis());
                    }
                }
            }
        };
        let silent_for = last.elapsed();
        node.fenced.store(true, Ordering::Release);
        node.spawning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let _ = node
            .tx
            .send(Err(Status::unavailable(format!("fenced: {reason}"))));
        self.release(&node.id, node.node_epoch);
        tracing::warn!(node = %node.id, node_epoch = node.node_epoch, "node lost: {reason}");
        metrics::counter!("heatmesh_node_lost_total").increment(1);
        metrics::histogram!("heatmesh_node_detection_seconds").record(silent_for.as_secs_f64());
        (self.membership)(Membership::Lost {
            node_id: node.id.clone(),
            node_epoch: node.node_epoch,
            reason,
            silent_for,
        });
        // What the node sent before it learnt of the fence (held in a partition, say) may
        // still arrive on this stream. Results among it answer dispatches that were fenced,
        // so they are rejected, and counted as the stale results they are.
        let drain_for = self.settings.lease * 30;
        let id = node.id.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(drain_for, async {
                while let Some(Ok(f)) = inbound.next().await {
                    if let Some(Up::TaskDone(t)) = f.frame {
                        metrics::counter!("heatmesh_stale_results_total").increment(1);
                        tracing::debug!(node = %id, task_id = t.task_id, attempt = t.attempt, "late result on a fenced session rejected");
                    }
                }
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heatmesh_agents::{Outcome, PlantEvent};
    use tokio_stream::wrappers::UnboundedReceiverStream;

    type Up = pb::node_frame::Frame;

    /// A server over in-memory streams, recording membership and tagged events.
    struct Rig {
        server: NodeServer,
        joined: Arc<Mutex<Vec<(String, u64)>>>,
        lost: Arc<Mutex<Vec<(String, u64)>>>,
        events: Arc<Mutex<Vec<(NodeSession, PlantEvent)>>>,
    }

    fn rig() -> Rig {
        let joined: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let lost: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let events: Arc<Mutex<Vec<(NodeSession, PlantEvent)>>> = Arc::default();
        let (j, l, e) = (joined.clone(), lost.clone(), events.clone());
        let next = Arc::new(AtomicU64::new(0));
        let server = NodeServer::new(
            ClusterSettings {
                cookie: Some("cluster-secret".into()),
                heartbeat_interval: Duration::from_millis(50),
                lease: Duration::from_secs(5),
                spawn_timeout: Duration::from_secs(1),
            },
            Arc::new(move |m| match m {
                Membership::Joined { node, .. } => {
                    j.lock().unwrap().push((node.id.clone(), node.node_epoch))
                }
                Membership::Lost {
                    node_id,
                    node_epoch,
                    ..
                } => l.lock().unwrap().push((node_id, node_epoch)),
            }),
            Arc::new(move |s, ev| e.lock().unwrap().push((s, ev))),
            Arc::new(move |_| Ok(next.fetch_add(1, Ordering::Relaxed) + 1)),
            Arc::new(|_, _| Box::pin(async { Ok(()) })),
            Arc::new(|_, _| {}),
        );
        Rig {
            server,
            joined,
            lost,
            events,
        }
    }

    fn hello(id: &str, cookie: &str, address: &str) -> pb::NodeFrame {
        pb::NodeFrame {
            frame: Some(Up::Hello(pb::Hello {
                node_id: id.into(),
                cookie: cookie.into(),
                address: address.into(),
                protocol: PROTOCOL,
                ..Default::default()
            })),
        }
    }

    type Sender = mpsc::UnboundedSender<Result<pb::NodeFrame, Status>>;

    /// Attaches with `first` as the opening frame; returns the node's sender on success.
    async fn attach(rig: &Rig, first: pb::NodeFrame) -> Result<(Sender, MasterFrames), Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Ok(first)).unwrap();
        let inbound: NodeFrames = Box::pin(UnboundedReceiverStream::new(rx));
        let down = rig.server.accept("10.0.0.9:5000".into(), inbound).await?;
        Ok((tx, down))
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < end, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn one_node_id_holds_one_live_session() {
        let rig = rig();
        let (first, _down) = attach(&rig, hello("node-1", "cluster-secret", "10.0.0.1:7401"))
            .await
            .unwrap();
        let e = attach(&rig, hello("node-1", "cluster-secret", "10.0.0.2:7401"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists);
        assert!(
            e.message().starts_with(
                "node_id: \"node-1\" is already attached from 10.0.0.1:7401 (node epoch 1); this attach from 10.0.0.2:7401 is refused"
            ),
            "{}",
            e.message()
        );
        // Another id is not affected.
        attach(&rig, hello("node-2", "cluster-secret", "10.0.0.3:7401"))
            .await
            .unwrap();
        // Once the first session ends, the id is free again, under a new node epoch.
        drop(first);
        eventually("the first session ends", || {
            rig.lost.lock().unwrap().contains(&("node-1".into(), 1))
        })
        .await;
        attach(&rig, hello("node-1", "cluster-secret", "10.0.0.2:7401"))
            .await
            .unwrap();
        let joined = rig.joined.lock().unwrap().clone();
        assert_eq!(
            joined,
            [
                ("node-1".into(), 1),
                ("node-2".into(), 2),
                ("node-1".into(), 3)
            ]
        );
    }

    #[tokio::test]
    async fn wrong_cookies_and_bad_hellos_are_refused_and_claim_nothing() {
        let rig = rig();
        let e = attach(&rig, hello("node-1", "guess", "a"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = attach(&rig, hello(" ", "cluster-secret", "a"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let mut old = hello("node-1", "cluster-secret", "a");
        if let Some(Up::Hello(h)) = &mut old.frame {
            h.protocol = PROTOCOL + 1;
        }
        let e = attach(&rig, old).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        let not_hello = pb::NodeFrame {
            frame: Some(Up::Heartbeat(pb::Heartbeat::default())),
        };
        let e = attach(&rig, not_hello).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        // None of them holds the id.
        attach(&rig, hello("node-1", "cluster-secret", "a"))
            .await
            .unwrap();
        assert_eq!(rig.joined.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn events_carry_the_session_they_arrived_on_not_what_the_frame_claims() {
        let rig = rig();
        let (tx, _down) = attach(&rig, hello("node-1", "cluster-secret", "a"))
            .await
            .unwrap();
        let done = PlantEvent::TaskDone {
            plant: "Plant-002".into(),
            task_id: 7,
            attempt: 1,
            epoch: 4,
            agent: "node-2 says so".into(),
            outcome: Outcome::Completed(b"{}".to_vec()),
        };
        tx.send(Ok(crate::wire::event_to_frame(done))).unwrap();
        eventually("the event arrives", || {
            !rig.events.lock().unwrap().is_empty()
        })
        .await;
        let (session, ev) = rig.events.lock().unwrap()[0].clone();
        assert_eq!(
            session,
            NodeSession {
                node: "node-1".into(),
                node_epoch: 1
            }
        );
        assert!(matches!(ev, PlantEvent::TaskDone { task_id: 7, .. }));
    }
}
