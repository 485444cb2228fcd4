//! `heatmesh simulate`: the fleet's plants as a SCADA network would show them. Serves every
//! source of the configuration (Modbus TCP devices, OPC UA servers) from an energy-conserving
//! plant model until stopped, and takes faults on command, one per line on standard input:
//!
//! ```text
//! freeze PLANT METER          the meter's value stops changing
//! drift PLANT METER PCT       the meter reads high by PCT percent per hour from now
//! drop PLANT METER            the meter drops out (Modbus: no registers; OPC UA: Bad status)
//! heal PLANT METER            the meter shows the model again
//! stop PLANT SOURCE           the source's server stops (its connections drop)
//! start PLANT SOURCE          it serves again on the same address
//! ```

use super::mesh::MeshOpts;
use anyhow::Context;
use heatmesh_sim::plantsim::{self, Fault, Simulator};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

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
    for (endpoint, addr) in sim.endpoints().await {
        let what = if endpoint.starts_with("opc.tcp://") {
            "OPC UA server"
        } else {
            "Modbus TCP device"
        };
        eprintln!("heatmesh simulate: {what} {endpoint} serving on {addr}");
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
    eprintln!(
        "heatmesh simulate: faults on command, one per line: freeze|drift|drop|heal PLANT METER [PCT], stop|start PLANT SOURCE"
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut tick = tokio::time::interval(a.every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(l)) => match command(&sim, &l).await {
                    Ok(Some(done)) => eprintln!("heatmesh simulate: {done}"),
                    Ok(None) => {}
                    Err(e) => eprintln!("heatmesh simulate: {e}"),
                },
                // Standard input closed (or unreadable): keep serving.
                _ => stdin_open = false,
            },
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

/// Applies one fault command; `Ok(None)` for a blank line.
async fn command(sim: &Simulator, line: &str) -> Result<Option<String>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let usage = "commands: freeze|drop|heal PLANT METER, drift PLANT METER PCT_PER_HOUR, stop|start PLANT SOURCE";
    let (verb, plant, name) = match words.as_slice() {
        [] => return Ok(None),
        [verb, plant, name, ..] => (*verb, *plant, *name),
        _ => return Err(format!("{line:?}: {usage}")),
    };
    let fault = match (verb, &words[3..]) {
        ("freeze", []) => Fault::Frozen,
        ("drop", []) => Fault::Dropped,
        ("heal", []) => Fault::None,
        ("drift", [pct]) => match pct.parse::<f64>() {
            Ok(p) if p.is_finite() => Fault::Drift {
                pct_per_hour: p,
                since_s: 0.0,
            },
            _ => return Err(format!("drift: PCT_PER_HOUR must be a number, got {pct:?}")),
        },
        ("stop" | "start", []) => {
            let endpoint = sim
                .endpoint_of(plant, name)
                .ok_or_else(|| format!("{plant} has no served source {name:?}"))?;
            if verb == "stop" {
                sim.stop_source(&endpoint).await;
                return Ok(Some(format!("{plant}/{name}: {endpoint} stopped")));
            }
            sim.start_source(&endpoint)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Some(format!("{plant}/{name}: {endpoint} serving again")));
        }
        _ => return Err(format!("{line:?}: {usage}")),
    };
    if sim.fault(plant, name, fault) {
        Ok(Some(format!("{plant}/{name}: {verb}")))
    } else {
        Err(format!("{plant} has no simulated meter {name:?}"))
    }
}
