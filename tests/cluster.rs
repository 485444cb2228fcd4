//! Multi-process mesh on loopback: a master, plant nodes and a spare as real processes.
//! Nodes are killed with SIGKILL, partitioned through a black-hole proxy, and the master is
//! killed and restarted; every acknowledged task must complete exactly once.

use heatmesh_proto::v1 as pb;
use heatmesh_sim::cluster::{Cluster, assert_all_completed_once, req, stream_tasks, wait_acked};
use heatmesh_sim::process::{Proc, loopback, node_args};
use heatmesh_sim::proxy::BlackholeProxy;
use pb::TaskStatus as S;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_heatmesh");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_kill_moves_its_plant_to_the_spare_and_loses_nothing() {
    let mut c = Cluster::new(Path::new(BIN)).unwrap();
    c.start_master();
    let m = c.grpc;
    c.start_standard(true, None).await;
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
    let mut c = Cluster::new(Path::new(BIN)).unwrap();
    c.start_master();
    let proxy = BlackholeProxy::start(c.grpc).await.unwrap();
    c.start_standard(true, Some(("node-2", proxy.addr()))).await;
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
    let mut c = Cluster::new(Path::new(BIN)).unwrap();
    c.start_master();
    c.start_standard(false, None).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_moves_a_plant_off_a_crowded_node() {
    let mut c = Cluster::new(Path::new(BIN)).unwrap();
    c.start_master();
    let m = c.grpc;
    c.start_node("node-1", &["Plant-001", "Plant-002", "Plant-003"], m);
    c.wait_placement(
        &[
            ("Plant-001", "node-1"),
            ("Plant-002", "node-1"),
            ("Plant-003", "node-1"),
        ],
        Duration::from_secs(20),
    )
    .await;
    c.start_node("spare", &[], m);
    c.wait_node_status("spare", "connected", Duration::from_secs(10))
        .await;
    let ch = c.channel().await;
    let mut tasks = pb::task_service_client::TaskServiceClient::new(ch.clone());
    let moves = tasks
        .rebalance_tasks(pb::RebalanceTasksRequest {})
        .await
        .unwrap()
        .into_inner()
        .moves;
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert!(moves[0].ends_with("node-1 -> spare"), "{moves:?}");
    let plant = moves[0].split(':').next().unwrap().to_string();
    c.wait_placement(&[(plant.as_str(), "spare")], Duration::from_secs(5))
        .await;
    // Pinned by the operator: it is not moved back although its preferred node is up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.wait_placement(&[(plant.as_str(), "spare")], Duration::from_millis(100))
        .await;
    // Work still flows to it.
    let acked = Arc::new(Mutex::new(Vec::new()));
    stream_tasks(ch.clone(), 90, 4, acked.clone()).await;
    let acked = acked.lock().unwrap().clone();
    assert_all_completed_once(ch, &acked, Duration::from_secs(30)).await;
    // A second rebalance finds two plants on node-1 and one on the spare: even enough.
    let again = tasks
        .rebalance_tasks(pb::RebalanceTasksRequest {})
        .await
        .unwrap()
        .into_inner()
        .moves;
    assert!(again.is_empty(), "{again:?}");
}

type Mesh = pb::mesh_service_client::MeshServiceClient<tonic::transport::Channel>;

async fn list_nodes(mesh: &mut Mesh) -> Vec<pb::Node> {
    mesh.list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
}

async fn plant_001(mesh: &mut Mesh) -> pb::Plant {
    let plants = mesh.list_plants(pb::ListPlantsRequest {}).await.unwrap();
    plants
        .into_inner()
        .plants
        .into_iter()
        .find(|p| p.id == "Plant-001")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_node_with_a_live_nodes_id_is_refused_until_the_first_dies() {
    let mut c = Cluster::new(Path::new(BIN)).unwrap();
    c.start_master();
    let m = c.grpc;
    c.start_node("node-1", &["Plant-001"], m);
    c.wait_placement(&[("Plant-001", "node-1")], Duration::from_secs(30))
        .await;
    let mut mesh = pb::mesh_service_client::MeshServiceClient::new(c.channel().await);
    let before = plant_001(&mut mesh).await;
    let first = list_nodes(&mut mesh)
        .await
        .into_iter()
        .find(|n| n.id == "node-1")
        .unwrap();
    let (first_addr, first_epoch) = (first.address, first.epoch);

    // The same id again, as two `--plant Plant-001` nodes would get by default.
    let twin_listen = loopback();
    let log = c.log("twin");
    // Its own disk, as on a second machine: only the id is shared.
    let mut args = node_args("node-1", &["Plant-001"], m, twin_listen, &c.cookie);
    for flag in ["--data-dir", "--acquired-log"] {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = c
            .dir
            .path()
            .join(format!("twin{flag}"))
            .display()
            .to_string();
    }
    let mut twin = Proc::spawn("twin", Path::new(BIN), &args, &[], Some(&log)).unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    while c.metric("heatmesh_node_duplicate_refused_total").await < 1.0 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(Instant::now() < end, "the twin was never refused:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The master counts the refusal before the twin has read it and logged it.
    let want = format!(
        "is already attached from {first_addr} (node epoch {first_epoch}); this attach from {twin_listen} is refused"
    );
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&want) {
            break;
        }
        assert!(Instant::now() < end, "twin's log lacks {want:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nodes = list_nodes(&mut mesh).await;
    let ones: Vec<_> = nodes.iter().filter(|n| n.id == "node-1").collect();
    assert_eq!(ones.len(), 1);
    assert_eq!(ones[0].address, first_addr);
    let now = plant_001(&mut mesh).await;
    assert_eq!(
        (now.node.as_str(), now.epoch),
        ("node-1", before.epoch),
        "the plant did not move"
    );

    // Once the first is gone, the twin (still retrying) takes the id and the plant.
    c.nodes.get_mut("node-1").unwrap().kill9();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = list_nodes(&mut mesh).await;
        let p = plant_001(&mut mesh).await;
        let twin_holds = nodes.iter().any(|n| {
            n.id == "node-1" && n.address == twin_listen.to_string() && n.status == "connected"
        });
        if twin_holds && p.status == "running" && p.epoch > before.epoch {
            break;
        }
        assert!(
            Instant::now() < end,
            "the twin never took over: {nodes:?} {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    twin.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_master_fences_no_healthy_node_but_still_a_hung_one() {
    let mut c = Cluster::new(Path::new(BIN)).unwrap();
    c.start_master();
    c.start_standard(false, None).await;
    let mut mesh = Mesh::new(c.channel().await);
    let before = list_nodes(&mut mesh).await;
    let lost_before = c.metric("heatmesh_node_lost_total").await;

    // The master stops for 3 s (three leases); 0.3 s into it node-3 hangs for good.
    let master = c.master.as_ref().unwrap();
    master.signal("STOP").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.nodes["node-3"].signal("STOP").unwrap();
    tokio::time::sleep(Duration::from_millis(2700)).await;
    c.master.as_ref().unwrap().signal("CONT").unwrap();
    let woke = Instant::now();

    // The hung node is still found, one lease (1 s) after the master resumed judging.
    c.wait_node_status("node-3", "disconnected", Duration::from_secs(5))
        .await;
    let found = woke.elapsed();
    assert!(
        found >= Duration::from_millis(900),
        "fenced {found:?} after the wake: before its restarted lease ran out"
    );
    // The healthy nodes kept their sessions: same node epochs, connected, never lost.
    let after = list_nodes(&mut mesh).await;
    for id in ["node-1", "node-2"] {
        let (b, a) = (
            before.iter().find(|n| n.id == id).unwrap(),
            after.iter().find(|n| n.id == id).unwrap(),
        );
        assert_eq!(
            (a.status.as_str(), a.epoch),
            ("connected", b.epoch),
            "{id}: {a:?}"
        );
    }
    assert_eq!(
        c.metric("heatmesh_node_lost_total").await,
        lost_before + 1.0
    );
    assert!(
        c.metric("heatmesh_master_stalls_total").await >= 2.0,
        "each session saw the stall"
    );
    let p = plant_001(&mut mesh).await;
    assert_eq!(p.node, "node-1", "Plant-001 stayed where it ran");
    c.nodes["node-3"].signal("CONT").unwrap();
}
