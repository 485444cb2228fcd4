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

/// A master and its nodes as processes on loopback, with a temporary data directory.
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
    /// More `HEATMESH_*` settings for the master (drills: leases, attempts).
    pub master_env: Vec<(String, String)>,
    bin: PathBuf,
}

impl Cluster {
    /// A cluster of `bin` (the heatmesh executable) with a fresh cookie and data directory.
    pub fn new(bin: &Path) -> std::io::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let cookie = dir.path().join("cookie");
        std::fs::write(&cookie, "drill-cluster-cookie-0123456789\n")?;
        Ok(Cluster {
            grpc: loopback(),
            metrics: loopback(),
            cookie,
            dir,
            master: None,
            nodes: HashMap::new(),
            master_env: Vec::new(),
            bin: bin.to_path_buf(),
        })
    }

    /// Log file of a process.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts (or restarts) the master on the same ports and data directory.
    pub fn start_master(&mut self) {
        let mut env = vec![
            (
                "HEATMESH_CLUSTER__COOKIE_FILE".to_string(),
                self.cookie.display().to_string(),
            ),
            (
                "HEATMESH_PLACEMENT__STARTUP_GRACE_MS".to_string(),
                "5000".to_string(),
            ),
        ];
        env.extend(self.master_env.iter().cloned());
        let args = master_args(self.grpc, self.metrics, &self.dir.path().join("data"));
        let log = self.log(&format!("master-{}", crate::process::free_port()));
        self.master =
            Some(Proc::spawn("master", &self.bin, &args, &env, Some(&log)).expect("spawn master"));
    }

    /// Starts a node preferring `plants` that dials `master` (the master or a proxy).
    pub fn start_node(&mut self, id: &str, plants: &[&str], master: SocketAddr) {
        let args = node_args(id, plants, master, loopback(), &self.cookie);
        let p = Proc::spawn(id, &self.bin, &args, &[], Some(&self.log(id))).expect("spawn node");
        self.nodes.insert(id.to_string(), p);
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
        let newest = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("master-"))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
        let Some(e) = newest else {
            return "(no master log)".into();
        };
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
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
