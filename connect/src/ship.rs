//! The shipper: sends the buffer's oldest batches to the master, one message at a time, and
//! removes them once the master answers that they are durable. A failed send is retried
//! after a backoff with the same batches, so the master sees every reading at least once
//! and, deduplicating, stores it once.

use crate::buffer::Buffer;
use heatmesh_base::Backoff;
use heatmesh_ingest::Reading;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Why the master did not take a message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ShipError {
    /// The master is unreachable or its ledger refused for now: send again later.
    #[error("{0}")]
    Unavailable(String),
    /// The master judged the readings invalid (a meter no longer configured, a clock far
    /// ahead): sending them again cannot succeed.
    #[error("{0}")]
    Refused(String),
}

/// Sends one plant's readings to the master; resolves once they are durable there.
pub type Uplink = Arc<
    dyn Fn(String, Vec<Reading>) -> Pin<Box<dyn Future<Output = Result<(), ShipError>> + Send>>
        + Send
        + Sync,
>;

/// Most readings in one message to the master.
pub const MAX_MESSAGE: usize = 5_000;

/// Ships until the task is aborted.
pub async fn run(buffer: Buffer, uplink: Uplink, node: String) {
    let mut backoff = Backoff::named(Duration::from_millis(100), Duration::from_secs(5), &node);
    loop {
        buffer.changed(|b| !b.is_empty()).await;
        let batches = match buffer.oldest(MAX_MESSAGE) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%node, "reading buffer: {e}");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        // One message per plant, in buffer order.
        let plant = batches[0].1.plant.clone();
        let (seqs, readings): (Vec<u64>, Vec<Vec<Reading>>) = batches
            .into_iter()
            .filter(|(_, b)| b.plant == plant)
            .map(|(s, b)| (s, b.readings))
            .unzip();
        let n: usize = readings.iter().map(Vec::len).sum();
        match uplink(plant.clone(), readings.into_iter().flatten().collect()).await {
            Ok(()) => {
                backoff.reset();
                metrics::counter!("heatmesh_readings_shipped_total", "plant" => plant.clone())
                    .increment(n as u64);
                if let Err(e) = buffer.remove(&seqs) {
                    tracing::error!(%node, "reading buffer: {e}");
                }
            }
            Err(ShipError::Refused(e)) => {
                // Kept, the batch would block every later one forever. It is dropped loudly:
                // an error naming the plant and the cause, and a counter an alert can watch.
                tracing::error!(%node, %plant, readings = n, "the master refused readings, which are dropped from the buffer: {e}");
                metrics::counter!("heatmesh_readings_refused_total", "plant" => plant.clone())
                    .increment(n as u64);
                if let Err(e) = buffer.remove(&seqs) {
                    tracing::error!(%node, "reading buffer: {e}");
                }
            }
            Err(ShipError::Unavailable(e)) => {
                let wait = backoff.next_delay();
                tracing::warn!(%node, %plant, readings = n, "sending readings to the master failed: {e}; again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
