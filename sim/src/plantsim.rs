//! The plant simulator behind `heatmesh simulate`: every source of the fleet's configuration
//! served by a real server of its protocol (Modbus TCP, or OPC UA with policies None and
//! Basic256Sha256), its values driven by a model that conserves energy.
//!
//! Per plant the model burns fuel at a rate that follows the plant's heat demand (a slow
//! ten-minute swing of 10 % and 1 % noise) and turns it into useful heat at an efficiency that
//! drifts down slowly (one point per hour from 88 %); what is not heat is loss, so fuel in =
//! heat + losses at every instant and in the totals. Each meter shows its quantity of that
//! state in its own unit: fuel meters the fuel (flow from the calorific value, totals
//! integrated), heat meters the heat, temperatures, pressures and flue O2 near fixed set
//! points with noise. A meter's registers (or OPC UA variable) hold the raw value that its
//! calibration turns into the true one, so the master's calibrated value is the model's.
//!
//! Faults on command ([`Simulator::freeze`], [`Simulator::stop_source`]) rehearse what the
//! operators' guides call meter freezes and connection losses.

use crate::rng::Rng;
use heatmesh_agents::PlantSpec;
use heatmesh_agents::calc::units::{
    EnergyUnit, PowerUnit, PressureUnit, TemperatureUnit, convert, convert_temperature, parse_unit,
};
use heatmesh_connect::modbus::{Registers, serve};
use heatmesh_connect::opcua::{Device, DeviceError, Sample, Values};
use heatmesh_ingest::meter::{NodeId, SourceSpec};
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

/// Where a simulated meter's value is published.
enum Out {
    /// Modbus registers at the meter's address.
    Registers(Registers),
    /// An OPC UA variable.
    Variable(Values, NodeId),
}

struct SimMeter {
    plant: String,
    spec: MeterSpec,
    out: Out,
    fault: Fault,
}

/// A fault put on one meter by command.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Fault {
    /// None: the meter shows the model.
    #[default]
    None,
    /// Its value stops changing (registers keep their words, a variable its source time).
    Frozen,
    /// It reads high by this many percent per hour, counted from `since_s` of model time.
    Drift {
        /// Percent of the value per hour.
        pct_per_hour: f64,
        /// Model time the drift began, s.
        since_s: f64,
    },
    /// It drops out: its Modbus registers vanish (the device answers "illegal data address"),
    /// its OPC UA variable turns Bad (BadSensorFailure, no value).
    Dropped,
}

/// A served endpoint's server, None while stopped.
enum Server {
    Modbus(Registers, Option<JoinHandle<()>>),
    Opcua(Values, Option<Device>),
}

/// A served endpoint: its server and the address it is bound to.
struct Source {
    server: Server,
    addr: std::net::SocketAddr,
    /// The host name its endpoints advertise (OPC UA).
    host: String,
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
    sources: tokio::sync::Mutex<BTreeMap<String, Source>>,
    ticker: JoinHandle<()>,
    /// The OPC UA servers' own certificates.
    pki: tempfile::TempDir,
    /// (plant, source) -> endpoint.
    sources_of: BTreeMap<(String, String), String>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.ticker.abort();
        for src in self.sources.get_mut().values_mut() {
            match &mut src.server {
                Server::Modbus(_, task) => {
                    if let Some(t) = task.take() {
                        t.abort();
                    }
                }
                // Dropping a device cancels its server.
                Server::Opcua(_, device) => drop(device.take()),
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
    /// An OPC UA server could not start.
    #[error("serving OPC UA endpoint {endpoint}: {source}")]
    Opcua {
        /// The endpoint.
        endpoint: String,
        /// Cause.
        source: DeviceError,
    },
    /// No plant has a source with meters.
    #[error(
        "no plant has a source with meters ([[plants.sources]] and [[plants.meters]]): nothing to serve"
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
            if self.meters[i].fault == Fault::Frozen {
                continue;
            }
            let state = self
                .state
                .get(&self.meters[i].plant)
                .copied()
                .unwrap_or_default();
            let mut truth = value(&self.meters[i].spec, &state, &mut self.rng);
            let m = &self.meters[i];
            if let Fault::Drift {
                pct_per_hour,
                since_s,
            } = m.fault
            {
                truth *= 1.0 + pct_per_hour / 100.0 * (self.elapsed_s - since_s) / 3600.0;
            }
            let dropped = m.fault == Fault::Dropped;
            let c = m.spec.calibration;
            let raw = (truth - c.offset) / c.factor;
            match &m.out {
                Out::Registers(registers) => {
                    let Some(addr) = m.spec.modbus.as_ref() else {
                        continue;
                    };
                    let mut regs = registers.lock().unwrap_or_else(|e| e.into_inner());
                    for (k, w) in addr.encode(raw).into_iter().enumerate() {
                        let at = (addr.unit, addr.table, addr.register + k as u16);
                        if dropped {
                            regs.remove(&at);
                        } else {
                            regs.insert(at, w);
                        }
                    }
                }
                Out::Variable(values, node) => {
                    let sample = Sample {
                        value: raw,
                        time_us: heatmesh_connect::now_us(),
                        // BadSensorFailure.
                        status: if dropped { 0x808C_0000 } else { 0 },
                    };
                    values
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(node.clone(), sample);
                }
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
    /// Starts serving the sources of `plants`. `listeners` may supply an already bound
    /// listener per endpoint (tests bind port 0 first); other endpoints are bound here.
    /// `demand_kw` gives each plant's heat demand (5 MW where absent).
    pub async fn start(
        plants: &[PlantSpec],
        demand_kw: BTreeMap<String, f64>,
        mut listeners: BTreeMap<String, TcpListener>,
        seed: u64,
    ) -> Result<Simulator, SimError> {
        let pki = tempfile::tempdir().map_err(|source| SimError::Bind {
            endpoint: "(OPC UA certificate folder)".into(),
            source,
        })?;
        let nodes = opcua_nodes(plants);
        let mut sources_of = BTreeMap::new();
        let mut unstarted = Vec::new();
        let mut sources: BTreeMap<String, Source> = BTreeMap::new();
        let mut meters = Vec::new();
        let mut demand = BTreeMap::new();
        for p in plants {
            let mut used = HashSet::new();
            for src in &p.feeds.sources {
                let served: Vec<&MeterSpec> = p
                    .feeds
                    .meters
                    .iter()
                    .filter(|x| x.source.as_deref() == Some(src.id()))
                    .collect();
                if served.is_empty() {
                    continue;
                }
                used.insert(src.id().to_string());
                let endpoint = src.endpoint().to_string();
                sources_of.insert((p.id.clone(), src.id().to_string()), endpoint.clone());
                if !sources.contains_key(&endpoint) {
                    let listener = match listeners.remove(&endpoint) {
                        Some(l) => l,
                        None => TcpListener::bind(bind_address(src))
                            .await
                            .map_err(|source| SimError::Bind {
                                endpoint: endpoint.clone(),
                                source,
                            })?,
                    };
                    let addr = listener.local_addr().map_err(|source| SimError::Bind {
                        endpoint: endpoint.clone(),
                        source,
                    })?;
                    let host = host_of(bind_address(src));
                    // Servers start once the model has written its first values, so no
                    // client reads an empty register or an unsampled variable.
                    let server = match src {
                        SourceSpec::Modbus(_) => Server::Modbus(Registers::default(), None),
                        SourceSpec::Opcua(_) => {
                            let values = Values::default();
                            values.lock().unwrap_or_else(|e| e.into_inner()).extend(
                                nodes
                                    .get(&endpoint)
                                    .into_iter()
                                    .flatten()
                                    .map(|n| (n.clone(), Sample::default())),
                            );
                            Server::Opcua(values, None)
                        }
                    };
                    unstarted.push((endpoint.clone(), listener));
                    sources.insert(endpoint.clone(), Source { server, addr, host });
                }
                for meter in served {
                    let out = match &sources[&endpoint].server {
                        Server::Modbus(regs, _) => Out::Registers(regs.clone()),
                        Server::Opcua(values, _) => {
                            let Some(n) =
                                meter.node_id.as_deref().and_then(|n| NodeId::parse(n).ok())
                            else {
                                continue;
                            };
                            Out::Variable(values.clone(), n)
                        }
                    };
                    meters.push(SimMeter {
                        plant: p.id.clone(),
                        spec: meter.clone(),
                        out,
                        fault: Fault::None,
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
        for (endpoint, listener) in unstarted {
            let src = sources
                .get_mut(&endpoint)
                .expect("inserted with its listener");
            match &mut src.server {
                Server::Modbus(regs, task) => {
                    *task = Some(tokio::spawn(serve_quietly(listener, regs.clone())));
                }
                Server::Opcua(values, device) => {
                    let d = Device::start(listener, &src.host, values.clone(), pki.path())
                        .await
                        .map_err(|source| SimError::Opcua {
                            endpoint: endpoint.clone(),
                            source,
                        })?;
                    *device = Some(d);
                }
            }
        }
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
            sources: tokio::sync::Mutex::new(sources),
            ticker,
            pki,
            sources_of,
        })
    }

    /// The endpoints served and the addresses they are bound to.
    pub async fn endpoints(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.sources
            .lock()
            .await
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

    /// Puts a fault on a meter ([`Fault::None`] clears it). False when the plant has no such
    /// meter.
    pub fn fault(&self, plant: &str, meter: &str, fault: Fault) -> bool {
        let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let now = m.elapsed_s;
        let fault = match fault {
            Fault::Drift { pct_per_hour, .. } => Fault::Drift {
                pct_per_hour,
                since_s: now,
            },
            f => f,
        };
        let mut found = false;
        for x in m
            .meters
            .iter_mut()
            .filter(|x| x.plant == plant && x.spec.id == meter)
        {
            x.fault = fault;
            found = true;
        }
        found
    }

    /// The endpoint a plant's source is served on.
    pub fn endpoint_of(&self, plant: &str, source: &str) -> Option<String> {
        self.sources_of
            .get(&(plant.to_string(), source.to_string()))
            .cloned()
    }

    /// Stops the server of an endpoint (its connections drop), as a device that dies. False
    /// when no such endpoint is served.
    pub async fn stop_source(&self, endpoint: &str) -> bool {
        let mut sources = self.sources.lock().await;
        let Some(src) = sources.get_mut(endpoint) else {
            return false;
        };
        match &mut src.server {
            Server::Modbus(_, task) => {
                if let Some(t) = task.take() {
                    t.abort();
                }
            }
            Server::Opcua(_, device) => {
                if let Some(d) = device.take() {
                    d.stop().await;
                }
            }
        }
        true
    }

    /// Serves an endpoint again on the address it had.
    pub async fn start_source(&self, endpoint: &str) -> Result<(), SimError> {
        let mut sources = self.sources.lock().await;
        let Some(src) = sources.get_mut(endpoint) else {
            return Ok(());
        };
        let bind = |source| SimError::Bind {
            endpoint: endpoint.to_string(),
            source,
        };
        match &mut src.server {
            Server::Modbus(regs, task @ None) => {
                let l = TcpListener::bind(src.addr).await.map_err(bind)?;
                *task = Some(tokio::spawn(serve_quietly(l, regs.clone())));
            }
            Server::Opcua(values, device @ None) => {
                let l = TcpListener::bind(src.addr).await.map_err(bind)?;
                let d = Device::start(l, &src.host, values.clone(), self.pki.path())
                    .await
                    .map_err(|source| SimError::Opcua {
                        endpoint: endpoint.to_string(),
                        source,
                    })?;
                *device = Some(d);
            }
            _ => {}
        }
        Ok(())
    }
}

async fn serve_quietly(l: TcpListener, regs: Registers) {
    if let Err(e) = serve(l, regs).await {
        tracing::warn!("simulated Modbus server stopped: {e}");
    }
}

/// Every OPC UA endpoint's nodes, over all plants (a server holds the variables of every
/// source that names it).
fn opcua_nodes(plants: &[PlantSpec]) -> BTreeMap<String, Vec<NodeId>> {
    let mut out: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
    for p in plants {
        for src in &p.feeds.sources {
            let SourceSpec::Opcua(o) = src else { continue };
            for m in p
                .feeds
                .meters
                .iter()
                .filter(|m| m.source.as_deref() == Some(&o.id))
            {
                if let Some(n) = m.node_id.as_deref().and_then(|n| NodeId::parse(n).ok()) {
                    out.entry(o.endpoint.clone()).or_default().push(n);
                }
            }
        }
    }
    out
}

/// The `host:port` a source's server listens on.
fn bind_address(src: &SourceSpec) -> &str {
    match src {
        SourceSpec::Modbus(m) => &m.endpoint,
        SourceSpec::Opcua(o) => {
            let rest = o.endpoint.strip_prefix("opc.tcp://").unwrap_or(&o.endpoint);
            rest.split('/').next().unwrap_or(rest)
        }
    }
}

fn host_of(hostport: &str) -> String {
    match hostport.rsplit_once(':') {
        Some((h, _)) => h.trim_matches(['[', ']']).to_string(),
        None => hostport.to_string(),
    }
}

/// A source's endpoint moved to `addr` (same scheme and path).
fn moved_endpoint(src: &SourceSpec, addr: &str) -> String {
    match src {
        SourceSpec::Modbus(_) => addr.to_string(),
        SourceSpec::Opcua(o) => {
            let rest = o.endpoint.strip_prefix("opc.tcp://").unwrap_or(&o.endpoint);
            let path = rest.find('/').map_or("", |i| &rest[i..]);
            format!("opc.tcp://{addr}{path}")
        }
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

/// Starts a simulator for the configuration's sources on free loopback ports and points the
/// configuration at them (the demo and tests: nothing fixed is bound).
pub async fn start_on_free_ports(
    cfg: &mut heatmesh_master::config::Config,
    seed: u64,
) -> Result<Simulator, SimError> {
    // One free port per configured endpoint, bound now.
    let mut bound: BTreeMap<String, (String, Option<TcpListener>)> = BTreeMap::new();
    for p in &cfg.plants {
        for s in &p.feeds.sources {
            let endpoint = s.endpoint().to_string();
            if bound.contains_key(&endpoint) {
                continue;
            }
            let bind = |source| SimError::Bind {
                endpoint: endpoint.clone(),
                source,
            };
            let l = TcpListener::bind("127.0.0.1:0").await.map_err(bind)?;
            let addr = l.local_addr().map_err(bind)?;
            bound.insert(endpoint, (addr.to_string(), Some(l)));
        }
    }
    // The configuration is pointed at them before the servers start: an OPC UA server
    // advertises the address it really listens on.
    let mut listeners = BTreeMap::new();
    for p in &mut cfg.plants {
        for s in &mut p.feeds.sources {
            let old = s.endpoint().to_string();
            let Some((addr, listener)) = bound.get_mut(&old) else {
                continue;
            };
            let new = moved_endpoint(s, addr);
            s.set_endpoint(new.clone());
            if let Some(l) = listener.take() {
                listeners.insert(new, l);
            }
        }
    }
    Simulator::start(&cfg.plants, demand_kw(cfg), listeners, seed).await
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
