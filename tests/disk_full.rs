//! A full disk under the ledger: submits are refused with RESOURCE_EXHAUSTED and the master
//! reports not ready; once space is free again the master is ready again by itself, with no
//! submit and no restart needed first, every acknowledged task completes, and no refused
//! one ever appears, then or after a restart. The data directory is a real 16 MiB tmpfs
//! filled to the last byte.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tonic::Code;

/// A mounted tmpfs of `mib` MiB, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn all_completed(h: &mut Harness, ids: &[String]) {
    for id in ids {
        let t = wait_terminal(&mut h.tasks, id, Duration::from_secs(10)).await;
        assert_eq!(
            t.status,
            heatmesh_proto::v1::TaskStatus::Completed as i32,
            "{t:?}"
        );
    }
}

/// Writes `path` until the disk refuses more.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xA5u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_submits_reports_not_ready_and_loses_nothing_acknowledged() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("heatmesh_master=info,sled=info")
        .with_test_writer()
        .try_init();
    let Some(disk) = SmallDisk::mount(16) else {
        // Mounting needs CAP_SYS_ADMIN; without it there is no disk small enough to fill.
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs CAP_SYS_ADMIN)");
        return;
    };
    let data = disk.path().join("data");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&data);
    cfg.ledger.disk_reserve_mib = 2;
    let mut h = start_with(cfg.clone(), dir, false).await;
    let metrics = h.mesh.metrics_addr.unwrap();
    let first = submit_ok(&mut h, submit("Plant-001", seed_balance())).await;
    assert_eq!(http_get(metrics, "/readyz").await.0, 200);

    fill(&disk.path().join("filler"));
    // The log's last page may still take a few small groups; then submits are refused.
    let mut acked = vec![first];
    let mut refused = 0;
    for i in 0..400 {
        let mut req = submit("Plant-001", seed_balance());
        req.idempotency_key = format!("while-full-{i}");
        match h.tasks.submit_task(req).await {
            // A group small enough for the space a refused one left may still fit.
            Ok(r) => acked.push(r.into_inner().task.unwrap().id),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    e.message().starts_with("ledger disk full: ")
                        && e.message().ends_with("; nothing was accepted"),
                    "{}",
                    e.message()
                );
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
        }
    }
    assert_eq!(refused, 20, "the full disk never refused a submit");
    let (code, body) = http_get(metrics, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("ledger writes are failing") || body.contains("state store stopped"),
        "{body}"
    );

    // Space comes back. Nothing is submitted: the master must notice by itself, since a
    // balancer sends nothing to a master that is not ready.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = http_get(metrics, "/readyz").await;
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "still not ready 10 s after space came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all_completed(&mut h, &acked).await;
    acked.push(submit_ok(&mut h, submit("Plant-001", seed_balance())).await);

    // A restart replays the same: every acknowledged task, none of the refused ones.
    h.mesh.shutdown().await;
    let mut h = start_with(cfg, tempfile::tempdir().unwrap(), false).await;
    let after = submit_ok(&mut h, submit("Plant-001", seed_balance())).await;
    acked.push(after);
    all_completed(&mut h, &acked).await;
    let metrics = h.mesh.metrics_addr.unwrap();
    assert_eq!(http_get(metrics, "/readyz").await.0, 200);
    // Only what was acknowledged exists: none of the refused submits.
    let mut held: Vec<String> = tasks_held(&mut h).await.into_iter().map(|t| t.id).collect();
    held.sort();
    acked.sort();
    assert_eq!(held, acked);
    h.mesh.shutdown().await;
}
