//! ReadingService: readings in (IngestReadings), out (QueryReadings), and the meters they
//! belong to (ListMeters), their feeds (ListFeeds, SetFeedEnabled). Conversion and validation of the wire form happen here; the rules
//! on readings themselves are [`crate::readings`]'s.

use super::convert::ts;
use crate::config::Config;
use crate::feeds::FeedBoard;
use crate::ledger::{FeedSwitch, Ledger};
use crate::readings::{IngestError, Outcome, Readings};
use crate::scheduler::MasterMsg;
use crate::task::now_us;
use heatmesh_ingest::meter::SourceSpec;
use heatmesh_ingest::reading::Stored;
use heatmesh_mesh::wire::{micros, quality_to_proto, timestamp};
use heatmesh_proto::v1 as pb;
use pb::reading_service_server::ReadingService;
use ractor::ActorRef;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Most readings one QueryReadings answer carries.
const MAX_QUERY: usize = 100_000;
/// Batches of one stream on their way to the ledger at once; more wait, so a fast client
/// cannot queue unbounded memory.
const IN_FLIGHT: usize = 8;

/// The ReadingService.
#[derive(Clone)]
pub struct ReadingApi {
    readings: Readings,
    feeds: FeedBoard,
    config: Arc<Config>,
    /// The journal of feed switches (read side).
    ledger: Ledger,
    /// Where feed switches are made.
    master: ActorRef<MasterMsg>,
}

impl ReadingApi {
    /// The service over this readings path and feed board.
    pub fn new(
        readings: Readings,
        feeds: FeedBoard,
        config: Arc<Config>,
        ledger: Ledger,
        master: ActorRef<MasterMsg>,
    ) -> ReadingApi {
        ReadingApi {
            readings,
            feeds,
            config,
            ledger,
            master,
        }
    }
}

/// Longest reason kept with a feed switch.
const MAX_REASON: usize = 500;

fn switch_to_proto(plant: &str, meter: &str, s: &FeedSwitch) -> pb::FeedSwitch {
    pb::FeedSwitch {
        plant_id: plant.into(),
        meter: meter.into(),
        enabled: s.enabled,
        reason: s.reason.clone(),
        at: Some(timestamp(s.at_us)),
    }
}

impl ReadingApi {
    /// An optional `plant_id` filter: empty means every plant, anything else must exist.
    fn plant_filter<'a>(&self, want: &'a str) -> Result<Option<&'a str>, Status> {
        if want.is_empty() {
            return Ok(None);
        }
        if !self.config.plants.iter().any(|p| p.id == want) {
            return Err(Status::not_found(format!(
                "plant_id: no plant {want:?} in the fleet"
            )));
        }
        Ok(Some(want))
    }
}

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::NotFound(m) => Status::not_found(m),
            IngestError::Invalid(m) => Status::invalid_argument(m),
            IngestError::Ledger(e) => Status::unavailable(e.to_string()),
        }
    }
}

/// The wire readings of one message as [`heatmesh_ingest::Reading`]s; the error names the
/// reading.
pub fn from_proto(readings: Vec<pb::Reading>) -> Result<Vec<heatmesh_ingest::Reading>, Status> {
    heatmesh_mesh::wire::readings_from_proto(readings).map_err(Status::invalid_argument)
}

/// A stored reading as the API shows it.
pub fn stored_to_proto(time_us: i64, s: &Stored) -> pb::StoredReading {
    pb::StoredReading {
        source_time: Some(ts(time_us.max(0) as u64)),
        raw: s.raw,
        value: s.value,
        quality: quality_to_proto(s.quality) as i32,
        status_code: s.status,
        flags: s.flag_names().into_iter().map(String::from).collect(),
        received: Some(ts(s.received_us.max(0) as u64)),
    }
}

fn outcome_to_proto(o: Outcome) -> pb::IngestReadingsResponse {
    pb::IngestReadingsResponse {
        received: o.received,
        ingested: o.ingested,
        duplicates: o.duplicates,
        conflicts: o.conflicts,
        out_of_range: o.out_of_range,
    }
}

#[tonic::async_trait]
impl ReadingService for ReadingApi {
    async fn ingest_readings(
        &self,
        request: Request<Streaming<pb::IngestReadingsRequest>>,
    ) -> Result<Response<pb::IngestReadingsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut total = Outcome::default();
        let mut in_flight = std::collections::VecDeque::new();
        let mut message = 0usize;
        // The first refusal ends the stream, but only after what went before is durable,
        // so the answer can say exactly how much was ingested.
        let refusal = loop {
            let next = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            self.readings.ready().await;
            let submitted = from_proto(next.readings).and_then(|rs| {
                self.readings
                    .submit(&next.plant_id, rs, now_us() as i64)
                    .map_err(Status::from)
            });
            match submitted {
                Ok(rx) => in_flight.push_back(rx),
                Err(e) => {
                    break Some(Status::new(
                        e.code(),
                        format!("message {message}: {}", e.message()),
                    ));
                }
            }
            message += 1;
            while in_flight.len() >= IN_FLIGHT {
                let rx = in_flight.pop_front().expect("non-empty");
                total.add(durable(rx).await?);
            }
        };
        for rx in in_flight {
            total.add(durable(rx).await?);
        }
        match refusal {
            None => Ok(Response::new(outcome_to_proto(total))),
            Some(e) => Err(Status::new(
                e.code(),
                format!(
                    "{} ({} readings of the messages before it were ingested, {} already held)",
                    e.message(),
                    total.ingested,
                    total.duplicates + total.conflicts
                ),
            )),
        }
    }

    async fn query_readings(
        &self,
        request: Request<pb::QueryReadingsRequest>,
    ) -> Result<Response<pb::QueryReadingsResponse>, Status> {
        let q = request.into_inner();
        let from = q.from.as_ref().map_or(0, micros);
        let to = q.to.as_ref().map_or(now_us() as i64 + 1, micros);
        if to < from {
            return Err(Status::invalid_argument("to: must not be before from"));
        }
        let limit = match q.limit as usize {
            0 => 10_000,
            n if n > MAX_QUERY => {
                return Err(Status::invalid_argument(format!(
                    "limit: at most {MAX_QUERY}, got {n}"
                )));
            }
            n => n,
        };
        let unit = self.readings.meter(&q.plant_id, &q.meter)?.unit.clone();
        let rows = self
            .readings
            .query(&q.plant_id, &q.meter, from, to, limit + 1)
            .await?;
        let next_from = (rows.len() > limit).then(|| ts(rows[limit].0.max(0) as u64));
        Ok(Response::new(pb::QueryReadingsResponse {
            plant_id: q.plant_id,
            meter: q.meter,
            unit,
            readings: rows
                .iter()
                .take(limit)
                .map(|(t, s)| stored_to_proto(*t, s))
                .collect(),
            next_from,
        }))
    }

    async fn list_feeds(
        &self,
        request: Request<pb::ListFeedsRequest>,
    ) -> Result<Response<pb::ListFeedsResponse>, Status> {
        let want = request.into_inner().plant_id;
        let only = self.plant_filter(&want)?;
        let mut feeds: Vec<pb::MeterFeed> = self
            .feeds
            .list(only, now_us() as i64)
            .into_iter()
            .map(feed_to_proto)
            .collect();
        // The journal has the last word on switches: a meter disabled shows so even before
        // (or without) its node's next report.
        let switches = self
            .ledger
            .feed_switches()
            .map_err(|e| Status::unavailable(e.to_string()))?;
        for (plant, meter, s) in switches {
            if only.is_some_and(|p| p != plant) {
                continue;
            }
            let sw = switch_to_proto(&plant, &meter, &s);
            match feeds
                .iter_mut()
                .find(|f| f.plant_id == plant && f.meter == meter)
            {
                Some(f) => {
                    if !s.enabled {
                        f.state = "disabled".into();
                    }
                    f.switch = Some(sw);
                }
                None if !s.enabled => {
                    let source = self
                        .config
                        .plants
                        .iter()
                        .find(|p| p.id == plant)
                        .and_then(|p| p.feeds.meter(&meter))
                        .and_then(|m| m.source.clone())
                        .unwrap_or_default();
                    feeds.push(pb::MeterFeed {
                        plant_id: plant,
                        meter,
                        source,
                        state: "disabled".into(),
                        switch: Some(sw),
                        ..Default::default()
                    });
                }
                None => {}
            }
        }
        feeds.sort_by(|a, b| (&a.plant_id, &a.meter).cmp(&(&b.plant_id, &b.meter)));
        Ok(Response::new(pb::ListFeedsResponse { feeds }))
    }

    async fn set_feed_enabled(
        &self,
        request: Request<pb::SetFeedEnabledRequest>,
    ) -> Result<Response<pb::FeedSwitch>, Status> {
        let r = request.into_inner();
        if r.plant_id.is_empty() {
            return Err(Status::invalid_argument("plant_id: required"));
        }
        if r.meter.is_empty() {
            return Err(Status::invalid_argument("meter: required"));
        }
        let reason = r.reason.trim().to_string();
        if !r.enabled && reason.is_empty() {
            return Err(Status::invalid_argument(
                "reason: required to disable a meter (it is journaled for whoever finds it off)",
            ));
        }
        if reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "reason: at most {MAX_REASON} bytes of printable text"
            )));
        }
        let switch = FeedSwitch {
            enabled: r.enabled,
            reason,
            at_us: now_us() as i64,
        };
        let (plant, meter) = (r.plant_id, r.meter);
        let answer = ractor::call!(self.master, |reply| MasterMsg::SetFeed {
            plant: plant.clone(),
            meter: meter.clone(),
            switch,
            reply,
        })
        .map_err(|e| Status::unavailable(format!("master: {e}")))?
        .map_err(Status::from)?;
        Ok(Response::new(switch_to_proto(&plant, &meter, &answer)))
    }

    async fn list_meters(
        &self,
        request: Request<pb::ListMetersRequest>,
    ) -> Result<Response<pb::ListMetersResponse>, Status> {
        let want = request.into_inner().plant_id;
        let only = self.plant_filter(&want)?;
        let mut meters = Vec::new();
        for (plant, feeds) in self.config.plants.iter().map(|p| (&p.id, &p.feeds)) {
            if only.is_some_and(|w| w != plant) {
                continue;
            }
            for m in &feeds.meters {
                let source = m.source.as_deref().and_then(|s| feeds.source(s));
                let address = match (source, &m.node_id, &m.modbus) {
                    (Some(SourceSpec::Opcua(_)), Some(n), _) => n.clone(),
                    (Some(SourceSpec::Modbus(_)), _, Some(a)) => format!(
                        "unit {} {:?} register {} {:?} {:?}",
                        a.unit, a.table, a.register, a.kind, a.word_order
                    )
                    .to_lowercase(),
                    _ => String::new(),
                };
                let (has_range, [lo, hi]) = match m.range {
                    Some(r) => (true, r),
                    None => (false, [0.0, 0.0]),
                };
                meters.push(pb::Meter {
                    plant_id: plant.clone(),
                    id: m.id.clone(),
                    quantity: m.quantity.name().into(),
                    unit: m.unit.clone(),
                    source: m.source.clone().unwrap_or_default(),
                    source_kind: source.map_or("push", |s| s.kind()).into(),
                    address,
                    fuel: m.fuel.clone().unwrap_or_default(),
                    poll_ms: m.poll_ms,
                    has_range,
                    range_low: lo,
                    range_high: hi,
                });
            }
        }
        Ok(Response::new(pb::ListMetersResponse { meters }))
    }
}

fn feed_to_proto(f: crate::feeds::Feed) -> pb::MeterFeed {
    let mut m = heatmesh_mesh::wire::feed_to_proto(f.health, &f.node, f.reported_us);
    m.state = f.state;
    m
}

async fn durable(rx: crate::readings::Durable) -> Result<Outcome, Status> {
    match rx.await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(Status::unavailable(e.to_string())),
        Err(_) => Err(Status::unavailable("ledger is closed")),
    }
}
