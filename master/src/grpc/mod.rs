//! gRPC services: TaskService and MeshService here, OptimizationService in [`optimize`],
//! ReadingService in [`readings`].
//! Validation happens here, before anything reaches the master actor or the ledger.

pub mod codes;
pub mod convert;
pub mod optimize;
pub mod readings;

use crate::config::Config;
use crate::ledger::Ledger;
use crate::ledger::events::{FEED_QUEUE, Filter};
use crate::scheduler::{ApiError, MasterMsg, NewTask};
use crate::task::Status;
use convert::*;
use futures::Stream;
use heatmesh_agents::fault::Fault;
use heatmesh_agents::registry;
use heatmesh_proto::v1 as pb;
use pb::mesh_service_server::MeshService;
use pb::task_service_server::TaskService;
use ractor::{ActorRef, RpcReplyPort};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status as GrpcStatus};

/// Longest deadline a task may ask for.
const MAX_DEADLINE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most records one ListTasks page may scan, so a sparse filter cannot stall the server.
const MAX_SCAN: usize = 200_000;

/// What the services need: the master actor, the ledger for reads, the configuration.
#[derive(Clone)]
pub struct Api {
    /// The master actor.
    pub master: ActorRef<MasterMsg>,
    /// Read side of the ledger.
    pub ledger: Ledger,
    /// Validated configuration.
    pub config: Arc<Config>,
}

/// How long a refused client should wait before trying again (`grpc-retry-pushback-ms`).
const RETRY_PUSHBACK_MS: u64 = 100;

impl Api {
    /// Refuses new work while the ledger's commit queue is at its limit, so overload turns
    /// into quick refusals with a retry hint, not into memory growth and timeouts. Changes
    /// to tasks already accepted are never refused.
    fn shed_when_overloaded(&self) -> Result<(), GrpcStatus> {
        let (queued, limit) = (
            self.ledger.queued_commits(),
            self.config.limits.max_commit_queue,
        );
        if queued < limit {
            return Ok(());
        }
        metrics::counter!("heatmesh_submits_shed_total").increment(1);
        let mut s = GrpcStatus::resource_exhausted(format!(
            "ledger: {queued} commits are waiting for the log (limit limits.max_commit_queue = {limit}); nothing was accepted, retry in {RETRY_PUSHBACK_MS} ms"
        ));
        s.metadata_mut().insert(
            "grpc-retry-pushback-ms",
            RETRY_PUSHBACK_MS
                .to_string()
                .parse()
                .expect("digits are valid metadata"),
        );
        Err(s)
    }
}

impl From<ApiError> for GrpcStatus {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(m) => GrpcStatus::not_found(m),
            ApiError::FailedPrecondition(m) => GrpcStatus::failed_precondition(m),
            ApiError::Conflict(m) => GrpcStatus::already_exists(m),
            ApiError::Ledger(e @ crate::ledger::LedgerError::DiskFull(_)) => {
                GrpcStatus::resource_exhausted(format!("{e}; nothing was accepted"))
            }
            ApiError::Ledger(e) => GrpcStatus::unavailable(e.to_string()),
        }
    }
}

impl Api {
    async fn call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> MasterMsg,
    ) -> Result<T, GrpcStatus> {
        ractor::call!(self.master, msg).map_err(|e| GrpcStatus::unavailable(format!("master: {e}")))
    }

    /// The task as of every change made so far (waits for queued ledger writes).
    async fn current(&self, id: u64) -> Result<Option<crate::task::TaskRecord>, GrpcStatus> {
        let unavailable = |e: crate::ledger::LedgerError| GrpcStatus::unavailable(e.to_string());
        self.ledger.barrier().await.map_err(unavailable)?;
        self.ledger.get(id).map_err(unavailable)
    }

    /// Validates a submit request and turns it into a [`NewTask`].
    pub fn validate_submit(&self, req: pb::SubmitTaskRequest) -> Result<NewTask, GrpcStatus> {
        let limits = &self.config.limits;
        if req.plant_id.trim().is_empty() {
            return Err(GrpcStatus::invalid_argument("plant_id: required"));
        }
        let plant = self
            .config
            .plants
            .iter()
            .find(|p| p.id == req.plant_id)
            .ok_or_else(|| {
                let known: Vec<&str> = self.config.plants.iter().map(|p| p.id.as_str()).collect();
                GrpcStatus::not_found(format!(
                    "plant_id: no plant {} in the fleet; known: {}",
                    shown(&req.plant_id),
                    known.join(", ")
                ))
            })?;
        if let Some(p) = &req.payload {
            let size = prost::Message::encoded_len(p);
            if size > limits.max_payload_bytes {
                return Err(GrpcStatus::invalid_argument(format!(
                    "payload: encoded size {size} bytes exceeds the limit of {} bytes",
                    limits.max_payload_bytes
                )));
            }
        }
        let priority = priority_from_proto(req.priority)?;
        if req.idempotency_key.len() > limits.max_idempotency_key_bytes {
            return Err(GrpcStatus::invalid_argument(format!(
                "idempotency_key: {} bytes exceeds the limit of {} bytes",
                req.idempotency_key.len(),
                limits.max_idempotency_key_bytes
            )));
        }
        let deadline = match req.deadline {
            None => None,
            Some(d) => {
                let d = checked_duration("deadline", d)?;
                if d.is_zero() || d > MAX_DEADLINE {
                    return Err(GrpcStatus::invalid_argument(format!(
                        "deadline: must be > 0 and at most {} days, got {d:?}",
                        MAX_DEADLINE.as_secs() / 86_400
                    )));
                }
                Some(d)
            }
        };
        if req.max_attempts > 100 {
            return Err(GrpcStatus::invalid_argument(format!(
                "max_attempts: must be within [1, 100] (0 uses the default {}), got {}",
                self.config.scheduler.max_attempts, req.max_attempts
            )));
        }
        let decoded = decode_payload(req.payload)?;
        let kind = registry::lookup(&decoded.kind).ok_or_else(|| {
            let known: Vec<&str> = registry::KINDS.iter().map(|k| k.id).collect();
            GrpcStatus::not_found(format!(
                "payload: unknown agent kind {:?}; known: {}",
                decoded.kind,
                known.join(", ")
            ))
        })?;
        if !plant.agents.iter().any(|a| a == kind.id) {
            return Err(GrpcStatus::not_found(format!(
                "payload: plant {} runs no {} agent; it runs {}",
                plant.id,
                kind.id,
                plant.agents.join(", ")
            )));
        }
        let mut json: serde_json::Value = serde_json::from_slice(&decoded.json).map_err(|e| {
            GrpcStatus::invalid_argument(format!("{}: not valid JSON: {e}", decoded.field))
        })?;
        (kind.plant_defaults)(&mut json, plant);
        let payload = json.to_string();
        (kind.validate_json)(payload.as_bytes()).map_err(|e| {
            let msg = match &e {
                heatmesh_agents::calc::CalcError::Invalid { field, rule } if field == "payload" => {
                    format!("{}: {rule}", decoded.field)
                }
                heatmesh_agents::calc::CalcError::Invalid { .. } => {
                    format!("{}.{e}", decoded.field)
                }
                _ => format!("{}: {e}", decoded.field),
            };
            GrpcStatus::invalid_argument(msg)
        })?;
        Ok(NewTask {
            plant_id: plant.id.clone(),
            agent_kind: kind.id.to_string(),
            payload,
            priority,
            idempotency_key: Some(req.idempotency_key).filter(|k| !k.is_empty()),
            deadline,
            max_attempts: Some(req.max_attempts).filter(|&n| n > 0),
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl TaskService for Api {
    async fn submit_task(
        &self,
        req: Request<pb::SubmitTaskRequest>,
    ) -> Result<Response<pb::SubmitTaskResponse>, GrpcStatus> {
        let task = self.validate_submit(req.into_inner())?;
        self.shed_when_overloaded()?;
        let s = self.call(|r| MasterMsg::Submit(task, r)).await??;
        Ok(Response::new(pb::SubmitTaskResponse {
            task: Some(task_to_proto(&s.task, vec![])),
            duplicate: s.duplicate,
        }))
    }

    async fn get_task(
        &self,
        req: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, GrpcStatus> {
        let id = parse_id("id", &req.get_ref().id)?;
        let rec = self
            .current(id)
            .await?
            .ok_or_else(|| GrpcStatus::not_found(format!("task {id} not found")))?;
        let history = self
            .ledger
            .history(id)
            .map_err(|e| GrpcStatus::unavailable(e.to_string()))?;
        Ok(Response::new(task_to_proto(&rec, history)))
    }

    type WatchTaskStream = BoxStream<pb::Task>;

    async fn watch_task(
        &self,
        req: Request<pb::GetTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, GrpcStatus> {
        let id = parse_id("id", &req.get_ref().id)?;
        // Subscribe before reading, so no change between the read and the feed is missed.
        let mut events = self.ledger.watch(id);
        let first = self
            .current(id)
            .await?
            .ok_or_else(|| GrpcStatus::not_found(format!("task {id} not found")))?;
        let ledger = self.ledger.clone();
        let stream = async_stream(move |tx| async move {
            let mut last_seq = first.seq;
            let done = first.status.is_terminal();
            if tx.send(Ok(task_to_proto(&first, vec![]))).await.is_err() || done {
                return;
            }
            loop {
                let rec = match events.recv().await {
                    Some(rec) => (*rec).clone(),
                    None if events.lagged() => {
                        // Cut off for not keeping up: resubscribe, then read what was missed
                        // once everything published so far is in the ledger's state.
                        events = ledger.watch(id);
                        if ledger.barrier().await.is_err() {
                            return;
                        }
                        match ledger.get(id) {
                            Ok(Some(rec)) => rec,
                            _ => return,
                        }
                    }
                    None => return,
                };
                if rec.seq <= last_seq {
                    continue;
                }
                last_seq = rec.seq;
                let done = rec.status.is_terminal();
                if tx.send(Ok(task_to_proto(&rec, vec![]))).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, GrpcStatus> {
        let req = req.into_inner();
        let statuses: Vec<Status> = req
            .status
            .iter()
            .map(|s| status_from_proto(*s))
            .collect::<Result<_, _>>()?;
        if req.page_size > 1000 {
            return Err(GrpcStatus::invalid_argument(format!(
                "page_size: must be at most 1000, got {}",
                req.page_size
            )));
        }
        let size = if req.page_size == 0 {
            100
        } else {
            req.page_size as usize
        };
        let before = if req.page_token.is_empty() {
            None
        } else {
            Some(parse_id("page_token", &req.page_token)?)
        };
        let kind = if req.agent_kind.is_empty() {
            None
        } else {
            Some(registry::canonical_id(&req.agent_kind))
        };
        // Every task acknowledged before this call is in the state the scan reads.
        self.ledger
            .barrier()
            .await
            .map_err(|e| GrpcStatus::unavailable(e.to_string()))?;
        let mut tasks = Vec::new();
        let mut last = None;
        let mut more = false;
        for (scanned, r) in self.ledger.scan_newest_first(before).enumerate() {
            let rec = r.map_err(|e| GrpcStatus::unavailable(e.to_string()))?;
            if tasks.len() == size || scanned >= MAX_SCAN {
                more = true;
                break;
            }
            last = Some(rec.id);
            if (statuses.is_empty() || statuses.contains(&rec.status))
                && (req.plant_id.is_empty() || req.plant_id == rec.plant_id)
                && kind.as_ref().is_none_or(|k| k == &rec.agent_kind)
            {
                tasks.push(task_to_proto(&rec, vec![]));
            }
        }
        Ok(Response::new(pb::ListTasksResponse {
            tasks,
            next_page_token: if more {
                last.map(|id| id.to_string()).unwrap_or_default()
            } else {
                String::new()
            },
        }))
    }

    async fn cancel_task(
        &self,
        req: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::Task>, GrpcStatus> {
        let req = req.into_inner();
        let id = parse_id("id", &req.id)?;
        let rec = self
            .call(|r| MasterMsg::Cancel(id, req.reason, r))
            .await??;
        Ok(Response::new(task_to_proto(&rec, vec![])))
    }

    async fn retry_failed(
        &self,
        req: Request<pb::RetryFailedRequest>,
    ) -> Result<Response<pb::BulkResponse>, GrpcStatus> {
        let req = req.into_inner();
        let plant = Some(req.plant_id).filter(|p| !p.is_empty());
        let kind = Some(req.agent_kind)
            .filter(|k| !k.is_empty())
            .map(|k| registry::canonical_id(&k));
        let ids = self
            .call(|r| MasterMsg::RetryFailed(plant, kind, r))
            .await??;
        Ok(Response::new(bulk(ids)))
    }

    async fn clear_orphaned(
        &self,
        req: Request<pb::ClearOrphanedRequest>,
    ) -> Result<Response<pb::BulkResponse>, GrpcStatus> {
        let older = req
            .into_inner()
            .older_than
            .ok_or_else(|| GrpcStatus::invalid_argument("older_than: required (e.g. 3600s)"))?;
        let older = Duration::try_from(older)
            .map_err(|_| GrpcStatus::invalid_argument("older_than: must be >= 0"))?;
        let ids = self.call(|r| MasterMsg::ClearOrphaned(older, r)).await??;
        Ok(Response::new(bulk(ids)))
    }

    async fn rebalance_tasks(
        &self,
        _: Request<pb::RebalanceTasksRequest>,
    ) -> Result<Response<pb::RebalanceTasksResponse>, GrpcStatus> {
        let moves = self.call(MasterMsg::Rebalance).await??;
        Ok(Response::new(pb::RebalanceTasksResponse { moves }))
    }

    type StreamEventsStream = BoxStream<pb::TaskEvent>;

    async fn stream_events(
        &self,
        req: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, GrpcStatus> {
        let filter = Filter {
            terminal_only: req.get_ref().terminal_only,
        };
        let resume = req.get_ref().resume_after_seq;
        // Subscribe before reading the ledger, so no change between the two is missed.
        let mut events = self.ledger.feed(filter);
        let ledger = self.ledger.clone();
        let stream = async_stream(move |tx| async move {
            // Resuming: the last change sent; live ones up to it came from the ledger already.
            let mut last = 0;
            if let Some(after) = resume {
                match replay(&ledger, after, filter, &tx).await {
                    Some(l) => last = l,
                    None => return,
                }
            }
            loop {
                match events.recv().await {
                    Some(rec) => {
                        if resume.is_some() {
                            if rec.seq <= last {
                                continue;
                            }
                            last = rec.seq;
                        }
                        if tx.send(Ok(event_to_proto(&rec))).await.is_err() {
                            return;
                        }
                    }
                    // Cut off for not keeping up: resubscribe, then read what was missed from
                    // the ledger, so a slow reader misses nothing and holds no memory.
                    None if events.lagged() && resume.is_some() => {
                        events = ledger.feed(filter);
                        match replay(&ledger, last, filter, &tx).await {
                            Some(l) => last = l,
                            None => return,
                        }
                    }
                    None if events.lagged() => {
                        let msg = format!(
                            "event feed lagged: this subscriber fell more than {FEED_QUEUE} events behind; call again with resume_after_seq set to the last seq received to miss nothing"
                        );
                        let _ = tx.send(Err(GrpcStatus::data_loss(msg))).await;
                        return;
                    }
                    None => return,
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// Sends every change after `after` that `filter` passes, from the ledger in sequence
/// order, once everything published so far is applied. Returns the last sequence number
/// read (at least `after`), or None once the receiver is gone or the ledger fails (after
/// telling the receiver).
async fn replay(
    ledger: &crate::ledger::Ledger,
    mut after: u64,
    filter: Filter,
    tx: &tokio::sync::mpsc::Sender<Result<pb::TaskEvent, GrpcStatus>>,
) -> Option<u64> {
    const PAGE: usize = 1024;
    let failed = |e: crate::ledger::LedgerError| GrpcStatus::unavailable(format!("resume: {e}"));
    if let Err(e) = ledger.barrier().await {
        let _ = tx.send(Err(failed(e))).await;
        return None;
    }
    match ledger.compacted_through() {
        Ok(gone) if after < gone => {
            let msg = format!(
                "resume_after_seq: {after} is before seq {gone}, the last change retention removed (see [retention] tasks); read the current state with ListTasks and resume from a later seq"
            );
            let _ = tx.send(Err(GrpcStatus::out_of_range(msg))).await;
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            let _ = tx.send(Err(failed(e))).await;
            return None;
        }
    }
    loop {
        let page = match ledger.changes_after(after, PAGE) {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(failed(e))).await;
                return None;
            }
        };
        let full = page.len() >= PAGE;
        for (seq, entry, rec) in page {
            after = seq;
            if filter.terminal_only && !entry.to.is_terminal() {
                continue;
            }
            let ev = pb::TaskEvent {
                task_id: rec.id.to_string(),
                plant_id: rec.plant_id,
                agent_kind: rec.agent_kind,
                status: status_to_proto(entry.to) as i32,
                attempt: entry.attempt,
                seq,
                at: Some(convert::ts(entry.at_us)),
                created_at: Some(convert::ts(rec.created_us)),
            };
            if tx.send(Ok(ev)).await.is_err() {
                return None;
            }
        }
        if !full {
            return Some(after);
        }
    }
}

fn bulk(ids: Vec<u64>) -> pb::BulkResponse {
    pb::BulkResponse {
        affected: ids.len() as u32,
        task_ids: ids.iter().map(|i| i.to_string()).collect(),
    }
}

/// Runs `f` as a task feeding a bounded channel, and returns the channel as a stream.
fn async_stream<T, F, Fut>(f: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, GrpcStatus>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    stream_bounded(1024, f)
}

/// [`async_stream`] with `cap` items in flight at most (large items: a slow reader holds
/// back the producer instead of the master's memory).
fn stream_bounded<T, F, Fut>(cap: usize, f: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, GrpcStatus>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(cap);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl MeshService for Api {
    async fn list_plants(
        &self,
        _: Request<pb::ListPlantsRequest>,
    ) -> Result<Response<pb::ListPlantsResponse>, GrpcStatus> {
        let snap = self.call(MasterMsg::Snapshot).await?;
        let plants = snap
            .plants
            .into_iter()
            .map(|p| pb::Plant {
                id: p.spec.id,
                name: p.spec.name,
                units: p.spec.units,
                agent_kinds: p.spec.agents,
                closure_threshold_pct: p.spec.balance_threshold_pct,
                node: p.node,
                epoch: p.epoch,
                status: p.status.as_str().into(),
                queued_tasks: p.queued,
                in_flight_tasks: p.in_flight,
            })
            .collect();
        Ok(Response::new(pb::ListPlantsResponse { plants }))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, GrpcStatus> {
        let req = req.into_inner();
        if !req.status.is_empty()
            && !["running", "restarting", "failed"].contains(&req.status.as_str())
        {
            return Err(GrpcStatus::invalid_argument(format!(
                "status: must be running, restarting or failed, got {:?}",
                req.status
            )));
        }
        let kind = Some(req.kind)
            .filter(|k| !k.is_empty())
            .map(|k| registry::canonical_id(&k));
        let snap = self.call(MasterMsg::Snapshot).await?;
        let node_of = |id: &str| snap.nodes.iter().find(|n| n.id == id);
        let agents = snap
            .agents
            .iter()
            .filter(|a| req.plant_id.is_empty() || a.plant == req.plant_id)
            .filter(|a| kind.as_ref().is_none_or(|k| k == &a.kind))
            .filter(|a| req.status.is_empty() || a.status.as_str() == req.status)
            .cloned()
            .map(|a| pb::Agent {
                node_status: match node_of(&a.node) {
                    Some(n) if n.connected => "connected",
                    _ => "disconnected",
                }
                .into(),
                node_last_heartbeat: node_of(&a.node).map(|n| ts(n.last_heartbeat_us)),
                name: format!("{}/{}", a.plant, a.kind),
                plant_id: a.plant,
                kind: a.kind,
                status: a.status.as_str().into(),
                restarts: a.restarts,
                version: env!("CARGO_PKG_VERSION").into(),
                node: a.node,
                epoch: a.epoch,
                tasks_completed: a.completed,
                last_change: Some(ts(a.last_change_us)),
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, GrpcStatus> {
        let snap = self.call(MasterMsg::Snapshot).await?;
        let nodes = snap
            .nodes
            .into_iter()
            .map(|n| pb::Node {
                id: n.id,
                address: n.address,
                status: if n.connected {
                    "connected"
                } else {
                    "disconnected"
                }
                .into(),
                plants: n.plants,
                epoch: n.node_epoch,
                last_heartbeat: Some(ts(n.last_heartbeat_us)),
                preferred_plants: n.preferred,
                lost_reason: n.lost_reason.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn inject_fault(
        &self,
        req: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, GrpcStatus> {
        let req = req.into_inner();
        let kind = registry::lookup(&req.kind).ok_or_else(|| {
            GrpcStatus::not_found(format!("kind: unknown agent kind {:?}", req.kind))
        })?;
        let fault = Fault {
            panic_next: req.panic_next,
            delay: Duration::from_millis(req.delay_ms as u64),
        };
        self.call(|r| MasterMsg::InjectFault(req.plant_id, kind.id.to_string(), fault, r))
            .await??;
        Ok(Response::new(pb::InjectFaultResponse {}))
    }

    type BackupStream = BoxStream<pb::BackupChunk>;

    async fn backup(
        &self,
        _: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, GrpcStatus> {
        // Everything acknowledged before this call is applied once the barrier resolves.
        self.ledger
            .barrier()
            .await
            .map_err(|e| GrpcStatus::unavailable(format!("backup: {e}")))?;
        let (ledger, dir) = (self.ledger.clone(), self.config.data_dir.clone());
        let started = std::time::Instant::now();
        let (file, info) = tokio::task::spawn_blocking(move || ledger.write_backup_file(&dir))
            .await
            .map_err(|e| GrpcStatus::internal(format!("backup: {e}")))?
            .map_err(|e| GrpcStatus::unavailable(format!("backup: {e}")))?;
        tracing::info!(
            lsn = info.lsn,
            entries = info.entries,
            tasks = info.tasks,
            bytes = info.bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "backup written; sending it"
        );
        // Four 1 MiB chunks in flight at most, whatever the client's pace.
        let stream = stream_bounded(4, move |tx| async move {
            use tokio::io::AsyncReadExt;
            // `file` lives until the last chunk is sent, then the partial file goes.
            let mut f = match tokio::fs::File::open(file.path()).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx
                        .send(Err(GrpcStatus::internal(format!("backup: {e}"))))
                        .await;
                    return;
                }
            };
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match f.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        let chunk = pb::BackupChunk {
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(GrpcStatus::internal(format!("backup: {e}"))))
                            .await;
                        break;
                    }
                }
            }
            drop(file);
        });
        Ok(Response::new(stream))
    }
}
