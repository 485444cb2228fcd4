//! The multi-process drill mesh: `heatmesh master` and one `heatmesh node` per node id as
//! real processes on loopback. Every node dials the master through its own
//! [`BlackholeProxy`], so any node's path can be cut (one way or both) or slowed; nodes and
//! the master die by SIGKILL.

use crate::cluster::Cluster;
use crate::harness::{DrillMesh, EndState, inject_agent_fault, master_view, wait_running};
use crate::net::LinkFaults;
use crate::proxy::BlackholeProxy;
use crate::scenario::{Action, Direction, Scenario};
use heatmesh_master::ledger::Ledger;
use heatmesh_mesh::BoxFuture;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Master and nodes as processes; see the module documentation.
pub struct ProcMesh {
    cluster: Cluster,
    proxies: BTreeMap<String, BlackholeProxy>,
    prefs: BTreeMap<String, Vec<String>>,
    /// Stale results counted by master incarnations already gone.
    counted: f64,
    /// Idle connections of a `connection-flood` step.
    flood: crate::flood::Flood,
}

impl ProcMesh {
    /// Starts the master and every node of the scenario's shape from the `heatmesh` binary.
    /// Plants come from the sample fleet, so the shape may name at most its three, with
    /// their own agents.
    pub async fn start(s: &Scenario, bin: &Path) -> Result<ProcMesh, String> {
        if s.mesh.plants != 3 || !s.mesh.agents.is_empty() {
            return Err(
                "mesh.plants: multi-process drills run the sample fleet as it is (3 plants, its own agents)"
                    .into(),
            );
        }
        let mut cluster = Cluster::new(bin).map_err(|e| format!("cluster directory: {e}"))?;
        cluster.master_env = vec![
            env("SCHEDULER__MAX_ATTEMPTS", s.mesh.max_attempts),
            env("CLUSTER__LEASE_MS", s.mesh.lease_ms),
            env(
                "CLUSTER__HEARTBEAT_INTERVAL_MS",
                s.mesh.heartbeat_interval_ms,
            ),
            env("PLACEMENT__STARTUP_GRACE_MS", 1_000),
            env("RESTART__MAX_RESTARTS", s.mesh.max_restarts),
            env("RESTART__WINDOW_MS", s.mesh.restart_window_ms),
        ];
        cluster.start_master();
        let mut mesh = ProcMesh {
            cluster,
            proxies: BTreeMap::new(),
            prefs: s.mesh.node_ids().into_iter().collect(),
            counted: 0.0,
            flood: Default::default(),
        };
        let ids: Vec<String> = mesh.prefs.keys().cloned().collect();
        for id in ids {
            let proxy = BlackholeProxy::start(mesh.cluster.grpc)
                .await
                .map_err(|e| format!("proxy for {id}: {e}"))?;
            mesh.proxies.insert(id.clone(), proxy);
            mesh.start_node(&id);
        }
        Ok(mesh)
    }

    fn start_node(&mut self, id: &str) {
        let prefs = self.prefs.get(id).cloned().unwrap_or_default();
        let prefs: Vec<&str> = prefs.iter().map(String::as_str).collect();
        let via = self.proxies[id].addr();
        self.cluster.start_node(id, &prefs, via);
    }

    fn uri(&self) -> String {
        format!("http://{}", self.cluster.grpc)
    }

    async fn count_before_kill(&mut self) {
        if self.cluster.master.is_some() {
            self.counted += self.cluster.metric("heatmesh_stale_results_total").await;
        }
    }
}

fn env(key: &str, v: impl ToString) -> (String, String) {
    (format!("HEATMESH_{key}"), v.to_string())
}

impl DrillMesh for ProcMesh {
    fn mode(&self) -> &'static str {
        "multi-process"
    }

    fn grpc_uri(&self) -> String {
        self.uri()
    }

    fn apply<'a>(&'a mut self, f: &'a crate::scenario::Fault) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let node = f.node.clone().unwrap_or_default();
            match f.action {
                Action::KillNode => {
                    if let Some(mut p) = self.cluster.nodes.remove(&node) {
                        p.kill9();
                    }
                }
                Action::RestartNode => {
                    if !self.cluster.nodes.contains_key(&node) {
                        self.start_node(&node);
                    }
                }
                Action::RestartNodeRolling => {
                    if let Some(mut p) = self.cluster.nodes.remove(&node) {
                        p.kill9();
                    }
                    self.start_node(&node);
                }
                Action::CrashMaster => {
                    self.count_before_kill().await;
                    if let Some(mut m) = self.cluster.master.take() {
                        m.kill9();
                    }
                    if f.torn_bytes > 0 {
                        tear_log(
                            &self.cluster.dir.path().join("data").join("wal"),
                            f.torn_bytes,
                        )?;
                    }
                }
                Action::RestartMaster => {
                    if self.cluster.master.is_none() {
                        self.cluster.start_master();
                    }
                }
                Action::Partition => {
                    let p = &self.proxies[&node];
                    p.set(LinkFaults {
                        up_cut: f.direction != Direction::FromMaster,
                        down_cut: f.direction != Direction::ToMaster,
                        ..p.faults()
                    });
                }
                Action::Delay => {
                    let p = &self.proxies[&node];
                    p.set(LinkFaults {
                        delay: Duration::from_millis(f.delay_ms),
                        jitter: Duration::from_millis(f.jitter_ms),
                        ..p.faults()
                    });
                }
                Action::Heal => self.proxies[&node].heal(),
                Action::PanicAgent | Action::SlowAgent => {
                    if self.cluster.master.is_some() {
                        inject_agent_fault(&self.uri(), f).await?;
                    }
                }
                Action::ConnectionFlood => {
                    self.flood.open(self.cluster.grpc, f.connections).await?;
                }
                Action::EndFlood => self.flood.end(),
                Action::StallMaster | Action::ResumeMaster => {
                    let sig = if f.action == Action::StallMaster {
                        "STOP"
                    } else {
                        "CONT"
                    };
                    if let Some(m) = &self.cluster.master {
                        m.signal(sig)
                            .map_err(|e| format!("{}: kill -s {sig}: {e}", f.action.as_str()))?;
                    }
                }
                Action::DiskFull | Action::FreeDisk => {
                    return Err(format!(
                        "{}: the multi-process harness cannot fill the master's disk; run it simulated or in-process (tests/disk_full.rs fills a real one)",
                        f.action.as_str()
                    ));
                }
            }
            Ok(())
        })
    }

    fn make_whole(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.flood.end();
            match &self.cluster.master {
                // A stalled master resumes (a no-op for one that runs).
                Some(m) => {
                    let _ = m.signal("CONT");
                }
                None => self.cluster.start_master(),
            }
            for p in self.proxies.values() {
                p.heal();
            }
            let ids: Vec<String> = self.prefs.keys().cloned().collect();
            for id in ids {
                if !self.cluster.nodes.contains_key(&id) {
                    self.start_node(&id);
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
            let view = master_view(&self.uri()).await?;
            self.count_before_kill().await;
            // The ledger is the master's to hold; stop it to read the ledger from here. Every
            // acknowledged change is already on disk, so SIGKILL loses nothing.
            if let Some(mut m) = self.cluster.master.take() {
                m.kill9();
            }
            let dir = self.cluster.dir.path().join("data");
            let mut tries = 0;
            let ledger = loop {
                match Ledger::open(&dir) {
                    Ok(l) => break l,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        tracing::debug!("ledger not yet free: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(format!("opening the ledger {}: {e}", dir.display())),
                }
            };
            Ok(EndState {
                ledger: std::sync::Arc::new(ledger),
                master_view: view,
                node_view: None,
                delivered: None,
                stale_rejected: Some(self.counted as u64),
            })
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            for (_, mut p) in self.cluster.nodes.drain() {
                p.kill9();
            }
            if let Some(mut m) = self.cluster.master.take() {
                m.kill9();
            }
        })
    }
}

/// Leaves `n` bytes of an interrupted write at the end of the newest log segment: a record
/// header that promises more payload than follows, as a crash in the middle of a write does.
fn tear_log(wal: &Path, n: u32) -> Result<(), String> {
    use std::io::Write;
    let newest = std::fs::read_dir(wal)
        .map_err(|e| format!("torn_bytes: listing {}: {e}", wal.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .max()
        .ok_or_else(|| format!("torn_bytes: no log segment in {}", wal.display()))?;
    let mut torn = Vec::with_capacity(n as usize);
    torn.extend_from_slice(&(n + 4096).to_le_bytes());
    torn.resize(n as usize, 0xA5);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .and_then(|mut f| f.write_all(&torn))
        .map_err(|e| format!("torn_bytes: appending to {}: {e}", newest.display()))
}
