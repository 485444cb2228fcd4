//! Wires a running mesh: ledger, in-process node, master actor, gRPC server (task, mesh,
//! optimization and reading APIs, health, reflection) and the metrics/health HTTP endpoint.

use crate::config::Config;
use crate::feeds::FeedBoard;
use crate::grpc::Api;
use crate::grpc::optimize::OptimizerApi;
use crate::grpc::readings::ReadingApi;
use crate::ledger::{Ledger, LedgerError};
use crate::readings::{IngestError, Readings};
use crate::scheduler::{Master, MasterArgs, MasterMsg, PlantStatus};
use heatmesh_agents::fault::FaultTable;
use heatmesh_connect::feeds::{FeedHost, Health, Sink, Store};
use heatmesh_connect::ship::{ShipError, Uplink};
use heatmesh_mesh::remote::{
    ClusterSettings, EpochSource, Membership, MembershipSink, NodeServer, ReadingsRefusal,
    ReadingsSink,
};
use heatmesh_mesh::{LocalNode, NodeAgentArgs, NodeLink};
use heatmesh_proto::v1::mesh_service_server::MeshServiceServer;
use heatmesh_proto::v1::node_service_server::NodeServiceServer;
use heatmesh_proto::v1::optimization_service_server::OptimizationServiceServer;
use heatmesh_proto::v1::reading_service_server::ReadingServiceServer;
use heatmesh_proto::v1::task_service_server::TaskServiceServer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use ractor::{Actor, ActorRef};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Largest gRPC message decoded; payloads above the configured payload limit but below this
/// get a precise INVALID_ARGUMENT instead of a transport error.
const MAX_DECODE_BYTES: usize = 16 * 1024 * 1024;

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ledger did not open.
    #[error("opening the ledger at {dir}: {source}")]
    Ledger {
        /// Data directory.
        dir: String,
        /// Cause.
        source: LedgerError,
    },
    /// A listen address could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// gRPC or metrics.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The node or master actor failed to start.
    #[error("starting {what}: {reason}")]
    Actor {
        /// Which actor.
        what: &'static str,
        /// Cause.
        reason: String,
    },
}

/// Start-up switches that are not configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Hold dispatching until `set_paused(false)` (tests, maintenance).
    pub paused: bool,
    /// Run no plants in this process: place them only on attached nodes (`heatmesh master`).
    pub remote_only: bool,
    /// Deliberate defects for proving the drill checker (test builds only).
    #[cfg(feature = "planted-bugs")]
    pub planted: crate::scheduler::PlantedBugs,
}

/// A mesh running in this process.
pub struct RunningMesh {
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where /metrics, /healthz and /readyz listen, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    master: ActorRef<MasterMsg>,
    node: Arc<LocalNode>,
    node_server: NodeServer,
    ledger: Ledger,
    stop: Vec<oneshot::Sender<()>>,
    servers: Vec<JoinHandle<()>>,
    /// Loops that run until stopped (the reading-age gauges).
    background: Vec<JoinHandle<()>>,
}

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("heatmesh_ledger_commit_batch_size".into()),
                        &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0],
                    )
                })
                .expect("bucket lists are non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); we still render ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Starts the mesh: opens the ledger, recovers unfinished tasks, places the plants and
/// serves the APIs. Returns once the listeners are bound.
pub async fn start(config: Config, opts: StartOptions) -> Result<RunningMesh, StartError> {
    let metrics = metrics_handle();
    let ledger =
        Ledger::open_with(&config.data_dir, config.ledger.options()).map_err(|source| {
            StartError::Ledger {
                dir: config.data_dir.display().to_string(),
                source,
            }
        })?;
    let readings = Readings::new(ledger.clone(), &config).map_err(|source| StartError::Ledger {
        dir: config.data_dir.display().to_string(),
        source,
    })?;
    let faults = FaultTable::default();
    let local_health = Health::default();
    let feeds = FeedBoard::with_local(&config.node_id, local_health.clone());
    let node = Arc::new(
        LocalNode::start(NodeAgentArgs {
            node_id: config.node_id.clone(),
            policy: config.restart,
            faults: faults.clone(),
            // The in-process node lives and dies with this master: its connectors write
            // straight to the ledger, which is the durable buffer a remote node keeps itself.
            feeds: Some(FeedHost {
                store: Store::new(Sink::Direct(direct_uplink(readings.clone()))),
                health: local_health,
                opcua_pki: config.data_dir.join("opcua-pki"),
            }),
        })
        .await
        .map_err(|e| StartError::Actor {
            what: "node agent",
            reason: e.to_string(),
        })?,
    );
    let (master, _) = Actor::spawn(
        None,
        Master,
        MasterArgs {
            config: config.clone(),
            ledger: Arc::new(ledger.clone()),
            local_node: (!opts.remote_only).then(|| node.clone() as Arc<dyn NodeLink>),
            paused: opts.paused,
            #[cfg(feature = "planted-bugs")]
            planted: opts.planted,
        },
    )
    .await
    .map_err(|e| StartError::Actor {
        what: "master",
        reason: e.to_string(),
    })?;

    let cookie = config
        .cluster
        .resolve_cookie()
        .map_err(|e| StartError::Actor {
            what: "cluster",
            reason: e.to_string(),
        })?;
    let node_server = node_server(&config, cookie, &master, &ledger, &readings, &feeds);
    let api = Api {
        master: master.clone(),
        ledger: ledger.clone(),
        config: Arc::new(config.clone()),
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "gRPC",
            addr: config.listen,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| StartError::Bind {
        what: "gRPC",
        addr: config.listen,
        source,
    })?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TaskServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<MeshServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<OptimizationServiceServer<OptimizerApi>>()
        .await;
    health_reporter
        .set_serving::<ReadingServiceServer<ReadingApi>>()
        .await;
    let ages = tokio::spawn(reading_ages(readings.clone()));
    let readings = ReadingApi::new(
        readings,
        feeds,
        api.config.clone(),
        ledger.clone(),
        master.clone(),
    );
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(heatmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Actor {
            what: "reflection",
            reason: e.to_string(),
        })?;
    let (stop_grpc, stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .layer(crate::grpc::codes::CodeFixLayer)
        .add_service(
            TaskServiceServer::new(api.clone()).max_decoding_message_size(MAX_DECODE_BYTES),
        )
        .add_service(
            MeshServiceServer::new(api.clone()).max_decoding_message_size(MAX_DECODE_BYTES),
        )
        .add_service(
            NodeServiceServer::new(node_server.clone()).max_decoding_message_size(MAX_DECODE_BYTES),
        )
        .add_service(
            OptimizationServiceServer::new(OptimizerApi::new(api.clone()))
                .max_decoding_message_size(MAX_DECODE_BYTES),
        )
        .add_service(
            ReadingServiceServer::new(readings).max_decoding_message_size(MAX_DECODE_BYTES),
        )
        .add_service(health)
        .add_service(reflection);
    // Accepted under the connection limits (conn.rs), which also set TCP_NODELAY:
    // Server::tcp_nodelay is ignored for an incoming stream, and without it every small
    // reply waits out the peer's delayed ACK (40 ms on Linux).
    let l = &config.limits;
    let incoming = crate::conn::incoming(
        listener,
        crate::conn::ConnLimits::new(
            l.max_connections,
            l.max_connections_per_peer,
            Duration::from_millis(l.handshake_timeout_ms),
        ),
    );
    let mut servers = vec![tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
        {
            tracing::error!("gRPC server: {e}");
        }
    })];
    let mut stop = vec![stop_grpc];

    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                what: "metrics",
                addr,
                source,
            })?;
        metrics_addr = l.local_addr().ok();
        let (tx, rx) = oneshot::channel::<()>();
        stop.push(tx);
        let app = crate::server::http_router(metrics, master.clone(), ledger.clone());
        let limits = crate::conn::ConnLimits::new(
            crate::conn::HTTP_MAX_TOTAL,
            crate::conn::HTTP_MAX_PER_PEER,
            Duration::from_millis(config.limits.handshake_timeout_ms),
        );
        let l = crate::conn::HttpListener::new(l, limits).map_err(|source| StartError::Bind {
            what: "metrics",
            addr,
            source,
        })?;
        servers.push(tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        }));
    }
    tracing::info!(%grpc_addr, ?metrics_addr, plants = config.plants.len(), "heatmesh master serving");
    Ok(RunningMesh {
        grpc_addr,
        metrics_addr,
        master,
        node,
        node_server,
        ledger,
        stop,
        servers,
        background: vec![ages],
    })
}

/// The NodeService: membership goes to the master actor, plant events through its sink,
/// node epochs come from the ledger.
fn node_server(
    config: &Config,
    cookie: Option<String>,
    master: &ActorRef<MasterMsg>,
    ledger: &Ledger,
    readings: &Readings,
    feeds: &FeedBoard,
) -> NodeServer {
    let settings = ClusterSettings {
        cookie,
        heartbeat_interval: Duration::from_millis(config.cluster.heartbeat_interval_ms),
        lease: Duration::from_millis(config.cluster.lease_ms),
        spawn_timeout: Duration::from_secs(10),
    };
    let m = master.clone();
    let membership: MembershipSink = Arc::new(move |ev| {
        let msg = match ev {
            Membership::Joined {
                node,
                preferred,
                running,
            } => MasterMsg::NodeJoined {
                node_epoch: node.node_epoch(),
                link: Arc::new(node) as Arc<dyn NodeLink>,
                preferred,
                running,
            },
            Membership::Lost {
                node_id,
                node_epoch,
                reason,
                ..
            } => MasterMsg::NodeLost {
                node_id,
                node_epoch,
                reason,
            },
        };
        let _ = m.cast(msg);
    });
    let l = ledger.clone();
    let epochs: EpochSource =
        Arc::new(move |node: &str| l.next_node_epoch(node).map_err(|e| e.to_string()));
    let r = readings.clone();
    let sink: ReadingsSink = Arc::new(move |plant, batch| {
        let r = r.clone();
        Box::pin(async move {
            let rs = heatmesh_mesh::wire::readings_from_proto(batch).map_err(|error| {
                ReadingsRefusal {
                    refused: true,
                    error,
                }
            })?;
            r.ingest(&plant, rs, crate::task::now_us() as i64)
                .await
                .map(|_| ())
                .map_err(|e| ReadingsRefusal {
                    refused: !matches!(e, IngestError::Ledger(_)),
                    error: e.to_string(),
                })
        })
    });
    let board = feeds.clone();
    NodeServer::new(
        settings,
        membership,
        crate::scheduler::event_sink(master),
        epochs,
        sink,
        Arc::new(move |node, meters| board.report(node, meters)),
    )
}

/// Keeps `heatmesh_meter_last_reading_age_seconds{plant,meter}` current: how long ago, by
/// the master's clock, the newest source time in the ledger of each meter lies.
async fn reading_ages(readings: Readings) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = crate::task::now_us() as i64;
        for (plant, meter, t) in readings.latest_times() {
            metrics::gauge!("heatmesh_meter_last_reading_age_seconds", "plant" => plant, "meter" => meter)
                .set((now - t).max(0) as f64 / 1e6);
        }
    }
}

/// Connector readings of the in-process node, straight into the ledger.
fn direct_uplink(readings: Readings) -> Uplink {
    Arc::new(move |plant, batch| {
        let r = readings.clone();
        Box::pin(async move {
            r.ingest(&plant, batch, crate::task::now_us() as i64)
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    IngestError::Ledger(e) => ShipError::Unavailable(e.to_string()),
                    e => ShipError::Refused(e.to_string()),
                })
        })
    })
}

fn http_router(
    metrics: PrometheusHandle,
    master: ActorRef<MasterMsg>,
    ledger: Ledger,
) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                std::future::ready(metrics.render() + &crate::procstat::prometheus_lines())
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let (master, ledger) = (master.clone(), ledger.clone());
                async move {
                    if ledger.state_broken() {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: the ledger's state store stopped after an I/O error (disk full?); free space, then restart the master to replay its log\n".to_string(),
                        );
                    }
                    if ledger.write_failing() {
                        // Submits are being refused; a balancer should send clients elsewhere
                        // until a write succeeds again.
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: ledger writes are failing (disk full or I/O error); see the log\n".to_string(),
                        );
                    }
                    match ractor::call!(master, MasterMsg::Snapshot) {
                        Ok(s) => {
                            let down: Vec<String> = s
                                .plants
                                .iter()
                                .filter(|p| p.status != PlantStatus::Running)
                                .map(|p| format!("{} {}", p.spec.id, p.status.as_str()))
                                .collect();
                            if down.is_empty() {
                                (StatusCode::OK, "ready\n".to_string())
                            } else {
                                (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    format!("not ready: {}\n", down.join(", ")),
                                )
                            }
                        }
                        Err(e) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("master unavailable: {e}\n"),
                        ),
                    }
                }
            }),
        )
}

impl RunningMesh {
    /// The master actor (library-level control: pause, snapshot).
    pub fn master(&self) -> &ActorRef<MasterMsg> {
        &self.master
    }

    /// The ledger (reads; only the master actor writes).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The master's side of the node protocol, for transports other than its gRPC port
    /// (the in-process drill mesh attaches simulated nodes through it).
    pub fn node_server(&self) -> &NodeServer {
        &self.node_server
    }

    /// Stops the master the way a crash does: the actors go at once and nothing is flushed
    /// beyond what the ledger already made durable. Client connections are told to go away
    /// (HTTP/2 GOAWAY) rather than left open on a dead master, so clients reconnect to the
    /// next incarnation. Node sessions served through [`Self::node_server`] are the
    /// caller's to cut.
    pub fn crash(self) {
        for b in &self.background {
            b.abort();
        }
        for s in self.stop {
            let _ = s.send(());
        }
        self.master.stop(None);
        self.node.shutdown();
    }

    /// Holds or resumes dispatching.
    pub fn set_paused(&self, paused: bool) {
        let _ = self.master.cast(MasterMsg::SetPaused(paused));
    }

    /// Waits until every plant is placed and running, up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(s) = ractor::call!(self.master, MasterMsg::Snapshot)
                && s.plants.iter().all(|p| p.status == PlantStatus::Running)
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops serving, stops the actors, flushes the ledger.
    pub async fn shutdown(self) {
        for b in &self.background {
            b.abort();
        }
        for s in self.stop {
            let _ = s.send(());
        }
        // Graceful: calls in progress finish. A stream a client keeps open (StreamEvents,
        // WatchTask, a node's session) would hold shutdown forever, so it gets 5 s.
        for mut h in self.servers {
            if tokio::time::timeout(Duration::from_secs(5), &mut h)
                .await
                .is_err()
            {
                tracing::warn!("shutdown: streams still open after 5 s; closing them");
                h.abort();
                let _ = h.await;
            }
        }
        // Waited for, so the data directory is free for the next start once this returns.
        let _ = self
            .master
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        self.node.stop(Duration::from_secs(5)).await;
        if let Err(e) = self.ledger.flush() {
            tracing::error!("final ledger flush: {e}");
        }
    }
}
