//! The Modbus connector against a real Modbus TCP server on loopback.

mod common;

use common::{state, wait_for};

use heatmesh_connect::buffer::Buffer;
use heatmesh_connect::feeds::{FeedHost, FeedState, Health, Sink, Store};
use heatmesh_connect::modbus::{Registers, serve};
use heatmesh_ingest::PlantFeeds;
use heatmesh_ingest::meter::RegisterTable;
use std::time::Duration;

fn feeds(port: u16) -> PlantFeeds {
    feeds_stale_after(port, 100)
}

fn feeds_stale_after(port: u16, stale_after: u32) -> PlantFeeds {
    let text = format!(
        r#"
[[sources]]
id = "plc"
kind = "modbus"
endpoint = "127.0.0.1:{port}"
timeout_ms = 200
reconnect_max_ms = 200

[[meters]]
id = "flow"
quantity = "mass_flow"
unit = "kg/s"
source = "plc"
poll_ms = 50
stale_after = {stale_after}
modbus = {{ unit = 3, table = "holding", register = 10, type = "f32", word_order = "little" }}

[[meters]]
id = "temp"
quantity = "temperature"
unit = "C"
source = "plc"
poll_ms = 50
stale_after = {stale_after}
modbus = {{ unit = 3, table = "input", register = 0, type = "i16", scale = 0.1 }}
"#
    );
    let mut f: PlantFeeds = toml::from_str(&text).unwrap();
    f.validate("plants[0]").unwrap();
    f
}

fn registers(f: &PlantFeeds, flow: f64, temp: f64) -> Registers {
    let regs = Registers::default();
    let mut r = regs.lock().unwrap();
    for (m, v) in [(&f.meters[0], flow), (&f.meters[1], temp)] {
        let a = m.modbus.as_ref().unwrap();
        for (i, w) in a.encode(v).into_iter().enumerate() {
            r.insert((a.unit, a.table, a.register + i as u16), w);
        }
    }
    drop(r);
    regs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_flow_and_an_outage_is_seen_and_recovered() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = feeds(port);
    let regs = registers(&f, 12.5, 181.3);
    let server = tokio::spawn(serve(listener, regs.clone()));
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(dir.path(), 64 << 20).unwrap();
    let host = FeedHost {
        store: Store::new(Sink::Buffer(buffer.clone())),
        health: Health::default(),
        opcua_pki: dir.path().join("opcua-pki"),
    };
    let running = host.start("Plant-X", &f);
    wait_for("readings of both meters", || {
        let held = buffer.oldest(10_000).unwrap();
        let rs: Vec<_> = held.iter().flat_map(|(_, b)| &b.readings).collect();
        rs.iter().any(|r| r.meter == "flow") && rs.iter().filter(|r| r.meter == "temp").count() >= 3
    })
    .await;
    let held = buffer.oldest(10_000).unwrap();
    for (_, b) in &held {
        assert_eq!(b.plant, "Plant-X");
        for r in &b.readings {
            match r.meter.as_str() {
                "flow" => assert_eq!(r.raw, 12.5),
                "temp" => assert!((r.raw - 181.3).abs() < 1e-9, "{}", r.raw),
                m => panic!("unexpected meter {m}"),
            }
        }
    }
    assert_eq!(state(&host.health, "flow"), FeedState::Ok);
    // A value the device changes is read at the next poll.
    *regs.lock().unwrap() = registers(&f, 20.0, -5.0).lock().unwrap().clone();
    wait_for("the new value", || {
        buffer
            .oldest(100_000)
            .unwrap()
            .iter()
            .flat_map(|(_, b)| &b.readings)
            .any(|r| r.meter == "temp" && (r.raw + 5.0).abs() < 1e-9)
    })
    .await;
    // An address the device does not have is that meter's error; the other keeps polling.
    regs.lock()
        .unwrap()
        .retain(|(_, t, _), _| *t != RegisterTable::Input);
    wait_for("the temp meter's error", || {
        host.health.snapshot(0).iter().any(|m| {
            m.meter == "temp"
                && m.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("IllegalDataAddress"))
        })
    })
    .await;
    // The server stops: the source is down within two poll intervals plus the timeout.
    server.abort();
    let _ = server.await;
    let stopped = tokio::time::Instant::now();
    wait_for("the source to go down", || {
        state(&host.health, "flow") == FeedState::Down
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_millis(2 * 50 + 200 + 100),
        "{:?}",
        stopped.elapsed()
    );
    // It comes back on the same port: the connector reconnects by itself.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let _server = tokio::spawn(serve(listener, registers(&f, 30.0, 1.0)));
    wait_for("the source to recover", || {
        state(&host.health, "flow") == FeedState::Ok
    })
    .await;
    drop(running);
    assert!(
        host.health.snapshot(0).is_empty(),
        "stopping forgets the plant's meters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_register_goes_stale_and_a_changing_one_is_ok_again() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = feeds_stale_after(port, 3);
    let regs = registers(&f, 12.5, 181.3);
    let _server = tokio::spawn(serve(listener, regs.clone()));
    let dir = tempfile::tempdir().unwrap();
    let host = FeedHost {
        store: Store::new(Sink::Buffer(Buffer::open(dir.path(), 64 << 20).unwrap())),
        health: Health::default(),
        opcua_pki: dir.path().join("opcua-pki"),
    };
    let _running = host.start("Plant-X", &f);
    wait_for("a first reading", || {
        state(&host.health, "flow") == FeedState::Ok
    })
    .await;
    // The device answers every poll, but with the same words: Modbus has no timestamps, so
    // an unchanging value for 3 polls is a frozen meter.
    let ok_since = tokio::time::Instant::now();
    wait_for("stale", || state(&host.health, "flow") == FeedState::Stale).await;
    assert!(
        ok_since.elapsed() < Duration::from_millis(3 * 50 + 200),
        "{:?}",
        ok_since.elapsed()
    );
    *regs.lock().unwrap() = registers(&f, 12.6, 181.3).lock().unwrap().clone();
    wait_for("ok again", || state(&host.health, "flow") == FeedState::Ok).await;
}
