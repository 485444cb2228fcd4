//! A master, its nodes and a load as real processes on loopback: the harness behind the
//! multi-process tests and `heatmesh bench cluster`.

use crate::process::{Proc, loopback, master_args, node_args};
use heatmesh_proto::v1 as pb;
use pb::TaskStatus as S;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A master and its nodes as processes on loopback, with a temporary data directory: the
/// one way heatmesh starts a real multi-process mesh (tests, drills, `heatmesh bench
/// cluster`, `heatmesh loadtest`).
pub struct Cluster {
    /// Data directory, cookie file and logs live here.
    pub dir: tempfile::TempDir,
    /// The cookie file.
    pub cookie: PathBuf,
    /// The master's gRPC address.
    pub grpc: SocketAddr,
    /// The master's metrics address.
    pub metrics: SocketAddr,
    /// The master process, when running.
    pub master: Option<Proc>,
    /// Node processes by id.
    pub nodes: HashMap<String, Proc>,
    /// More `HEATMESH_*` settings for the master (default: a 5 s start-up grace for
    /// placement; drills add leases and attempts).
    pub master_env: Vec<(String, String)>,
    /// More arguments for `heatmesh master` (`--config FILE`).
    pub master_args: Vec<String>,
    /// Start the master with `--allow-fault-injection` (drills and tests; default true).
    pub fault_injection: bool,
    master_starts: u32,
    bin: PathBuf,
}

impl Cluster {
    /// A cluster of `bin` (the heatmesh executable) with a fresh cookie and data directory.
    pub fn new(bin: &Path) -> std::io::Result<Cluster> {
        Cluster::in_dir(tempfile::tempdir()?, bin)
    }

    /// A cluster living in `dir` (its cookie is written there).
    pub fn in_dir(dir: tempfile::TempDir, bin: &Path) -> std::io::Result<Cluster> {
        let cookie = dir.path().join("cookie");
        std::fs::write(&cookie, "drill-cluster-cookie-0123456789\n")?;
        Ok(Cluster {
            grpc: loopback(),
            metrics: loopback(),
            cookie,
            dir,
            master: None,
            nodes: HashMap::new(),
            master_env: vec![(
                "HEATMESH_PLACEMENT__STARTUP_GRACE_MS".to_string(),
                "5000".to_string(),
            )],
            master_args: Vec::new(),
            fault_injection: true,
            master_starts: 0,
            bin: bin.to_path_buf(),
        })
    }

    /// Starts (or restarts) the master on the same ports and data directory; each start
    /// logs to a file of its own (`master-N.log`).
    pub fn spawn_master(&mut self) -> std::io::Result<()> {
        let mut env = vec![(
            "HEATMESH_CLUSTER__COOKIE_FILE".to_string(),
            self.cookie.display().to_string(),
        )];
        env.extend(self.master_env.iter().cloned());
        let mut args = master_args(self.grpc, self.metrics, &self.dir.path().join("data"));
        if !self.fault_injection {
            args.retain(|a| a != "--allow-fault-injection");
        }
        args.extend(self.master_args.iter().cloned());
        self.master_starts += 1;
        let log = self.log(&format!("master-{}", self.master_starts));
        self.master = Some(Proc::spawn("master", &self.bin, &args, &env, Some(&log))?);
        Ok(())
    }

    /// [`Cluster::spawn_master`] for tests: panics if the process cannot start.
    pub fn start_master(&mut self) {
        self.spawn_master().expect("spawn master");
    }

    /// Starts a node preferring `plants` that dials `master` (the master or a proxy).
    pub fn spawn_node(
        &mut self,
        id: &str,
        plants: &[&str],
        master: SocketAddr,
    ) -> std::io::Result<()> {
        let args = node_args(id, plants, master, loopback(), &self.cookie);
        let p = Proc::spawn(id, &self.bin, &args, &[], Some(&self.log(id)))?;
        self.nodes.insert(id.to_string(), p);
        Ok(())
    }

    /// [`Cluster::spawn_node`] for tests: panics if the process cannot start.
    pub fn start_node(&mut self, id: &str, plants: &[&str], master: SocketAddr) {
        self.spawn_node(id, plants, master).expect("spawn node");
    }

    /// Names of the processes that have exited, sorted.
    pub fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = self.master.as_mut()
            && m.try_exit().is_some()
        {
            out.push(m.name.clone());
        }
        for (id, n) in self.nodes.iter_mut() {
            if n.try_exit().is_some() {
                out.push(id.clone());
            }
        }
        out.sort();
        out
    }

    /// Waits until the master accepts connections; fails, with the end of its log, when it
    /// exits or `timeout` passes first.
    pub async fn reach_master(&mut self, timeout: Duration) -> Result<Channel, String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.master.as_mut().and_then(|m| m.try_exit()) {
                return Err(format!(
                    "master exited ({st}) at start; {}",
                    self.newest_master_log_tail(12)
                ));
            }
            let uri = format!("http://{}", self.grpc);
            if let Ok(ch) = Channel::from_shared(uri)
                .map_err(|e| e.to_string())?
                .connect()
                .await
            {
                return Ok(ch);
            }
            if Instant::now() > end {
                return Err(format!(
                    "master not reachable on {} after {timeout:?}; {}",
                    self.grpc,
                    self.newest_master_log_tail(12)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every (plant, node) of `want` runs; fails, naming what is missing, when a
    /// process exits or `timeout` passes first. Returns how long it took.
    pub async fn wait_running(
        &mut self,
        want: &[(String, String)],
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let mut mesh =
            pb::mesh_service_client::MeshServiceClient::new(self.reach_master(timeout).await?);
        loop {
            if let Some(gone) = self.exited().first() {
                let log = if gone == "master" {
                    self.newest_master_log_tail(12)
                } else {
                    tail(&self.log(gone), 12)
                };
                return Err(format!("{gone} exited while the mesh started; {log}"));
            }
            let plants = mesh
                .list_plants(pb::ListPlantsRequest {})
                .await
                .map(|r| r.into_inner().plants)
                .unwrap_or_default();
            let mut missing: Vec<String> = want
                .iter()
                .filter(|(plant, node)| {
                    !plants
                        .iter()
                        .any(|p| &p.id == plant && &p.node == node && p.status == "running")
                })
                .map(|(plant, node)| format!("{plant} on {node}"))
                .collect();
            if missing.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                missing.sort();
                return Err(format!(
                    "plants not running on their nodes after {timeout:?}: {}; {}",
                    missing.join(", "),
                    self.newest_master_log_tail(12)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Log file of a process.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The standard layout: `node-1`..`node-3` preferring `Plant-001`..`Plant-003` (the node
    /// named in `via` dials that address instead of the master, e.g. a proxy), and a spare
    /// when asked; returns once every plant runs on its node.
    pub async fn start_standard(
        &mut self,
        spare: bool,
        via: Option<(&str, SocketAddr)>,
    ) -> Duration {
        let m = self.grpc;
        for i in 1..=3 {
            let (id, plant) = (format!("node-{i}"), format!("Plant-00{i}"));
            let dial = via.filter(|(n, _)| *n == id).map_or(m, |(_, a)| a);
            self.start_node(&id, &[plant.as_str()], dial);
        }
        if spare {
            self.start_node("spare", &[], m);
        }
        self.wait_placement(
            &[
                ("Plant-001", "node-1"),
                ("Plant-002", "node-2"),
                ("Plant-003", "node-3"),
            ],
            Duration::from_secs(30),
        )
        .await
    }

    /// A channel to the master, waiting until it accepts connections.
    pub async fn channel(&self) -> Channel {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(ch) = Channel::from_shared(format!("http://{}", self.grpc))
                .unwrap()
                .connect()
                .await
            {
                return ch;
            }
            assert!(
                Instant::now() < end,
                "master not reachable; the end of its newest log:\n{}",
                self.newest_master_log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `n` lines of the most recently started master's log (for failure messages).
    pub fn newest_master_log_tail(&self, n: usize) -> String {
        if self.master_starts == 0 {
            return "(no master log)".into();
        }
        tail(&self.log(&format!("master-{}", self.master_starts)), n)
    }

    /// Waits until every plant runs on the expected node.
    pub async fn wait_placement(&self, want: &[(&str, &str)], timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut mesh = pb::mesh_service_client::MeshServiceClient::new(self.channel().await);
        loop {
            if let Ok(r) = mesh.list_plants(pb::ListPlantsRequest {}).await {
                let plants = r.into_inner().plants;
                let ok = want.iter().all(|(plant, node)| {
                    plants
                        .iter()
                        .any(|p| p.id == *plant && p.node == *node && p.status == "running")
                });
                if ok {
                    return start.elapsed();
                }
            }
            assert!(
                start.elapsed() < timeout,
                "placement {want:?} not reached in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the node shows `status` (connected / disconnected); returns the wait.
    pub async fn wait_node_status(&self, node: &str, status: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut mesh = pb::mesh_service_client::MeshServiceClient::new(self.channel().await);
        loop {
            if let Ok(r) = mesh.list_nodes(pb::ListNodesRequest {}).await
                && r.into_inner()
                    .nodes
                    .iter()
                    .any(|n| n.id == node && n.status == status)
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "node {node} not {status} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sum of a metric's samples from the master's /metrics.
    pub async fn metric(&self, name: &str) -> f64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The i-th task of a drill workload: a GL-009 balance for one of the three sample plants.
pub fn req(i: usize) -> pb::SubmitTaskRequest {
    let plant = ["Plant-001", "Plant-002", "Plant-003"][i % 3];
    let flow = |n: &str, kwh: f64| pb::EnergyFlow {
        name: n.into(),
        energy_kwh: kwh,
        ..Default::default()
    };
    pb::SubmitTaskRequest {
        plant_id: plant.into(),
        idempotency_key: format!("load-{i}"),
        payload: Some(pb::TaskPayload {
            request: Some(pb::task_payload::Request::Gl009HeatBalance(
                pb::HeatBalanceRequest {
                    inputs: vec![flow("fuel", 1000.0 + i as f64)],
                    outputs: vec![flow("steam", 800.0)],
                    ..Default::default()
                },
            )),
        }),
        ..Default::default()
    }
}

/// Submits `n` tasks with `conc` submitters; returns acknowledged ids. `on_acked(k)` runs
/// in the submitters after the k-th acknowledgement. Stops quietly on the first error.
pub async fn stream_tasks(ch: Channel, n: usize, conc: usize, acked: Arc<Mutex<Vec<String>>>) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut hs = Vec::new();
    for _ in 0..conc {
        let (next, acked, mut c) = (
            next.clone(),
            acked.clone(),
            pb::task_service_client::TaskServiceClient::new(ch.clone()),
        );
        hs.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                match c.submit_task(req(i)).await {
                    Ok(r) => acked.lock().unwrap().push(r.into_inner().task.unwrap().id),
                    Err(_) => return,
                }
            }
        }));
    }
    for h in hs {
        let _ = h.await;
    }
}

/// Waits until `n` submits are acknowledged.
pub async fn wait_acked(acked: &Arc<Mutex<Vec<String>>>, n: usize) {
    while acked.lock().unwrap().len() < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every acknowledged task is completed, and checks each completed exactly once
/// (one completion in its journal). Returns how long it took.
pub async fn assert_all_completed_once(
    ch: Channel,
    acked: &[String],
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    let mut c = pb::task_service_client::TaskServiceClient::new(ch.clone());
    loop {
        let open = c
            .list_tasks(pb::ListTasksRequest {
                status: vec![S::Pending as i32, S::Dispatched as i32, S::Orphaned as i32],
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if open.tasks.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < timeout,
            "tasks still open after {timeout:?}: {:?}",
            open.tasks
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    let ids = Arc::new(Mutex::new(acked.to_vec()));
    let mut hs = Vec::new();
    for _ in 0..16 {
        let (ids, mut c) = (
            ids.clone(),
            pb::task_service_client::TaskServiceClient::new(ch.clone()),
        );
        hs.push(tokio::spawn(async move {
            loop {
                let Some(id) = ids.lock().unwrap().pop() else {
                    return;
                };
                let t = c
                    .get_task(pb::GetTaskRequest { id: id.clone() })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(t.status, S::Completed as i32, "task {id}: {t:?}");
                let done = t
                    .history
                    .iter()
                    .filter(|h| h.to == S::Completed as i32)
                    .count();
                assert_eq!(done, 1, "task {id} completed {done} times");
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    took
}

/// The last `n` lines of a log file, headed by its path.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "last lines of {}:\n{}",
        path.display(),
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}
