//! `heatmesh bench readings`: readings made durable at the master through IngestReadings.
//!
//! Two phases against a mesh it starts in this process (or `--target`): a throughput run
//! (`--readings` spread over `--streams` client streams in `--batch`-sized messages, as fast
//! as the master takes them) and an open-loop latency run (`--rate` readings/s for
//! `--duration`, one message every 10 ms, each its own stream; latency is from sending the
//! message to the answer that it is durable). Every reading is new, so each one is checked
//! against the ledger for a duplicate, calibrated, range-checked and written.
//!
//! `--via-node` times the node path instead: a node in this process with its durable buffer
//! and shipper, attached over gRPC on loopback, fed `--rate` readings/s; each reading's source
//! time is when it entered the buffer and the master stamps when it received it.

use super::bench::{ms, print_ledger};
use super::client::{connect, rpc_err};
use super::mesh::MeshOpts;
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use heatmesh_master::server::{self, StartOptions};
use heatmesh_mesh::wire::{micros, timestamp};
use heatmesh_proto::v1 as pb;
use pb::reading_service_client::ReadingServiceClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Arguments of `heatmesh bench readings`.
#[derive(clap::Args)]
pub struct ReadingsBenchArgs {
    /// Readings in the throughput phase (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    readings: usize,
    /// Readings per IngestReadings message.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Concurrent client streams in the throughput phase.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Offered load of the latency phase, readings/s (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    rate: usize,
    /// Length of the latency phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Bench a running master at this address (its fleet must have Plant-001's sample
    /// meters) instead of starting one.
    #[arg(long)]
    target: Option<String>,
    /// Ledger directory for the mesh it starts (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Instead, the node path: a node in this process with its durable buffer, attached to
    /// the master over gRPC on loopback, fed `--rate` readings/s for `--duration`; prints
    /// the time from a reading entering the node's buffer to its arrival at the master.
    #[arg(long, conflicts_with = "target")]
    via_node: bool,
}

const PLANT: &str = "Plant-001";
const METERS: [&str; 5] = ["gas", "steam-heat", "steam-t", "steam-p", "flue-o2"];

/// The i-th reading of a series that never repeats: meters in turn, a microsecond apart.
fn reading(base_us: i64, i: usize) -> pb::Reading {
    let us = base_us + (i / METERS.len()) as i64;
    pb::Reading {
        meter: METERS[i % METERS.len()].into(),
        source_time: Some(timestamp(us)),
        value: 10.0 + (i % 37) as f64,
        quality: pb::ReadingQuality::Good as i32,
        status_code: 0,
    }
}

/// The benchmark feeds the meters itself: no connector polls a device meanwhile.
fn push_only(cfg: &mut heatmesh_master::config::Config) {
    for p in &mut cfg.plants {
        p.feeds.push_only();
    }
}

fn client(ch: &Channel) -> ReadingServiceClient<Channel> {
    ReadingServiceClient::new(ch.clone())
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024)
}

/// Runs both phases and prints one line of figures per phase.
pub async fn run(a: ReadingsBenchArgs) -> anyhow::Result<()> {
    if a.batch == 0 || a.streams == 0 {
        bail!("--batch and --streams must be at least 1");
    }
    if a.via_node {
        return via_node(a).await;
    }
    let tmp = tempfile::tempdir().context("creating a temporary data directory")?;
    let mesh = match &a.target {
        Some(_) => None,
        None => {
            let opts = MeshOpts {
                data_dir: Some(a.data_dir.clone().unwrap_or_else(|| tmp.path().into())),
                listen: Some("127.0.0.1:0".parse()?),
                ..MeshOpts::default()
            };
            let mut cfg = opts.load()?;
            cfg.metrics_listen = None;
            push_only(&mut cfg);
            Some(server::start(cfg, StartOptions::default()).await?)
        }
    };
    let addr = match (&a.target, &mesh) {
        (Some(t), _) => t.clone(),
        (None, Some(m)) => m.grpc_addr.to_string(),
        (None, None) => unreachable!("a mesh is started when there is no target"),
    };
    let channel = connect(&addr).await?;
    println!(
        "heatmesh bench readings: IngestReadings on {addr}, {} meters of {PLANT}, {} cores",
        METERS.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let Some(m) = &mesh {
        m.ledger().take_stats();
    }
    // Source times start at the current second so a rerun against the same target adds new
    // readings rather than duplicates.
    let base_us = heatmesh_master::task::now_us() as i64 - 86_400_000_000;

    if a.readings > 0 {
        let per = a.readings.div_ceil(a.streams);
        let t0 = Instant::now();
        let mut workers = Vec::new();
        for s in 0..a.streams {
            let mut c = client(&channel);
            let (lo, hi) = (s * per, ((s + 1) * per).min(a.readings));
            let batch = a.batch;
            workers.push(tokio::spawn(async move {
                let msgs = (lo..hi)
                    .step_by(batch)
                    .map(move |start| pb::IngestReadingsRequest {
                        plant_id: PLANT.into(),
                        readings: (start..(start + batch).min(hi))
                            .map(|i| reading(base_us, i))
                            .collect(),
                    });
                c.ingest_readings(tokio_stream::iter(msgs)).await
            }));
        }
        let mut ingested = 0;
        for w in workers {
            ingested += w.await?.map_err(rpc_err)?.into_inner().ingested;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "throughput: {ingested}/{} readings durable in {secs:.2} s = {:.0} readings/s ({} streams, {} per message)",
            a.readings,
            ingested as f64 / secs.max(1e-9),
            a.streams,
            a.batch
        );
        print_ledger(mesh.as_ref());
    }

    if a.rate > 0 {
        let per_msg = a.rate.div_ceil(100).max(1);
        let msgs = (a.duration.as_secs_f64() * 100.0).ceil() as usize;
        let offset = a.readings + 1;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut pending = Vec::with_capacity(msgs);
        let t0 = Instant::now();
        for m in 0..msgs {
            tick.tick().await;
            let mut c = client(&channel);
            let msg = pb::IngestReadingsRequest {
                plant_id: PLANT.into(),
                readings: (0..per_msg)
                    .map(|i| reading(base_us, offset + m * per_msg + i))
                    .collect(),
            };
            pending.push(tokio::spawn(async move {
                let sent = Instant::now();
                c.ingest_readings(tokio_stream::iter([msg]))
                    .await
                    .map(|_| sent.elapsed())
            }));
        }
        let mut h = Histogram::<u64>::new(3).context("histogram")?;
        for p in pending {
            let took = p.await?.map_err(rpc_err)?;
            h.record(took.as_micros().max(1) as u64)?;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "latency at {} readings/s: {} readings in {} messages over {secs:.1} s; send-to-durable p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            per_msg * 100,
            per_msg * msgs,
            msgs,
            ms(&h, 0.50),
            ms(&h, 0.95),
            ms(&h, 0.99),
            h.max() as f64 / 1000.0
        );
        print_ledger(mesh.as_ref());
    }
    if let Some(m) = mesh {
        m.shutdown().await;
    }
    Ok(())
}

/// `--via-node`: buffer -> shipper -> attach stream -> master, timed by the readings
/// themselves: the source time is the moment a batch entered the node's buffer and the
/// master stamps when it received it, on the same clock (one process).
async fn via_node(a: ReadingsBenchArgs) -> anyhow::Result<()> {
    use heatmesh_connect::buffer::{Batch, Buffer};
    use heatmesh_mesh::attach::{self, NodeOptions, ReadingsLink};
    use heatmesh_mesh::{LocalNode, NodeAgentArgs};
    if a.rate == 0 {
        bail!("--via-node needs --rate above 0");
    }
    let tmp = tempfile::tempdir().context("creating a temporary data directory")?;
    let opts = MeshOpts {
        data_dir: Some(
            a.data_dir
                .clone()
                .unwrap_or_else(|| tmp.path().join("master")),
        ),
        listen: Some("127.0.0.1:0".parse()?),
        ..MeshOpts::default()
    };
    let mut cfg = opts.load()?;
    cfg.metrics_listen = None;
    push_only(&mut cfg);
    let cookie = "bench-readings-cookie-0123456789".to_string();
    cfg.cluster.cookie = Some(cookie.clone());
    let mesh = server::start(cfg, StartOptions::default()).await?;
    let buffer = Buffer::open(&tmp.path().join("node-buffer"), 1 << 30)
        .context("opening the node's buffer")?;
    let link = std::sync::Arc::new(ReadingsLink::default());
    let shipper = tokio::spawn(heatmesh_connect::ship::run(
        buffer.clone(),
        link.uplink(),
        "bench-node".into(),
    ));
    let local = LocalNode::start(NodeAgentArgs {
        node_id: "bench-node".into(),
        ..NodeAgentArgs::default()
    })
    .await?;
    let node_opts = NodeOptions {
        node_id: "bench-node".into(),
        master: format!("http://{}", mesh.grpc_addr),
        cookie,
        preferred_plants: Vec::new(),
        address: String::new(),
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        readings: link,
    };
    let node = tokio::spawn(attach::run(node_opts, local, std::future::pending::<()>()));
    println!(
        "heatmesh bench readings --via-node: node buffer -> attach stream -> master on {}, {} readings/s for {:?}",
        mesh.grpc_addr, a.rate, a.duration
    );
    let per_msg = a.rate.div_ceil(100).max(1);
    let msgs = (a.duration.as_secs_f64() * 100.0).ceil() as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = heatmesh_connect::now_us();
    for m in 0..msgs {
        tick.tick().await;
        let now = heatmesh_connect::now_us();
        // Distinct source times per meter: the message's moment plus the reading's index.
        let readings = (0..per_msg)
            .map(|i| heatmesh_ingest::Reading {
                meter: METERS[i % METERS.len()].into(),
                time_us: now + (i / METERS.len()) as i64,
                raw: 10.0 + ((m + i) % 37) as f64,
                quality: heatmesh_ingest::Quality::Good,
                status: 0,
            })
            .collect();
        buffer
            .push(&Batch {
                plant: PLANT.into(),
                readings,
            })
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !buffer.is_empty() {
        if Instant::now() > deadline {
            bail!("the node's buffer did not drain within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = client(&connect(&mesh.grpc_addr.to_string()).await?);
    let mut h = Histogram::<u64>::new(3).context("histogram")?;
    let mut n = 0usize;
    for meter in METERS {
        let mut from = Some(timestamp(t0 - t0 % 1_000_000));
        while let Some(f) = from {
            let r = c
                .query_readings(pb::QueryReadingsRequest {
                    plant_id: PLANT.into(),
                    meter: meter.into(),
                    from: Some(f),
                    to: None,
                    limit: 100_000,
                })
                .await
                .map_err(rpc_err)?
                .into_inner();
            for x in &r.readings {
                let us = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or(0, micros);
                h.record((us(&x.received) - us(&x.source_time)).max(1) as u64)?;
                n += 1;
            }
            from = r.next_from;
        }
    }
    println!(
        "node to master: {n} readings in {msgs} batches; buffered-to-received p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(&h, 0.50),
        ms(&h, 0.95),
        ms(&h, 0.99),
        h.max() as f64 / 1000.0
    );
    shipper.abort();
    node.abort();
    mesh.shutdown().await;
    Ok(())
}
