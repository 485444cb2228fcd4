//! End-to-end tests of TaskService and MeshService over gRPC on loopback.

mod common;

use common::*;
use heatmesh_proto::v1 as pb;
use pb::TaskStatus as S;
use std::time::Duration;
use tonic::Code;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn submit_get_and_known_answer() {
    let mut h = start(false).await;
    let r = h
        .tasks
        .submit_task(submit("Plant-001", seed_balance()))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.duplicate);
    let id = r.task.unwrap().id;
    let t = wait_terminal(&mut h.tasks, &id, T).await;
    assert_eq!(t.status, S::Completed as i32, "{t:?}");
    let res = heat_result(&t);
    assert!((res.efficiency_pct - 90.476_190_476).abs() < 1e-6);
    assert!((res.closure_pct - 9.523_809_524).abs() < 1e-6);
    assert!(res.balance_alert);
    assert_eq!(res.closure_threshold_pct, 5.0, "plant default applied");
    assert_eq!(t.attempt, 1);
    assert_eq!(t.agent, "Plant-001/GL-009");
    let journal: Vec<(i32, i32)> = t.history.iter().map(|h| (h.from, h.to)).collect();
    assert_eq!(
        journal,
        vec![
            (S::Unspecified as i32, S::Pending as i32),
            (S::Pending as i32, S::Dispatched as i32),
            (S::Dispatched as i32, S::Completed as i32)
        ]
    );
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn plant_threshold_is_used_per_plant() {
    let mut h = start(false).await;
    // Plant-003 has a 10 % threshold: the seed's 9.52 % closes without an alert there.
    let id = submit_ok(&mut h, submit("Plant-003", seed_balance())).await;
    let r = heat_result(&wait_terminal(&mut h.tasks, &id, T).await);
    assert_eq!(r.closure_threshold_pct, 10.0);
    assert!(!r.balance_alert);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn watch_streams_every_state_until_terminal() {
    let mut h = start(true).await;
    let id = submit_ok(&mut h, submit("Plant-002", seed_balance())).await;
    let mut stream = h
        .tasks
        .watch_task(pb::GetTaskRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, S::Pending as i32);
    h.mesh.set_paused(false);
    let mut seen = vec![first.status];
    while let Some(t) = stream.message().await.unwrap() {
        seen.push(t.status);
    }
    assert_eq!(
        seen,
        vec![S::Pending as i32, S::Dispatched as i32, S::Completed as i32]
    );
    let missing = h
        .tasks
        .watch_task(pb::GetTaskRequest {
            id: "999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn idempotent_resubmit_returns_the_same_task() {
    let mut h = start(false).await;
    let mut req = submit("Plant-001", seed_balance());
    req.idempotency_key = "meter-read-2026-11-22T10:00".into();
    let a = h.tasks.submit_task(req.clone()).await.unwrap().into_inner();
    let b = h.tasks.submit_task(req.clone()).await.unwrap().into_inner();
    assert!(!a.duplicate && b.duplicate);
    assert_eq!(a.task.as_ref().unwrap().id, b.task.as_ref().unwrap().id);
    wait_terminal(&mut h.tasks, &a.task.unwrap().id, T).await;
    // Still the same task once it is terminal (the key is durable, not just in memory).
    let c = h.tasks.submit_task(req).await.unwrap().into_inner();
    assert!(c.duplicate);
    assert_eq!(c.task.unwrap().id, b.task.unwrap().id);
    let held = tasks_held(&mut h).await;
    assert_eq!(held.len(), 1);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_refused() {
    let mut h = start(true).await;
    let mut req = submit("Plant-001", seed_balance());
    req.idempotency_key = "window-2026-12-02T06:00".into();
    let first = h.tasks.submit_task(req.clone()).await.unwrap().into_inner();
    let id = first.task.unwrap().id;

    let mut other_plant = req.clone();
    other_plant.plant_id = "Plant-002".into();
    let mut other_payload = submit(
        "Plant-001",
        pb::HeatBalanceRequest {
            outputs: vec![flow("steam", 700.0)],
            ..seed_balance()
        },
    );
    other_payload.idempotency_key = req.idempotency_key.clone();
    for (what, r, differs) in [
        (
            "plant",
            other_plant,
            r#"plant_id "Plant-001", not "Plant-002""#,
        ),
        ("payload", other_payload, "a different payload"),
    ] {
        let e = h.tasks.submit_task(r).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{what}: {e:?}");
        let want = format!(
            r#"idempotency_key: "window-2026-12-02T06:00" was first used for task {id} with {differs}"#
        );
        assert!(e.message().starts_with(&want), "{what}: {}", e.message());
    }
    // The same request under the same key is still the first task, and nothing was added.
    let again = h.tasks.submit_task(req).await.unwrap().into_inner();
    assert!(again.duplicate);
    assert_eq!(again.task.unwrap().id, id);
    let held = tasks_held(&mut h).await;
    assert_eq!(held.len(), 1);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn priorities_run_in_order() {
    // One task in flight at a time, so each dispatch is its own decision, made when the
    // previous task finished, and the journal's dispatch times give the order.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.scheduler.max_in_flight_per_agent = 1;
    let mut h = start_with(cfg, dir, true).await;
    let order = [
        pb::Priority::Low,
        pb::Priority::Normal,
        pb::Priority::Critical,
        pb::Priority::High,
    ];
    let mut ids = Vec::new();
    for p in order {
        for _ in 0..5 {
            let mut req = submit("Plant-001", seed_balance());
            req.priority = p as i32;
            let id = submit_ok(&mut h, req).await;
            ids.push((p, id));
        }
    }
    h.mesh.set_paused(false);
    let mut dispatched = Vec::new();
    for (p, id) in &ids {
        let t = wait_terminal(&mut h.tasks, id, T).await;
        let at = t
            .history
            .iter()
            .find(|x| x.to == S::Dispatched as i32)
            .and_then(|x| x.at)
            .map(|a| (a.seconds, a.nanos))
            .unwrap();
        dispatched.push((at, *p));
    }
    dispatched.sort();
    assert!(
        dispatched.windows(2).all(|w| w[0].0 < w[1].0),
        "dispatch times must be distinct for the order to mean anything: {dispatched:?}"
    );
    let got: Vec<pb::Priority> = dispatched.into_iter().map(|(_, p)| p).collect();
    let mut want = Vec::new();
    for p in [
        pb::Priority::Critical,
        pb::Priority::High,
        pb::Priority::Normal,
        pb::Priority::Low,
    ] {
        want.extend(std::iter::repeat_n(p, 5));
    }
    assert_eq!(got, want);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn cancel_pending_task_and_refuse_twice() {
    let mut h = start(true).await;
    let id = submit_ok(&mut h, submit("Plant-001", seed_balance())).await;
    let t = h
        .tasks
        .cancel_task(pb::CancelTaskRequest {
            id: id.clone(),
            reason: "meter under repair".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.status, S::Cancelled as i32);
    assert!(t.error.contains("meter under repair"));
    h.mesh.set_paused(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = h
        .tasks
        .get_task(pb::GetTaskRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.status, S::Cancelled as i32, "a cancelled task never runs");
    let again = h
        .tasks
        .cancel_task(pb::CancelTaskRequest {
            id,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let missing = h
        .tasks
        .cancel_task(pb::CancelTaskRequest {
            id: "424242".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn list_filters_and_pages() {
    let mut h = start(false).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let plant = if i % 2 == 0 { "Plant-001" } else { "Plant-002" };
        ids.push(
            h.tasks
                .submit_task(submit(plant, seed_balance()))
                .await
                .unwrap()
                .into_inner()
                .task
                .unwrap()
                .id,
        );
    }
    for id in &ids {
        wait_terminal(&mut h.tasks, id, T).await;
    }
    let p1 = h
        .tasks
        .list_tasks(pb::ListTasksRequest {
            plant_id: "Plant-001".into(),
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.tasks.len(), 3);
    assert!(p1.tasks.iter().all(|t| t.plant_id == "Plant-001"));
    assert!(!p1.next_page_token.is_empty());
    let p2 = h
        .tasks
        .list_tasks(pb::ListTasksRequest {
            plant_id: "Plant-001".into(),
            page_size: 3,
            page_token: p1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.tasks.len(), 1);
    let newest_first: Vec<u64> = p1
        .tasks
        .iter()
        .chain(&p2.tasks)
        .map(|t| t.id.parse().unwrap())
        .collect();
    assert_eq!(newest_first, vec![7, 5, 3, 1]);
    let completed = h
        .tasks
        .list_tasks(pb::ListTasksRequest {
            status: vec![S::Completed as i32],
            agent_kind: "gl-009".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(completed.tasks.len(), 7);
    let failed = h
        .tasks
        .list_tasks(pb::ListTasksRequest {
            status: vec![S::Failed as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(failed.tasks.is_empty());
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn deadline_expires_a_task_that_cannot_run() {
    let mut h = start(true).await;
    let mut req = submit("Plant-001", seed_balance());
    req.deadline = Some(prost_types::Duration {
        seconds: 0,
        nanos: 150_000_000,
    });
    let id = submit_ok(&mut h, req).await;
    let t = wait_terminal(&mut h.tasks, &id, T).await;
    assert_eq!(t.status, S::Failed as i32);
    assert!(t.error.contains("DEADLINE_EXCEEDED"), "{}", t.error);
    assert_eq!(t.attempt, 0, "never dispatched");
    // An operator can retry it: the deadline is cleared and it runs.
    let r = h
        .tasks
        .retry_failed(pb::RetryFailedRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.task_ids, vec![id.clone()]);
    h.mesh.set_paused(false);
    let t = wait_terminal(&mut h.tasks, &id, T).await;
    assert_eq!(t.status, S::Completed as i32, "{t:?}");
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn panicking_agent_is_restarted_and_its_task_retried() {
    let mut h = start(false).await;
    panic_next(&mut h, "Plant-002", "gl-009", 1).await;
    let id = submit_ok(&mut h, submit("Plant-002", seed_balance())).await;
    let t = wait_terminal(&mut h.tasks, &id, T).await;
    assert_eq!(t.status, S::Completed as i32, "{t:?}");
    assert_eq!(t.attempt, 2);
    assert!(
        t.history.iter().any(|x| x.detail.contains("panicked")),
        "{:?}",
        t.history
    );
    let agents = h
        .meshc
        .list_agents(pb::ListAgentsRequest {
            plant_id: "Plant-002".into(),
            kind: "gl-009".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].restarts, 1);
    assert_eq!(agents[0].status, "running");
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn restart_intensity_escalates_and_the_plant_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.restart.max_restarts = 2;
    let mut h = start_with(cfg, dir, false).await;
    panic_next(&mut h, "Plant-001", "GL-009", 4).await;
    let mut req = submit("Plant-001", seed_balance());
    req.max_attempts = 10;
    let id = submit_ok(&mut h, req).await;
    let t = wait_terminal(&mut h.tasks, &id, T).await;
    assert_eq!(t.status, S::Completed as i32, "{t:?}");
    assert_eq!(t.attempt, 5, "four panics, then success");
    assert_eq!(t.epoch, 2, "the plant was re-placed under a new epoch");
    let plants = h
        .meshc
        .list_plants(pb::ListPlantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .plants;
    let p1 = plants.iter().find(|p| p.id == "Plant-001").unwrap();
    assert_eq!((p1.epoch, p1.status.as_str()), (2, "running"));
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let mut h = start(false).await;
    panic_next(&mut h, "Plant-003", "GL-009", 2).await;
    let mut req = submit("Plant-003", seed_balance());
    req.max_attempts = 2;
    let id = submit_ok(&mut h, req).await;
    let t = wait_terminal(&mut h.tasks, &id, T).await;
    assert_eq!(t.status, S::Failed as i32);
    assert!(t.error.contains("panicked"), "{}", t.error);
    assert_eq!(t.attempt, 2);
    let r = h
        .tasks
        .retry_failed(pb::RetryFailedRequest {
            plant_id: "Plant-003".into(),
            agent_kind: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.affected, 1);
    let t = wait_terminal(&mut h.tasks, &id, T).await;
    assert_eq!(t.status, S::Completed as i32);
    assert_eq!(t.attempt, 3);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let mut h = start(false).await;
    let check = |r: Result<tonic::Response<pb::SubmitTaskResponse>, tonic::Status>,
                 code: Code,
                 text: &str| {
        let e = r.expect_err("must be refused");
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(
            e.message().contains(text),
            "{:?} does not mention {text:?}",
            e.message()
        );
    };
    let mut nan = seed_balance();
    nan.inputs[1].energy_kwh = f64::NAN;
    check(
        h.tasks.submit_task(submit("Plant-001", nan)).await,
        Code::InvalidArgument,
        "payload.gl009_heat_balance.inputs[1].energy_kwh: must be a finite number",
    );
    let mut inf = seed_balance();
    inf.outputs[0].energy_kwh = f64::INFINITY;
    check(
        h.tasks.submit_task(submit("Plant-001", inf)).await,
        Code::InvalidArgument,
        "outputs[0].energy_kwh",
    );
    let mut neg = seed_balance();
    neg.inputs[0].energy_kwh = -1.0;
    check(
        h.tasks.submit_task(submit("Plant-001", neg)).await,
        Code::InvalidArgument,
        "inputs[0].energy_kwh: must be >= 0",
    );
    let mut empty = seed_balance();
    empty.inputs.clear();
    check(
        h.tasks.submit_task(submit("Plant-001", empty)).await,
        Code::InvalidArgument,
        "inputs: at least one input",
    );
    check(
        h.tasks
            .submit_task(submit("Plant-404", seed_balance()))
            .await,
        Code::NotFound,
        "plant_id: no plant \"Plant-404\"",
    );
    check(
        h.tasks.submit_task(submit("", seed_balance())).await,
        Code::InvalidArgument,
        "plant_id: required",
    );
    let no_payload = pb::SubmitTaskRequest {
        plant_id: "Plant-001".into(),
        ..Default::default()
    };
    check(
        h.tasks.submit_task(no_payload).await,
        Code::InvalidArgument,
        "payload: required",
    );
    let unknown_kind = json_submit("Plant-001", "GL-777", "{}");
    check(
        h.tasks.submit_task(unknown_kind).await,
        Code::NotFound,
        "unknown agent kind \"GL-777\"",
    );
    let bad_json = json_submit("Plant-001", "GL-009", "{not json");
    check(
        h.tasks.submit_task(bad_json).await,
        Code::InvalidArgument,
        "payload.json.json: not valid JSON",
    );
    let mut big = seed_balance();
    big.inputs = (0..20_000)
        .map(|i| flow(&format!("meter-{i}"), 1.0))
        .collect();
    check(
        h.tasks.submit_task(submit("Plant-001", big)).await,
        Code::InvalidArgument,
        "payload: encoded size",
    );
    let mut bad_prio = submit("Plant-001", seed_balance());
    bad_prio.priority = 9;
    check(
        h.tasks.submit_task(bad_prio).await,
        Code::InvalidArgument,
        "priority: unknown value 9",
    );
    let mut bad_deadline = submit("Plant-001", seed_balance());
    bad_deadline.deadline = Some(prost_types::Duration {
        seconds: -5,
        nanos: 0,
    });
    check(
        h.tasks.submit_task(bad_deadline).await,
        Code::InvalidArgument,
        "deadline",
    );
    let bad_id = h
        .tasks
        .get_task(pb::GetTaskRequest { id: "abc".into() })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert!(bad_id.message().starts_with("id: must be a task id"));
    let held = tasks_held(&mut h).await;
    assert!(held.is_empty(), "bad input reached the ledger: {:?}", held);
    // A good task still goes through afterwards.
    let id = submit_ok(&mut h, submit("Plant-001", seed_balance())).await;
    assert_eq!(
        wait_terminal(&mut h.tasks, &id, T).await.status,
        S::Completed as i32
    );
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn health_reflection_and_metrics_are_served() {
    let mut h = start(false).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(h.channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "heatmesh.v1.TaskService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(h.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in [
        "heatmesh.v1.TaskService",
        "heatmesh.v1.MeshService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == s), "{s} missing from {names:?}");
    }

    let id = submit_ok(&mut h, submit("Plant-001", seed_balance())).await;
    wait_terminal(&mut h.tasks, &id, T).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = h.mesh.metrics_addr.unwrap();
    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for m in [
        "heatmesh_tasks_submitted_total",
        "heatmesh_task_latency_seconds_bucket",
        "heatmesh_ledger_commit_seconds_bucket",
        "heatmesh_queue_depth",
        "heatmesh_tasks{state=\"pending\"}",
        "heatmesh_tasks_finished_total{state=\"completed\"}",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        assert!(body.contains(m), "{m} missing from /metrics:\n{body}");
    }
    let own = heatmesh_master::procstat::from_prometheus(&body).expect("process series");
    let now = heatmesh_master::procstat::sample(std::process::id()).unwrap();
    assert!(own.rss_bytes > 1 << 20 && own.cpu_s > 0.0 && own.cpu_s <= now.cpu_s);
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    h.mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_with_a_retry_hint_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    // A queue of one commit: every submit that finds the log busy is shed.
    cfg.limits.max_commit_queue = 1;
    let mut h = start_with(cfg, dir, false).await;
    let sends = (0..400).map(|i| {
        let mut c = h.tasks.clone();
        let mut req = submit("Plant-001", seed_balance());
        req.idempotency_key = format!("burst-{i}");
        tokio::spawn(async move { c.submit_task(req).await })
    });
    let (mut accepted, mut shed) = (Vec::new(), 0);
    for r in futures::future::join_all(sends).await {
        match r.unwrap() {
            Ok(t) => accepted.push(t.into_inner().task.unwrap().id),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    e.message().starts_with("ledger: ")
                        && e.message().contains("limits.max_commit_queue = 1")
                        && e.message()
                            .ends_with("nothing was accepted, retry in 100 ms"),
                    "{}",
                    e.message()
                );
                assert_eq!(e.metadata().get("grpc-retry-pushback-ms").unwrap(), "100");
                shed += 1;
            }
        }
    }
    assert!(
        shed > 0,
        "400 concurrent submits against a queue of one: none shed"
    );
    assert!(!accepted.is_empty(), "some submits must get through");
    for id in &accepted {
        let t = wait_terminal(&mut h.tasks, id, T).await;
        assert_eq!(t.status(), S::Completed);
    }
    // Exactly the accepted tasks exist: a shed submit left nothing behind.
    let mut held: Vec<String> = tasks_held(&mut h).await.into_iter().map(|t| t.id).collect();
    held.sort();
    accepted.sort();
    assert_eq!(held, accepted);
    h.mesh.shutdown().await;
}

#[tokio::test]
async fn malformed_deadlines_ids_and_oversized_plant_ids_are_refused() {
    let mut h = start(true).await;
    let deadline = |seconds, nanos| {
        let mut r = submit("Plant-001", seed_balance());
        r.deadline = Some(prost_types::Duration { seconds, nanos });
        r
    };
    for (req, want) in [
        (
            deadline(5, -1),
            "deadline.nanos: must be within [0, 999999999]",
        ),
        (
            deadline(-5, 1),
            "deadline: must be a positive duration, got -5s",
        ),
        (
            deadline(1, 1_500_000_000),
            "deadline.nanos: must be within [0, 999999999]",
        ),
        (deadline(0, 0), "deadline: must be > 0"),
    ] {
        let e = h.tasks.submit_task(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(want), "{}", e.message());
    }
    let id = submit_ok(&mut h, submit("Plant-001", seed_balance())).await;
    assert_eq!(id, "1");
    for bad in [" 1", "+1", "01", "1 ", "1e0", "18446744073709551616", ""] {
        let e = h
            .tasks
            .get_task(pb::GetTaskRequest { id: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            e.message().contains("canonical decimal"),
            "{bad:?}: {}",
            e.message()
        );
    }
    h.tasks.get_task(pb::GetTaskRequest { id }).await.unwrap();

    // A 100 kB plant id is named by its head and its length, not echoed whole.
    let e = h
        .tasks
        .submit_task(submit(&"x".repeat(100_000), seed_balance()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message().len() < 300,
        "{} bytes of message",
        e.message().len()
    );
    assert!(
        e.message().contains("... (100000 bytes)"),
        "{}",
        e.message()
    );
    assert_eq!(tasks_held(&mut h).await.len(), 1);
    h.mesh.shutdown().await;
}

/// A message of the wrong shape for SubmitTaskRequest: field 1 (plant_id, a string) as a
/// number, so it does not decode.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongShape {
    #[prost(uint64, tag = "1")]
    plant_id_as_number: u64,
}

/// A message above the server's 16 MiB decode limit (in a field it would skip).
#[derive(Clone, PartialEq, prost::Message)]
struct Oversized {
    #[prost(bytes = "vec", tag = "99")]
    padding: Vec<u8>,
}

async fn raw_submit<M: prost::Message + Default + Send + Sync + 'static>(
    ch: tonic::transport::Channel,
    m: M,
) -> tonic::Status {
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<M, pb::SubmitTaskResponse>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/heatmesh.v1.TaskService/SubmitTask");
    g.unary(tonic::Request::new(m), path, codec)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn undecodable_and_oversized_requests_answer_the_codes_the_docs_promise() {
    let mut h = start(true).await;
    let e = raw_submit(
        h.channel.clone(),
        WrongShape {
            plant_id_as_number: 7,
        },
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with("failed to decode"),
        "{}",
        e.message()
    );
    let big = Oversized {
        padding: vec![0; 17 * 1024 * 1024],
    };
    let e = raw_submit(h.channel.clone(), big).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(tasks_held(&mut h).await.is_empty());
    // A well-formed request on the same connection is still served.
    submit_ok(&mut h, submit("Plant-001", seed_balance())).await;
    h.mesh.shutdown().await;
}
