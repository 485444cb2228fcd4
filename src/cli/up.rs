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

/// Serves until Ctrl-C or SIGTERM, then shuts down cleanly. `remote_only` runs no plants
/// in this process (`heatmesh master`): they go to attached nodes.
pub async fn run(args: UpArgs, remote_only: bool) -> anyhow::Result<()> {
    let mut cfg = args.mesh.load()?;
    cfg.allow_fault_injection |= args.allow_fault_injection;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let opts = StartOptions {
        remote_only,
        ..Default::default()
    };
    let mesh = server::start(cfg.clone(), opts).await?;
    eprintln!(
        "heatmesh {}: gRPC on {}, metrics on {}, {} plants, data in {}",
        if remote_only { "master" } else { "up" },
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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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
