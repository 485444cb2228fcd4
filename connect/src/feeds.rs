//! A placed plant's connectors, and the health of every meter they read.
//!
//! [`FeedHost::start`] runs one connector task per source of a plant and returns a
//! [`Running`] handle; dropping it (the plant stopped or moved) stops them. [`Health`] is
//! what the connectors report: per source up or down with the cause, per meter its last
//! value and time and its last error. A meter is `stale` once silent for `stale_after` poll
//! intervals, `down` while its source is.

use crate::buffer::{Batch, Buffer, BufferError};
use crate::ship::{ShipError, Uplink};
use heatmesh_ingest::meter::SourceSpec;
use heatmesh_ingest::{MeterSpec, PlantFeeds, Reading};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a source or a meter gave no reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// No answer within the source's timeout.
    Timeout,
    /// The connection was refused or broke.
    Refused(String),
    /// The device answered with an error status (a Modbus exception, a bad OPC UA status).
    BadStatus(String),
    /// The answer decodes to no usable value.
    BadValue(String),
    /// This build has no connector for the source's protocol.
    Unsupported(String),
    /// The node's reading buffer was full, so the connector stopped reading.
    BufferFull,
}

impl Cause {
    /// The `reason` label of `heatmesh_connector_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Cause::Timeout => "timeout",
            Cause::Refused(_) => "refused",
            Cause::BadStatus(_) => "bad_status",
            Cause::BadValue(_) => "bad_value",
            Cause::Unsupported(_) => "unsupported",
            Cause::BufferFull => "buffer_full",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Timeout => f.write_str("timeout"),
            Cause::Refused(m) => write!(f, "refused: {m}"),
            Cause::BadStatus(m) => write!(f, "bad status: {m}"),
            Cause::BadValue(m) => write!(f, "bad value: {m}"),
            Cause::Unsupported(m) => write!(f, "unsupported: {m}"),
            Cause::BufferFull => f.write_str("stopped while the node's reading buffer was full"),
        }
    }
}

/// A meter's state as an operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedState {
    /// Readings arrive.
    Ok,
    /// No reading for `stale_after` poll intervals although the source answers.
    Stale,
    /// Its source is unreachable.
    Down,
    /// Started, no reading yet.
    Waiting,
    /// Switched off by an operator (`heatmesh feeds disable`): not read.
    Disabled,
}

impl FeedState {
    /// The name used in tables and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            FeedState::Ok => "ok",
            FeedState::Stale => "stale",
            FeedState::Down => "down",
            FeedState::Waiting => "waiting",
            FeedState::Disabled => "disabled",
        }
    }
}

/// One meter's health.
#[derive(Debug, Clone, Serialize)]
pub struct MeterHealth {
    /// Plant id.
    pub plant: String,
    /// Meter id.
    pub meter: String,
    /// Source id.
    pub source: String,
    /// State now.
    pub state: FeedState,
    /// Last raw value read.
    pub last_value: Option<f64>,
    /// Its source time, microseconds.
    pub last_time_us: Option<i64>,
    /// The latest error, with its cause.
    pub last_error: Option<String>,
    /// Errors since the connector started.
    pub errors: u64,
    /// The meter's poll interval, ms (with `stale_after`, when silence means stale).
    #[serde(skip)]
    pub poll_ms: u64,
    /// Poll intervals of silence after which the meter is stale.
    #[serde(skip)]
    pub stale_after: u32,
    /// Whether the source timestamps its samples (OPC UA). Where it does not (Modbus), a
    /// value that repeats bit for bit is no sign of life: the meter is stale once its value
    /// has not changed for `stale_after` polls (a frozen register).
    #[serde(skip)]
    pub timestamped: bool,
    /// When the value last changed, microseconds.
    #[serde(skip)]
    pub changed_us: Option<i64>,
    /// Disabled by an operator: registered, not read.
    #[serde(skip)]
    pub disabled: bool,
}

#[derive(Default)]
struct State {
    meters: BTreeMap<(String, String), MeterHealth>,
    /// (plant, source) -> the cause while down.
    down: BTreeMap<(String, String), Option<String>>,
}

/// Shared health table; cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<State>>,
}

impl Health {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn register(
        &self,
        plant: &str,
        source: &str,
        meters: &[MeterSpec],
        timestamped: bool,
        disabled: &std::collections::BTreeSet<String>,
    ) {
        self.with(|s| {
            for m in meters {
                s.meters
                    .entry((plant.to_string(), m.id.clone()))
                    .or_insert_with(|| MeterHealth {
                        plant: plant.to_string(),
                        meter: m.id.clone(),
                        source: source.to_string(),
                        state: FeedState::Waiting,
                        last_value: None,
                        last_time_us: None,
                        last_error: None,
                        errors: 0,
                        poll_ms: m.poll_ms,
                        stale_after: m.stale_after,
                        timestamped,
                        changed_us: None,
                        disabled: disabled.contains(&m.id),
                    });
            }
        });
    }

    /// The source answered (again).
    pub fn source_up(&self, plant: &str, source: &str) {
        let was_down = self.with(|s| s.down.remove(&(plant.into(), source.into())));
        if let Some(Some(cause)) = was_down {
            tracing::info!(%plant, %source, "source is back after: {cause}");
        }
        metrics::gauge!("heatmesh_feed_up", "plant" => plant.to_string(), "source" => source.to_string()).set(1.0);
    }

    /// The source is unreachable; its meters are down with this cause.
    pub fn source_down(&self, plant: &str, source: &str, meters: &[MeterSpec], cause: Cause) {
        let text = cause.to_string();
        let first = self.with(|s| {
            for m in meters {
                if let Some(h) = s.meters.get_mut(&(plant.into(), m.id.clone())) {
                    h.last_error = Some(text.clone());
                    h.errors += 1;
                }
            }
            let prev = s
                .down
                .insert((plant.into(), source.into()), Some(text.clone()));
            prev.flatten().as_deref() != Some(text.as_str())
        });
        // Each new cause once at warn; the retries that follow at debug.
        if first {
            tracing::warn!(%plant, %source, "source down: {text}");
        } else {
            tracing::debug!(%plant, %source, "source still down: {text}");
        }
        metrics::gauge!("heatmesh_feed_up", "plant" => plant.to_string(), "source" => source.to_string()).set(0.0);
        metrics::counter!("heatmesh_connector_errors_total", "plant" => plant.to_string(), "source" => source.to_string(), "reason" => cause.reason()).increment(1);
    }

    /// A meter gave no reading this poll.
    pub fn meter_error(&self, plant: &str, meter: &str, cause: Cause) {
        let source = self.with(|s| {
            let h = s.meters.get_mut(&(plant.into(), meter.into()))?;
            h.last_error = Some(cause.to_string());
            h.errors += 1;
            Some(h.source.clone())
        });
        tracing::debug!(%plant, %meter, "no reading: {cause}");
        metrics::counter!("heatmesh_connector_errors_total", "plant" => plant.to_string(), "source" => source.unwrap_or_default(), "reason" => cause.reason()).increment(1);
    }

    /// A meter gave a reading.
    pub fn reading(&self, plant: &str, meter: &MeterSpec, r: &Reading) {
        self.with(|s| {
            if let Some(h) = s.meters.get_mut(&(plant.into(), meter.id.clone())) {
                if h.last_value.map(f64::to_bits) != Some(r.raw.to_bits()) {
                    h.changed_us = Some(r.time_us);
                }
                h.last_value = Some(r.raw);
                h.last_time_us = Some(r.time_us);
            }
        });
    }

    /// The buffer refused a source's poll (or has room again).
    pub fn buffer_full(&self, plant: &str, source: &str, full: bool) {
        metrics::gauge!("heatmesh_buffer_blocked", "plant" => plant.to_string(), "source" => source.to_string())
            .set(if full { 1.0 } else { 0.0 });
    }

    /// Forgets a plant's meters (its connectors stopped here).
    pub fn forget(&self, plant: &str) {
        self.with(|s| {
            s.meters.retain(|(p, _), _| p != plant);
            s.down.retain(|(p, _), _| p != plant);
        });
    }

    /// Every meter's health as of `now_us`, sorted by plant and meter.
    pub fn snapshot(&self, now_us: i64) -> Vec<MeterHealth> {
        self.with(|s| {
            s.meters
                .values()
                .map(|h| {
                    let mut h = h.clone();
                    let down = s.down.contains_key(&(h.plant.clone(), h.source.clone()));
                    let silent_us = h.poll_ms as i64 * 1_000 * i64::from(h.stale_after);
                    let alive = if h.timestamped {
                        h.last_time_us
                    } else {
                        h.changed_us
                    };
                    h.state = match (down, alive) {
                        _ if h.disabled => FeedState::Disabled,
                        (true, _) => FeedState::Down,
                        (false, None) => FeedState::Waiting,
                        (false, Some(t)) if now_us - t > silent_us => FeedState::Stale,
                        (false, Some(_)) => FeedState::Ok,
                    };
                    h
                })
                .collect()
        })
    }
}

/// Where a connector's readings go.
#[derive(Clone)]
pub enum Sink {
    /// A node's durable buffer, shipped to the master separately (remote nodes).
    Buffer(Buffer),
    /// Straight to the master's ledger, which is as durable (the in-process node of `heatmesh
    /// up`, which lives and dies with its master).
    Direct(Uplink),
}

/// A sink, and optionally the node's own record of what it acquired: one CSV file per plant
/// in the `heatmesh ingest` format, appended once a batch is durable (`heatmesh node
/// --acquired-log`). Loss tests compare it with what the master ingested; an operator can
/// re-ingest it.
#[derive(Clone)]
pub struct Store {
    /// Where readings go.
    pub sink: Sink,
    /// Directory of the acquisition record, if kept.
    pub record: Option<std::path::PathBuf>,
}

impl Store {
    /// A store without an acquisition record.
    pub fn new(sink: Sink) -> Store {
        Store { sink, record: None }
    }

    /// Makes a poll's readings durable. `Full` means the connector should wait for room.
    pub async fn put(&self, batch: &Batch) -> Result<(), BufferError> {
        match &self.sink {
            Sink::Buffer(b) => b.push(batch).await.map(|_| ())?,
            Sink::Direct(up) => match up(batch.plant.clone(), batch.readings.clone()).await {
                Ok(()) => {}
                Err(ShipError::Unavailable(e)) => {
                    return Err(BufferError::Storage {
                        dir: "(the master's ledger)".into(),
                        detail: e,
                    });
                }
                Err(ShipError::Refused(e)) => {
                    tracing::error!(plant = %batch.plant, readings = batch.readings.len(), "the master refused readings, which are dropped: {e}");
                    metrics::counter!("heatmesh_readings_refused_total", "plant" => batch.plant.clone())
                        .increment(batch.readings.len() as u64);
                    return Ok(());
                }
            },
        }
        if let Some(dir) = &self.record
            && let Err(e) = append_record(dir, batch)
        {
            tracing::warn!(plant = %batch.plant, "acquisition record in {}: {e}", dir.display());
        }
        Ok(())
    }

    /// Whether the buffer is full (a direct sink never is).
    pub fn is_full(&self) -> bool {
        match &self.sink {
            Sink::Buffer(b) => {
                let (used, limit) = b.fill();
                used >= limit
            }
            Sink::Direct(_) => false,
        }
    }

    /// Resolves once a full buffer has room again.
    pub async fn room(&self) {
        if let Sink::Buffer(b) = &self.sink {
            b.changed(|b| {
                let (used, limit) = b.fill();
                used < limit
            })
            .await;
        }
    }
}

fn append_record(dir: &std::path::Path, batch: &Batch) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.csv", batch.plant));
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut text = String::new();
    if new {
        text.push_str("timestamp,meter,value,quality,status\n");
    }
    for r in &batch.readings {
        text.push_str(&format!(
            "{},{},{},{},{}\n",
            heatmesh_ingest::time::format_us(r.time_us),
            r.meter,
            r.raw,
            r.quality.name(),
            r.status
        ));
    }
    f.write_all(text.as_bytes())
}

/// Writes one poll's (or one publish's) readings to the store. When the buffer is full the source stops here
/// (polling resumes once the shipper has made room), saying so once, loudly.
pub(crate) async fn put(
    store: &Store,
    health: &Health,
    plant: &str,
    source: &str,
    readings: Vec<Reading>,
) {
    let batch = Batch {
        plant: plant.to_string(),
        readings,
    };
    let batch = std::sync::Arc::new(batch);
    loop {
        // Its own task: a connector stopped (its plant moved) while a write is under way
        // must not leave the batch in the buffer but missing from the acquisition record.
        let write = tokio::spawn({
            let (store, batch) = (store.clone(), batch.clone());
            async move { store.put(&batch).await }
        });
        let written = write.await.unwrap_or_else(|e| {
            Err(BufferError::Storage {
                dir: "(buffer write)".into(),
                detail: e.to_string(),
            })
        });
        match written {
            Ok(()) => {
                metrics::counter!("heatmesh_readings_acquired_total", "plant" => plant.to_string())
                    .increment(batch.readings.len() as u64);
                return;
            }
            Err(e @ BufferError::Full { .. }) => {
                tracing::error!(%plant, %source, "{e}; polling stops until the master confirms buffered readings");
                health.buffer_full(plant, source, true);
                store.room().await;
                health.buffer_full(plant, source, false);
            }
            Err(e) => {
                tracing::error!(%plant, %source, "{e}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The meters whose poll is due at `now`; each one's next slot moves on along its own grid,
/// skipping any missed (while disconnected, say).
pub(crate) fn take_due(
    due: &mut [tokio::time::Instant],
    meters: &[MeterSpec],
    now: tokio::time::Instant,
) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, (d, m)) in due.iter_mut().zip(meters).enumerate() {
        if *d <= now {
            let interval = Duration::from_millis(m.poll_ms);
            while *d <= now {
                *d += interval;
            }
            out.push(i);
        }
    }
    out
}

/// Starts connectors on a node: where their readings go and the health table.
#[derive(Clone)]
pub struct FeedHost {
    /// Where connectors write.
    pub store: Store,
    /// What they report.
    pub health: Health,
    /// The OPC UA client's certificate store (servers' certificates seen), in the node's
    /// data directory.
    pub opcua_pki: std::path::PathBuf,
}

/// A plant's running connectors; dropping the handle stops them.
pub struct Running {
    plant: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    health: Health,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.health.forget(&self.plant);
    }
}

impl FeedHost {
    /// Starts one connector per source of the plant that has meters. Meters without a source
    /// are fed by pushes and files, not here.
    pub fn start(&self, plant: &str, feeds: &PlantFeeds) -> Running {
        let mut tasks = Vec::new();
        for src in &feeds.sources {
            let mut meters: Vec<MeterSpec> = feeds
                .meters
                .iter()
                .filter(|m| m.source.as_deref() == Some(src.id()))
                .cloned()
                .collect();
            if meters.is_empty() {
                continue;
            }
            self.health.register(
                plant,
                src.id(),
                &meters,
                matches!(src, SourceSpec::Opcua(_)),
                &feeds.disabled,
            );
            meters.retain(|m| !feeds.disabled.contains(&m.id));
            if meters.is_empty() {
                continue;
            }
            match src {
                SourceSpec::Modbus(m) => tasks.push(tokio::spawn(crate::modbus::poll(
                    plant.to_string(),
                    m.clone(),
                    meters,
                    self.store.clone(),
                    self.health.clone(),
                ))),
                SourceSpec::Opcua(o) => tasks.push(tokio::spawn(crate::opcua::run(
                    plant.to_string(),
                    o.clone(),
                    meters,
                    self.store.clone(),
                    self.health.clone(),
                    self.opcua_pki.clone(),
                ))),
            }
        }
        if !tasks.is_empty() {
            tracing::info!(%plant, connectors = tasks.len(), "plant data connectors started");
        }
        Running {
            plant: plant.to_string(),
            tasks,
            health: self.health.clone(),
        }
    }
}
