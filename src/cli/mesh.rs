//! Loading configuration and starting a mesh, shared by `up`, `demo` and `bench`.

use anyhow::Context;
use heatmesh_master::config::{Config, SAMPLE_FLEET};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options every mesh-starting command accepts.
#[derive(clap::Args, Clone, Default)]
pub struct MeshOpts {
    /// Configuration file (TOML with the fleet's plants); default: the embedded sample fleet.
    #[arg(long, env = "HEATMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Ledger directory (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (overrides `listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Metrics/health HTTP listen address (overrides `metrics_listen`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

impl MeshOpts {
    /// Reads the file (or the sample), applies `HEATMESH_*` and the flags, validates.
    pub fn load(&self) -> anyhow::Result<Config> {
        let (text, origin) = match &self.config {
            Some(p) => (crate::read_input(p)?, p.display().to_string()),
            None => (
                SAMPLE_FLEET.to_string(),
                "the embedded sample fleet".to_string(),
            ),
        };
        let mut cfg = Config::from_toml(&text)
            .with_context(|| format!("loading configuration from {origin}"))?;
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(m) = self.metrics_listen {
            cfg.metrics_listen = Some(m);
        }
        cfg.normalise();
        Ok(cfg)
    }
}
