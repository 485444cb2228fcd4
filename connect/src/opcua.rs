//! OPC UA: the client connector for one source, and [`Device`], the server side the plant
//! simulator runs.
//!
//! The connector opens one session per source (security policy None, or Basic256Sha256 with
//! the node's client certificate) and either subscribes to every meter's node, sampled at the
//! meter's `poll_ms` (`mode = "subscribe"`, the default), or reads them each `poll_ms`
//! (`mode = "poll"`). A reading carries the server's source timestamp (its server timestamp,
//! or the node's clock, where the server gives none) and its status code; a value whose
//! timestamp did not move since the last one is the same sample and is not taken again. A lost
//! connection, a failed keep-alive or a session that cannot be opened marks the source down
//! with the cause; the connector then opens a fresh session after a jittered backoff (the
//! library's own reconnect is switched off so that every outage is seen and timed here).

use crate::feeds::{Cause, Health, Store, put, take_due};
use futures::StreamExt;
use heatmesh_base::Backoff;
use heatmesh_ingest::meter::{Identifier, OpcuaMode, OpcuaSource, SecurityMode, SecurityPolicy};
use heatmesh_ingest::{MeterSpec, Quality, Reading};
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, Session, SessionPollResult};
use opcua::types::{
    AttributeId, ByteString, DataChangeFilter, DataChangeTrigger, DataValue, DateTime,
    DeadbandType, ExtensionObject, Guid, MessageSecurityMode, MonitoredItemCreateRequest,
    MonitoringMode, MonitoringParameters, NodeId, ReadValueId, StatusCode, TimestampsToReturn,
    Variant,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// The application URI the node's OPC UA client announces; a client certificate for
/// Basic256Sha256 names it in its subject alternative name.
pub const CLIENT_APPLICATION_URI: &str = "urn:heatmesh:node";

/// The OPC UA node id of a configured one.
pub fn node_id(n: &heatmesh_ingest::meter::NodeId) -> NodeId {
    match &n.identifier {
        Identifier::Numeric(i) => NodeId::new(n.namespace, *i),
        Identifier::String(s) => NodeId::new(n.namespace, s.clone()),
        Identifier::Guid(g) => match Guid::from_str(g) {
            Ok(g) => NodeId::new(n.namespace, g),
            // Validated at start: the text is 8-4-4-4-12 hex digits.
            Err(_) => NodeId::null(),
        },
        Identifier::Opaque(b) => {
            NodeId::new(n.namespace, ByteString::from_base64(b).unwrap_or_default())
        }
    }
}

/// Reads one source's meters until the task is aborted. `pki` is the client's certificate
/// store (the servers' certificates it has seen).
pub async fn run(
    plant: String,
    source: OpcuaSource,
    meters: Vec<MeterSpec>,
    store: Store,
    health: Health,
    pki: PathBuf,
) {
    let mut backoff = Backoff::named(
        Duration::from_millis(100),
        Duration::from_millis(source.reconnect_max_ms),
        &format!("{plant}/{}", source.id),
    );
    let mut c = Conn {
        plant,
        source,
        ids: meters
            .iter()
            .map(|m| {
                let text = m.node_id.as_deref().unwrap_or_default();
                // Validated at start: an opcua meter has a node id that parses.
                heatmesh_ingest::meter::NodeId::parse(text)
                    .map_or_else(|_| NodeId::null(), |n| node_id(&n))
            })
            .collect(),
        last_us: vec![i64::MIN; meters.len()],
        meters,
        store,
        health,
        pki,
    };
    loop {
        let cause = c.session(&mut backoff).await;
        c.health
            .source_down(&c.plant, &c.source.id, &c.meters, cause);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

struct Conn {
    plant: String,
    source: OpcuaSource,
    meters: Vec<MeterSpec>,
    ids: Vec<NodeId>,
    /// Per meter, the source time of the last sample taken.
    last_us: Vec<i64>,
    store: Store,
    health: Health,
    pki: PathBuf,
}

/// What the session's event loop reports to the connector.
enum Event {
    Up,
    Lost(StatusCode),
}

/// Aborts a task when dropped: a session's event loop ends with its connector's attempt.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Conn {
    /// One session, from opening to loss; returns why it ended.
    async fn session(&mut self, backoff: &mut Backoff) -> Cause {
        let wait = Duration::from_millis(self.source.timeout_ms);
        let mut client = match client(&self.source, &self.meters, &self.pki) {
            Ok(c) => c,
            Err(e) => return Cause::Refused(e),
        };
        let (policy, mode) = security(&self.source);
        let endpoint = (self.source.endpoint.as_str(), policy, mode);
        let (session, event_loop) = match timeout(
            wait,
            client.connect_to_matching_endpoint(endpoint, IdentityToken::Anonymous),
        )
        .await
        {
            Err(_) => return Cause::Timeout,
            Ok(Err(e)) => return Cause::Refused(format!("{}: {e}", self.source.endpoint)),
            Ok(Ok(s)) => s,
        };
        let (events, mut event_rx) = mpsc::unbounded_channel();
        let driver = AbortOnDrop(tokio::spawn(async move {
            let stream = event_loop.enter();
            tokio::pin!(stream);
            let lost = loop {
                match stream.next().await {
                    Some(Ok(SessionPollResult::Reconnected(_))) => {
                        let _ = events.send(Event::Up);
                    }
                    Some(Ok(SessionPollResult::ConnectionLost(code))) | Some(Err(code)) => {
                        break code;
                    }
                    Some(Ok(_)) => {}
                    None => break StatusCode::BadConnectionClosed,
                }
            };
            let _ = events.send(Event::Lost(lost));
        }));
        match timeout(wait, event_rx.recv()).await {
            Ok(Some(Event::Up)) => {}
            Ok(Some(Event::Lost(code))) => return status_cause(code),
            Ok(None) => return Cause::Refused("the session ended before it opened".into()),
            Err(_) => return Cause::Timeout,
        }
        backoff.reset();
        self.health.source_up(&self.plant, &self.source.id);
        let (values, mut value_rx) = mpsc::unbounded_channel();
        let read = match self.source.mode {
            OpcuaMode::Subscribe => match self.subscribe(&session, values, wait).await {
                Ok(()) => None,
                Err(cause) => return cause,
            },
            OpcuaMode::Poll => Some(values),
        };
        let mut due: Vec<Instant> = vec![Instant::now(); self.meters.len()];
        loop {
            let next = *due.iter().min().expect("a source has meters");
            tokio::select! {
                ev = event_rx.recv() => {
                    return match ev {
                        Some(Event::Lost(code)) => status_cause(code),
                        _ => Cause::Refused("the session ended".into()),
                    };
                }
                Some(first) = value_rx.recv() => {
                    let mut batch = vec![first];
                    while let Ok(v) = value_rx.try_recv() {
                        batch.push(v);
                    }
                    if self.store.is_full() {
                        // A subscription cannot be held from the client side: the session
                        // ends, so the server stops sending; what arrived is kept and written
                        // once there is room, and a new session starts after.
                        drop(driver);
                        tracing::error!(plant = %self.plant, source = %self.source.id, "the reading buffer is full; reading stops until the master confirms buffered readings");
                        self.health.buffer_full(&self.plant, &self.source.id, true);
                        self.health.source_down(&self.plant, &self.source.id, &self.meters, Cause::BufferFull);
                        self.store.room().await;
                        self.health.buffer_full(&self.plant, &self.source.id, false);
                        self.take(batch).await;
                        return Cause::BufferFull;
                    }
                    self.take(batch).await;
                }
                _ = tokio::time::sleep_until(next), if read.is_some() => {
                    let now = Instant::now();
                    let which = take_due(&mut due, &self.meters, now);
                    let nodes: Vec<ReadValueId> = which.iter().map(|&i| value_of(&self.ids[i])).collect();
                    match timeout(wait, session.read(&nodes, TimestampsToReturn::Both, 0.0)).await {
                        Err(_) => return Cause::Timeout,
                        Ok(Err(e)) => return Cause::BadStatus(e.to_string()),
                        Ok(Ok(dvs)) => {
                            let tx = read.as_ref().expect("poll mode");
                            for (i, dv) in which.into_iter().zip(dvs) {
                                let _ = tx.send((i, dv));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Creates one subscription with a monitored item per meter, reporting on every new
    /// sample (status, value or timestamp), into `values` as (meter index, value).
    async fn subscribe(
        &self,
        session: &Arc<Session>,
        values: mpsc::UnboundedSender<(usize, DataValue)>,
        wait: Duration,
    ) -> Result<(), Cause> {
        let index: HashMap<NodeId, usize> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let fastest = self.meters.iter().map(|m| m.poll_ms).min().unwrap_or(1_000);
        let callback = DataChangeCallback::new(move |dv, item| {
            if let Some(&i) = index.get(&item.item_to_monitor().node_id) {
                let _ = values.send((i, dv));
            }
        });
        let sub = timeout(
            wait,
            session.create_subscription(
                Duration::from_millis(fastest),
                // Lifetime and keep-alive in publishing intervals: the server keeps the
                // subscription for 60 silent intervals and says it is alive every 10.
                60,
                10,
                0,
                0,
                true,
                callback,
            ),
        )
        .await
        .map_err(|_| Cause::Timeout)?
        .map_err(|e| Cause::BadStatus(format!("creating the subscription: {e}")))?;
        let items = self
            .meters
            .iter()
            .zip(&self.ids)
            .map(|(m, id)| MonitoredItemCreateRequest {
                item_to_monitor: value_of(id),
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    sampling_interval: m.poll_ms as f64,
                    // A sample the server took between two publishes is kept, not replaced.
                    queue_size: 16,
                    discard_oldest: true,
                    filter: ExtensionObject::from_message(DataChangeFilter {
                        trigger: DataChangeTrigger::StatusValueTimestamp,
                        deadband_type: DeadbandType::None as u32,
                        deadband_value: 0.0,
                    }),
                    ..Default::default()
                },
            })
            .collect();
        let created = timeout(
            wait,
            session.create_monitored_items(sub, TimestampsToReturn::Both, items),
        )
        .await
        .map_err(|_| Cause::Timeout)?
        .map_err(|e| Cause::BadStatus(format!("creating monitored items: {e}")))?;
        for (m, c) in self.meters.iter().zip(created) {
            if !c.result.status_code.is_good() {
                self.health.meter_error(
                    &self.plant,
                    &m.id,
                    Cause::BadStatus(format!(
                        "node {}: {}",
                        m.node_id
                            .as_ref()
                            .map(|n| n.to_string())
                            .unwrap_or_default(),
                        c.result.status_code
                    )),
                );
            }
        }
        Ok(())
    }

    /// Turns samples into readings and writes them to the store as one batch.
    async fn take(&mut self, batch: Vec<(usize, DataValue)>) {
        let mut readings = Vec::new();
        for (i, dv) in batch {
            let m = &self.meters[i];
            match reading(m, &dv, &mut self.last_us[i]) {
                Ok(Some(r)) => {
                    self.health.reading(&self.plant, m, &r);
                    if r.quality == Quality::Bad {
                        // Kept, with its status, for the record; but the feed says why the
                        // value is not to be used.
                        let status = StatusCode::from(r.status);
                        self.health.meter_error(
                            &self.plant,
                            &m.id,
                            Cause::BadStatus(status.to_string()),
                        );
                    }
                    readings.push(r);
                }
                Ok(None) => {}
                Err(cause) => self.health.meter_error(&self.plant, &m.id, cause),
            }
        }
        if !readings.is_empty() {
            put(
                &self.store,
                &self.health,
                &self.plant,
                &self.source.id,
                readings,
            )
            .await;
        }
    }
}

fn value_of(id: &NodeId) -> ReadValueId {
    ReadValueId {
        node_id: id.clone(),
        attribute_id: AttributeId::Value as u32,
        ..Default::default()
    }
}

fn security(s: &OpcuaSource) -> (&'static str, MessageSecurityMode) {
    let policy = match s.security_policy {
        SecurityPolicy::None => opcua::crypto::SecurityPolicy::None,
        SecurityPolicy::Basic256Sha256 => opcua::crypto::SecurityPolicy::Basic256Sha256,
    };
    let mode = match s.security_mode {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    };
    (policy.to_str(), mode)
}

/// The client for one source: its certificate (when secured), its timeouts, no reconnect of
/// its own.
fn client(
    s: &OpcuaSource,
    meters: &[MeterSpec],
    pki: &Path,
) -> Result<opcua::client::Client, String> {
    let fastest = meters.iter().map(|m| m.poll_ms).min().unwrap_or(1_000);
    let mut b = ClientBuilder::new()
        .application_name("heatmesh node")
        .application_uri(CLIENT_APPLICATION_URI)
        .product_uri(CLIENT_APPLICATION_URI)
        .pki_dir(pki)
        // Without security the certificate is unused, but the stack looks for one at every
        // session and logs an error when it is missing: a self-signed one is made once and
        // kept in the PKI folder.
        .create_sample_keypair(s.security_policy == SecurityPolicy::None)
        // A server's certificate is taken on first contact and kept in the PKI folder; the
        // channel is still signed and encrypted with it.
        .trust_server_certs(true)
        .session_retry_limit(0)
        .request_timeout(Duration::from_millis(s.timeout_ms))
        // A hung server (no FIN, no answers) is found by the keep-alive: one failed read of
        // the server state, at most every poll interval, drops the session.
        .keep_alive_interval(Duration::from_millis(fastest.clamp(100, 5_000)))
        .max_failed_keep_alive_count(1)
        .session_timeout(60_000);
    if s.security_policy != SecurityPolicy::None {
        let file = |what: &str, p: &Option<PathBuf>| -> Result<PathBuf, String> {
            let p = p.as_ref().ok_or_else(|| format!("no {what} configured"))?;
            std::fs::canonicalize(p).map_err(|e| format!("{what} {}: {e}", p.display()))
        };
        b = b
            .certificate_path(file("certificate", &s.certificate)?)
            .private_key_path(file("private_key", &s.private_key)?);
    }
    b.client()
        .map_err(|e| format!("OPC UA client configuration: {}", e.join("; ")))
}

fn status_cause(code: StatusCode) -> Cause {
    if code == StatusCode::BadTimeout || code == StatusCode::BadRequestTimeout {
        Cause::Timeout
    } else {
        Cause::Refused(code.to_string())
    }
}

fn micros(t: &DateTime) -> i64 {
    t.as_chrono().timestamp_micros()
}

/// A sample as a reading: `None` when it is the sample already taken (its time has not
/// moved), an error when it carries no number.
fn reading(m: &MeterSpec, dv: &DataValue, last_us: &mut i64) -> Result<Option<Reading>, Cause> {
    let status = dv.status();
    let time_us = dv
        .source_timestamp
        .as_ref()
        .or(dv.server_timestamp.as_ref())
        .map(micros)
        .unwrap_or_else(crate::now_us);
    if time_us <= *last_us {
        return Ok(None);
    }
    let raw = dv.value.as_ref().and_then(Variant::as_f64);
    let raw = match raw {
        Some(v) if v.is_finite() => v,
        Some(_) => return Err(Cause::BadValue("the value is not finite".into())),
        None if status.is_bad() => return Err(Cause::BadStatus(status.to_string())),
        None => {
            return Err(Cause::BadValue(format!(
                "node {} holds no number",
                m.node_id
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            )));
        }
    };
    *last_us = time_us;
    let quality = if status.is_good() {
        Quality::Good
    } else if status.is_uncertain() {
        Quality::Uncertain
    } else {
        Quality::Bad
    };
    Ok(Some(Reading {
        meter: m.id.clone(),
        time_us,
        raw,
        quality,
        status: status.bits(),
    }))
}

/// One value a simulated OPC UA server publishes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// The value.
    pub value: f64,
    /// Its source time, microseconds. A node whose time does not change is not updated (a
    /// frozen meter).
    pub time_us: i64,
    /// Its OPC UA status code (0 is Good).
    pub status: u32,
}

/// The values a simulated OPC UA server publishes, by node.
pub type Values = Arc<Mutex<HashMap<heatmesh_ingest::meter::NodeId, Sample>>>;

/// The namespace the simulated server's variables live in.
pub const SIM_NAMESPACE_URI: &str = "urn:heatmesh:simulator:plants";

/// A running OPC UA server (the plant simulator's): every node of its [`Values`] as a Double
/// variable under Objects, updated when its time moves. Endpoints: None, and Basic256Sha256
/// with Sign and with SignAndEncrypt (the server's own certificate is created in `pki`; client
/// certificates are trusted on first contact, as a test device would).
/// Dropping it stops the server too, without waiting for it to release its port.
pub struct Device {
    handle: opcua::server::ServerHandle,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.handle.cancel();
    }
}

/// Why a simulated server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The server could not be built.
    #[error("OPC UA server: {0}")]
    Build(String),
    /// A configured node is in a namespace this server does not have.
    #[error(
        "node {node}: the simulated OPC UA server serves namespace {index} ({SIM_NAMESPACE_URI}) only"
    )]
    Namespace {
        /// The node.
        node: String,
        /// The index its namespace has.
        index: u16,
    },
}

impl Device {
    /// Serves `values` on `listener` (`host` is the name the endpoints advertise).
    pub async fn start(
        listener: tokio::net::TcpListener,
        host: &str,
        values: Values,
        pki: &Path,
    ) -> Result<Device, DeviceError> {
        use opcua::server::address_space::Variable;
        use opcua::server::diagnostics::NamespaceMetadata;
        use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
        use opcua::server::{ANONYMOUS_USER_TOKEN_ID, ServerBuilder, ServerEndpoint};
        let port = listener
            .local_addr()
            .map_err(|e| DeviceError::Build(e.to_string()))?
            .port();
        let users = [ANONYMOUS_USER_TOKEN_ID.to_string()];
        let endpoint = |policy, mode| ServerEndpoint::new("/", policy, mode, &users);
        let (server, handle) = ServerBuilder::new()
            .application_name("heatmesh plant simulator")
            .application_uri("urn:heatmesh:simulator")
            .product_uri("urn:heatmesh:simulator")
            .host(host)
            .port(port)
            .pki_dir(pki)
            .create_sample_keypair(true)
            .trust_client_certs(true)
            .discovery_urls(vec![format!("opc.tcp://{host}:{port}/")])
            .add_endpoint(
                "none",
                endpoint(
                    opcua::crypto::SecurityPolicy::None,
                    MessageSecurityMode::None,
                ),
            )
            .add_endpoint(
                "basic256sha256_sign",
                endpoint(
                    opcua::crypto::SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::Sign,
                ),
            )
            .add_endpoint(
                "basic256sha256_sign_encrypt",
                endpoint(
                    opcua::crypto::SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                ),
            )
            .with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: SIM_NAMESPACE_URI.to_owned(),
                    ..Default::default()
                },
                "simulator",
            ))
            .build()
            .map_err(DeviceError::Build)?;
        let manager = handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .ok_or_else(|| DeviceError::Build("no node manager".into()))?;
        let ns = handle
            .get_namespace_index(SIM_NAMESPACE_URI)
            .ok_or_else(|| DeviceError::Build("namespace not registered".into()))?;
        let nodes: Vec<heatmesh_ingest::meter::NodeId> = {
            let v = values.lock().unwrap_or_else(|e| e.into_inner());
            v.keys().cloned().collect()
        };
        {
            let mut space = manager.address_space().write();
            for n in &nodes {
                if n.namespace != ns {
                    return Err(DeviceError::Namespace {
                        node: n.to_string(),
                        index: ns,
                    });
                }
                let id = node_id(n);
                let name = n.to_string();
                space.add_variables(
                    vec![Variable::new(&id, name.as_str(), name.as_str(), 0f64)],
                    &NodeId::objects_folder_id(),
                );
            }
        }
        let subscriptions = handle.subscriptions().clone();
        // What the model has sampled is there before the first client can read it.
        let mut published: HashMap<heatmesh_ingest::meter::NodeId, i64> = HashMap::new();
        publish(&values, &mut published, &manager, &subscriptions);
        let task = tokio::spawn(async move {
            let run = server.run_with(listener);
            tokio::pin!(run);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    r = &mut run => {
                        if let Err(e) = r {
                            tracing::warn!("simulated OPC UA server stopped: {e}");
                        }
                        return;
                    }
                    _ = tick.tick() => publish(&values, &mut published, &manager, &subscriptions),
                }
            }
        });
        Ok(Device {
            handle,
            task: Some(task),
        })
    }

    /// Stops the server: every session is closed and the port is released.
    pub async fn stop(mut self) {
        self.handle.cancel();
        if let Some(mut task) = self.task.take()
            && timeout(Duration::from_secs(5), &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

/// Sets every variable whose sample time moved since `published` (a sample at time 0 is not
/// taken yet), notifying subscriptions.
fn publish(
    values: &Values,
    published: &mut HashMap<heatmesh_ingest::meter::NodeId, i64>,
    manager: &opcua::server::node_manager::memory::SimpleNodeManager,
    subscriptions: &opcua::server::SubscriptionCache,
) {
    let mut changed: Vec<(NodeId, DataValue)> = Vec::new();
    {
        let v = values.lock().unwrap_or_else(|e| e.into_inner());
        for (n, x) in v.iter() {
            if x.time_us != 0 && published.insert(n.clone(), x.time_us) != Some(x.time_us) {
                let at = DateTime::from(chrono_time(x.time_us));
                let dv = DataValue::new_at_status(x.value, at, StatusCode::from(x.status));
                changed.push((node_id(n), dv));
            }
        }
    }
    if !changed.is_empty() {
        let _ = manager.set_values(
            subscriptions,
            changed.iter().map(|(n, v)| (n, None, v.clone())),
        );
    }
}

fn chrono_time(us: i64) -> opcua::types::DateTimeUtc {
    opcua::types::DateTimeUtc::from_timestamp_micros(us).unwrap_or_default()
}
