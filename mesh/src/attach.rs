//! The node's side of the node protocol: attach to the master, heartbeat, run the plants it
//! is given, and reconnect with backoff when the connection is lost.
//!
//! Plants keep running while the node is disconnected; what they report meanwhile is kept
//! (up to a bound) and sent after the next attach. If the master fenced the node in between,
//! it has re-placed those plants under new epochs and rejects the old reports as stale.

use crate::wire::{event_to_frame, frame_to_assignment};
use crate::{BoxFuture, LocalNode, MeshError, NodeLink, PlantLink};
use heatmesh_agents::{EventSink, Outcome, PlantEvent, PlantSpec};
use heatmesh_base::Backoff;
use heatmesh_connect::feeds::Health;
use heatmesh_connect::ship::{ShipError, Uplink as ReadingsUplink};
use heatmesh_ingest::{PlantFeeds, Reading};
use heatmesh_proto::v1 as pb;
use pb::master_frame::Frame as Down;
use pb::node_frame::Frame as Up;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Status};

/// Reports kept while disconnected; beyond this the oldest are dropped (and counted).
const OUTBOX_LIMIT: usize = 100_000;

/// How a node finds and joins its master.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's id.
    pub node_id: String,
    /// The master's gRPC URI, e.g. `http://127.0.0.1:7400`.
    pub master: String,
    /// The cluster cookie.
    pub cookie: String,
    /// Plants this node prefers to run (empty: a spare).
    pub preferred_plants: Vec<String>,
    /// This node's own address, shown to operators.
    pub address: String,
    /// First reconnect delay; doubles up to `reconnect_max`, each drawn from its upper half.
    pub reconnect_initial: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// Bound on connecting and on the master's answer to attach.
    pub connect_timeout: Duration,
    /// Carries the node's buffered readings to the master over the attach stream.
    pub readings: Arc<ReadingsLink>,
}

/// The node's end of reading delivery: a [`ReadingBatch`](pb::ReadingBatch) goes out on the
/// current session and the matching ack comes back. Between sessions, sends fail at once
/// and the shipper retries after its backoff; a session's end fails what it left unanswered.
#[derive(Default)]
pub struct ReadingsLink {
    /// The node's meter health, reported to the master about once a second.
    health: Option<Health>,
    tx: Mutex<Option<mpsc::UnboundedSender<pb::NodeFrame>>>,
    waiting: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Result<(), ShipError>>>>,
    next: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ReadingsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadingsLink")
    }
}

/// Longest wait for the master's ack of one batch before it is sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

impl ReadingsLink {
    /// A link that also reports this health table.
    pub fn with_health(health: Health) -> ReadingsLink {
        ReadingsLink {
            health: Some(health),
            ..ReadingsLink::default()
        }
    }

    /// The health frame to send now, if this node reads any meter.
    fn health_frame(&self) -> Option<pb::NodeFrame> {
        let now = heatmesh_connect::now_us();
        let meters: Vec<pb::MeterFeed> = self
            .health
            .as_ref()?
            .snapshot(now)
            .into_iter()
            .map(|h| crate::wire::feed_to_proto(h, "", now))
            .collect();
        Some(pb::NodeFrame {
            frame: Some(Up::FeedHealth(pb::FeedHealth { meters })),
        })
    }

    fn attach(&self, tx: mpsc::UnboundedSender<pb::NodeFrame>) {
        *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    fn detach(&self) {
        *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // Dropping the senders fails every wait: those batches go again next session.
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn acked(&self, a: pb::ReadingsAck) {
        let w = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&a.seq);
        if let Some(w) = w {
            let _ = w.send(match (a.error.is_empty(), a.refused) {
                (true, _) => Ok(()),
                (false, true) => Err(ShipError::Refused(a.error)),
                (false, false) => Err(ShipError::Unavailable(a.error)),
            });
        }
    }

    /// The shipper's uplink over this link.
    pub fn uplink(self: &Arc<Self>) -> ReadingsUplink {
        let link = self.clone();
        Arc::new(move |plant, readings| {
            let link = link.clone();
            Box::pin(async move { link.send(plant, readings).await })
        })
    }

    async fn send(&self, plant: String, readings: Vec<Reading>) -> Result<(), ShipError> {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, tx);
        let frame = pb::NodeFrame {
            frame: Some(Up::Readings(pb::ReadingBatch {
                seq,
                plant_id: plant,
                readings: readings
                    .into_iter()
                    .map(crate::wire::reading_to_proto)
                    .collect(),
            })),
        };
        let sent = match &*self.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(frame).is_ok(),
            None => false,
        };
        if !sent {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&seq);
            return Err(ShipError::Unavailable("not attached to the master".into()));
        }
        let answer = tokio::time::timeout(ACK_TIMEOUT, rx).await;
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq);
        match answer {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ShipError::Unavailable(
                "the session ended before the master answered".into(),
            )),
            Err(_) => Err(ShipError::Unavailable(format!(
                "no answer from the master within {ACK_TIMEOUT:?}"
            ))),
        }
    }
}

/// Frames from the master, in order; an `Err` ends the session.
pub type MasterStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<pb::MasterFrame, Status>> + Send>>;

/// How a node reaches its master: over gRPC in production ([`GrpcDialer`]), over a
/// simulated link in in-process drills. Everything above the dial (hello, heartbeats,
/// reconnection, the outbox) is the same code either way.
pub trait Dialer: Send + Sync {
    /// Opens an attach stream carrying `up` to the master and returns the master's frames.
    /// Refusals keep the master's status code (UNAUTHENTICATED for a wrong cookie).
    fn dial(
        &self,
        up: UnboundedReceiverStream<pb::NodeFrame>,
    ) -> BoxFuture<'_, Result<MasterStream, Status>>;
}

/// How long a node keeps its connection while the master answers no keepalive ping, s.
pub const MASTER_STALL_TOLERANCE_S: u64 = 5;

/// Dials the master's NodeService over gRPC, with HTTP/2 keepalive so a dead path is
/// noticed even when the master has nothing to send.
#[derive(Debug, Clone)]
pub struct GrpcDialer {
    /// The master's gRPC URI, e.g. `http://127.0.0.1:7400`.
    pub master: String,
    /// Bound on connecting and on the master's answer to attach.
    pub connect_timeout: Duration,
}

impl Dialer for GrpcDialer {
    fn dial(
        &self,
        up: UnboundedReceiverStream<pb::NodeFrame>,
    ) -> BoxFuture<'_, Result<MasterStream, Status>> {
        Box::pin(async move {
            let endpoint = tonic::transport::Channel::from_shared(self.master.clone())
                .map_err(|e| Status::invalid_argument(format!("invalid master address: {e}")))?
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                // The master fences on its own lease; the node's keepalive only has to find
                // a dead connection to redial. It waits out a master that stalls for a few
                // seconds (GC-free, but SIGSTOP, VM pauses and swapping happen), so a stall
                // does not turn into every node dropping its session.
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(MASTER_STALL_TOLERANCE_S))
                .keep_alive_while_idle(true);
            let channel = tokio::time::timeout(self.connect_timeout, endpoint.connect())
                .await
                .map_err(|_| Status::unavailable("connect timed out"))?
                .map_err(|e| Status::unavailable(format!("connect: {e}")))?;
            let mut client = pb::node_service_client::NodeServiceClient::new(channel);
            let resp = tokio::time::timeout(self.connect_timeout, client.attach(up))
                .await
                .map_err(|_| Status::unavailable("attach timed out"))??;
            Ok(Box::pin(resp.into_inner()) as MasterStream)
        })
    }
}

/// Frames for the master: sent at once while attached, kept while not.
#[derive(Default)]
struct Uplink {
    tx: Option<mpsc::UnboundedSender<pb::NodeFrame>>,
    outbox: VecDeque<pb::NodeFrame>,
}

impl Uplink {
    fn push(&mut self, f: pb::NodeFrame) {
        if let Some(tx) = &self.tx {
            match tx.send(f) {
                Ok(()) => return,
                Err(e) => {
                    self.tx = None;
                    self.outbox.push_back(e.0);
                }
            }
        } else {
            self.outbox.push_back(f);
        }
        if self.outbox.len() > OUTBOX_LIMIT {
            self.outbox.pop_front();
            metrics::counter!("heatmesh_node_outbox_dropped_total").increment(1);
        }
    }

    fn attach(&mut self, tx: mpsc::UnboundedSender<pb::NodeFrame>) {
        while let Some(f) = self.outbox.pop_front() {
            if let Err(e) = tx.send(f) {
                self.outbox.push_front(e.0);
                return;
            }
        }
        self.tx = Some(tx);
    }
}

/// Why a node gave up.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The master refused this node for good (wrong cookie, protocol mismatch).
    #[error("master refused this node: {0}")]
    Refused(String),
}

struct Session<'a> {
    local: &'a LocalNode,
    plants: &'a mut HashMap<String, (u64, Arc<dyn PlantLink>)>,
    sink: &'a EventSink,
    tx: mpsc::UnboundedSender<pb::NodeFrame>,
    readings: &'a ReadingsLink,
}

impl Session<'_> {
    async fn handle(&mut self, frame: Down) {
        match frame {
            Down::SpawnPlant(s) => {
                let error = match serde_json::from_str::<PlantSpec>(&s.spec_json) {
                    Err(e) => format!("spec_json: {e}"),
                    Ok(spec) => match self
                        .local
                        .spawn_plant(spec, s.epoch, self.sink.clone())
                        .await
                    {
                        Ok(link) => {
                            self.plants.insert(s.plant_id.clone(), (s.epoch, link));
                            String::new()
                        }
                        Err(e) => e.to_string(),
                    },
                };
                let _ = self.tx.send(pb::NodeFrame {
                    frame: Some(Up::PlantStarted(pb::PlantStarted {
                        plant_id: s.plant_id,
                        epoch: s.epoch,
                        error,
                    })),
                });
            }
            Down::Assign(a) => {
                let (plant, a) = frame_to_assignment(a);
                match self.plants.get(&plant) {
                    Some((epoch, link)) if *epoch == a.epoch => {
                        if let Err(e) = link.dispatch(a.clone()) {
                            self.orphan(&plant, &a, e.to_string());
                        }
                    }
                    _ => self.orphan(
                        &plant,
                        &a,
                        format!("plant {plant} epoch {} is not running here", a.epoch),
                    ),
                }
            }
            Down::StopPlant(s) => {
                let current = self
                    .plants
                    .get(&s.plant_id)
                    .is_some_and(|(e, _)| *e == s.epoch);
                if current && let Some((_, link)) = self.plants.remove(&s.plant_id) {
                    tracing::info!(plant = %s.plant_id, epoch = s.epoch, "stopping plant: {}", s.reason);
                    link.stop();
                }
            }
            Down::InjectFault(f) => {
                let fault = heatmesh_agents::fault::Fault {
                    panic_next: f.panic_next,
                    delay: Duration::from_millis(f.delay_ms as u64),
                };
                let _ = self.local.inject_fault(&f.plant_id, &f.kind, fault);
            }
            Down::ReadingsAck(a) => self.readings.acked(a),
            Down::SetFeeds(f) => match serde_json::from_str::<PlantFeeds>(&f.feeds_json) {
                Ok(feeds) => {
                    let _ = self.local.set_feeds(&f.plant_id, &feeds);
                }
                Err(e) => {
                    tracing::error!(plant = %f.plant_id, "feeds from the master do not decode: {e}")
                }
            },
            Down::Welcome(_) => {}
        }
    }

    fn orphan(&self, plant: &str, a: &heatmesh_agents::Assignment, reason: String) {
        (self.sink)(PlantEvent::TaskDone {
            plant: plant.to_string(),
            task_id: a.task_id,
            attempt: a.attempt,
            epoch: a.epoch,
            agent: format!("{plant}/{}", a.kind),
            outcome: Outcome::Orphaned { reason },
        });
    }
}

/// Runs the node until `stop` resolves: attaches over gRPC, serves, and reattaches with
/// backoff. Returns an error only when the master refuses the node for good.
pub async fn run(
    opts: NodeOptions,
    local: LocalNode,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AttachError> {
    let dialer = GrpcDialer {
        master: opts.master.clone(),
        connect_timeout: opts.connect_timeout,
    };
    run_with(opts, local, &dialer, stop).await
}

/// [`run`] over any [`Dialer`].
pub async fn run_with(
    opts: NodeOptions,
    local: LocalNode,
    dialer: &dyn Dialer,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AttachError> {
    let uplink = Arc::new(Mutex::new(Uplink::default()));
    let sink: EventSink = {
        let uplink = uplink.clone();
        Arc::new(move |ev| {
            uplink
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event_to_frame(ev));
        })
    };
    let mut plants: HashMap<String, (u64, Arc<dyn PlantLink>)> = HashMap::new();
    let mut backoff = Backoff::named(opts.reconnect_initial, opts.reconnect_max, &opts.node_id);
    tokio::pin!(stop);
    loop {
        let attached = tokio::select! {
            r = attach_once(&opts, dialer, &local, &mut plants, &sink, &uplink) => r,
            _ = &mut stop => return Ok(()),
        };
        match attached {
            Ok(reason) => {
                tracing::warn!(node = %opts.node_id, "disconnected from master: {reason}");
                backoff.reset();
            }
            Err(MeshError::NodeUnavailable { reason, .. }) if reason.starts_with("refused:") => {
                return Err(AttachError::Refused(
                    reason.trim_start_matches("refused:").trim().to_string(),
                ));
            }
            Err(e) => {
                tracing::warn!(node = %opts.node_id, "attach failed: {e}; retrying with backoff")
            }
        }
        uplink.lock().unwrap_or_else(|e| e.into_inner()).tx = None;
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

/// One session: returns why it ended, or an error if it could not start.
async fn attach_once(
    opts: &NodeOptions,
    dialer: &dyn Dialer,
    local: &LocalNode,
    plants: &mut HashMap<String, (u64, Arc<dyn PlantLink>)>,
    sink: &EventSink,
    uplink: &Arc<Mutex<Uplink>>,
) -> Result<String, MeshError> {
    let unavailable = |reason: String| MeshError::NodeUnavailable {
        node: opts.master.clone(),
        reason,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let hello = pb::Hello {
        node_id: opts.node_id.clone(),
        cookie: opts.cookie.clone(),
        preferred_plants: opts.preferred_plants.clone(),
        address: opts.address.clone(),
        running: plants
            .iter()
            .map(|(p, (e, _))| pb::RunningPlant {
                plant_id: p.clone(),
                epoch: *e,
            })
            .collect(),
        protocol: crate::remote::PROTOCOL,
    };
    let _ = tx.send(pb::NodeFrame {
        frame: Some(Up::Hello(hello)),
    });
    let mut down = match dialer.dial(UnboundedReceiverStream::new(rx)).await {
        Ok(down) => down,
        Err(s)
            if matches!(
                s.code(),
                Code::Unauthenticated | Code::FailedPrecondition | Code::InvalidArgument
            ) =>
        {
            return Err(unavailable(format!("refused: {}", s.message())));
        }
        Err(s) => return Err(unavailable(format!("attach: {}", s.message()))),
    };
    let welcome = match tokio::time::timeout(opts.connect_timeout, down.next()).await {
        Ok(Some(Ok(pb::MasterFrame {
            frame: Some(Down::Welcome(w)),
        }))) => w,
        Ok(Some(Err(s))) => return Err(unavailable(format!("attach: {}", s.message()))),
        _ => return Err(unavailable("no welcome from the master".into())),
    };
    tracing::info!(node = %opts.node_id, node_epoch = welcome.node_epoch, "attached to master {}", opts.master);
    uplink
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .attach(tx.clone());
    let hb = tokio::time::interval(Duration::from_millis(
        welcome.heartbeat_interval_ms.max(10) as u64
    ));
    let mut session = Session {
        local,
        plants,
        sink,
        tx: tx.clone(),
        readings: &opts.readings,
    };
    opts.readings.attach(tx.clone());
    let ended = attached_loop(&mut session, &mut down, &tx, &welcome, hb).await;
    opts.readings.detach();
    Ok(ended)
}

async fn attached_loop(
    session: &mut Session<'_>,
    down: &mut MasterStream,
    tx: &mpsc::UnboundedSender<pb::NodeFrame>,
    welcome: &pb::Welcome,
    mut hb: tokio::time::Interval,
) -> String {
    let mut seq = 0;
    loop {
        tokio::select! {
            msg = down.next() => match msg.transpose() {
                Ok(Some(pb::MasterFrame { frame: Some(f) })) => session.handle(f).await,
                Ok(Some(_)) => {}
                Ok(None) => return "the master closed the session".into(),
                Err(s) => return format!("{:?}: {}", s.code(), s.message()),
            },
            _ = hb.tick() => {
                seq += 1;
                let beat = pb::NodeFrame { frame: Some(Up::Heartbeat(pb::Heartbeat { node_epoch: welcome.node_epoch, seq })) };
                if tx.send(beat).is_err() {
                    return "uplink closed".into();
                }
                // Meter health about once a second, riding the heartbeat's clock.
                let per_second = (1_000 / welcome.heartbeat_interval_ms.max(10) as u64).max(1);
                if seq % per_second == 0
                    && let Some(f) = session.readings.health_frame()
                {
                    let _ = tx.send(f);
                }
            }
        }
    }
}
