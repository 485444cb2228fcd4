//! A connection flood against a real master process held to 1,024 open files: 1,200 idle
//! TCP connections that never speak HTTP/2, and 300 more on the metrics/health port. Before the limits, they took every descriptor,
//! the master spun on accept, clients timed out and nodes could not re-attach, with nothing
//! logged. Now the master stays idle, a client that speaks is served at once, a killed
//! node re-attaches, the idle sockets are closed after the handshake timeout, and the
//! refusals are counted.

use heatmesh_proto::v1 as pb;
use heatmesh_sim::cluster::{Cluster, req};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_heatmesh");
const FLOOD: usize = 1200;
const HTTP_FLOOD: usize = 300;

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    heatmesh_master::procstat::sample(pid).unwrap().cpu_s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_idle_connections_locks_out_no_client_or_node() {
    // The test itself holds the flood's sockets.
    let fds = heatmesh_master::conn::raise_open_file_limit().map_or(0, |(_, now)| now);
    if fds < (FLOOD + HTTP_FLOOD) as u64 + 300 {
        eprintln!("SKIPPED: this process may open only {fds} files");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Master and nodes run with soft and hard limits of 1,024, as a stock system gives.
    let wrapper = dir.path().join("heatmesh-1024");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nulimit -n 1024\nexec {BIN} \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = Cluster::in_dir(tempfile::tempdir().unwrap(), &wrapper).unwrap();
    c.master_env.push((
        "HEATMESH_LIMITS__HANDSHAKE_TIMEOUT_MS".into(),
        "2000".into(),
    ));
    c.start_master();
    c.start_standard(true, None).await;
    let pid = c.master.as_ref().unwrap().pid().unwrap();

    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        match tokio::time::timeout(
            // A full accept backlog drops SYNs; the kernel retries after a second.
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(c.grpc),
        )
        .await
        {
            Ok(Ok(s)) => flood.push(s),
            _ => break,
        }
    }
    // More than the master has descriptors (a master that stops accepting leaves the rest
    // in its backlog, until that is full too).
    assert!(flood.len() > 1024, "only {} connections made", flood.len());
    let grpc_flood = flood.len();
    // And the metrics/health port, whose limit is its own.
    for _ in 0..HTTP_FLOOD {
        flood.push(tokio::net::TcpStream::connect(c.metrics).await.unwrap());
    }

    // Idle while flooded: no spinning on accept.
    let cpu0 = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let busy = (cpu_seconds(pid) - cpu0.0) / cpu0.1.elapsed().as_secs_f64();
    assert!(
        busy < 0.5,
        "the flooded master used {:.0} % CPU",
        busy * 100.0
    );

    // A client that speaks HTTP/2 is served, and its task completes.
    let started = Instant::now();
    let ch = tokio::time::timeout(Duration::from_secs(5), c.channel())
        .await
        .expect("a client connects while flooded");
    let mut tasks = pb::task_service_client::TaskServiceClient::new(ch.clone());
    let id = tasks
        .submit_task(req(0))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
        .id;
    let served = started.elapsed();
    assert!(served < Duration::from_secs(5), "served after {served:?}");

    // Metrics and health still answer.
    assert!(c.metric("heatmesh_connections_open").await >= 1.0);

    // A killed node re-attaches through the flood.
    c.nodes.get_mut("node-2").unwrap().kill9();
    c.nodes.remove("node-2");
    c.start_node("node-2", &["Plant-002"], c.grpc);
    let back = c
        .wait_node_status("node-2", "connected", Duration::from_secs(15))
        .await;
    eprintln!(
        "flood of {grpc_flood} + {HTTP_FLOOD}: master CPU {:.1} %, client served in {served:?}, node-2 back in {back:?}",
        busy * 100.0
    );
    let t = loop {
        let t = tasks
            .get_task(pb::GetTaskRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        if t.status == pb::TaskStatus::Completed as i32 {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(t.status, pb::TaskStatus::Completed as i32);

    // Every idle socket is closed by the master: made room for others, or timed out.
    let end = Instant::now() + Duration::from_secs(10);
    let mut open = 0;
    for s in &mut flood {
        // The master's own HTTP/2 settings may come first; then the end of the stream.
        let mut b = [0u8; 256];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left.max(Duration::from_millis(1)), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => {
                    open += 1;
                    break;
                }
            }
        }
    }
    assert_eq!(open, 0, "{open} idle connections still open");
    let closed = c.metric("heatmesh_connections_closed_total").await;
    assert!(
        closed >= (grpc_flood + HTTP_FLOOD) as f64,
        "{closed} closed"
    );
    let log = std::fs::read_to_string(c.log("master-1")).unwrap();
    assert!(
        log.contains("gRPC connection limits reached"),
        "nothing logged"
    );
    drop(flood);
}
