//! Upgrades of the state store's format, run once on open after the log is replayed.

use super::LedgerError;
use super::codec::{self, FORMAT, FORMAT_KEY};

/// Brings a state of format `from` (2 or 3) to [`FORMAT`], step by step, and marks it.
pub fn upgrade(state: &sled::Tree, from: u64) -> Result<(), LedgerError> {
    if from < 3 {
        readings_to_blocks(state)?;
    }
    if from < 4 {
        index_changes(state)?;
    }
    state.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
    Ok(())
}

/// Format 2 to 3: each reading's value becomes a block of that one reading, under the same
/// key (a block is keyed by its first source time).
fn readings_to_blocks(state: &sled::Tree) -> Result<(), LedgerError> {
    let mut batch = sled::Batch::default();
    let mut n = 0u64;
    for kv in state.scan_prefix([b'R']) {
        let (k, v) = kv?;
        let t = codec::reading_time(&k).unwrap_or(0);
        let s: heatmesh_ingest::reading::Stored =
            codec::decode(&k, &v).map_err(LedgerError::Corrupt)?;
        batch.insert(k, codec::value(&vec![(t, s)]));
        n += 1;
    }
    state.apply_batch(batch)?;
    tracing::info!(
        readings = n,
        "ledger state format 2 -> 3: readings now stored in blocks"
    );
    Ok(())
}

/// Format 3 to 4: the change index ([`codec::change_key`]), one key per journal entry.
fn index_changes(state: &sled::Tree) -> Result<(), LedgerError> {
    let mut batch = sled::Batch::default();
    let mut n = 0u64;
    for kv in state.scan_prefix([b'J']) {
        let (k, _) = kv?;
        if k.len() != 17 {
            continue;
        }
        let id = u64::from_be_bytes(k[1..9].try_into().unwrap_or([0; 8]));
        let seq = u64::from_be_bytes(k[9..17].try_into().unwrap_or([0; 8]));
        batch.insert(
            &codec::change_key(seq, seq)[..],
            codec::value(&vec![(seq, id)]),
        );
        n += 1;
    }
    state.apply_batch(batch)?;
    tracing::info!(
        changes = n,
        "ledger state format 3 -> 4: task changes indexed in sequence order"
    );
    Ok(())
}
