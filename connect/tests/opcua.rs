//! The OPC UA connector against a real OPC UA server (the simulator's [`Device`]) on loopback:
//! subscriptions and reads, source timestamps and status codes, an outage seen and recovered,
//! a frozen node, a secured channel.

mod common;

use common::{state, wait_for};

use heatmesh_connect::buffer::Buffer;
use heatmesh_connect::feeds::{FeedHost, FeedState, Health, Sink, Store};
use heatmesh_connect::opcua::{CLIENT_APPLICATION_URI, Device, Sample, Values};
use heatmesh_ingest::meter::NodeId;
use heatmesh_ingest::{PlantFeeds, Quality, Reading};
use std::path::Path;
use std::time::Duration;

const POLL_MS: u64 = 100;

fn feeds(port: u16, mode: &str, security: &str) -> PlantFeeds {
    let text = format!(
        r#"
[[sources]]
id = "scada"
kind = "opcua"
endpoint = "opc.tcp://127.0.0.1:{port}/"
mode = "{mode}"
timeout_ms = 1000
reconnect_max_ms = 200
{security}

[[meters]]
id = "heat"
quantity = "power"
unit = "kW"
source = "scada"
poll_ms = {POLL_MS}
node_id = "ns=2;s=Plant-X.heat"

[[meters]]
id = "temp"
quantity = "temperature"
unit = "C"
source = "scada"
poll_ms = {POLL_MS}
node_id = "ns=2;i=7"
"#
    );
    let mut f: PlantFeeds = toml::from_str(&text).unwrap();
    f.validate("plants[0]").unwrap();
    f
}

fn node(s: &str) -> NodeId {
    NodeId::parse(s).unwrap()
}

fn set(values: &Values, n: &str, value: f64, time_us: i64, status: u32) {
    values.lock().unwrap().insert(
        node(n),
        Sample {
            value,
            time_us,
            status,
        },
    );
}

fn held(buffer: &Buffer) -> Vec<Reading> {
    buffer
        .oldest(100_000)
        .unwrap()
        .into_iter()
        .flat_map(|(_, b)| b.readings)
        .collect()
}

struct Rig {
    values: Values,
    device: Option<Device>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let values = Values::default();
        set(&values, "ns=2;s=Plant-X.heat", 0.0, 0, 0);
        set(&values, "ns=2;i=7", 0.0, 0, 0);
        let dir = tempfile::tempdir().unwrap();
        let device = Device::start(
            listener,
            "127.0.0.1",
            values.clone(),
            &dir.path().join("server"),
        )
        .await
        .unwrap();
        Rig {
            values,
            device: Some(device),
            port,
            dir,
        }
    }

    fn host(&self) -> (FeedHost, Buffer) {
        let buffer = Buffer::open(&self.dir.path().join("buffer"), 64 << 20).unwrap();
        let host = FeedHost {
            store: Store::new(Sink::Buffer(buffer.clone())),
            health: Health::default(),
            opcua_pki: self.dir.path().join("client-pki"),
        };
        (host, buffer)
    }
}

async fn source_times_values_and_status_codes_arrive(mode: &str) {
    let rig = Rig::start().await;
    let (host, buffer) = rig.host();
    let _running = host.start("Plant-X", &feeds(rig.port, mode, ""));
    // Times the server stamps, a second apart, far from the node's clock.
    let t0 = 1_700_000_000_000_000i64;
    set(&rig.values, "ns=2;s=Plant-X.heat", 1234.5, t0, 0);
    set(&rig.values, "ns=2;i=7", 181.25, t0, 0);
    wait_for("both first samples", || held(&buffer).len() >= 2).await;
    // Uncertain (UncertainLastUsableValue) is kept with its status.
    set(
        &rig.values,
        "ns=2;s=Plant-X.heat",
        1240.0,
        t0 + 1_000_000,
        0x4090_0000,
    );
    wait_for("the second heat sample", || {
        held(&buffer).iter().any(|r| r.time_us == t0 + 1_000_000)
    })
    .await;
    // Let a few more intervals pass: an unchanged node gives no new reading.
    tokio::time::sleep(Duration::from_millis(5 * POLL_MS)).await;
    let mut rs = held(&buffer);
    rs.sort_by(|a, b| (&a.meter, a.time_us).cmp(&(&b.meter, b.time_us)));
    let got: Vec<(&str, i64, f64, Quality, u32)> = rs
        .iter()
        .map(|r| (r.meter.as_str(), r.time_us, r.raw, r.quality, r.status))
        .collect();
    assert_eq!(
        got,
        vec![
            ("heat", t0, 1234.5, Quality::Good, 0),
            (
                "heat",
                t0 + 1_000_000,
                1240.0,
                Quality::Uncertain,
                0x4090_0000
            ),
            ("temp", t0, 181.25, Quality::Good, 0),
        ],
        "{mode}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribed_samples_arrive_with_their_source_times_and_status_codes() {
    source_times_values_and_status_codes_arrive("subscribe").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_samples_arrive_with_their_source_times_and_status_codes() {
    source_times_values_and_status_codes_arrive("poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_down_within_two_intervals_and_recovers_by_itself() {
    let mut rig = Rig::start().await;
    let (host, buffer) = rig.host();
    let _running = host.start("Plant-X", &feeds(rig.port, "subscribe", ""));
    let clock = heatmesh_connect::now_us;
    // A live server stamps a new heat sample every interval; the temperature is set once.
    let ticker = {
        let values = rig.values.clone();
        tokio::spawn(async move {
            for i in 0.. {
                set(&values, "ns=2;s=Plant-X.heat", 10.0 + i as f64, clock(), 0);
                tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            }
        })
    };
    set(&rig.values, "ns=2;i=7", 2.0, clock(), 0);
    wait_for("ok", || state(&host.health, "heat") == FeedState::Ok).await;
    // Stopped: every session closed, the port released.
    rig.device.take().unwrap().stop().await;
    let stopped = tokio::time::Instant::now();
    wait_for("down", || state(&host.health, "heat") == FeedState::Down).await;
    assert!(
        stopped.elapsed() < Duration::from_millis(2 * POLL_MS),
        "down after {:?}",
        stopped.elapsed()
    );
    let m = host
        .health
        .snapshot(clock())
        .into_iter()
        .find(|m| m.meter == "heat")
        .unwrap();
    assert!(
        m.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("refused")),
        "the cause is named: {:?}",
        m.last_error
    );
    // The server comes back on the same port; the connector's new session subscribes again.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", rig.port))
        .await
        .unwrap();
    let _device = Device::start(
        listener,
        "127.0.0.1",
        rig.values.clone(),
        &rig.dir.path().join("server"),
    )
    .await
    .unwrap();
    let before = held(&buffer).len();
    wait_for("ok again", || state(&host.health, "heat") == FeedState::Ok).await;
    wait_for("new readings", || held(&buffer).len() > before + 2).await;
    // The server keeps serving the temperature with its old time: no new sample, so it goes
    // stale while the heat meter stays ok (a frozen meter).
    wait_for("the frozen meter stale", || {
        state(&host.health, "temp") == FeedState::Stale
    })
    .await;
    wait_for("heat ok meanwhile", || {
        state(&host.health, "heat") == FeedState::Ok
    })
    .await;
    ticker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_status_and_an_unknown_node_are_meter_errors_with_their_cause() {
    let rig = Rig::start().await;
    let (host, buffer) = rig.host();
    let mut f = feeds(rig.port, "subscribe", "");
    f.meters[1].node_id = Some("ns=2;s=Plant-X.nothing".into());
    let _running = host.start("Plant-X", &f);
    // BadSensorFailure.
    set(
        &rig.values,
        "ns=2;s=Plant-X.heat",
        0.0,
        1_700_000_000_000_000,
        0x808C_0000,
    );
    let error = |m: &str| {
        host.health
            .snapshot(0)
            .into_iter()
            .find(|h| h.meter == m)
            .and_then(|h| h.last_error)
    };
    wait_for("heat's error", || {
        error("heat").is_some_and(|e| e.contains("BadSensorFailure"))
    })
    .await;
    wait_for("temp's error", || {
        error("temp").is_some_and(|e| e.contains("BadNodeIdUnknown"))
    })
    .await;
    // The bad sample is kept with its status, for the record; nothing is made of the node
    // the server does not have.
    let rs = held(&buffer);
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!(
        (rs[0].meter.as_str(), rs[0].quality, rs[0].status),
        ("heat", Quality::Bad, 0x808C_0000)
    );
}

fn client_certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use opcua::crypto::{CertificateStore, X509Data};
    let cert = dir.join("client.der");
    let key = dir.join("client.pem");
    let data = X509Data {
        key_size: 2048,
        common_name: "heatmesh node".into(),
        organization: "heatmesh".into(),
        organizational_unit: "test".into(),
        country: "DE".into(),
        state: "Berlin".into(),
        alt_host_names: vec![CLIENT_APPLICATION_URI.to_string(), "localhost".to_string()].into(),
        certificate_duration_days: 30,
    };
    CertificateStore::create_certificate_and_key(&data, true, &cert, &key).unwrap();
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic256sha256_sign_and_encrypt_with_a_client_certificate() {
    let rig = Rig::start().await;
    let (cert, key) = client_certificate(rig.dir.path());
    let security = format!(
        "security_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"\ncertificate = {:?}\nprivate_key = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let (host, buffer) = rig.host();
    let _running = host.start("Plant-X", &feeds(rig.port, "subscribe", &security));
    set(
        &rig.values,
        "ns=2;s=Plant-X.heat",
        99.5,
        1_700_000_000_000_000,
        0,
    );
    wait_for("a reading over the encrypted channel", || {
        held(&buffer)
            .iter()
            .any(|r| r.meter == "heat" && r.raw == 99.5)
    })
    .await;
    // Without the key file the source is down and says why.
    let (host2, _b2) = {
        let buffer = Buffer::open(&rig.dir.path().join("buffer2"), 64 << 20).unwrap();
        (
            FeedHost {
                store: Store::new(Sink::Buffer(buffer.clone())),
                health: Health::default(),
                opcua_pki: rig.dir.path().join("client-pki2"),
            },
            buffer,
        )
    };
    let missing = security.replace("client.pem", "missing.pem");
    let _running2 = host2.start("Plant-X", &feeds(rig.port, "subscribe", &missing));
    wait_for("the missing key named", || {
        host2.health.snapshot(0).iter().any(|m| {
            m.state == FeedState::Down
                && m.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("private_key") && e.contains("missing.pem"))
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_stops_the_subscription_until_drained() {
    let rig = Rig::start().await;
    // Room for a few batches only.
    let buffer = Buffer::open(&rig.dir.path().join("small"), 400).unwrap();
    let host = FeedHost {
        store: Store::new(Sink::Buffer(buffer.clone())),
        health: Health::default(),
        opcua_pki: rig.dir.path().join("client-pki"),
    };
    let _running = host.start("Plant-X", &feeds(rig.port, "subscribe", ""));
    let clock = heatmesh_connect::now_us;
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ticker = {
        let (values, sent) = (rig.values.clone(), sent.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let t = clock();
                set(&values, "ns=2;s=Plant-X.heat", i as f64, t, 0);
                sent.lock().unwrap().push(i as f64);
                tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            }
        })
    };
    wait_for("the source stopped for the full buffer", || {
        host.health.snapshot(0).iter().any(|m| {
            m.meter == "heat"
                && m.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("buffer was full"))
        })
    })
    .await;
    // The shipper drains the buffer: reading resumes by itself.
    let mut got: Vec<f64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got.len() < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} readings",
            got.len()
        );
        let held = buffer.oldest(1_000).unwrap();
        let seqs: Vec<u64> = held.iter().map(|(s, _)| *s).collect();
        got.extend(
            held.into_iter()
                .flat_map(|(_, b)| b.readings)
                .filter(|r| r.meter == "heat")
                .map(|r| r.raw),
        );
        buffer.remove(&seqs).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ticker.abort();
    // In order and none twice; what the server sampled while the session was stopped was
    // never acquired (a gap, not a loss).
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
}
