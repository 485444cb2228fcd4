//! Retention against a real `heatmesh up` process with windows of seconds: finished tasks
//! go, their idempotency keys outlive them for their own window and then free the key, a
//! feed cannot resume from before what was removed, and task ids never go back, not even
//! across a kill -9 once every task is gone.

mod common;

use common::*;
use heatmesh_proto::v1 as pb;
use heatmesh_sim::process::free_port;
use pb::task_service_client::TaskServiceClient;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;

/// Finished tasks kept 1 s, their keys 8 s from creation, swept every 100 ms.
fn spawn_up(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_heatmesh"))
        .args([
            "up",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("HEATMESH_CONFIG")
        .env("HEATMESH_RETENTION__TASKS", "1s")
        .env("HEATMESH_RETENTION__IDEMPOTENCY_KEYS", "8s")
        .env("HEATMESH_RETENTION__SWEEP_EVERY", "100ms")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn heatmesh up")
}

async fn connect(port: u16) -> TaskServiceClient<Channel> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            return TaskServiceClient::new(ch);
        }
        assert!(Instant::now() < end, "master not reachable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn keyed(i: usize) -> pb::SubmitTaskRequest {
    let mut req = submit(
        ["Plant-001", "Plant-002", "Plant-003"][i % 3],
        seed_balance(),
    );
    req.idempotency_key = format!("ret-{i}");
    req
}

/// Submits until the plants accept work (they are placed just after the master listens).
async fn submit_id(c: &mut TaskServiceClient<Channel>, req: pb::SubmitTaskRequest) -> u64 {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match c.submit_task(req.clone()).await {
            Ok(r) => return r.into_inner().task.unwrap().id.parse().unwrap(),
            Err(s) if Instant::now() < end && s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("submit {}: {s}", req.idempotency_key),
        }
    }
}

/// Polls GetTask until `want(code)` holds for task `id`; returns the last status code.
async fn wait_code(c: &mut TaskServiceClient<Channel>, id: u64, want: fn(Code) -> bool) -> Code {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let code = match c.get_task(pb::GetTaskRequest { id: id.to_string() }).await {
            Ok(r) if r.get_ref().status == pb::TaskStatus::Completed as i32 => Code::Ok,
            Ok(_) => Code::Unknown,
            Err(s) => s.code(),
        };
        if want(code) || Instant::now() > end {
            return code;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_and_then_their_keys_expire_and_ids_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn_up(dir.path(), port);
    let mut c = connect(port).await;

    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(submit_id(&mut c, keyed(i)).await);
    }
    let created = Instant::now();
    let last = *ids.iter().max().unwrap();
    // Every task completes first: retention never takes an unfinished one.
    for &id in &ids {
        assert_eq!(
            wait_code(&mut c, id, |k| k == Code::Ok).await,
            Code::Ok,
            "task {id}"
        );
    }
    for &id in &ids {
        assert_eq!(
            wait_code(&mut c, id, |k| k == Code::NotFound).await,
            Code::NotFound,
            "finished task {id} still there after its 1 s retention"
        );
    }

    // Inside the key window the same request is not run again, and the refusal says why.
    assert!(
        created.elapsed() < Duration::from_secs(7),
        "too slow to test the key window"
    );
    let again = c.submit_task(keyed(0)).await.expect_err("key reused");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert!(
        again.message().contains("\"ret-0\"") && again.message().contains("retention"),
        "{}",
        again.message()
    );

    // The feed's removed changes cannot be resumed from.
    let feed = c
        .stream_events(pb::StreamEventsRequest {
            terminal_only: false,
            resume_after_seq: Some(1),
        })
        .await;
    let status = match feed {
        Err(s) => s,
        Ok(r) => r
            .into_inner()
            .message()
            .await
            .expect_err("resumed from seq 1"),
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("resume_after_seq: 1"),
        "{}",
        status.message()
    );

    // Past the key window the key names a new request, under a new id.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(created.elapsed())).await;
    let end = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        match c.submit_task(keyed(0)).await {
            Ok(r) => break r.into_inner().task.unwrap().id.parse::<u64>().unwrap(),
            Err(s) if s.code() == Code::AlreadyExists && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("key ret-0 not freed after its window: {s}"),
        }
    };
    assert!(fresh > last, "id {fresh} reused (last before: {last})");
    assert_eq!(wait_code(&mut c, fresh, |k| k == Code::Ok).await, Code::Ok);
    assert_eq!(
        wait_code(&mut c, fresh, |k| k == Code::NotFound).await,
        Code::NotFound
    );

    // With no task left in the ledger, a restart still continues the ids.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = spawn_up(dir.path(), port);
    let mut c = connect(port).await;
    let after = submit_id(&mut c, keyed(1000)).await;
    assert!(after > fresh, "id {after} after restart, {fresh} before it");
    child.kill().unwrap();
    child.wait().unwrap();
}
