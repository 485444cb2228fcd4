//! Plant data through the real API and the real command line: historian files in with
//! `heatmesh ingest`, pushes through IngestReadings, readings out through QueryReadings.

mod common;

use heatmesh_proto::v1 as pb;
use pb::reading_service_client::ReadingServiceClient;
use std::process::{Command, Output};
use tonic::transport::Channel;

const METERS: [&str; 5] = ["gas", "steam-heat", "steam-t", "steam-p", "flue-o2"];
/// 2026-11-18T11:06:40Z.
const T0_S: i64 = 1_795_000_000;

fn rfc3339(s: i64) -> String {
    heatmesh_ingest::time::format_us(s * 1_000_000)
}

async fn heatmesh(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_heatmesh"))
            .args(&args)
            .env_remove("HEATMESH_CONFIG")
            .output()
            .expect("run heatmesh")
    })
    .await
    .unwrap()
}

fn ts(s: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: s,
        nanos: 0,
    }
}

/// Every stored reading of a meter, paging through QueryReadings: (count, sum of raw).
async fn tally(c: &mut ReadingServiceClient<Channel>, plant: &str, meter: &str) -> (usize, f64) {
    let (mut n, mut sum) = (0, 0.0);
    let mut from = Some(ts(0));
    while let Some(f) = from {
        let r = c
            .query_readings(pb::QueryReadingsRequest {
                plant_id: plant.into(),
                meter: meter.into(),
                from: Some(f),
                to: None,
                limit: 7_000,
            })
            .await
            .unwrap()
            .into_inner();
        n += r.readings.len();
        sum += r.readings.iter().map(|x| x.raw).sum::<f64>();
        from = r.next_from;
    }
    (n, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_backfill_of_100000_readings_is_ingested_exactly_once() {
    let h = common::start(false).await;
    let addr = h.mesh.grpc_addr.to_string();
    let file = h.dir.path().join("backfill.csv");
    let mut text = String::from("timestamp,meter,value,quality\n");
    let mut want = [(0usize, 0.0f64); 5];
    for i in 0..100_000i64 {
        let m = (i % 5) as usize;
        // Quarters add up exactly in f64, so the sum can be compared exactly.
        let v = (i % 1_000) as f64 * 0.25;
        want[m].0 += 1;
        want[m].1 += v;
        text.push_str(&format!(
            "{},{},{v},good\n",
            rfc3339(T0_S + i / 5),
            METERS[m]
        ));
    }
    std::fs::write(&file, text).unwrap();
    let run = || {
        heatmesh(vec![
            "--addr".into(),
            addr.clone(),
            "ingest".into(),
            "--plant".into(),
            "Plant-001".into(),
            file.display().to_string(),
            "--json".into(),
        ])
    };
    let tally_of = |o: Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let v = tally_of(run().await);
    assert_eq!(
        (v["received"].as_u64(), v["ingested"].as_u64()),
        (Some(100_000), Some(100_000)),
        "{v}"
    );
    let mut c = ReadingServiceClient::new(h.channel.clone());
    for (m, meter) in METERS.iter().enumerate() {
        assert_eq!(tally(&mut c, "Plant-001", meter).await, want[m], "{meter}");
    }
    // The same file again: every reading is known, nothing is written twice.
    let v = tally_of(run().await);
    assert_eq!(
        (v["ingested"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(100_000)),
        "{v}"
    );
    for (m, meter) in METERS.iter().enumerate() {
        assert_eq!(
            tally(&mut c, "Plant-001", meter).await,
            want[m],
            "{meter} after the rerun"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_bad_lines_is_refused_whole_with_each_line_named() {
    let h = common::start(false).await;
    let addr = h.mesh.grpc_addr.to_string();
    let file = h.dir.path().join("site.csv");
    let lines = [
        "timestamp,meter,value".to_string(),
        format!("{},gas,1.5", rfc3339(T0_S)),
        format!("{},gas,2.5", rfc3339(T0_S + 1)),
        format!("{},gas,NaN", rfc3339(T0_S + 2)),
        "2026-11-18 11:06:43,gas,4".to_string(),
        format!("{},coal,5", rfc3339(T0_S + 4)),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let o = heatmesh(vec![
        "--addr".into(),
        addr,
        "ingest".into(),
        "--plant".into(),
        "Plant-001".into(),
        file.display().to_string(),
    ])
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("nothing was ingested"), "{err}");
    assert!(
        err.contains("site.csv:4: value: must be a finite number, got NaN"),
        "{err}"
    );
    assert!(err.contains("site.csv:5: timestamp:"), "{err}");
    // The unknown meter is found once the syntax is right.
    std::fs::write(
        &file,
        [&lines[0], &lines[1], &lines[5]]
            .map(|l| l.as_str())
            .join("\n"),
    )
    .unwrap();
    let o = heatmesh(vec![
        "--addr".into(),
        h.mesh.grpc_addr.to_string(),
        "ingest".into(),
        "--plant".into(),
        "Plant-001".into(),
        file.display().to_string(),
    ])
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("site.csv:3: meter: plant Plant-001 has no meter \"coal\""),
        "{err}"
    );
    let mut c = ReadingServiceClient::new(h.channel.clone());
    assert_eq!(tally(&mut c, "Plant-001", "gas").await, (0, 0.0));
}

fn reading(meter: &str, s: i64, value: f64) -> pb::Reading {
    pb::Reading {
        meter: meter.into(),
        source_time: Some(ts(s)),
        value,
        quality: pb::ReadingQuality::Good as i32,
        status_code: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_message_names_itself_and_keeps_the_messages_before_it() {
    let h = common::start(false).await;
    let mut c = ReadingServiceClient::new(h.channel.clone());
    let msg = |readings| pb::IngestReadingsRequest {
        plant_id: "Plant-001".into(),
        readings,
    };
    let stream = tokio_stream::iter(vec![
        msg(vec![
            reading("steam-p", T0_S, 10.0),
            reading("steam-p", T0_S + 1, 99.0),
        ]),
        msg(vec![
            reading("steam-p", T0_S + 2, 11.0),
            reading("steam-p", T0_S + 3, f64::NAN),
        ]),
        msg(vec![reading("steam-p", T0_S + 4, 12.0)]),
    ]);
    let e = c.ingest_readings(stream).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .contains("message 1: readings[1].value: must be finite, got NaN"),
        "{}",
        e.message()
    );
    assert!(
        e.message()
            .contains("2 readings of the messages before it were ingested"),
        "{}",
        e.message()
    );
    let r = c
        .query_readings(pb::QueryReadingsRequest {
            plant_id: "Plant-001".into(),
            meter: "steam-p".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(f64, Vec<String>)> = r
        .readings
        .iter()
        .map(|x| (x.raw, x.flags.clone()))
        .collect();
    // 99 bar is outside steam-p's [0, 60] range: stored, but flagged.
    assert_eq!(
        got,
        [(10.0, vec![]), (99.0, vec!["out_of_range".to_string()])]
    );
    assert_eq!(r.unit, "bar");
    // Unknown plant and meter are NOT_FOUND, naming what exists.
    let e = c
        .ingest_readings(tokio_stream::iter(vec![pb::IngestReadingsRequest {
            plant_id: "Plant-009".into(),
            readings: vec![reading("steam-p", T0_S, 1.0)],
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.message().contains("Plant-009") && e.message().contains("Plant-001"),
        "{}",
        e.message()
    );
    let e = c
        .query_readings(pb::QueryReadingsRequest {
            plant_id: "Plant-003".into(),
            meter: "steam-p".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.message().contains("known: heat-out, hp-power"),
        "{}",
        e.message()
    );
}
