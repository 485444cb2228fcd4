//! The master's side of plant data: readings checked against the configured meters,
//! deduplicated on (meter, source timestamp), made durable in the ledger.
//!
//! Every way a reading arrives (IngestReadings pushes, historian files, and the plant
//! nodes' connectors) ends in [`Readings::submit`]. A batch is validated whole before any of
//! it is stored, so a bad reading refuses its batch and touches nothing already ingested.
//! A reading the ledger already holds, or one of a batch still on its way to the ledger, is
//! counted as a duplicate and not written again; the first value stays, and a later one that
//! differs is counted as a conflict. The calibrated value and the range check are the
//! master's, from the configuration, whatever the source.

use crate::config::Config;
use crate::ledger::{Commit, Ledger, LedgerError, Op, codec};
use heatmesh_ingest::reading::{FLAG_OUT_OF_RANGE, Stored};
use heatmesh_ingest::{MeterSpec, Reading};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Why a batch of readings was refused. Nothing of a refused batch is stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// No such plant, or no such meter in it.
    #[error("{0}")]
    NotFound(String),
    /// A reading broke a rule: `readings[3].value: must be finite`.
    #[error("{0}")]
    Invalid(String),
    /// The ledger refused the write.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What became of a batch once durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Readings in the batch.
    pub received: u64,
    /// Readings new to the ledger, now durable.
    pub ingested: u64,
    /// Readings the ledger already held with the same value (not written again).
    pub duplicates: u64,
    /// Readings the ledger already held with a different value (the first one stays).
    pub conflicts: u64,
    /// Ingested readings flagged outside their meter's range.
    pub out_of_range: u64,
}

impl Outcome {
    /// Adds another batch's figures.
    pub fn add(&mut self, o: Outcome) {
        self.received += o.received;
        self.ingested += o.ingested;
        self.duplicates += o.duplicates;
        self.conflicts += o.conflicts;
        self.out_of_range += o.out_of_range;
    }
}

struct PlantMeters {
    id: Arc<str>,
    meters: HashMap<String, MeterSpec>,
}

/// What the submit path knows without asking the ledger.
#[derive(Default)]
struct Known {
    /// Keys (and raw value bits) of readings submitted to the ledger but not yet applied,
    /// so a second copy arriving meanwhile is known for a duplicate.
    pending: HashMap<Vec<u8>, u64>,
    /// Per plant and meter, the latest source time submitted so far (applied or pending). A
    /// reading after it cannot be held yet, so the common case, a meter's readings arriving
    /// in time order, is decided without a ledger lookup. Sound because this master is the
    /// ledger's only writer of readings.
    /// Every configured meter has an entry (`i64::MIN` before its first reading), so the hot
    /// path looks it up without allocating a key.
    latest: HashMap<String, HashMap<String, i64>>,
}

/// Handle on the readings path; cheap to clone.
#[derive(Clone)]
pub struct Readings {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Ledger,
    plants: BTreeMap<String, PlantMeters>,
    known: Mutex<Known>,
    max_batch: usize,
    max_future_us: i64,
}

/// Log bytes the state store may lag behind before a batch of readings waits: about 150,000
/// readings, under a second of apply work.
pub const UNAPPLIED_LIMIT: u64 = 8 * 1024 * 1024;

/// A batch on its way to the ledger: resolves once it is durable.
pub type Durable = tokio::sync::oneshot::Receiver<Result<Outcome, LedgerError>>;

impl Readings {
    /// The readings path of a master with this configuration, over a ledger that holds
    /// everything it acknowledged (as it does once open).
    pub fn new(ledger: Ledger, config: &Config) -> Result<Readings, LedgerError> {
        let plants: BTreeMap<String, PlantMeters> = config
            .plants
            .iter()
            .map(|p| {
                let meters = p
                    .feeds
                    .meters
                    .iter()
                    .map(|m| (m.id.clone(), m.clone()))
                    .collect();
                let pm = PlantMeters {
                    id: Arc::from(p.id.as_str()),
                    meters,
                };
                (p.id.clone(), pm)
            })
            .collect();
        let mut known = Known::default();
        for p in plants.values() {
            for m in p.meters.keys() {
                let t = ledger.latest_reading_time(&p.id, m)?.unwrap_or(i64::MIN);
                known
                    .latest
                    .entry(p.id.to_string())
                    .or_default()
                    .insert(m.clone(), t);
            }
        }
        Ok(Readings {
            inner: Arc::new(Inner {
                ledger,
                plants,
                known: Mutex::new(known),
                max_batch: config.readings.max_batch,
                max_future_us: (config.readings.max_future_ms as i64).saturating_mul(1_000),
            }),
        })
    }

    fn plant(&self, plant: &str) -> Result<&PlantMeters, IngestError> {
        self.inner.plants.get(plant).ok_or_else(|| {
            let known: Vec<&str> = self.inner.plants.keys().map(String::as_str).collect();
            IngestError::NotFound(format!(
                "plant_id: no plant {plant:?} in the fleet; known: {}",
                known.join(", ")
            ))
        })
    }

    /// The meter's configuration.
    pub fn meter(&self, plant: &str, meter: &str) -> Result<&MeterSpec, IngestError> {
        let p = self.plant(plant)?;
        p.meters
            .get(meter)
            .ok_or_else(|| unknown_meter(plant, p, meter, "meter"))
    }

    /// Validates a batch, leaves out what the ledger already holds and queues the rest.
    /// Returns at once; the receiver resolves when the batch is durable. `now_us` is the
    /// master's clock, against which future timestamps are judged.
    pub fn submit(
        &self,
        plant: &str,
        readings: Vec<Reading>,
        now_us: i64,
    ) -> Result<Durable, IngestError> {
        let p = self.plant(plant)?;
        if readings.len() > self.inner.max_batch {
            return Err(IngestError::Invalid(format!(
                "readings: {} in one message; at most {} (readings.max_batch)",
                readings.len(),
                self.inner.max_batch
            )));
        }
        let latest = now_us.saturating_add(self.inner.max_future_us);
        for (i, r) in readings.iter().enumerate() {
            if !p.meters.contains_key(&r.meter) {
                return Err(unknown_meter(
                    plant,
                    p,
                    &r.meter,
                    &format!("readings[{i}].meter"),
                ));
            }
            if !r.raw.is_finite() {
                return Err(IngestError::Invalid(format!(
                    "readings[{i}].value: must be finite, got {}",
                    r.raw
                )));
            }
            if r.time_us < heatmesh_ingest::time::MIN_US || r.time_us > latest {
                return Err(IngestError::Invalid(format!(
                    "readings[{i}].source_time: {} is {}; a source's clock is wrong",
                    heatmesh_ingest::time::format_us(r.time_us),
                    if r.time_us > latest {
                        format!(
                            "more than {} s ahead of the master's clock",
                            self.inner.max_future_us / 1_000_000
                        )
                    } else {
                        "before 1970".to_string()
                    }
                )));
            }
        }
        let mut outcome = Outcome {
            received: readings.len() as u64,
            ..Outcome::default()
        };
        let mut ops = Vec::new();
        let mut keys = Vec::with_capacity(readings.len());
        {
            let mut known = self.inner.known.lock().unwrap_or_else(|e| e.into_inner());
            let known = &mut *known;
            let latest_of = |known: &Known, meter: &str| {
                known
                    .latest
                    .get(plant)
                    .and_then(|m| m.get(meter))
                    .copied()
                    .unwrap_or(i64::MIN)
            };
            // First every ledger lookup, changing nothing, so a storage error leaves no
            // reading marked as pending that was never submitted. Only readings not newer than
            // their meter's latest can be held already; each (meter, bucket) they fall in is
            // read once.
            let mut held_in: HashMap<(&str, i64), HashMap<i64, u64>> = HashMap::new();
            for r in readings.iter() {
                if r.time_us <= latest_of(known, &r.meter) {
                    let bucket = codec::bucket_start(r.time_us);
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        held_in.entry((r.meter.as_str(), bucket))
                    {
                        let mut held = HashMap::new();
                        for x in self.inner.ledger.readings(
                            plant,
                            &r.meter,
                            bucket,
                            bucket + codec::BUCKET_US,
                        ) {
                            let (t, s) = x?;
                            held.insert(t, s.raw.to_bits());
                        }
                        e.insert(held);
                    }
                }
            }
            let mut in_ledger = HashMap::new();
            for (i, r) in readings.iter().enumerate() {
                if let Some(&bits) = held_in
                    .get(&(r.meter.as_str(), codec::bucket_start(r.time_us)))
                    .and_then(|h| h.get(&r.time_us))
                {
                    in_ledger.insert(i, bits);
                }
            }
            drop(held_in);
            let mut blocks: HashMap<(String, i64), Vec<(i64, Stored)>> = HashMap::new();
            for (i, r) in readings.into_iter().enumerate() {
                let key = codec::reading_key(plant, &r.meter, r.time_us);
                let latest = known
                    .latest
                    .get_mut(plant)
                    .and_then(|m| m.get_mut(&r.meter))
                    .expect("every configured meter has an entry, and the batch was validated");
                let held = if r.time_us > *latest {
                    *latest = r.time_us;
                    None
                } else {
                    known
                        .pending
                        .get(&key)
                        .copied()
                        .or_else(|| in_ledger.get(&i).copied())
                };
                match held {
                    Some(bits) if bits == r.raw.to_bits() => outcome.duplicates += 1,
                    Some(_) => outcome.conflicts += 1,
                    None => {
                        let m = &p.meters[&r.meter];
                        let value = m.calibrate(r.raw);
                        let flags = if m.in_range(value) {
                            0
                        } else {
                            FLAG_OUT_OF_RANGE
                        };
                        outcome.out_of_range += u64::from(flags != 0);
                        outcome.ingested += 1;
                        known.pending.insert(key.clone(), r.raw.to_bits());
                        keys.push(key);
                        let stored = Stored {
                            raw: r.raw,
                            value,
                            quality: r.quality,
                            status: r.status,
                            flags,
                            received_us: now_us,
                        };
                        blocks
                            .entry((r.meter, codec::bucket_start(r.time_us)))
                            .or_default()
                            .push((r.time_us, stored));
                    }
                }
            }
            for ((meter, _), mut block) in blocks {
                block.sort_by_key(|(t, _)| *t);
                ops.push(Op::Readings {
                    plant: p.id.clone(),
                    meter,
                    block,
                });
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if ops.is_empty() {
            count(plant, &outcome);
            let _ = tx.send(Ok(outcome));
            return Ok(rx);
        }
        let inner = self.inner.clone();
        let plant_label = p.id.to_string();
        let commit = Commit {
            ops,
            done: Some(Box::new(move |r| {
                if r.is_ok() {
                    count(&plant_label, &outcome);
                }
                let _ = tx.send(r.map(|()| outcome));
            })),
            applied: Some(Box::new(move |_| {
                // Applied (or failed): either way the ledger, not this set, now answers.
                let mut known = inner.known.lock().unwrap_or_else(|e| e.into_inner());
                for k in &keys {
                    known.pending.remove(k);
                }
            })),
            ..Commit::default()
        };
        if let Err(e) = self.inner.ledger.submit(commit) {
            return Err(e.into());
        }
        Ok(rx)
    }

    /// Each meter's newest source time submitted so far: (plant, meter, microseconds).
    pub fn latest_times(&self) -> Vec<(String, String, i64)> {
        let known = self.inner.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .latest
            .iter()
            .flat_map(|(p, ms)| ms.iter().map(move |(m, t)| (p, m, *t)))
            .filter(|(_, _, t)| *t > i64::MIN)
            .map(|(p, m, t)| (p.clone(), m.clone(), t))
            .collect()
    }

    /// Resolves when the ledger's state store is close enough behind its log to take
    /// another batch ([`UNAPPLIED_LIMIT`]).
    pub async fn ready(&self) {
        self.inner.ledger.apply_caught_up(UNAPPLIED_LIMIT).await;
        metrics::gauge!("heatmesh_ledger_unapplied_bytes")
            .set(self.inner.ledger.unapplied_bytes() as f64);
    }

    /// Validates, stores and waits until durable.
    pub async fn ingest(
        &self,
        plant: &str,
        readings: Vec<Reading>,
        now_us: i64,
    ) -> Result<Outcome, IngestError> {
        self.ready().await;
        let rx = self.submit(plant, readings, now_us)?;
        Ok(rx.await.map_err(|_| LedgerError::Closed)??)
    }

    /// One meter's readings with source timestamps in `[from_us, to_us)`, oldest first, at
    /// most `limit`; every batch acknowledged before the call is included.
    pub async fn query(
        &self,
        plant: &str,
        meter: &str,
        from_us: i64,
        to_us: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Stored)>, IngestError> {
        self.meter(plant, meter)?;
        self.inner.ledger.barrier().await?;
        self.inner
            .ledger
            .readings(plant, meter, from_us, to_us)
            .take(limit)
            .map(|r| r.map_err(IngestError::from))
            .collect()
    }
}

fn unknown_meter(plant: &str, p: &PlantMeters, meter: &str, field: &str) -> IngestError {
    let mut known: Vec<&str> = p.meters.keys().map(String::as_str).collect();
    known.sort_unstable();
    IngestError::NotFound(format!(
        "{field}: plant {plant} has no meter {meter:?}; known: {}",
        if known.is_empty() {
            "none (add [[plants.meters]] to the configuration)".to_string()
        } else {
            known.join(", ")
        }
    ))
}

fn count(plant: &str, o: &Outcome) {
    let label = [("plant", plant.to_string())];
    metrics::counter!("heatmesh_readings_ingested_total", &label).increment(o.ingested);
    metrics::counter!("heatmesh_readings_duplicate_total", &label)
        .increment(o.duplicates + o.conflicts);
    metrics::counter!("heatmesh_readings_conflict_total", &label).increment(o.conflicts);
    metrics::counter!("heatmesh_readings_out_of_range_total", &label).increment(o.out_of_range);
}

#[cfg(test)]
mod tests;
