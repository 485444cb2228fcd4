//! Plant data through real node processes: the simulator's Modbus device and OPC UA server, nodes reading them,
//! their durable buffers, the attach stream, the master's ledger. A node is killed with
//! SIGKILL while its meters are read, its plant moves, the node comes back: every reading a
//! node recorded as acquired is in the ledger, once, with its value.

mod common;

use heatmesh_master::config::{Config, SAMPLE_FLEET};
use heatmesh_proto::v1 as pb;
use heatmesh_sim::cluster::Cluster;
use heatmesh_sim::plantsim;
use heatmesh_sim::proxy::BlackholeProxy;
use pb::reading_service_client::ReadingServiceClient;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_heatmesh");

type Key = (String, String, i64);

/// Every reading of every configured meter: (plant, meter, source time) -> raw.
async fn ingested(ch: &Channel, cfg: &Config) -> BTreeMap<Key, f64> {
    try_ingested(ch, cfg).await.unwrap()
}

async fn try_ingested(ch: &Channel, cfg: &Config) -> Result<BTreeMap<Key, f64>, tonic::Status> {
    let mut c = ReadingServiceClient::new(ch.clone()).max_decoding_message_size(64 << 20);
    let mut out = BTreeMap::new();
    for p in &cfg.plants {
        for m in &p.feeds.meters {
            let mut from = Some(prost_types::Timestamp::default());
            while let Some(f) = from {
                let r = c
                    .query_readings(pb::QueryReadingsRequest {
                        plant_id: p.id.clone(),
                        meter: m.id.clone(),
                        from: Some(f),
                        to: None,
                        limit: 50_000,
                    })
                    .await?
                    .into_inner();
                for x in &r.readings {
                    let t = x.source_time.as_ref().unwrap();
                    let us = t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000;
                    out.insert((p.id.clone(), m.id.clone(), us), x.raw);
                }
                from = r.next_from;
            }
        }
    }
    Ok(out)
}

/// What the nodes recorded as acquired (their `--acquired-log` files, across restarts).
fn acquired(dir: &Path) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for node in std::fs::read_dir(dir).unwrap().flatten() {
        if !node.file_name().to_string_lossy().starts_with("acquired-") {
            continue;
        }
        for f in std::fs::read_dir(node.path()).unwrap().flatten() {
            let plant = f.path().file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(f.path()).unwrap();
            // A record cut by the kill mid-line is not a reading the node vouched for.
            let whole: String = match text.rfind('\n') {
                Some(i) => text[..=i].to_string(),
                None => String::new(),
            };
            for r in heatmesh_ingest::csv::parse(&whole, 10).unwrap() {
                out.insert((plant.clone(), r.meter, r.time_us), r.raw);
            }
        }
    }
    out
}

/// The sample fleet reading the simulator's device every 100 ms, a master and three nodes
/// as processes.
async fn start(seed: u64) -> (plantsim::Simulator, Config, Cluster, Channel) {
    let (sim, cfg, c, ch, _) = start_via(seed, false).await;
    (sim, cfg, c, ch)
}

/// [`start`], with node-2 dialing the master through a black-hole proxy when `proxied`.
async fn start_via(
    seed: u64,
    proxied: bool,
) -> (
    plantsim::Simulator,
    Config,
    Cluster,
    Channel,
    Option<BlackholeProxy>,
) {
    let mut cfg = Config::from_toml_with_env(SAMPLE_FLEET, Vec::new()).unwrap();
    let sim = plantsim::start_on_free_ports(&mut cfg, seed).await.unwrap();
    let endpoint = |plant: &str, source: &str| {
        let p = cfg.plants.iter().find(|p| p.id == plant).unwrap();
        p.feeds.source(source).unwrap().endpoint().to_string()
    };
    // The processes read the fleet file: point its Modbus device and OPC UA server at the
    // simulator's free ports, and poll every 100 ms.
    let text = SAMPLE_FLEET
        .replace("127.0.0.1:5020", &endpoint("Plant-001", "plc"))
        .replace("opc.tcp://127.0.0.1:4840/", &endpoint("Plant-002", "scada"))
        .replace("source = \"plc\"\n", "source = \"plc\"\npoll_ms = 100\n")
        .replace(
            "source = \"scada\"\n",
            "source = \"scada\"\npoll_ms = 100\n",
        );
    let cfg = Config::from_toml_with_env(&text, Vec::new()).unwrap();
    let mut c = Cluster::new(Path::new(BIN)).unwrap();
    let config_file = c.dir.path().join("fleet.toml");
    std::fs::write(&config_file, &text).unwrap();
    c.master_env
        .push(("HEATMESH_CONFIG".into(), config_file.display().to_string()));
    c.start_master();
    let proxy = match proxied {
        true => Some(BlackholeProxy::start(c.grpc).await.unwrap()),
        false => None,
    };
    c.start_standard(false, proxy.as_ref().map(|p| ("node-2", p.addr())))
        .await;
    let ch = c.channel().await;
    (sim, cfg, c, ch, proxy)
}

/// Waits until the ledger holds at least `n` readings of `plant`; returns how many.
async fn wait_readings(ch: &Channel, cfg: &Config, plant: &str, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The master may be restarting: an unreachable one counts as nothing yet.
        let got = match tokio::time::timeout(Duration::from_secs(5), try_ingested(ch, cfg)).await {
            Ok(Ok(g)) => g.keys().filter(|k| k.0 == plant).count(),
            _ => 0,
        };
        if got >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} {plant} readings after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Once the buffers have drained: every reading acquired before a cut-off two seconds ago is
/// in the ledger with its value, and at most `slack` readings before the cut-off are in the
/// ledger that no record holds. Readings keep flowing meanwhile; the cut-off leaves out the
/// newest, whose record and delivery race the comparison. Returns (acquired, ingested), both
/// before the cut-off.
async fn check_exactly_once(
    c: &Cluster,
    ch: &Channel,
    cfg: &Config,
    slack: usize,
) -> (BTreeMap<Key, f64>, BTreeMap<Key, f64>) {
    let cutoff = heatmesh_connect::now_us() - 2_000_000;
    let before = |m: BTreeMap<Key, f64>| -> BTreeMap<Key, f64> {
        m.into_iter().filter(|(k, _)| k.2 < cutoff).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (got, want) = loop {
        let want = before(acquired(c.dir.path()));
        let got = before(ingested(ch, cfg).await);
        let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
        if missing == 0 || Instant::now() > deadline {
            break (got, want);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let missing: Vec<&Key> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} acquired readings never ingested, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (k, raw) in &want {
        assert_eq!(
            got[k], *raw,
            "{k:?}: the ledger holds another value than was acquired"
        );
    }
    let extra: BTreeSet<&Key> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        extra.len() <= slack,
        "{} readings ingested that no node recorded: {:?}",
        extra.len(),
        extra
    );
    (want, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_while_reading_loses_nothing_it_acquired_and_stores_nothing_twice() {
    let (_sim, cfg, mut c, ch) = start(7).await;
    let m = c.grpc;
    let before = wait_readings(&ch, &cfg, "Plant-001", 50).await;
    // SIGKILL the node reading Plant-001; the master moves the plant to another node, whose
    // connectors take over; the killed node comes back with its buffer.
    c.nodes.get_mut("node-1").unwrap().kill9();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    c.start_node("node-1", &["Plant-001"], m);
    wait_readings(&ch, &cfg, "Plant-001", before + 300).await;
    // What node-1 buffered in its last instant may be in the ledger but not yet in its
    // record: at most one poll of Plant-001's five meters.
    let (want, got) = check_exactly_once(&c, &ch, &cfg, 5).await;
    assert!(want.keys().any(|k| k.0 == "Plant-002") && want.keys().any(|k| k.0 == "Plant-003"));
    // Plant-001's meters were read by the killed node and, while it was away, by another.
    let readers: Vec<String> = std::fs::read_dir(c.dir.path())
        .unwrap()
        .flatten()
        .filter(|d| d.file_name().to_string_lossy().starts_with("acquired-"))
        .filter(|d| d.path().join("Plant-001.csv").exists())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(readers.len() >= 2, "Plant-001 was read only by {readers:?}");
    println!(
        "node kill -9: {} readings acquired, {} ingested, none lost, none twice",
        want.len(),
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_while_nodes_ship_loses_no_reading() {
    let (_sim, cfg, mut c, ch) = start(11).await;
    let before = wait_readings(&ch, &cfg, "Plant-002", 30).await;
    // While the master is away the nodes keep polling into their buffers.
    let now = || heatmesh_connect::now_us();
    c.master.as_mut().unwrap().kill9();
    let killed = now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let restarting = now();
    c.start_master();
    let ch = c.channel().await;
    wait_readings(&ch, &cfg, "Plant-002", before + 100).await;
    // Nothing was acquired without being recorded: the master's death loses no reading a node
    // holds, and nodes resend what was unacknowledged; the master deduplicates.
    let (want, got) = check_exactly_once(&c, &ch, &cfg, 0).await;
    // The buffers carried the readings of the outage: Plant-002's meters polled every
    // 100 ms, so its 1.5 s away hold about 15 polls of each.
    let during = got
        .keys()
        .filter(|k| k.0 == "Plant-002" && k.2 > killed && k.2 < restarting)
        .count();
    assert!(
        during >= 2 * 10,
        "only {during} Plant-002 readings from the outage"
    );
    println!(
        "master kill -9: {} readings acquired, {} ingested, none lost, none twice",
        want.len(),
        got.len()
    );
}

/// ListFeeds for one plant: (meter, state, last error).
async fn feeds(ch: &Channel, plant: &str) -> Vec<(String, String, String)> {
    common::list_feeds(ch, plant)
        .await
        .into_iter()
        .map(|f| (f.meter, f.state, f.last_error))
        .collect()
}

async fn wait_feeds(
    ch: &Channel,
    plant: &str,
    what: &str,
    ok: impl Fn(&[(String, String, String)]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let f = feeds(ch, plant).await;
        if !f.is_empty() && ok(&f) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: feeds still {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_that_stops_shows_down_with_its_cause_and_recovers_by_itself() {
    let (sim, cfg, c, ch) = start(13).await;
    wait_readings(&ch, &cfg, "Plant-003", 10).await;
    let all = |state: &'static str| {
        move |f: &[(String, String, String)]| f.iter().all(|(_, s, _)| s == state)
    };
    wait_feeds(&ch, "Plant-003", "ok at start", all("ok")).await;
    wait_feeds(&ch, "Plant-002", "ok at start", all("ok")).await;
    // The Modbus device (every plant's plc) and the OPC UA server (Plant-002's scada) stop.
    let endpoint = sim.endpoint_of("Plant-003", "plc").unwrap();
    let scada = sim.endpoint_of("Plant-002", "scada").unwrap();
    assert!(sim.stop_source(&endpoint).await);
    assert!(sim.stop_source(&scada).await);
    // Down once a poll fails (two 100 ms intervals and the 1 s timeout at most) and the node's
    // next report (about a second) has reached the master.
    let took = wait_feeds(
        &ch,
        "Plant-003",
        "down after the device stopped",
        all("down"),
    )
    .await;
    assert!(took < Duration::from_secs(4), "down after {took:?}");
    let f = feeds(&ch, "Plant-003").await;
    assert!(
        f.iter()
            .all(|(_, _, e)| e.contains("refused") || e.contains("timeout")),
        "{f:?}"
    );
    // The operator's view through the command line says the same.
    let out = tokio::task::spawn_blocking({
        let addr = c.grpc.to_string();
        move || {
            std::process::Command::new(BIN)
                .args(["--addr", &addr, "feeds", "--plant", "Plant-003", "--json"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rows.as_array().is_some_and(|r| r.len() == 2
            && r.iter()
                .all(|x| x["state"] == "down" && x["node"] == "node-3")),
        "{rows}"
    );
    let took_opcua = wait_feeds(
        &ch,
        "Plant-002",
        "down after the OPC UA server stopped",
        all("down"),
    )
    .await;
    let f = feeds(&ch, "Plant-002").await;
    assert!(
        f.iter()
            .all(|(_, _, e)| e.contains("refused") || e.contains("timeout")),
        "{f:?}"
    );
    sim.start_source(&endpoint).await.unwrap();
    sim.start_source(&scada).await.unwrap();
    wait_feeds(&ch, "Plant-003", "ok after the device returned", all("ok")).await;
    wait_feeds(
        &ch,
        "Plant-002",
        "ok after the OPC UA server returned",
        all("ok"),
    )
    .await;
    println!(
        "device stopped: Modbus meters down after {took:?}, OPC UA by {took_opcua:?} more; back by themselves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_for_10_s_keeps_reading_and_delivers_it_all_once_after() {
    let (_sim, cfg, c, ch, proxy) = start_via(17, true).await;
    let proxy = proxy.unwrap();
    let before = wait_readings(&ch, &cfg, "Plant-002", 30).await;
    // A black hole between node-2 and the master: its lease runs out, the master moves
    // Plant-002 to another node; node-2 itself keeps running it and buffering its readings.
    let cut = heatmesh_connect::now_us();
    proxy.partition();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let healed = heatmesh_connect::now_us();
    proxy.heal();
    wait_readings(&ch, &cfg, "Plant-002", before + 100).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (want, _) = check_exactly_once(&c, &ch, &cfg, 0).await;
    // Node-2's record holds readings from inside the partition, and the ledger has them all.
    let text = std::fs::read_to_string(c.dir.path().join("acquired-node-2/Plant-002.csv")).unwrap();
    let inside = heatmesh_ingest::csv::parse(&text[..=text.rfind('\n').unwrap()], 10)
        .unwrap()
        .into_iter()
        .filter(|r| r.time_us > cut + 1_000_000 && r.time_us < healed)
        .count();
    assert!(
        inside >= 2 * 50,
        "node-2 recorded only {inside} readings inside the partition"
    );
    println!(
        "partition 10 s: {} readings acquired ({inside} by the cut-off node while cut off), all ingested once",
        want.len()
    );
}
