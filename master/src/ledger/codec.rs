//! How ledger writes are encoded: once, into the log record, as the very key/value writes
//! the state store applies.
//!
//! A log payload is a sequence of writes, each `tag: u8 | key len: u32 | key | value len:
//! u32 | value` (little-endian; tag 1 inserts), or `2 | key len: u32 | key` (removes: retention
//! goes through the log like every other write); other tags are reserved and refused. Because the
//! record already holds the store's keys and values, applying a group live and replaying it
//! after a crash are the same function, [`apply_payload`], and nothing is encoded twice.
//!
//! Values are postcard (compact, serde-derived) rather than JSON: a task record is about a
//! third of its JSON size and decodes without parsing text.

use super::Op;
use crate::task::{TaskRecord, Transition};

const INSERT: u8 = 1;
const REMOVE: u8 = 2;

/// Key of the applied-LSN marker in the state tree, written in every applied batch.
pub const APPLIED_KEY: &[u8] = b"~applied";
/// Key of the floor (next task id, sequence number) written by every retention sweep, so ids
/// and sequence numbers of removed tasks are never handed out again.
pub const FLOOR_KEY: &[u8] = b"~floor";
/// Key of the highest sequence number whose change-index group retention removed: a feed
/// cannot resume from before it.
pub const COMPACTED_KEY: &[u8] = b"~compacted";
/// Key of the state format marker.
pub const FORMAT_KEY: &[u8] = b"~format";
/// The state format this code writes and reads (3: readings stored as blocks; 4: the
/// change index, [`change_key`]). Older formats are upgraded on open ([`super::migrate`]).
pub const FORMAT: u64 = 4;

/// Readings are stored in blocks: one key holds one ingest batch's readings of one meter
/// within one hour of source time (an hour-aligned bucket), keyed by the block's first source
/// time. A block never spans two buckets, so the readings of a window are all in the blocks
/// whose keys lie between the start of the window's first bucket and its end. One key per
/// meter per batch, instead of one per reading, is what lets the state store keep up with
/// 100,000 readings a second.
pub const BUCKET_US: i64 = 3_600_000_000;

/// The start of the bucket `t` falls in.
pub fn bucket_start(t: i64) -> i64 {
    t.max(0) - t.max(0) % BUCKET_US
}

/// Big-endian id, so keys sort by id.
pub fn id_key(tag: u8, id: u64) -> [u8; 9] {
    let mut k = [tag; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// A tag byte followed by `rest`.
pub fn prefixed(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

/// Journal key: `J` + task id + sequence number.
pub fn journal_key(id: u64, seq: u64) -> [u8; 17] {
    let mut k = [b'J'; 17];
    k[1..9].copy_from_slice(&id.to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Change index key: `S` + the highest and lowest sequence number of a group's journal
/// entries; its value lists the group's (sequence number, task id) pairs, in sequence order.
/// One key per group commit, not per change, keeps the index off the hot path: keys sort
/// by the highest number, so the groups holding changes after N start at `S` + (N + 1).
pub fn change_key(max_seq: u64, min_seq: u64) -> [u8; 17] {
    let mut k = [b'S'; 17];
    k[1..9].copy_from_slice(&max_seq.to_be_bytes());
    k[9..].copy_from_slice(&min_seq.to_be_bytes());
    k
}

/// The (sequence number, task id) pairs of a change index value.
pub fn changes(k: &[u8], v: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    decode(k, v)
}

/// Key-index key: `K` + the end of the key's window + task id; its value is the idempotency
/// key of a removed task, kept until then ([`Op::Expire`]). Sorted by when each is due.
pub fn key_index_key(until_us: u64, id: u64) -> [u8; 17] {
    let mut k = [b'K'; 17];
    k[1..9].copy_from_slice(&until_us.to_be_bytes());
    k[9..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Node epoch key: `E` + node id.
pub fn node_epoch_key(node: &str) -> Vec<u8> {
    prefixed(b'E', node.as_bytes())
}

/// Placement key: `P` + plant id.
pub fn placement_key(plant: &str) -> Vec<u8> {
    prefixed(b'P', plant.as_bytes())
}

/// Reading block key: `R` + plant length (u16) + plant + meter length (u8) + meter + the
/// block's first source timestamp (u64 big-endian, microseconds), so one meter's blocks sort
/// by time. Also the identity of one reading (meter, source time) in memory.
pub fn reading_key(plant: &str, meter: &str, time_us: i64) -> Vec<u8> {
    let mut k = reading_prefix(plant, meter);
    k.extend_from_slice(&(time_us.max(0) as u64).to_be_bytes());
    k
}

/// The key prefix shared by one meter's readings.
pub fn reading_prefix(plant: &str, meter: &str) -> Vec<u8> {
    meter_key(b'R', plant, meter)
}

/// A meter's key under `tag`: tag + plant length (u16) + plant + meter length (u8) + meter.
pub fn meter_key(tag: u8, plant: &str, meter: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + plant.len() + meter.len() + 8);
    k.push(tag);
    k.extend_from_slice(&(plant.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(plant.as_bytes());
    k.push(meter.len().min(u8::MAX as usize) as u8);
    k.extend_from_slice(meter.as_bytes());
    k
}

/// The plant and meter of a key made by [`meter_key`] (after its tag).
pub fn meter_of(k: &[u8]) -> Option<(String, String)> {
    let n = u16::from_be_bytes(k.get(1..3)?.try_into().ok()?) as usize;
    let plant = k.get(3..3 + n)?;
    let m = *k.get(3 + n)? as usize;
    let meter = k.get(4 + n..4 + n + m)?;
    Some((
        String::from_utf8_lossy(plant).into_owned(),
        String::from_utf8_lossy(meter).into_owned(),
    ))
}

/// Feed switch history key: `H` + meter + time (u64 big-endian, microseconds).
pub fn feed_history_key(plant: &str, meter: &str, at_us: i64) -> Vec<u8> {
    let mut k = meter_key(b'H', plant, meter);
    k.extend_from_slice(&(at_us.max(0) as u64).to_be_bytes());
    k
}

/// The source timestamp at the end of a reading key.
pub fn reading_time(k: &[u8]) -> Option<i64> {
    let t: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(t) as i64)
}

/// Encodes a value for the state store.
pub fn value<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Records are plain structs of strings, integers and enums: postcard cannot fail on
    // them (it fails only on types it cannot represent, such as maps with unsized keys).
    postcard::to_allocvec(v).expect("ledger values are postcard-encodable")
}

/// Decodes a value read from the state store, naming the key when it does not decode.
pub fn decode<T: serde::de::DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, String> {
    postcard::from_bytes(v).map_err(|e| format!("record {} does not decode: {e}", show_key(k)))
}

/// A key as text for messages: the tag letter, then the id or name.
pub fn show_key(k: &[u8]) -> String {
    match k.first() {
        Some(b'T') | Some(b'J') if k.len() >= 9 => {
            let id = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
            format!("{}{id}", k[0] as char)
        }
        Some(b'R') => match (k.get(1..3), reading_time(k)) {
            (Some(n), Some(t)) => {
                let n = u16::from_be_bytes([n[0], n[1]]) as usize;
                let plant = k
                    .get(3..3 + n)
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let meter = k
                    .get(4 + n..k.len() - 8)
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                format!("R{plant}/{meter}@{t}")
            }
            _ => format!("R{}", String::from_utf8_lossy(&k[1..])),
        },
        Some(&t) => format!("{}{}", t as char, String::from_utf8_lossy(&k[1..])),
        None => "(empty key)".into(),
    }
}

fn put(out: &mut Vec<u8>, key: &[u8], val: &[u8]) {
    out.push(INSERT);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(val.len() as u32).to_le_bytes());
    out.extend_from_slice(val);
}

/// Encodes one group commit's writes into a log payload, and the group's entry in the
/// change index ([`change_key`]) when it journals anything.
pub fn encode_group<'a>(ops: impl Iterator<Item = &'a Op>, out: &mut Vec<u8>) {
    let mut changes: Vec<(u64, u64)> = Vec::new();
    for op in ops {
        if let Op::Journal { id, seq, .. } = op {
            changes.push((*seq, *id));
        }
        encode(op, out);
    }
    if let (Some(min), Some(max)) = (
        changes.iter().map(|c| c.0).min(),
        changes.iter().map(|c| c.0).max(),
    ) {
        changes.sort_unstable();
        put(out, &change_key(max, min), &value(&changes));
    }
}

/// Appends the encoded writes of `op` to a log payload.
pub fn encode(op: &Op, out: &mut Vec<u8>) {
    match op {
        Op::Put(rec) => put(out, &id_key(b'T', rec.id), &value(rec)),
        Op::Journal { id, seq, entry } => put(out, &journal_key(*id, *seq), &value(entry)),
        Op::Idem(k, id) => put(out, &prefixed(b'I', k.as_bytes()), &id.to_be_bytes()),
        Op::Placement { plant, node, epoch } => {
            put(out, &placement_key(plant), &value(&(node, epoch)))
        }
        Op::NodeEpoch { node, epoch } => put(out, &node_epoch_key(node), &epoch.to_be_bytes()),
        Op::FeedSwitch {
            plant,
            meter,
            switch,
        } => {
            // The current state, and the change kept in the meter's history.
            let v = value(switch);
            put(out, &meter_key(b'F', plant, meter), &v);
            put(out, &feed_history_key(plant, meter, switch.at_us), &v);
        }
        Op::Readings {
            plant,
            meter,
            block,
        } => {
            let first = block.first().map_or(0, |(t, _)| *t);
            put(out, &reading_key(plant, meter, first), &value(block))
        }
        Op::Expire {
            id,
            seqs,
            key,
            key_until_us,
        } => {
            remove(out, &id_key(b'T', *id));
            for seq in seqs {
                remove(out, &journal_key(*id, *seq));
            }
            match key {
                Some(k) if *key_until_us > 0 => {
                    put(out, &key_index_key(*key_until_us, *id), k.as_bytes())
                }
                Some(k) => remove(out, &prefixed(b'I', k.as_bytes())),
                None => {}
            }
        }
        Op::ForgetKey { key, until_us, id } => {
            remove(out, &prefixed(b'I', key.as_bytes()));
            remove(out, &key_index_key(*until_us, *id));
        }
        Op::Floor { next_id, seq } => put(out, FLOOR_KEY, &value(&(next_id, seq))),
        Op::DropChanges(groups) => {
            for (max, min) in groups {
                remove(out, &change_key(*max, *min));
            }
            if let Some(top) = groups.iter().map(|g| g.0).max() {
                put(out, COMPACTED_KEY, &top.to_be_bytes());
            }
        }
        Op::DropReadings {
            plant,
            meter,
            blocks,
        } => {
            for t in blocks {
                remove(out, &reading_key(plant, meter, *t));
            }
        }
    }
}

fn remove(out: &mut Vec<u8>, key: &[u8]) {
    out.push(REMOVE);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
}

fn take<'a>(p: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if p.len() < n {
        return Err(format!("log payload ends inside a {what}"));
    }
    let (a, b) = p.split_at(n);
    *p = b;
    Ok(a)
}

fn take_len<'a>(p: &mut &'a [u8], what: &str) -> Result<&'a [u8], String> {
    let n = u32::from_le_bytes(take(p, 4, what)?.try_into().expect("4 bytes")) as usize;
    take(p, n, what)
}

/// Adds the writes of one log payload, and the marker that `lsn` is applied, to `batch`.
pub fn apply_payload(lsn: u64, mut p: &[u8], batch: &mut sled::Batch) -> Result<(), String> {
    while let Some((&tag, rest)) = p.split_first() {
        p = rest;
        let key = take_len(&mut p, "key")?;
        match tag {
            INSERT => batch.insert(key, take_len(&mut p, "value")?),
            REMOVE => batch.remove(key),
            t => return Err(format!("unknown write tag {t} in the log payload")),
        }
    }
    batch.insert(APPLIED_KEY, &lsn.to_be_bytes());
    Ok(())
}

/// Reads a big-endian u64 value.
pub fn u64_value(v: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
}

/// Decodes a task record.
pub fn task(k: &[u8], v: &[u8]) -> Result<TaskRecord, String> {
    decode(k, v)
}

/// Decodes a journal entry.
pub fn transition(k: &[u8], v: &[u8]) -> Result<Transition, String> {
    decode(k, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Priority, Status};

    fn rec(id: u64) -> TaskRecord {
        TaskRecord {
            id,
            plant_id: "Plant-001".into(),
            agent_kind: "GL-009".into(),
            payload: r#"{"inputs":[{"name":"fuel","energy_kwh":1000.0}]}"#.into(),
            priority: Priority::High,
            status: Status::Completed,
            attempt: 2,
            failures: 1,
            max_attempts: 3,
            epoch: 7,
            node: "node-1".into(),
            agent: "Plant-001/GL-009".into(),
            idempotency_key: Some("k-1".into()),
            created_us: 1,
            updated_us: 2,
            deadline_us: None,
            result: Some("{}".into()),
            error: None,
            seq: 9,
        }
    }

    fn applied(ops: &[Op]) -> sled::Tree {
        let mut payload = Vec::new();
        for op in ops {
            encode(op, &mut payload);
        }
        let mut b = sled::Batch::default();
        apply_payload(5, &payload, &mut b).unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("state").unwrap();
        t.apply_batch(b).unwrap();
        t
    }

    #[test]
    fn every_op_lands_under_its_key_and_reads_back() {
        let t = applied(&[
            Op::Put(rec(3)),
            Op::Idem("k-1".into(), 3),
            Op::Placement {
                plant: "Plant-001".into(),
                node: "node-1".into(),
                epoch: 4,
            },
            Op::NodeEpoch {
                node: "node-1".into(),
                epoch: 6,
            },
        ]);
        let k = id_key(b'T', 3);
        assert_eq!(task(&k, &t.get(k).unwrap().unwrap()).unwrap(), rec(3));
        assert_eq!(u64_value(&t.get(b"Ik-1").unwrap().unwrap()), Some(3));
        let p: (String, u64) = decode(b"P", &t.get(b"PPlant-001").unwrap().unwrap()).unwrap();
        assert_eq!(p, ("node-1".into(), 4));
        assert_eq!(u64_value(&t.get(b"Enode-1").unwrap().unwrap()), Some(6));
        assert_eq!(u64_value(&t.get(APPLIED_KEY).unwrap().unwrap()), Some(5));
    }

    #[test]
    fn a_cut_payload_or_an_unknown_tag_is_an_error() {
        let mut payload = Vec::new();
        encode(&Op::Put(rec(1)), &mut payload);
        payload.truncate(payload.len() - 3);
        let err = apply_payload(1, &payload, &mut sled::Batch::default()).unwrap_err();
        assert!(err.contains("ends inside a value"), "{err}");
        let err = apply_payload(1, &[9, 0, 0, 0, 0], &mut sled::Batch::default()).unwrap_err();
        assert!(err.contains("unknown write tag 9"), "{err}");
    }

    #[test]
    fn postcard_records_are_smaller_than_json() {
        let r = rec(1);
        let json = serde_json::to_vec(&r).unwrap().len();
        let pc = value(&r).len();
        assert!(pc * 2 < json, "postcard {pc} bytes vs JSON {json}");
    }
}
