//! `heatmesh up`: run the master and its plants until interrupted.

use super::mesh::MeshOpts;
use anyhow::Context;
use heatmesh_master::server::{self, StartOptions};

/// Arguments of `heatmesh up`.
#[derive(clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    mesh: MeshOpts,
    /// Let MeshService.InjectFault arm rehearsal faults (drills).
    #[arg(long)]
    allow_fault_injection: bool,
}

/// Serves until Ctrl-C or SIGTERM, then shuts down cleanly.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let mut cfg = args.mesh.load()?;
    cfg.allow_fault_injection |= args.allow_fault_injection;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let mesh = server::start(cfg.clone(), StartOptions::default()).await?;
    eprintln!(
        "heatmesh up: gRPC on {}, metrics on {}, {} plants, data in {}",
        mesh.grpc_addr,
        mesh.metrics_addr
            .map_or("(off)".to_string(), |a| format!("http://{a}/metrics")),
        cfg.plants.len(),
        cfg.data_dir.display()
    );
    shutdown_signal().await;
    eprintln!("heatmesh: shutting down");
    mesh.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
