//! kill -9 the master mid-work, restart it on the same data dir: every acknowledged task
//! completes, none twice, and dispatched tasks come back and run again.

mod common;

use common::*;
use heatmesh_proto::v1 as pb;
use heatmesh_sim::process::free_port;
use pb::TaskStatus as S;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn spawn_up(dir: &std::path::Path, port: u16, faults: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_heatmesh"));
    cmd.args([
        "up",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir)
    .env_remove("HEATMESH_CONFIG")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if faults {
        cmd.arg("--allow-fault-injection");
    }
    cmd.spawn().expect("spawn heatmesh up")
}

async fn connect_ready(port: u16) -> Channel {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            let mut m = pb::mesh_service_client::MeshServiceClient::new(ch.clone());
            if let Ok(r) = m.list_plants(pb::ListPlantsRequest {}).await
                && r.get_ref().plants.iter().all(|p| p.status == "running")
            {
                return ch;
            }
        }
        assert!(Instant::now() < end, "master did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_completes_every_acknowledged_task_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn_up(dir.path(), port, true);
    let ch = connect_ready(port).await;
    let mut tasks = pb::task_service_client::TaskServiceClient::new(ch.clone());
    let mut mesh = pb::mesh_service_client::MeshServiceClient::new(ch);
    // Agents stall on their first task, so work is dispatched but unfinished at the kill.
    for p in ["Plant-001", "Plant-002", "Plant-003"] {
        mesh.inject_fault(pb::InjectFaultRequest {
            plant_id: p.into(),
            kind: "GL-009".into(),
            panic_next: 0,
            delay_ms: 60_000,
        })
        .await
        .unwrap();
    }
    let mut acked = Vec::new();
    for i in 0..300 {
        let plant = ["Plant-001", "Plant-002", "Plant-003"][i % 3];
        let mut req = submit(plant, seed_balance());
        req.idempotency_key = format!("crash-{i}");
        let r = tasks
            .submit_task(req)
            .await
            .expect("acknowledged")
            .into_inner();
        acked.push(r.task.unwrap().id);
    }
    let dispatched = tasks
        .list_tasks(pb::ListTasksRequest {
            status: vec![S::Dispatched as i32],
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks
        .len();
    assert!(dispatched > 0, "some tasks must be in flight at the kill");
    child.kill().expect("kill -9"); // SIGKILL on Unix: no shutdown path runs.
    child.wait().unwrap();

    let mut child = spawn_up(dir.path(), port, false);
    let ch = connect_ready(port).await;
    let mut tasks = pb::task_service_client::TaskServiceClient::new(ch);
    let mut requeued = 0;
    for id in &acked {
        let t = wait_terminal(&mut tasks, id, Duration::from_secs(30)).await;
        assert_eq!(t.status, S::Completed as i32, "task {id}: {t:?}");
        let completions = t
            .history
            .iter()
            .filter(|h| h.to == S::Completed as i32)
            .count();
        assert_eq!(completions, 1, "task {id} committed {completions} times");
        if t.history
            .iter()
            .any(|h| h.detail.contains("master restarted while dispatched"))
        {
            requeued += 1;
        }
    }
    assert_eq!(
        requeued, dispatched,
        "every task dispatched at the kill ran again"
    );
    // Idempotency keys survived the crash too.
    let mut req = submit("Plant-001", seed_balance());
    req.idempotency_key = "crash-0".into();
    let again = tasks.submit_task(req).await.unwrap().into_inner();
    assert!(again.duplicate);
    assert_eq!(again.task.unwrap().id, acked[0]);
    let all = tasks
        .list_tasks(pb::ListTasksRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.tasks.len(), 300, "no phantom tasks");
    child.kill().unwrap();
    child.wait().unwrap();
}
