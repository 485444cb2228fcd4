//! Multi-process mesh on loopback: a master, plant nodes and a spare as real processes.
//! Nodes are killed with SIGKILL, partitioned through a black-hole proxy, and the master is
//! killed and restarted; every acknowledged task must complete exactly once.

use heatmesh_proto::v1 as pb;
use heatmesh_sim::process::{Proc, loopback, master_args, node_args};
use heatmesh_sim::proxy::BlackholeProxy;
use pb::TaskStatus as S;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_heatmesh");

struct Cluster {
    dir: tempfile::TempDir,
    cookie: PathBuf,
    grpc: SocketAddr,
    metrics: SocketAddr,
    master: Option<Proc>,
    nodes: HashMap<String, Proc>,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let cookie = dir.path().join("cookie");
        std::fs::write(&cookie, "test-cluster-cookie-0123456789\n").unwrap();
        Cluster {
            grpc: loopback(),
            metrics: loopback(),
            cookie,
            dir,
            master: None,
            nodes: HashMap::new(),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn start_master(&mut self) {
        let env = vec![
            (
                "HEATMESH_CLUSTER__COOKIE_FILE".to_string(),
                self.cookie.display().to_string(),
            ),
            (
                "HEATMESH_PLACEMENT__STARTUP_GRACE_MS".to_string(),
                "5000".to_string(),
            ),
        ];
        let args = master_args(self.grpc, self.metrics, &self.dir.path().join("data"));
        let log = self.log(&format!("master-{}", Instant::now().elapsed().as_nanos()));
        self.master = Some(Proc::spawn("master", Path::new(BIN), &args, &env, Some(&log)).unwrap());
    }

    fn start_node(&mut self, id: &str, plants: &[&str], master: SocketAddr) {
        let args = node_args(id, plants, master, loopback(), &self.cookie);
        let p = Proc::spawn(id, Path::new(BIN), &args, &[], Some(&self.log(id))).unwrap();
        self.nodes.insert(id.to_string(), p);
    }

    async fn channel(&self) -> Channel {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(ch) = Channel::from_shared(format!("http://{}", self.grpc))
                .unwrap()
                .connect()
                .await
            {
                return ch;
            }
            assert!(Instant::now() < end, "master not reachable");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every plant runs on the expected node.
    async fn wait_placement(&self, want: &[(&str, &str)], timeout: Duration) -> Duration {
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

    async fn wait_node_status(&self, node: &str, status: &str, timeout: Duration) -> Duration {
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

    async fn metric(&self, name: &str) -> f64 {
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

fn req(i: usize) -> pb::SubmitTaskRequest {
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
async fn stream_tasks(ch: Channel, n: usize, conc: usize, acked: Arc<Mutex<Vec<String>>>) {
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

async fn wait_acked(acked: &Arc<Mutex<Vec<String>>>, n: usize) {
    while acked.lock().unwrap().len() < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every acknowledged task is completed, and checks each completed exactly once
/// (one completion in its journal). Returns how long it took.
async fn assert_all_completed_once(ch: Channel, acked: &[String], timeout: Duration) -> Duration {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_kill_moves_its_plant_to_the_spare_and_loses_nothing() {
    let mut c = Cluster::new();
    c.start_master();
    let m = c.grpc;
    c.start_node("node-1", &["Plant-001"], m);
    c.start_node("node-2", &["Plant-002"], m);
    c.start_node("node-3", &["Plant-003"], m);
    c.start_node("spare", &[], m);
    c.wait_placement(
        &[
            ("Plant-001", "node-1"),
            ("Plant-002", "node-2"),
            ("Plant-003", "node-3"),
        ],
        Duration::from_secs(20),
    )
    .await;
    let ch = c.channel().await;

    // A sub-agent panicking on a remote node is restarted there and its task retried.
    let mut mesh = pb::mesh_service_client::MeshServiceClient::new(ch.clone());
    mesh.inject_fault(pb::InjectFaultRequest {
        plant_id: "Plant-001".into(),
        kind: "GL-009".into(),
        panic_next: 1,
        delay_ms: 0,
    })
    .await
    .unwrap();
    let mut tasks = pb::task_service_client::TaskServiceClient::new(ch.clone());
    let mut one = req(0);
    one.idempotency_key = "panic-drill".into();
    let id = tasks
        .submit_task(one)
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
        .id;
    let t = loop {
        let t = tasks
            .get_task(pb::GetTaskRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        if t.status == S::Completed as i32 {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(t.attempt, 2);
    assert!(t.history.iter().any(|h| h.detail.contains("panicked")));

    // A node with the wrong cookie is refused.
    let bad = c.dir.path().join("bad-cookie");
    std::fs::write(&bad, "not-the-cluster-cookie-xyz\n").unwrap();
    let mut intruder = Proc::spawn(
        "intruder",
        Path::new(BIN),
        &node_args("intruder", &[], m, loopback(), &bad),
        &[],
        None,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = intruder.try_exit() {
            break s;
        }
        assert!(Instant::now() < end, "intruder still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success());
    assert!(c.metric("heatmesh_node_auth_refused_total").await >= 1.0);

    // 5,000 tasks streaming; kill -9 node-2 after 1,000 acknowledgements.
    let acked = Arc::new(Mutex::new(vec![id]));
    let load = tokio::spawn(stream_tasks(ch.clone(), 5000, 32, acked.clone()));
    wait_acked(&acked, 1000).await;
    c.nodes.get_mut("node-2").unwrap().kill9();
    let detected = c
        .wait_node_status("node-2", "disconnected", Duration::from_secs(5))
        .await;
    let replaced = c
        .wait_placement(&[("Plant-002", "spare")], Duration::from_secs(5))
        .await;
    load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 5001, "every submit acknowledged");
    let drained = assert_all_completed_once(ch.clone(), &acked, Duration::from_secs(60)).await;
    println!(
        "node kill -9: detected after {detected:?} (polled), Plant-002 running on spare {replaced:?} after that; all {} tasks completed once, {drained:?} after the load",
        acked.len()
    );
    assert!(
        detected < Duration::from_millis(500),
        "kill -9 detection took {detected:?}"
    );
    assert!(
        replaced < Duration::from_secs(1),
        "re-placement took {replaced:?} after detection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_is_detected_and_late_results_are_rejected() {
    let mut c = Cluster::new();
    c.start_master();
    let m = c.grpc;
    let proxy = BlackholeProxy::start(m).await.unwrap();
    c.start_node("node-1", &["Plant-001"], m);
    c.start_node("node-2", &["Plant-002"], proxy.addr());
    c.start_node("node-3", &["Plant-003"], m);
    c.start_node("spare", &[], m);
    c.wait_placement(
        &[
            ("Plant-001", "node-1"),
            ("Plant-002", "node-2"),
            ("Plant-003", "node-3"),
        ],
        Duration::from_secs(20),
    )
    .await;
    let ch = c.channel().await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn(stream_tasks(ch.clone(), 2000, 16, acked.clone()));
    wait_acked(&acked, 500).await;
    // Slow node-2's agent so it still has work when the partition starts: what it finishes
    // after losing the master comes back late.
    let mut mesh = pb::mesh_service_client::MeshServiceClient::new(ch.clone());
    mesh.inject_fault(pb::InjectFaultRequest {
        plant_id: "Plant-002".into(),
        kind: "GL-009".into(),
        panic_next: 0,
        delay_ms: 40,
    })
    .await
    .unwrap();
    wait_acked(&acked, 800).await;
    proxy.partition();
    let detected = c
        .wait_node_status("node-2", "disconnected", Duration::from_secs(5))
        .await;
    c.wait_placement(&[("Plant-002", "spare")], Duration::from_secs(5))
        .await;
    load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 2000);
    let drained = assert_all_completed_once(ch.clone(), &acked, Duration::from_secs(60)).await;
    let stale_before = c.metric("heatmesh_stale_results_total").await;
    proxy.heal();
    c.wait_node_status("node-2", "connected", Duration::from_secs(15))
        .await;
    let end = Instant::now() + Duration::from_secs(10);
    let mut stale = c.metric("heatmesh_stale_results_total").await;
    while stale <= stale_before && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stale = c.metric("heatmesh_stale_results_total").await;
    }
    println!(
        "blackhole partition: detected after {detected:?}; drained {drained:?}; after healing {} late results rejected",
        stale - stale_before
    );
    assert!(
        detected < Duration::from_secs(2),
        "partition detection took {detected:?}"
    );
    assert!(
        stale > stale_before,
        "late results from the fenced node must be rejected and counted"
    );
    // Still exactly once after the late results arrived.
    assert_all_completed_once(ch, &acked, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_kill_and_restart_completes_every_acknowledged_task_once() {
    let mut c = Cluster::new();
    c.start_master();
    let m = c.grpc;
    c.start_node("node-1", &["Plant-001"], m);
    c.start_node("node-2", &["Plant-002"], m);
    c.start_node("node-3", &["Plant-003"], m);
    c.wait_placement(
        &[
            ("Plant-001", "node-1"),
            ("Plant-002", "node-2"),
            ("Plant-003", "node-3"),
        ],
        Duration::from_secs(20),
    )
    .await;
    let ch = c.channel().await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn(stream_tasks(ch.clone(), 3000, 16, acked.clone()));
    wait_acked(&acked, 1000).await;
    c.master.as_mut().unwrap().kill9();
    load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let restarted = Instant::now();
    c.start_master();
    c.wait_placement(
        &[
            ("Plant-001", "node-1"),
            ("Plant-002", "node-2"),
            ("Plant-003", "node-3"),
        ],
        Duration::from_secs(20),
    )
    .await;
    let readopted = restarted.elapsed();
    let ch = c.channel().await;
    let drained = assert_all_completed_once(ch, &acked, Duration::from_secs(60)).await;
    println!(
        "master kill -9: {} acknowledged before the kill; nodes re-adopted {readopted:?} after restart; all completed once ({drained:?})",
        acked.len()
    );
}
