//! The plant simulator behind `heatmesh simulate`: every Modbus source of the fleet's
//! configuration served by a real Modbus TCP server, its registers driven by a model that
//! conserves energy.
//!
//! Per plant the model burns fuel at a rate that follows the plant's heat demand (a slow
//! ten-minute swing of 10 % and 1 % noise) and turns it into useful heat at an efficiency that
//! drifts down slowly (one point per hour from 88 %); what is not heat is loss, so fuel in =
//! heat + losses at every instant and in the totals. Each meter shows its quantity of that
//! state in its own unit: fuel meters the fuel (flow from the calorific value, totals
//! integrated), heat meters the heat, temperatures, pressures and flue O2 near fixed set
//! points with noise. A meter's registers hold the raw value that its calibration turns into
//! the true one, so the master's calibrated value is the model's.
//!
//! Faults on command ([`Simulator::freeze`], [`Simulator::stop_source`]) rehearse what the
//! operators' guides call meter freezes and connection losses.

use crate::rng::Rng;
use heatmesh_agents::PlantSpec;
use heatmesh_agents::calc::units::{
    EnergyUnit, PowerUnit, PressureUnit, TemperatureUnit, convert, convert_temperature, parse_unit,
};
use heatmesh_connect::modbus::{Registers, serve};
use heatmesh_ingest::meter::SourceSpec;
use heatmesh_ingest::{MeterSpec, Quantity};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How often the model advances and the registers are rewritten.
pub const TICK: Duration = Duration::from_millis(100);

/// One plant's physical state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlantState {
    /// Fuel burnt now, kW.
    pub fuel_kw: f64,
    /// Useful heat now, kW.
    pub heat_kw: f64,
    /// Fuel burnt since start, kWh.
    pub fuel_kwh: f64,
    /// Useful heat since start, kWh.
    pub heat_kwh: f64,
    /// Losses since start, kWh (fuel - heat).
    pub loss_kwh: f64,
}

struct SimMeter {
    plant: String,
    spec: MeterSpec,
    registers: Registers,
    frozen: bool,
}

/// A served endpoint: its registers, its server task (None while stopped), its address.
struct Source {
    registers: Registers,
    task: Option<JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

struct Model {
    rng: Rng,
    elapsed_s: f64,
    demand_kw: BTreeMap<String, f64>,
    state: BTreeMap<String, PlantState>,
    meters: Vec<SimMeter>,
}

/// A running simulator.
pub struct Simulator {
    model: Arc<Mutex<Model>>,
    sources: Mutex<BTreeMap<String, Source>>,
    ticker: JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.ticker.abort();
        for src in self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            if let Some(t) = src.task.take() {
                t.abort();
            }
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A Modbus endpoint could not be bound.
    #[error("binding Modbus endpoint {endpoint}: {source}")]
    Bind {
        /// The endpoint.
        endpoint: String,
        /// Cause.
        source: std::io::Error,
    },
    /// No plant has a Modbus source.
    #[error(
        "no plant has a Modbus source ([[plants.sources]] with kind = \"modbus\"): nothing to serve"
    )]
    Nothing,
}

fn noise(rng: &mut Rng, amplitude: f64) -> f64 {
    let u = rng.next_u64() as f64 / u64::MAX as f64;
    (2.0 * u - 1.0) * amplitude
}

impl Model {
    fn step(&mut self, dt_s: f64) {
        self.elapsed_s += dt_s;
        let swing = (2.0 * std::f64::consts::PI * self.elapsed_s / 600.0).sin();
        let efficiency = 0.88 - 0.01 * self.elapsed_s / 3600.0;
        for (plant, demand) in &self.demand_kw {
            let heat_kw = demand * (1.0 + 0.1 * swing + noise(&mut self.rng, 0.01));
            let fuel_kw = heat_kw / efficiency;
            let s = self.state.entry(plant.clone()).or_default();
            s.fuel_kw = fuel_kw;
            s.heat_kw = heat_kw;
            s.fuel_kwh += fuel_kw * dt_s / 3600.0;
            s.heat_kwh += heat_kw * dt_s / 3600.0;
            s.loss_kwh = s.fuel_kwh - s.heat_kwh;
        }
        for i in 0..self.meters.len() {
            if self.meters[i].frozen {
                continue;
            }
            let state = self
                .state
                .get(&self.meters[i].plant)
                .copied()
                .unwrap_or_default();
            let truth = value(&self.meters[i].spec, &state, &mut self.rng);
            let m = &self.meters[i];
            let c = m.spec.calibration;
            let raw = (truth - c.offset) / c.factor;
            let addr = m
                .spec
                .modbus
                .as_ref()
                .expect("only Modbus meters are simulated");
            let mut regs = m.registers.lock().unwrap_or_else(|e| e.into_inner());
            for (k, w) in addr.encode(raw).into_iter().enumerate() {
                regs.insert((addr.unit, addr.table, addr.register + k as u16), w);
            }
        }
    }
}

/// The true value of a meter's quantity in its unit.
fn value(m: &MeterSpec, s: &PlantState, rng: &mut Rng) -> f64 {
    let per_hour = |u: &str| if u.ends_with("/s") { 1.0 / 3600.0 } else { 1.0 };
    let fuel_cv = m.calorific_value.map(|cv| cv.value_kwh_per_unit);
    let energy = |kwh: f64| {
        parse_unit::<EnergyUnit>("unit", &m.unit)
            .map(|u| convert(kwh, EnergyUnit::KilowattHour, u))
            .unwrap_or(kwh)
    };
    let power = |kw: f64| {
        parse_unit::<PowerUnit>("unit", &m.unit)
            .map(|u| convert(kw, PowerUnit::Kilowatt, u))
            .unwrap_or(kw)
    };
    let fuel = m.fuel.is_some();
    match m.quantity {
        Quantity::VolumeFlow | Quantity::MassFlow if fuel => {
            s.fuel_kw / fuel_cv.unwrap_or(1.0) * per_hour(&m.unit)
        }
        Quantity::VolumeTotal | Quantity::MassTotal if fuel => s.fuel_kwh / fuel_cv.unwrap_or(1.0),
        Quantity::EnergyTotal if fuel => energy(s.fuel_kwh),
        Quantity::Power if fuel => power(s.fuel_kw),
        Quantity::EnergyTotal => energy(s.heat_kwh),
        Quantity::Power => power(s.heat_kw),
        // Steam raised at about 2,500 kJ/kg of heat; hot water at about 23 kW per m3/h.
        Quantity::MassFlow => {
            s.heat_kw / 2_500.0 * 3_600.0 * per_hour(&m.unit) * mass_scale(&m.unit)
        }
        Quantity::VolumeFlow => s.heat_kw / 23.0 * per_hour(&m.unit) * volume_scale(&m.unit),
        Quantity::MassTotal => s.heat_kwh / 2_500.0 * 3_600.0 * mass_scale(&m.unit),
        Quantity::VolumeTotal => s.heat_kwh / 23.0 * volume_scale(&m.unit),
        Quantity::Temperature => {
            let c = 180.0 + noise(rng, 0.5);
            parse_unit::<TemperatureUnit>("unit", &m.unit)
                .map(|u| convert_temperature(c, TemperatureUnit::Celsius, u))
                .unwrap_or(c)
        }
        Quantity::Pressure => {
            let bar = 10.0 + noise(rng, 0.05);
            parse_unit::<PressureUnit>("unit", &m.unit)
                .map(|u| convert(bar, PressureUnit::Bar, u))
                .unwrap_or(bar)
        }
        Quantity::O2Pct => 3.0 + noise(rng, 0.1),
    }
}

fn mass_scale(unit: &str) -> f64 {
    if unit.starts_with("t/") || unit == "t" {
        1e-3
    } else {
        1.0
    }
}

fn volume_scale(unit: &str) -> f64 {
    if unit.starts_with('L') { 1e3 } else { 1.0 }
}

impl Simulator {
    /// Starts serving the Modbus sources of `plants`. `listeners` may supply an already
    /// bound listener per endpoint (tests bind port 0 first); other endpoints are bound
    /// here. `demand_kw` gives each plant's heat demand (5 MW where absent).
    pub async fn start(
        plants: &[PlantSpec],
        demand_kw: BTreeMap<String, f64>,
        mut listeners: BTreeMap<String, TcpListener>,
        seed: u64,
    ) -> Result<Simulator, SimError> {
        let mut sources: BTreeMap<String, Source> = BTreeMap::new();
        let mut meters = Vec::new();
        let mut demand = BTreeMap::new();
        for p in plants {
            let mut used = HashSet::new();
            for src in &p.feeds.sources {
                let SourceSpec::Modbus(m) = src else { continue };
                used.insert(m.id.clone());
                if !sources.contains_key(&m.endpoint) {
                    let listener = match listeners.remove(&m.endpoint) {
                        Some(l) => l,
                        None => TcpListener::bind(&m.endpoint).await.map_err(|source| {
                            SimError::Bind {
                                endpoint: m.endpoint.clone(),
                                source,
                            }
                        })?,
                    };
                    let addr = listener.local_addr().map_err(|source| SimError::Bind {
                        endpoint: m.endpoint.clone(),
                        source,
                    })?;
                    let regs = Registers::default();
                    let task = tokio::spawn(serve_quietly(listener, regs.clone()));
                    sources.insert(
                        m.endpoint.clone(),
                        Source {
                            registers: regs,
                            task: Some(task),
                            addr,
                        },
                    );
                }
                let regs = sources[&m.endpoint].registers.clone();
                for meter in p
                    .feeds
                    .meters
                    .iter()
                    .filter(|x| x.source.as_deref() == Some(&m.id))
                {
                    meters.push(SimMeter {
                        plant: p.id.clone(),
                        spec: meter.clone(),
                        registers: regs.clone(),
                        frozen: false,
                    });
                }
            }
            if !used.is_empty() {
                demand.insert(
                    p.id.clone(),
                    demand_kw.get(&p.id).copied().unwrap_or(5_000.0),
                );
            }
        }
        if meters.is_empty() {
            return Err(SimError::Nothing);
        }
        let mut model = Model {
            rng: Rng::new(seed),
            elapsed_s: 0.0,
            demand_kw: demand,
            state: BTreeMap::new(),
            meters,
        };
        model.step(0.0);
        let model = Arc::new(Mutex::new(model));
        let ticker = tokio::spawn({
            let model = model.clone();
            async move {
                let mut tick = tokio::time::interval(TICK);
                loop {
                    tick.tick().await;
                    model
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .step(TICK.as_secs_f64());
                }
            }
        });
        Ok(Simulator {
            model,
            sources: Mutex::new(sources),
            ticker,
        })
    }

    /// The endpoints served and the addresses they are bound to.
    pub fn endpoints(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(e, s)| (e.clone(), s.addr))
            .collect()
    }

    /// Every simulated plant's state now.
    pub fn state(&self) -> BTreeMap<String, PlantState> {
        self.model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state
            .clone()
    }

    /// Number of meters served.
    pub fn meters(&self) -> usize {
        self.model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .meters
            .len()
    }

    /// Freezes (or thaws) a meter: its registers keep their last value.
    pub fn freeze(&self, plant: &str, meter: &str, frozen: bool) -> bool {
        let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = false;
        for x in m
            .meters
            .iter_mut()
            .filter(|x| x.plant == plant && x.spec.id == meter)
        {
            x.frozen = frozen;
            found = true;
        }
        found
    }

    /// Stops the server of an endpoint (its connections drop), as a device that dies.
    pub fn stop_source(&self, endpoint: &str) {
        if let Some(src) = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(endpoint)
            && let Some(t) = src.task.take()
        {
            t.abort();
        }
    }

    /// Serves an endpoint again on the address it had.
    pub async fn start_source(&self, endpoint: &str) -> std::io::Result<()> {
        let (regs, addr) = match self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(endpoint)
        {
            Some(s) if s.task.is_none() => (s.registers.clone(), s.addr),
            _ => return Ok(()),
        };
        let l = TcpListener::bind(addr).await?;
        let task = tokio::spawn(serve_quietly(l, regs));
        if let Some(e) = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(endpoint)
        {
            e.task = Some(task);
        }
        Ok(())
    }
}

async fn serve_quietly(l: TcpListener, regs: Registers) {
    if let Err(e) = serve(l, regs).await {
        tracing::warn!("simulated Modbus server stopped: {e}");
    }
}

/// Each plant's heat demand from the configuration's `[plants.heat]` tables, kW.
pub fn demand_kw(cfg: &heatmesh_master::config::Config) -> BTreeMap<String, f64> {
    cfg.heat
        .plants
        .iter()
        .map(|(p, h)| (p.clone(), h.demand_mw * 1_000.0))
        .collect()
}

/// Starts a simulator for the configuration's Modbus sources on free loopback ports and
/// points the configuration at them (the demo and tests: nothing fixed is bound).
pub async fn start_on_free_ports(
    cfg: &mut heatmesh_master::config::Config,
    seed: u64,
) -> Result<Simulator, SimError> {
    let mut listeners = BTreeMap::new();
    let mut moved = BTreeMap::new();
    for p in &cfg.plants {
        for s in &p.feeds.sources {
            if let SourceSpec::Modbus(m) = s
                && !listeners.contains_key(&m.endpoint)
            {
                let l =
                    TcpListener::bind("127.0.0.1:0")
                        .await
                        .map_err(|source| SimError::Bind {
                            endpoint: m.endpoint.clone(),
                            source,
                        })?;
                let addr = l.local_addr().map_err(|source| SimError::Bind {
                    endpoint: m.endpoint.clone(),
                    source,
                })?;
                moved.insert(m.endpoint.clone(), addr.to_string());
                listeners.insert(m.endpoint.clone(), l);
            }
        }
    }
    let sim = Simulator::start(&cfg.plants, demand_kw(cfg), listeners, seed).await?;
    for p in &mut cfg.plants {
        for s in &mut p.feeds.sources {
            if let SourceSpec::Modbus(m) = s
                && let Some(a) = moved.get(&m.endpoint)
            {
                m.endpoint = a.clone();
            }
        }
    }
    // The simulator keeps serving under the configured names; only the addresses moved.
    Ok(sim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuel_in_is_heat_plus_losses_and_meters_show_the_state() {
        let text = heatmesh_master::config::SAMPLE_FLEET;
        let cfg = heatmesh_master::config::Config::from_toml_with_env(text, Vec::new()).unwrap();
        let p = cfg
            .plants
            .iter()
            .find(|p| !p.feeds.meters.is_empty())
            .unwrap();
        let mut model = Model {
            rng: Rng::new(1),
            elapsed_s: 0.0,
            demand_kw: BTreeMap::from([(p.id.clone(), 12_000.0)]),
            state: BTreeMap::new(),
            meters: Vec::new(),
        };
        for _ in 0..36_000 {
            model.step(0.1); // one simulated hour
        }
        let s = model.state[&p.id];
        assert!((s.fuel_kwh - s.heat_kwh - s.loss_kwh).abs() < 1e-6);
        assert!(
            s.heat_kwh > 12_000.0 * 0.85 && s.heat_kwh < 12_000.0 * 1.15,
            "{s:?}"
        );
        let ratio = s.heat_kwh / s.fuel_kwh;
        assert!(ratio > 0.87 && ratio < 0.88, "mean efficiency {ratio}");
        let gas = p.feeds.meter("gas").unwrap();
        let v = value(gas, &s, &mut Rng::new(2));
        assert!(
            (v - s.fuel_kwh / 10.55).abs() < 1e-9,
            "gas total in m3: {v}"
        );
    }
}
