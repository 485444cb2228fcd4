//! The meshes a drill runs against, behind one trait: [`InProcMesh`] (master and nodes in
//! this process, nodes attached over the simulated network of [`crate::net`]) and
//! [`crate::multiproc::ProcMesh`] (real processes on loopback).

use crate::net::{Delivered, LinkFaults, SimNet};
use crate::scenario::{Action, Direction, Fault, Scenario};
use heatmesh_agents::RestartPolicy;
use heatmesh_agents::fault::FaultTable;
use heatmesh_master::config::{Config, SAMPLE_FLEET};
use heatmesh_master::server::{self, RunningMesh, StartOptions};
use heatmesh_mesh::attach::{self, NodeOptions};
use heatmesh_mesh::{BoxFuture, LocalNode, NodeAgentArgs};
use heatmesh_proto::v1 as pb;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What a mesh looks like once the drill is over, for the checker.
pub struct EndState {
    /// The ledger, readable (the master may still run: reads do not disturb it).
    pub ledger: std::sync::Arc<dyn heatmesh_master::ledger::Store>,
    /// The master's view of every plant: (plant, node, epoch, status).
    pub master_view: Vec<(String, String, u64, String)>,
    /// What each node actually runs: node -> [(plant, epoch)] (in-process only).
    pub node_view: Option<BTreeMap<String, Vec<(String, u64)>>>,
    /// Frames the network delivered (in-process only).
    pub delivered: Option<Vec<Delivered>>,
    /// Stale results the master counted, where it can be read.
    pub stale_rejected: Option<u64>,
}

/// A mesh a drill can break.
pub trait DrillMesh: Send {
    /// `in-process` or `multi-process`.
    fn mode(&self) -> &'static str;
    /// The master's gRPC URI.
    fn grpc_uri(&self) -> String;
    /// Applies one fault-timeline step.
    fn apply<'a>(&'a mut self, f: &'a Fault) -> BoxFuture<'a, Result<(), String>>;
    /// Undoes every standing fault (heal paths, restart what is down).
    fn make_whole(&mut self) -> BoxFuture<'_, Result<(), String>>;
    /// Waits until every plant is placed and running.
    fn wait_ready(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), String>>;
    /// Collects the end state.
    fn end_state(&mut self) -> BoxFuture<'_, Result<EndState, String>>;
    /// Stops everything.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The master configuration of a drill: the sample fleet cut or extended to the scenario's
/// plants, with its agents, leases and restart intensity.
pub fn drill_config(s: &Scenario, data_dir: &Path) -> Result<Config, String> {
    let mut cfg = Config::from_toml_with_env(SAMPLE_FLEET, std::iter::empty())
        .map_err(|e| format!("sample fleet: {e}"))?;
    let base = cfg.plants.clone();
    let mut plants = Vec::new();
    for (i, id) in s.mesh.plant_ids().into_iter().enumerate() {
        let mut p = base[i % base.len()].clone();
        if i >= base.len() {
            p.name = format!("{} (copy {})", p.name, i + 1);
        }
        p.id = id;
        if !s.mesh.agents.is_empty() {
            p.agents = s.mesh.agents.clone();
        }
        plants.push(p);
    }
    cfg.heat
        .plants
        .retain(|id, _| plants.iter().any(|p| &p.id == id));
    cfg.heat
        .links
        .retain(|l| cfg.heat.plants.contains_key(&l.from) && cfg.heat.plants.contains_key(&l.to));
    cfg.plants = plants;
    cfg.normalise();
    cfg.data_dir = data_dir.to_path_buf();
    cfg.listen = "127.0.0.1:0".parse().expect("literal");
    cfg.metrics_listen = None;
    cfg.allow_fault_injection = true;
    cfg.scheduler.max_attempts = s.mesh.max_attempts;
    cfg.cluster.heartbeat_interval_ms = s.mesh.heartbeat_interval_ms;
    cfg.cluster.lease_ms = s.mesh.lease_ms;
    cfg.cluster.cookie = Some("drill-cluster-cookie-0123456789".into());
    cfg.restart.max_restarts = s.mesh.max_restarts;
    cfg.restart.window_ms = s.mesh.restart_window_ms;
    cfg.placement.startup_grace_ms = 1_000;
    cfg.validate()
        .map_err(|e| format!("drill configuration: {e}"))?;
    Ok(cfg)
}

/// Arms or clears an agent fault through the master's MeshService.InjectFault, which routes it
/// to whichever node runs the plant now.
pub async fn inject_agent_fault(uri: &str, f: &Fault) -> Result<(), String> {
    let mut c = pb::mesh_service_client::MeshServiceClient::connect(uri.to_string())
        .await
        .map_err(|e| format!("connect {uri}: {e}"))?;
    let (panic_next, delay_ms) = match f.action {
        Action::PanicAgent => (f.panics, 0),
        _ => (0, f.delay_ms as u32),
    };
    c.inject_fault(pb::InjectFaultRequest {
        plant_id: f.plant.clone().unwrap_or_default(),
        kind: f.kind.clone().unwrap_or_default(),
        panic_next,
        delay_ms,
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("inject fault: {}", e.message()))
}

/// Reads the master's plant view over gRPC.
pub async fn master_view(uri: &str) -> Result<Vec<(String, String, u64, String)>, String> {
    let mut c = pb::mesh_service_client::MeshServiceClient::connect(uri.to_string())
        .await
        .map_err(|e| format!("connect {uri}: {e}"))?;
    let plants = c
        .list_plants(pb::ListPlantsRequest {})
        .await
        .map_err(|e| format!("list plants: {}", e.message()))?
        .into_inner()
        .plants;
    Ok(plants
        .into_iter()
        .map(|p| (p.id, p.node, p.epoch, p.status))
        .collect())
}

/// Polls the master until every plant is running, or gives up after `timeout`.
pub async fn wait_running(uri: &str, timeout: Duration) -> Result<(), String> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let last = match master_view(uri).await {
            Ok(v) if v.iter().all(|p| p.3 == "running") => return Ok(()),
            Ok(v) => v
                .iter()
                .filter(|p| p.3 != "running")
                .map(|p| format!("{} {}", p.0, p.3))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= end {
            return Err(format!("plants not running after {timeout:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct SimNode {
    local: LocalNode,
    task: JoinHandle<()>,
}

/// Master and nodes in this process; nodes reach the master over a [`SimNet`]. The master,
/// its ledger, the node protocol's sessions, leases and fencing, the node agents and the
/// plant supervisors are the production code; only the wire is simulated.
pub struct InProcMesh {
    net: std::sync::Arc<SimNet>,
    cfg: Config,
    opts: StartOptions,
    master: Option<RunningMesh>,
    nodes: BTreeMap<String, Option<SimNode>>,
    prefs: BTreeMap<String, Vec<String>>,
    policy: RestartPolicy,
    /// The master's disk counts as full (a `disk-full` step not yet undone).
    disk_full: bool,
    /// Idle connections of a `connection-flood` step.
    flood: crate::flood::Flood,
    _dir: tempfile::TempDir,
}

impl InProcMesh {
    /// Starts the master and every node of the scenario's shape.
    pub async fn start(s: &Scenario, seed: u64, opts: StartOptions) -> Result<InProcMesh, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let cfg = drill_config(s, &dir.path().join("data"))?;
        // A cut path breaks its connections after this long, like HTTP/2 keepalive would.
        let keepalive = Duration::from_millis((s.mesh.lease_ms * 3 / 2).max(200));
        let mut mesh = InProcMesh {
            net: SimNet::new(keepalive, seed),
            policy: cfg.restart,
            cfg,
            opts,
            master: None,
            nodes: BTreeMap::new(),
            prefs: s.mesh.node_ids().into_iter().collect(),
            disk_full: false,
            flood: Default::default(),
            _dir: dir,
        };
        mesh.start_master().await?;
        let ids: Vec<String> = mesh.prefs.keys().cloned().collect();
        for id in ids {
            mesh.start_node(&id).await?;
        }
        Ok(mesh)
    }

    async fn start_master(&mut self) -> Result<(), String> {
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        // After a crash the old incarnation's ledger handles drain away asynchronously; the
        // ledger directory opens again once the last one is gone.
        let running = loop {
            match server::start(self.cfg.clone(), self.opts).await {
                Ok(m) => break m,
                Err(e) if tokio::time::Instant::now() < end => {
                    tracing::debug!("master restart: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(format!("starting the master: {e}")),
            }
        };
        // A master restarted on a full disk finds it still full.
        if self.disk_full {
            running.ledger().space().set_fake_free(Some(0));
        }
        // Restarts come back on the same port, as a restarted process would.
        self.cfg.listen = running.grpc_addr;
        self.net.set_master(Some(running.node_server().clone()));
        self.master = Some(running);
        Ok(())
    }

    fn crash_master(&mut self) {
        self.net.set_master(None);
        if let Some(m) = self.master.take() {
            m.crash();
        }
    }

    async fn start_node(&mut self, id: &str) -> Result<(), String> {
        let local = LocalNode::start(NodeAgentArgs {
            node_id: id.to_string(),
            policy: self.policy,
            faults: FaultTable::default(),
            feeds: None,
        })
        .await
        .map_err(|e| format!("starting node {id}: {e}"))?;
        let opts = NodeOptions {
            node_id: id.to_string(),
            master: "sim://master".into(),
            cookie: "drill-cluster-cookie-0123456789".into(),
            preferred_plants: self.prefs.get(id).cloned().unwrap_or_default(),
            address: format!("sim:{id}"),
            reconnect_initial: Duration::from_millis(20),
            reconnect_max: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(2),
            readings: Default::default(),
        };
        let dialer = self.net.dialer(id);
        let node = local.clone();
        let task = tokio::spawn(async move {
            if let Err(e) =
                attach::run_with(opts, node, &dialer, std::future::pending::<()>()).await
            {
                tracing::error!("drill node stopped: {e}");
            }
        });
        self.nodes
            .insert(id.to_string(), Some(SimNode { local, task }));
        Ok(())
    }

    fn kill_node(&mut self, id: &str) {
        if let Some(Some(n)) = self.nodes.insert(id.to_string(), None) {
            n.task.abort();
            n.local.shutdown();
            self.net.reset(id);
        }
    }

    fn uri(&self) -> String {
        format!("http://{}", self.cfg.listen)
    }
}

fn path_faults(f: &Fault, current: LinkFaults) -> LinkFaults {
    match f.action {
        Action::Partition => LinkFaults {
            up_cut: f.direction != Direction::FromMaster,
            down_cut: f.direction != Direction::ToMaster,
            ..current
        },
        Action::Delay => LinkFaults {
            delay: Duration::from_millis(f.delay_ms),
            jitter: Duration::from_millis(f.jitter_ms),
            ..current
        },
        _ => LinkFaults::default(),
    }
}

impl DrillMesh for InProcMesh {
    fn mode(&self) -> &'static str {
        "in-process"
    }

    fn grpc_uri(&self) -> String {
        self.uri()
    }

    fn apply<'a>(&'a mut self, f: &'a Fault) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let node = f.node.clone().unwrap_or_default();
            match f.action {
                Action::KillNode => self.kill_node(&node),
                Action::RestartNode => {
                    if matches!(self.nodes.get(&node), Some(None)) {
                        self.start_node(&node).await?;
                    }
                }
                Action::RestartNodeRolling => {
                    self.kill_node(&node);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    self.start_node(&node).await?;
                }
                Action::CrashMaster => self.crash_master(),
                Action::RestartMaster => {
                    if self.master.is_none() {
                        self.start_master().await?;
                    }
                }
                Action::Partition | Action::Delay | Action::Heal => {
                    let now = self.net.faults(&node);
                    self.net.set_faults(&node, path_faults(f, now));
                }
                Action::PanicAgent | Action::SlowAgent => {
                    if self.master.is_some() {
                        inject_agent_fault(&self.uri(), f).await?;
                    }
                }
                Action::ConnectionFlood => {
                    self.flood.open(self.cfg.listen, f.connections).await?;
                }
                Action::EndFlood => self.flood.end(),
                Action::StallMaster | Action::ResumeMaster => {
                    return Err(format!(
                        "{}: the master shares this process; run it with --mode multi-process",
                        f.action.as_str()
                    ));
                }
                // The ledger's own free-space watch is told the disk has no space: the same
                // refusals, reserve and recovery as a real full disk, without filling one.
                Action::DiskFull | Action::FreeDisk => {
                    self.disk_full = f.action == Action::DiskFull;
                    if let Some(m) = &self.master {
                        m.ledger()
                            .space()
                            .set_fake_free(self.disk_full.then_some(0));
                    }
                }
            }
            Ok(())
        })
    }

    fn make_whole(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.flood.end();
            if self.disk_full {
                self.disk_full = false;
                if let Some(m) = &self.master {
                    m.ledger().space().set_fake_free(None);
                }
            }
            if self.master.is_none() {
                self.start_master().await?;
            }
            let ids: Vec<String> = self.nodes.keys().cloned().collect();
            for id in ids {
                self.net.set_faults(&id, LinkFaults::default());
                if matches!(self.nodes.get(&id), Some(None)) {
                    self.start_node(&id).await?;
                }
            }
            Ok(())
        })
    }

    fn wait_ready(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        let uri = self.uri();
        Box::pin(async move { wait_running(&uri, timeout).await })
    }

    fn end_state(&mut self) -> BoxFuture<'_, Result<EndState, String>> {
        Box::pin(async move {
            let master = self.master.as_ref().ok_or("master is down")?;
            let ledger = master.ledger().clone();
            ledger
                .barrier()
                .await
                .map_err(|e| format!("ledger barrier: {e}"))?;
            let master_view = master_view(&self.uri()).await?;
            let mut node_view = BTreeMap::new();
            for (id, n) in &self.nodes {
                if let Some(n) = n {
                    let running = n.local.running().await.map_err(|e| e.to_string())?;
                    node_view.insert(id.clone(), running);
                }
            }
            Ok(EndState {
                ledger: std::sync::Arc::new(ledger),
                master_view,
                node_view: Some(node_view),
                delivered: Some(self.net.delivered()),
                stale_rejected: None,
            })
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let ids: Vec<String> = self.nodes.keys().cloned().collect();
            for id in ids {
                self.kill_node(&id);
            }
            self.net.set_master(None);
            if let Some(m) = self.master.take() {
                m.shutdown().await;
            }
        })
    }
}
