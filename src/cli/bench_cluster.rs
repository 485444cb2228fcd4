//! `heatmesh bench cluster`: the multi-node mesh as processes on loopback (this executable as
//! master, three plant nodes and a spare), measured: task throughput through the remote nodes,
//! then how fast a killed node and a partitioned node are detected and their plants re-placed
//! while a load runs.

use super::bench::{TaskBenchArgs, run_tasks};
use anyhow::Context;
use heatmesh_sim::cluster::{Cluster, stream_tasks};
use heatmesh_sim::proxy::BlackholeProxy;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Arguments of `heatmesh bench cluster`.
#[derive(clap::Args)]
pub struct ClusterBenchArgs {
    /// Tasks in the throughput phase.
    #[arg(long, default_value_t = 30_000)]
    tasks: usize,
    /// Concurrent submitters in the throughput phase.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
}

/// Runs the phases and prints one line per figure.
pub async fn run(a: ClusterBenchArgs) -> anyhow::Result<()> {
    let bin = std::env::current_exe().context("locating this executable")?;
    let mut c = Cluster::new(&bin).context("creating the cluster directory")?;
    c.start_master();
    let proxy = BlackholeProxy::start(c.grpc)
        .await
        .context("starting the black-hole proxy")?;
    let placed = c.start_standard(true, Some(("node-3", proxy.addr()))).await;
    println!(
        "heatmesh bench cluster: master + 3 plant nodes + 1 spare as processes on loopback (placed in {placed:.0?}); logs in {}",
        c.dir.path().display()
    );
    run_tasks(TaskBenchArgs {
        tasks: a.tasks,
        concurrency: a.concurrency,
        rate: 0,
        duration: Duration::from_secs(1),
        target: Some(c.grpc.to_string()),
        data_dir: None,
        compare: None,
        rounds: 1,
    })
    .await?;

    let ch = c.channel().await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn(stream_tasks(ch.clone(), 1_000_000, 8, acked.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(n) = c.nodes.get_mut("node-2") {
        n.kill9();
    }
    let detected = c
        .wait_node_status("node-2", "disconnected", Duration::from_secs(10))
        .await;
    let replaced = c
        .wait_placement(&[("Plant-002", "spare")], Duration::from_secs(10))
        .await;
    println!(
        "kill -9 node-2 under load: detected {:.1} ms after the kill (incl. polling), Plant-002 running on the spare {:.1} ms later",
        detected.as_secs_f64() * 1e3,
        replaced.as_secs_f64() * 1e3
    );
    proxy.partition();
    let detected = c
        .wait_node_status("node-3", "disconnected", Duration::from_secs(10))
        .await;
    let mut mesh = heatmesh_proto::v1::mesh_service_client::MeshServiceClient::new(ch.clone());
    let plants = mesh
        .list_plants(heatmesh_proto::v1::ListPlantsRequest {})
        .await?
        .into_inner()
        .plants;
    let p3 = plants
        .iter()
        .find(|p| p.id == "Plant-003")
        .map(|p| p.node.clone())
        .unwrap_or_default();
    let replaced = c
        .wait_placement(&[("Plant-003", p3.as_str())], Duration::from_secs(10))
        .await;
    println!(
        "black-hole partition of node-3 under load: detected {:.1} ms after it began (lease {} ms), Plant-003 running on {p3} {:.1} ms later",
        detected.as_secs_f64() * 1e3,
        1000,
        replaced.as_secs_f64() * 1e3
    );
    load.abort();
    proxy.heal();
    let stale = c.metric("heatmesh_stale_results_total").await as u64;
    println!(
        "{} tasks acknowledged during the failovers; {stale} stale results rejected so far",
        acked.lock().map(|v| v.len()).unwrap_or(0)
    );
    Ok(())
}
