//! `heatmesh node`: a plant node. It attaches to the master, runs the plants the master
//! places on it (preferably its `--plant`s), and reattaches with backoff after any loss.

use anyhow::{Context, bail};
use heatmesh_agents::RestartPolicy;
use heatmesh_agents::fault::FaultTable;
use heatmesh_connect::buffer::Buffer;
use heatmesh_connect::feeds::{FeedHost, Health, Sink, Store};
use heatmesh_connect::ship;
use heatmesh_mesh::attach::{self, NodeOptions, ReadingsLink};
use heatmesh_mesh::{LocalNode, NodeAgentArgs};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `heatmesh node`.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// Plant this node prefers to run (repeatable); none makes it a spare.
    #[arg(long = "plant")]
    plants: Vec<String>,
    /// The master's gRPC address.
    #[arg(long, env = "HEATMESH_MASTER", default_value = "127.0.0.1:7400")]
    master: String,
    /// Node id (default: `node-<plants>` or `spare-<port>`).
    #[arg(long)]
    id: Option<String>,
    /// File holding the cluster cookie (first line).
    #[arg(long, env = "HEATMESH_COOKIE_FILE")]
    cookie_file: Option<PathBuf>,
    /// The cluster cookie itself (prefer --cookie-file: arguments are visible to other users).
    #[arg(long, env = "HEATMESH_COOKIE", hide_env_values = true)]
    cookie: Option<String>,
    /// This node's gRPC address (health and reflection).
    #[arg(long, default_value = "127.0.0.1:7401")]
    listen: SocketAddr,
    /// First reconnect delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    reconnect_initial: Duration,
    /// Largest reconnect delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    reconnect_max: Duration,
    /// Directory of the node's durable reading buffer (default `heatmesh-node-<id>` in the
    /// working directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Most bytes of readings the buffer holds while the master has not confirmed them;
    /// when full, the connectors stop polling (and say so) until it drains.
    #[arg(long, default_value_t = 1 << 30)]
    buffer_bytes: u64,
    /// Also append every batch of readings acquired, once buffered, to DIR/<plant>.csv (the
    /// `heatmesh ingest` format): the node's own record of what it read.
    #[arg(long, value_name = "DIR")]
    acquired_log: Option<PathBuf>,
}

fn cookie(a: &NodeArgs) -> anyhow::Result<String> {
    if let Some(c) = &a.cookie {
        return Ok(c.clone());
    }
    let Some(f) = &a.cookie_file else {
        bail!(
            "no cluster cookie: give --cookie-file FILE (or HEATMESH_COOKIE_FILE / HEATMESH_COOKIE)"
        );
    };
    let text = std::fs::read_to_string(f)
        .with_context(|| format!("reading --cookie-file {}", f.display()))?;
    let c = text.lines().next().unwrap_or("").trim().to_string();
    if c.is_empty() {
        bail!("--cookie-file {} is empty", f.display());
    }
    Ok(c)
}

/// Runs the node until Ctrl-C or SIGTERM; fails if the master refuses it (wrong cookie).
pub async fn run(a: NodeArgs) -> anyhow::Result<()> {
    let cookie = cookie(&a)?;
    let id = a.id.clone().unwrap_or_else(|| {
        if a.plants.is_empty() {
            format!("spare-{}", a.listen.port())
        } else {
            format!("node-{}", a.plants.join("+").to_ascii_lowercase())
        }
    });
    let master = if a.master.contains("://") {
        a.master.clone()
    } else {
        format!("http://{}", a.master)
    };
    let dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("heatmesh-node-{id}")));
    let buffer = Buffer::open(&dir, a.buffer_bytes)
        .with_context(|| format!("opening the reading buffer in {}", dir.display()))?;
    if !buffer.is_empty() {
        eprintln!(
            "heatmesh node {id}: {} batches of readings from before a restart wait in {} for the master",
            buffer.len(),
            dir.display()
        );
    }
    let health = Health::default();
    let local = LocalNode::start(NodeAgentArgs {
        node_id: id.clone(),
        policy: RestartPolicy::default(),
        faults: FaultTable::default(),
        feeds: Some(FeedHost {
            store: Store {
                sink: Sink::Buffer(buffer.clone()),
                record: a.acquired_log.clone(),
            },
            health: health.clone(),
            opcua_pki: dir.join("opcua-pki"),
        }),
    })
    .await
    .context("starting the node agent")?;
    let link = Arc::new(ReadingsLink::with_health(health));
    let shipper = tokio::spawn(ship::run(buffer, link.uplink(), id.clone()));
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding --listen {}", a.listen))?;
    let address = listener.local_addr()?.to_string();
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    eprintln!(
        "heatmesh node {id}: attaching to {master}; prefers {}; health on {address}",
        if a.plants.is_empty() {
            "no plant (spare)".to_string()
        } else {
            a.plants.join(", ")
        }
    );
    let opts = NodeOptions {
        node_id: id,
        master,
        cookie,
        preferred_plants: a.plants,
        address,
        reconnect_initial: a.reconnect_initial,
        reconnect_max: a.reconnect_max,
        connect_timeout: Duration::from_secs(2),
        readings: link,
    };
    let result = attach::run(opts, local, super::up::shutdown_signal()).await;
    server.abort();
    shipper.abort();
    result.map_err(|e| anyhow::anyhow!("{e}"))
}
