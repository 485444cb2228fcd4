//! The ledger's side of retention: finding what is due. Removal itself goes through the
//! log as ordinary ops ([`Op::Expire`], [`Op::ForgetKey`], [`Op::DropChanges`],
//! [`Op::DropReadings`]), written by the master's sweep, so replay after a crash removes
//! exactly what was removed before it.

use super::*;

impl Ledger {
    /// See [`Store::expired`].
    pub fn expired(
        &self,
        after_id: u64,
        before_us: u64,
        limit: usize,
    ) -> Result<Expired, LedgerError> {
        let mut out = Expired::default();
        let start = codec::id_key(b'T', after_id.saturating_add(1));
        for (n, kv) in self.state.range(start.to_vec()..vec![b'T' + 1]).enumerate() {
            let (k, v) = kv?;
            let rec = codec::task(&k, &v).map_err(LedgerError::Corrupt)?;
            if rec.created_us >= before_us {
                break;
            }
            if n == limit {
                out.resume = Some(rec.id - 1);
                break;
            }
            if rec.status.is_terminal() && rec.updated_us < before_us {
                let mut seqs = Vec::new();
                for kv in self
                    .state
                    .scan_prefix(codec::prefixed(b'J', &rec.id.to_be_bytes()))
                {
                    let (k, _) = kv?;
                    if let Some(s) = k.get(9..17) {
                        seqs.push(u64::from_be_bytes(s.try_into().expect("8 bytes")));
                    }
                }
                out.tasks.push((rec, seqs));
            }
        }
        Ok(out)
    }

    /// See [`Store::keys_due`].
    pub fn keys_due(
        &self,
        now_us: u64,
        limit: usize,
    ) -> Result<Vec<(String, u64, u64)>, LedgerError> {
        let end = codec::key_index_key(now_us, 0);
        let mut out = Vec::new();
        for kv in self.state.range(vec![b'K']..end.to_vec()).take(limit) {
            let (k, v) = kv?;
            let until = u64::from_be_bytes(k[1..9].try_into().expect("17-byte key"));
            let id = u64::from_be_bytes(k[9..17].try_into().expect("17-byte key"));
            out.push((String::from_utf8_lossy(&v).into_owned(), until, id));
        }
        Ok(out)
    }

    /// See [`Store::floor`].
    pub fn floor(&self) -> Result<(u64, u64), LedgerError> {
        match self.state.get(codec::FLOOR_KEY)? {
            Some(v) => codec::decode(codec::FLOOR_KEY, &v).map_err(LedgerError::Corrupt),
            None => Ok((0, 0)),
        }
    }

    /// The highest sequence number whose change-index group retention removed (0: none):
    /// a feed cannot resume from before it.
    pub fn compacted_through(&self) -> Result<u64, LedgerError> {
        Ok(self
            .state
            .get(codec::COMPACTED_KEY)?
            .and_then(|v| codec::u64_value(&v))
            .unwrap_or(0))
    }

    /// See [`Store::compaction`].
    pub fn compaction(
        &self,
        changes_before_us: u64,
        readings_before_us: i64,
        limit: usize,
    ) -> Result<Vec<Op>, LedgerError> {
        let mut ops = Vec::new();
        let groups = self.old_change_groups(changes_before_us, limit)?;
        if !groups.is_empty() {
            ops.push(Op::DropChanges(groups));
        }
        self.old_reading_blocks(codec::bucket_start(readings_before_us), limit, &mut ops)?;
        Ok(ops)
    }

    /// Change-index groups, oldest first, while their last change is before the cutoff (or
    /// its journal entry is gone: its task was removed, so it finished before the cutoff).
    fn old_change_groups(
        &self,
        before_us: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, LedgerError> {
        let mut out = Vec::new();
        for kv in self.state.range(vec![b'S']..vec![b'S' + 1]).take(limit) {
            let (k, v) = kv?;
            let group = codec::changes(&k, &v).map_err(LedgerError::Corrupt)?;
            if let Some(&(seq, id)) = group.last() {
                let jk = codec::journal_key(id, seq);
                if let Some(entry) = self.state.get(jk)? {
                    let entry = codec::transition(&jk, &entry).map_err(LedgerError::Corrupt)?;
                    if entry.at_us >= before_us {
                        break;
                    }
                }
            }
            let max = u64::from_be_bytes(k[1..9].try_into().expect("17-byte key"));
            let min = u64::from_be_bytes(k[9..17].try_into().expect("17-byte key"));
            out.push((max, min));
        }
        Ok(out)
    }

    /// Every meter's reading blocks that start before `cut` (a bucket start, so each such
    /// block ends by it), one seek per meter.
    fn old_reading_blocks(
        &self,
        cut: i64,
        limit: usize,
        ops: &mut Vec<Op>,
    ) -> Result<(), LedgerError> {
        let mut from = vec![b'R'];
        let mut left = limit;
        while left > 0 {
            let Some(kv) = self.state.range(from.clone()..vec![b'R' + 1]).next() else {
                break;
            };
            let (k, _) = kv?;
            let prefix = k[..k.len().saturating_sub(8)].to_vec();
            let mut blocks = Vec::new();
            let mut end = prefix.clone();
            end.extend_from_slice(&(cut.max(0) as u64).to_be_bytes());
            for kv in self.state.range(prefix.clone()..end).take(left) {
                let (k, _) = kv?;
                blocks.extend(codec::reading_time(&k));
            }
            left -= blocks.len();
            if let (false, Some((plant, meter))) = (blocks.is_empty(), codec::meter_of(&prefix)) {
                ops.push(Op::DropReadings {
                    plant,
                    meter,
                    blocks,
                });
            }
            // Past every key of this meter: its keys are the prefix and 8 bytes of time.
            from = prefix;
            from.extend_from_slice(&[0xFF; 9]);
        }
        Ok(())
    }
}
