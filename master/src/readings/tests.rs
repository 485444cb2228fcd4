use super::*;
use crate::config::{Config, SAMPLE_FLEET};
use heatmesh_ingest::Quality;

const T0: i64 = 1_795_000_000_000_000; // 2026-11-18T11:06:40Z
const NOW: i64 = T0 + 3_600_000_000;

fn config() -> Config {
    let text = SAMPLE_FLEET.replacen(
        "id = \"steam-t\"\nquantity = \"temperature\"\nunit = \"C\"",
        "id = \"steam-t\"\nquantity = \"temperature\"\nunit = \"C\"\ncalibration = { factor = 1.01, offset = -0.5 }",
        1,
    );
    assert_ne!(text, SAMPLE_FLEET, "the sample fleet has the steam-t meter");
    Config::from_toml_with_env(&text, Vec::new()).unwrap()
}

fn reading(meter: &str, t: i64, raw: f64) -> Reading {
    Reading {
        meter: meter.into(),
        time_us: t,
        raw,
        quality: Quality::Good,
        status: 0,
    }
}

fn open(dir: &std::path::Path) -> Readings {
    Readings::new(Ledger::open(dir).unwrap(), &config()).unwrap()
}

async fn all(r: &Readings, meter: &str) -> Vec<(i64, Stored)> {
    r.query("Plant-001", meter, 0, i64::MAX, usize::MAX)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_is_stored_calibrated_and_range_checked() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let batch = vec![
        reading("steam-t", T0, 180.0),
        reading("steam-t", T0 + 1_000_000, 500.0), // above the 450 C range once calibrated
        reading("steam-p", T0, 10.5),
    ];
    let o = r.ingest("Plant-001", batch, NOW).await.unwrap();
    assert_eq!(
        o,
        Outcome {
            received: 3,
            ingested: 3,
            out_of_range: 1,
            ..Outcome::default()
        }
    );
    let t = all(&r, "steam-t").await;
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].0, t[0].1.raw), (T0, 180.0));
    assert!((t[0].1.value - (180.0 * 1.01 - 0.5)).abs() < 1e-12);
    assert!(t[0].1.is_good());
    assert_eq!(t[1].1.flag_names(), ["out_of_range"]);
    assert!(!t[1].1.is_good());
    assert_eq!(t[1].1.received_us, NOW);
    assert_eq!(all(&r, "steam-p").await.len(), 1);
}

#[tokio::test]
async fn the_same_reading_twice_is_stored_once_even_before_the_first_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let batch: Vec<Reading> = (0..500).map(|i| reading("gas", T0 + i, i as f64)).collect();
    // Both submitted before either is awaited: the second finds the first still pending.
    let a = r.submit("Plant-001", batch.clone(), NOW).unwrap();
    let b = r.submit("Plant-001", batch.clone(), NOW).unwrap();
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!((a.ingested, a.duplicates), (500, 0));
    assert_eq!((b.ingested, b.duplicates), (0, 500));
    // Once applied, the ledger itself answers; a changed value is a conflict, not a write.
    let mut changed = batch.clone();
    changed[7].raw = -1.0;
    let c = r.ingest("Plant-001", changed, NOW).await.unwrap();
    assert_eq!((c.ingested, c.duplicates, c.conflicts), (0, 499, 1));
    let stored = all(&r, "gas").await;
    assert_eq!(stored.len(), 500);
    assert_eq!(stored[7].1.raw, 7.0, "the first value stays");
}

#[tokio::test]
async fn readings_survive_a_reopen_and_are_still_known_there() {
    let dir = tempfile::tempdir().unwrap();
    let batch: Vec<Reading> = (0..100)
        .map(|i| reading("flue-o2", T0 + i * 1_000, 3.0))
        .collect();
    {
        let r = open(dir.path());
        r.ingest("Plant-001", batch.clone(), NOW).await.unwrap();
    }
    // The ledger's threads finish once the last handle is gone; wait for the lock to go.
    let r = loop {
        match Ledger::open(dir.path()) {
            Ok(l) => break Readings::new(l, &config()).unwrap(),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let again = r.ingest("Plant-001", batch, NOW).await.unwrap();
    assert_eq!((again.ingested, again.duplicates), (0, 100));
    assert_eq!(all(&r, "flue-o2").await.len(), 100);
}

#[tokio::test]
async fn a_bad_reading_refuses_its_whole_batch_and_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    r.ingest("Plant-001", vec![reading("gas", T0, 1.0)], NOW)
        .await
        .unwrap();
    let cases: Vec<(Reading, &str)> = vec![
        (
            reading("gas", T0 + 5, f64::NAN),
            "readings[1].value: must be finite, got NaN",
        ),
        (
            reading("gas", T0 + 5, f64::INFINITY),
            "readings[1].value: must be finite",
        ),
        (
            reading("coal", T0 + 5, 1.0),
            "readings[1].meter: plant Plant-001 has no meter \"coal\"; known: flue-o2, gas",
        ),
        (
            reading("gas", NOW + 11 * 60_000_000, 1.0),
            "readings[1].source_time: ",
        ),
        (reading("gas", -1, 1.0), "before 1970"),
    ];
    for (bad, want) in cases {
        let batch = vec![
            reading("gas", T0 + 1, 2.0),
            bad,
            reading("gas", T0 + 2, 3.0),
        ];
        let e = r.ingest("Plant-001", batch, NOW).await.unwrap_err();
        assert!(e.to_string().contains(want), "{e} / {want}");
    }
    let e = r
        .ingest("Plant-404", vec![reading("gas", T0, 1.0)], NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(e, IngestError::NotFound(_)) && e.to_string().contains("Plant-404"),
        "{e}"
    );
    let stored = all(&r, "gas").await;
    assert_eq!(stored.len(), 1, "nothing of a refused batch is stored");
    assert_eq!(stored[0].1.raw, 1.0);
}

#[tokio::test]
async fn queries_take_a_half_open_window_and_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let batch: Vec<Reading> = (0..10)
        .map(|i| reading("steam-p", T0 + i * 60_000_000, i as f64))
        .collect();
    r.ingest("Plant-001", batch, NOW).await.unwrap();
    let w = r
        .query(
            "Plant-001",
            "steam-p",
            T0 + 60_000_000,
            T0 + 5 * 60_000_000,
            100,
        )
        .await
        .unwrap();
    let raws: Vec<f64> = w.iter().map(|(_, s)| s.raw).collect();
    assert_eq!(raws, [1.0, 2.0, 3.0, 4.0]);
    let w = r
        .query("Plant-001", "steam-p", 0, i64::MAX, 3)
        .await
        .unwrap();
    assert_eq!(w.len(), 3);
    // Another plant's meter of the same name is another series.
    assert!(
        r.query("Plant-002", "steam-p", 0, i64::MAX, 10)
            .await
            .is_err()
    );
}

/// Readings older than a meter's latest take the ledger lookup path; newer ones skip it.
/// Both must give the same answer, within a batch, across batches and after a reopen.
#[tokio::test]
async fn out_of_order_readings_are_deduplicated_like_in_order_ones() {
    let dir = tempfile::tempdir().unwrap();
    let at = |ts: &[i64]| -> Vec<Reading> {
        ts.iter()
            .map(|t| reading("gas", T0 + t, *t as f64))
            .collect()
    };
    {
        let r = open(dir.path());
        let o = r
            .ingest("Plant-001", at(&[100, 50, 100, 75, 50]), NOW)
            .await
            .unwrap();
        assert_eq!((o.ingested, o.duplicates), (3, 2));
        let o = r
            .ingest("Plant-001", at(&[60, 75, 200]), NOW)
            .await
            .unwrap();
        assert_eq!((o.ingested, o.duplicates), (2, 1));
    }
    let r = loop {
        match Ledger::open(dir.path()) {
            Ok(l) => break Readings::new(l, &config()).unwrap(),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let o = r
        .ingest("Plant-001", at(&[10, 200, 150, 60, 300]), NOW)
        .await
        .unwrap();
    assert_eq!((o.ingested, o.duplicates), (3, 2));
    let times: Vec<i64> = all(&r, "gas").await.iter().map(|(t, _)| t - T0).collect();
    assert_eq!(times, [10, 50, 60, 75, 100, 150, 200, 300]);
}
