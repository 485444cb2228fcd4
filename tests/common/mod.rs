//! Shared helpers for the end-to-end tests: a mesh on loopback with a temporary ledger.
#![allow(dead_code)]

use heatmesh_master::config::{Config, SAMPLE_FLEET};
use heatmesh_master::server::{self, RunningMesh, StartOptions};
use heatmesh_proto::v1 as pb;
use pb::mesh_service_client::MeshServiceClient;
use pb::task_service_client::TaskServiceClient;
use std::time::Duration;
use tonic::transport::Channel;

/// A started mesh with its clients and data directory.
pub struct Harness {
    pub mesh: RunningMesh,
    pub tasks: TaskServiceClient<Channel>,
    pub meshc: MeshServiceClient<Channel>,
    pub channel: Channel,
    pub dir: tempfile::TempDir,
}

/// The sample fleet with fast retries, fault injection on, random loopback ports.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::from_toml_with_env(SAMPLE_FLEET, Vec::new()).expect("sample fleet");
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    c.data_dir = dir.to_path_buf();
    c.allow_fault_injection = true;
    c.scheduler.retry_backoff_initial_ms = 10;
    c.scheduler.retry_backoff_max_ms = 100;
    c.scheduler.replace_backoff_ms = 50;
    c.restart.backoff_initial_ms = 5;
    c.restart.backoff_max_ms = 20;
    // No connectors: tests that want plant data over Modbus start a simulator and point the
    // sources at it; the rest push readings and must not race a device on a fixed port.
    for p in &mut c.plants {
        p.feeds.push_only();
    }
    c
}

/// Starts a mesh (optionally with dispatch held) and waits until its plants are placed. A
/// ledger still closing after an earlier mesh in this process shut down (its threads drain,
/// then release the directory's lock) is waited for, up to 10 s.
pub async fn start_with(cfg: Config, dir: tempfile::TempDir, paused: bool) -> Harness {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mesh = loop {
        let opts = StartOptions {
            paused,
            ..Default::default()
        };
        match server::start(cfg.clone(), opts).await {
            Ok(m) => break m,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("mesh starts: {e}"),
        }
    };
    assert!(
        mesh.wait_ready(Duration::from_secs(10)).await,
        "plants placed"
    );
    let channel = Channel::from_shared(format!("http://{}", mesh.grpc_addr))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    Harness {
        tasks: TaskServiceClient::new(channel.clone()),
        meshc: MeshServiceClient::new(channel.clone()),
        channel,
        mesh,
        dir,
    }
}

/// Starts a mesh with the test configuration.
pub async fn start(paused: bool) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    start_with(cfg, dir, paused).await
}

pub fn flow(name: &str, kwh: f64) -> pb::EnergyFlow {
    pb::EnergyFlow {
        name: name.into(),
        energy_kwh: kwh,
        ..Default::default()
    }
}

/// The seed's known-answer balance: 1000 + 50 in, 750 + 200 out.
pub fn seed_balance() -> pb::HeatBalanceRequest {
    pb::HeatBalanceRequest {
        inputs: vec![flow("fuel", 1000.0), flow("electricity", 50.0)],
        outputs: vec![flow("steam", 750.0), flow("electricity", 200.0)],
        ..Default::default()
    }
}

pub fn submit(plant: &str, req: pb::HeatBalanceRequest) -> pb::SubmitTaskRequest {
    pb::SubmitTaskRequest {
        plant_id: plant.into(),
        payload: Some(pb::TaskPayload {
            request: Some(pb::task_payload::Request::Gl009HeatBalance(req)),
        }),
        ..Default::default()
    }
}

/// The tasks the ledger holds, up to ListTasks' largest page (1,000).
pub async fn tasks_held(h: &mut Harness) -> Vec<pb::Task> {
    let page = pb::ListTasksRequest {
        page_size: 1000,
        ..Default::default()
    };
    let all = h.tasks.list_tasks(page).await;
    all.unwrap().into_inner().tasks
}

/// Submits and returns the accepted task's id (the request must be accepted).
pub async fn submit_ok(h: &mut Harness, req: pb::SubmitTaskRequest) -> String {
    h.tasks
        .submit_task(req)
        .await
        .expect("submit accepted")
        .into_inner()
        .task
        .expect("accepted submit returns the task")
        .id
}

/// Arms a rehearsal fault: the next `n` tasks of that agent panic.
pub async fn panic_next(h: &mut Harness, plant: &str, kind: &str, n: u32) {
    h.meshc
        .inject_fault(pb::InjectFaultRequest {
            plant_id: plant.into(),
            kind: kind.into(),
            panic_next: n,
            delay_ms: 0,
        })
        .await
        .expect("fault injection is enabled in the test configuration");
}

/// A submit carrying a request for any kind as JSON (what `heatmesh submit` sends).
pub fn json_submit(plant: &str, kind: &str, json: &str) -> pb::SubmitTaskRequest {
    pb::SubmitTaskRequest {
        plant_id: plant.into(),
        payload: Some(pb::TaskPayload {
            request: Some(pb::task_payload::Request::Json(pb::JsonRequest {
                agent_kind: kind.into(),
                json: json.into(),
            })),
        }),
        ..Default::default()
    }
}

/// Polls GetTask until the task is terminal or the timeout passes.
pub async fn wait_terminal(
    c: &mut TaskServiceClient<Channel>,
    id: &str,
    timeout: Duration,
) -> pb::Task {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let t = c
            .get_task(pb::GetTaskRequest { id: id.into() })
            .await
            .expect("get")
            .into_inner();
        let s = pb::TaskStatus::try_from(t.status).unwrap();
        if matches!(
            s,
            pb::TaskStatus::Completed | pb::TaskStatus::Failed | pb::TaskStatus::Cancelled
        ) {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "task {id} not terminal in time: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn heat_result(t: &pb::Task) -> pb::HeatBalanceResult {
    match t.result.as_ref().and_then(|r| r.typed.clone()) {
        Some(pb::task_result::Typed::Gl009HeatBalance(r)) => r,
        other => panic!("no GL-009 result in {t:?}: {other:?}"),
    }
}

/// Every connector-read meter's feed of `plant` (all plants when empty), as ListFeeds answers.
pub async fn list_feeds(ch: &Channel, plant: &str) -> Vec<pb::MeterFeed> {
    pb::reading_service_client::ReadingServiceClient::new(ch.clone())
        .list_feeds(pb::ListFeedsRequest {
            plant_id: plant.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .feeds
}

/// A plain HTTP/1.1 GET; returns the status code and the whole response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, buf)
}
