//! "Disable failing connector": an operator switches a meter off and on again through the
//! command line and the API, against a master whose in-process node reads the plant
//! simulator's Modbus device and OPC UA server. The switch is journaled: it survives a
//! restart of the master, and the other meters keep being read throughout.

mod common;

use heatmesh_master::config::{Config, SAMPLE_FLEET};
use heatmesh_proto::v1 as pb;
use heatmesh_sim::plantsim;
use pb::reading_service_client::ReadingServiceClient;
use std::time::Duration;
use tonic::transport::Channel;

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::from_toml_with_env(SAMPLE_FLEET, Vec::new()).unwrap();
    let t = common::test_config(dir);
    c.listen = t.listen;
    c.metrics_listen = t.metrics_listen;
    c.data_dir = t.data_dir;
    for p in &mut c.plants {
        for m in &mut p.feeds.meters {
            m.poll_ms = 100;
        }
    }
    c
}

async fn count(ch: &Channel, plant: &str, meter: &str) -> usize {
    ReadingServiceClient::new(ch.clone())
        .query_readings(pb::QueryReadingsRequest {
            plant_id: plant.into(),
            meter: meter.into(),
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .readings
        .len()
}

async fn feed(ch: &Channel, plant: &str, meter: &str) -> pb::MeterFeed {
    common::list_feeds(ch, plant)
        .await
        .into_iter()
        .find(|f| f.meter == meter)
        .unwrap_or_else(|| panic!("no feed {plant}/{meter}"))
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut ok: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !ok().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn heatmesh(addr: String, args: &'static [&'static str]) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_heatmesh"))
            .arg("--addr")
            .arg(addr)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_meter_is_not_read_across_a_restart_until_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let _sim = plantsim::start_on_free_ports(&mut cfg, 5).await.unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    cfg.data_dir = data_dir.path().to_path_buf();
    let h = common::start_with(cfg.clone(), dir, false).await;
    let ch = h.channel.clone();
    wait_for("OPC UA readings", || async {
        count(&ch, "Plant-002", "heat-out").await >= 3
    })
    .await;

    // heat-out is a meter of two plants: the command line asks which.
    let addr = h.mesh.grpc_addr.to_string();
    let out = heatmesh(
        addr.clone(),
        &["feeds", "disable", "heat-out", "--reason", "x"],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Plant-002") && err.contains("Plant-003"),
        "{err}"
    );
    // Disabling needs a reason, which is journaled.
    let out = heatmesh(addr.clone(), &["feeds", "disable", "Plant-002/heat-out"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("reason"), "{err}");
    let out = heatmesh(
        addr.clone(),
        &[
            "feeds",
            "disable",
            "Plant-002/heat-out",
            "--reason",
            "transmitter replaced, reads 0",
        ],
    )
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("Plant-002/heat-out: disabled"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = feed(&ch, "Plant-002", "heat-out").await;
    assert_eq!(f.state, "disabled");
    assert_eq!(
        f.switch.as_ref().map(|s| s.reason.as_str()),
        Some("transmitter replaced, reads 0")
    );
    // The node has restarted the plant's connectors without it: its count stops, the
    // Modbus meter of the same plant goes on.
    wait_for("the node to report it disabled", || async {
        let f = feed(&ch, "Plant-002", "heat-out").await;
        f.state == "disabled" && f.node == "master"
    })
    .await;
    let (heat, oil) = (
        count(&ch, "Plant-002", "heat-out").await,
        count(&ch, "Plant-002", "oil").await,
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        count(&ch, "Plant-002", "heat-out").await,
        heat,
        "not read while disabled"
    );
    assert!(
        count(&ch, "Plant-002", "oil").await >= oil + 5,
        "the rest keeps being read"
    );
    // The table says why.
    let out = heatmesh(addr.clone(), &["feeds", "--plant", "Plant-002"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("transmitter replaced, reads 0"), "{table}");

    // A restart keeps it off: the switch is in the ledger.
    h.mesh.shutdown().await;
    let h = common::start_with(cfg, tempfile::tempdir().unwrap(), false).await;
    let ch = h.channel.clone();
    wait_for("oil read again after the restart", || async {
        count(&ch, "Plant-002", "oil").await >= oil + 10
    })
    .await;
    assert_eq!(
        count(&ch, "Plant-002", "heat-out").await,
        heat,
        "still off after a restart"
    );
    assert_eq!(feed(&ch, "Plant-002", "heat-out").await.state, "disabled");

    // Bad requests name the field; nothing changes.
    let mut c = ReadingServiceClient::new(ch.clone());
    let e = c
        .set_feed_enabled(pb::SetFeedEnabledRequest {
            plant_id: "Plant-002".into(),
            meter: "steam".into(),
            enabled: false,
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.message().contains("known: oil, heat-out"),
        "{}",
        e.message()
    );

    // Enabled again, it is read again.
    let s = c
        .set_feed_enabled(pb::SetFeedEnabledRequest {
            plant_id: "Plant-002".into(),
            meter: "heat-out".into(),
            enabled: true,
            reason: "new transmitter calibrated".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(s.enabled);
    wait_for("heat-out read again", || async {
        count(&ch, "Plant-002", "heat-out").await >= heat + 3
    })
    .await;
    wait_for("heat-out ok", || async {
        feed(&ch, "Plant-002", "heat-out").await.state == "ok"
    })
    .await;
    h.mesh.shutdown().await;
}
