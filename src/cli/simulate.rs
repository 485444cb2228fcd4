//! `heatmesh simulate`: the fleet's plants as a SCADA network would show them. Serves every
//! Modbus source of the configuration from an energy-conserving plant model until stopped.

use super::mesh::MeshOpts;
use anyhow::Context;
use heatmesh_sim::plantsim::{self, Simulator};
use std::collections::BTreeMap;
use std::time::Duration;

/// Arguments of `heatmesh simulate`.
#[derive(clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    mesh: MeshOpts,
    /// Seed of the model's noise (the same seed serves the same values).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// How often to print each plant's energy totals.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    every: Duration,
}

/// Runs the simulator.
pub async fn run(a: SimulateArgs) -> anyhow::Result<()> {
    let cfg = a.mesh.load()?;
    let sim = Simulator::start(
        &cfg.plants,
        plantsim::demand_kw(&cfg),
        BTreeMap::new(),
        a.seed,
    )
    .await
    .context("starting the plant simulator")?;
    for (endpoint, addr) in sim.endpoints() {
        eprintln!("heatmesh simulate: Modbus TCP device {endpoint} serving on {addr}");
    }
    eprintln!(
        "heatmesh simulate: {} meters of {} plants; fuel in = heat + losses",
        sim.meters(),
        sim.state().len()
    );
    let stop = async {
        match a.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => super::up::shutdown_signal().await,
        }
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(a.every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                for (plant, s) in sim.state() {
                    println!(
                        "{plant}: fuel {:.0} kW, heat {:.0} kW; since start fuel {:.1} kWh = heat {:.1} + losses {:.1}",
                        s.fuel_kw, s.heat_kw, s.fuel_kwh, s.heat_kwh, s.loss_kwh
                    );
                }
            }
        }
    }
    Ok(())
}
