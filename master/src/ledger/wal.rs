//! The ledger's write-ahead log: append-only segment files of checksummed records.
//!
//! A record is one group commit. Its log sequence number (LSN) counts groups from 1 and is
//! stored in the record, so a gap, a duplicate or a segment out of place is detected, not
//! only a flipped byte. Record layout, little-endian:
//!
//! ```text
//! len: u32 | crc32: u32 (over lsn and payload) | lsn: u64 | payload: len bytes
//! ```
//!
//! A segment is named by the first LSN it holds (`00000000000000000001.wal`, twenty
//! digits) and starts with the 8-byte magic [`MAGIC`]. The newest segment takes appends
//! until it passes the configured size; then a new one is created and made durable (file
//! and directory) before anything is written to it. An empty newest segment still tells,
//! by its name, which LSN comes next, so the log knows its end even when every record has
//! been checkpointed and purged.
//!
//! Knows nothing of tasks: payloads are bytes, so the same storage can carry a consensus
//! log later. Architecture invariant: nothing here decides what a record means; the
//! `damage` tests below keep its verdicts on damaged files.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// First bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"HMWAL001";
const HEADER: usize = 16;
/// Largest payload a record may carry; a longer length field is damage, not a record.
const MAX_PAYLOAD: usize = 1 << 30;

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system call failed.
    #[error("{file}: {what}: {source}")]
    Io {
        /// The file or folder.
        file: String,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A segment holds something that is not a valid record where one must be.
    #[error("{file} at byte {offset}: {reason}")]
    Damaged {
        /// The segment file.
        file: String,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier fsync failed: what the disk holds is unknown, so nothing more is written.
    #[error("the log is unusable after a failed fsync; restart to verify it")]
    Poisoned,
}

fn io<'a>(file: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        file: file.display().to_string(),
        what,
        source,
    }
}

/// How the log behaves; the defaults suit the ledger.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// A segment is closed once it holds at least this many bytes.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What opening found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// First LSN still held (equal to `next_lsn` when the log holds no record).
    pub first_lsn: u64,
    /// The LSN the next append gets.
    pub next_lsn: u64,
    /// Records read and verified.
    pub records: u64,
    /// Bytes cut from the end of the newest segment: a group whose write was interrupted
    /// before its fsync, so never acknowledged.
    pub torn_tail_bytes: u64,
}

struct Segment {
    first_lsn: u64,
    path: PathBuf,
}

/// The open log; one writer.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    segments: Vec<Segment>,
    file: File,
    /// Bytes in the newest segment that are durable or being written.
    len: u64,
    next_lsn: u64,
    buf: Vec<u8>,
    pending: u64,
    poisoned: bool,
}

fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

fn crc(lsn: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A record read back: where it starts, its LSN and payload.
struct Parsed<'a> {
    lsn: u64,
    payload: &'a [u8],
    end: usize,
}

/// Parses the record at `at`, or says why there is none.
fn parse(data: &[u8], at: usize) -> Result<Parsed<'_>, String> {
    let Some(h) = data.get(at..at + HEADER) else {
        return Err(format!(
            "record header cut short ({} of {HEADER} bytes)",
            data.len() - at
        ));
    };
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
    let sum = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    let lsn = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD {
        return Err(format!(
            "length field {len} is over the {MAX_PAYLOAD}-byte limit"
        ));
    }
    let end = at + HEADER + len;
    let Some(payload) = data.get(at + HEADER..end) else {
        return Err(format!(
            "record of {len} bytes runs past the end of the file"
        ));
    };
    if crc(lsn, payload) != sum {
        return Err(format!(
            "checksum mismatch in the record claiming LSN {lsn}"
        ));
    }
    Ok(Parsed { lsn, payload, end })
}

impl Wal {
    /// Opens the log in `dir` (created if missing), verifying every record in order and
    /// handing those with an LSN above `replay_after` to `replay`. A damaged record
    /// anywhere but the interrupted end of the newest segment is refused; so is an LSN out
    /// of sequence. Only a cut-short or unverifiable tail of the newest segment with no
    /// valid record after it is taken for an interrupted write and cut off.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        replay_after: u64,
        mut replay: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<(Wal, OpenReport), WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "creating the log folder"))?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir, "listing the log folder"))? {
            let entry = entry.map_err(io(dir, "listing the log folder"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".wal") else {
                continue;
            };
            let first_lsn = stem.parse::<u64>().map_err(|_| WalError::Damaged {
                file: entry.path().display().to_string(),
                offset: 0,
                reason: "segment name is not a 20-digit LSN".into(),
            })?;
            segments.push(Segment {
                first_lsn,
                path: entry.path(),
            });
        }
        segments.sort_by_key(|s| s.first_lsn);
        if segments.is_empty() {
            let path = dir.join(segment_name(1));
            create_segment(dir, &path)?;
            segments.push(Segment { first_lsn: 1, path });
        }
        let mut report = OpenReport {
            first_lsn: segments[0].first_lsn,
            ..OpenReport::default()
        };
        let mut expect = segments[0].first_lsn;
        let mut tail_len = 0u64;
        let last = segments.len() - 1;
        for (i, seg) in segments.iter().enumerate() {
            let file = seg.path.display().to_string();
            if seg.first_lsn != expect {
                return Err(WalError::Damaged {
                    file,
                    offset: 0,
                    reason: format!(
                        "segment starts at LSN {} but the log before it ends at {}: a segment is missing or misplaced",
                        seg.first_lsn,
                        expect - 1
                    ),
                });
            }
            let mut data = Vec::new();
            File::open(&seg.path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(io(&seg.path, "reading a segment"))?;
            if data.len() < MAGIC.len() && i == last && MAGIC.starts_with(&data) {
                // Created but its magic never reached the disk: an empty newest segment.
                tail_len = 0;
                report.torn_tail_bytes = data.len() as u64;
                rewrite_magic(&seg.path)?;
                continue;
            }
            if data.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
                return Err(WalError::Damaged {
                    file,
                    offset: 0,
                    reason: "not a heatmesh log segment (bad magic)".into(),
                });
            }
            let mut at = MAGIC.len();
            while at < data.len() {
                match parse(&data, at) {
                    Ok(r) => {
                        if r.lsn != expect {
                            return Err(WalError::Damaged {
                                file,
                                offset: at as u64,
                                reason: format!("record has LSN {} where {expect} was due", r.lsn),
                            });
                        }
                        if r.lsn > replay_after {
                            replay(r.lsn, r.payload).map_err(|reason| WalError::Damaged {
                                file: file.clone(),
                                offset: at as u64,
                                reason,
                            })?;
                        }
                        expect += 1;
                        report.records += 1;
                        at = r.end;
                    }
                    Err(reason) => {
                        if i != last || valid_record_follows(&data, at, expect) {
                            return Err(WalError::Damaged {
                                file,
                                offset: at as u64,
                                reason,
                            });
                        }
                        report.torn_tail_bytes = (data.len() - at) as u64;
                        tracing::warn!(
                            "{file}: cutting {} bytes after byte {at}: a write interrupted before its fsync ({reason})",
                            report.torn_tail_bytes
                        );
                        break;
                    }
                }
            }
            tail_len = at as u64;
        }
        let newest = &segments[last].path;
        let file = OpenOptions::new()
            .write(true)
            .open(newest)
            .map_err(io(newest, "opening the newest segment"))?;
        if report.torn_tail_bytes > 0 {
            file.set_len(tail_len)
                .and_then(|_| file.sync_all())
                .map_err(io(newest, "cutting an interrupted write"))?;
        }
        report.next_lsn = expect;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                opts,
                segments,
                file,
                len: tail_len,
                next_lsn: expect,
                buf: Vec::with_capacity(1 << 20),
                pending: 0,
                poisoned: false,
            },
            report,
        ))
    }

    /// The LSN the next [`Wal::append`] gets.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn + self.pending
    }

    /// Adds a record to the group being built; durable only after [`Wal::sync`].
    pub fn append(&mut self, payload: &[u8]) -> u64 {
        let lsn = self.next_lsn();
        self.buf
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&crc(lsn, payload).to_le_bytes());
        self.buf.extend_from_slice(&lsn.to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.pending += 1;
        lsn
    }

    /// Writes the records appended since the last sync and waits for fdatasync. On a
    /// failed write the segment is cut back to where it was and the records are dropped,
    /// so the log stays whole and a later group can succeed (a full disk that frees up).
    /// A failed fdatasync poisons the log: the kernel may have dropped the pages.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.poisoned {
            self.buf.clear();
            self.pending = 0;
            return Err(WalError::Poisoned);
        }
        if self.pending == 0 {
            return Ok(());
        }
        let path = self.segments.last().expect("one segment").path.clone();
        if let Err(e) = self.file.write_all_at(&self.buf, self.len) {
            self.buf.clear();
            self.pending = 0;
            let _ = self.file.set_len(self.len);
            return Err(io(&path, "appending a group")(e));
        }
        if let Err(e) = self.file.sync_data() {
            self.poisoned = true;
            self.buf.clear();
            self.pending = 0;
            return Err(io(&path, "fdatasync of a group")(e));
        }
        self.len += self.buf.len() as u64;
        self.next_lsn += self.pending;
        self.buf.clear();
        self.pending = 0;
        if self.len >= self.opts.segment_bytes
            && let Err(e) = self.roll()
        {
            // The group is durable whatever happens to the next segment; one that cannot
            // be made now (a full disk) is tried again after the next group.
            tracing::warn!(
                "ledger: starting a new log segment: {e}; the current one grows meanwhile"
            );
        }
        Ok(())
    }

    /// Whether an fdatasync failed: nothing more is written until the log is opened again.
    pub fn poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether `e` means the disk (or its quota) is full.
    pub fn is_disk_full(e: &WalError) -> bool {
        matches!(e, WalError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull
                || source.kind() == std::io::ErrorKind::QuotaExceeded)
    }

    fn roll(&mut self) -> Result<(), WalError> {
        let path = self.dir.join(segment_name(self.next_lsn));
        if let Err(e) = create_segment(&self.dir, &path) {
            // Leave no half-made segment behind for the next open to trip over.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        self.file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path, "opening a new segment"))?;
        self.len = MAGIC.len() as u64;
        self.segments.push(Segment {
            first_lsn: self.next_lsn,
            path,
        });
        Ok(())
    }

    /// Removes every closed segment whose records all have an LSN at or below `upto`
    /// (they are applied and checkpointed elsewhere). The newest segment always stays.
    /// Returns how many were removed.
    pub fn purge_through(&mut self, upto: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first_lsn <= upto + 1 {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path).map_err(io(&seg.path, "removing a segment"))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// True when a valid record with the due LSN (or the one after) starts somewhere after a
/// bad one: then the bad one is damage in the middle of the log, not an interrupted end.
fn valid_record_follows(data: &[u8], bad_at: usize, expect: u64) -> bool {
    (bad_at + 1..data.len().saturating_sub(HEADER - 1))
        .any(|at| parse(data, at).is_ok_and(|r| r.lsn == expect || r.lsn == expect + 1))
}

/// Creates an empty log in `dir` whose next record is `next_lsn`: one empty segment named
/// by it (a restored state store that applied up to `next_lsn - 1` then opens against it).
pub fn create_empty(dir: &Path, next_lsn: u64) -> Result<(), WalError> {
    std::fs::create_dir_all(dir).map_err(io(dir, "creating the log folder"))?;
    create_segment(dir, &dir.join(segment_name(next_lsn)))
}

fn create_segment(dir: &Path, path: &Path) -> Result<(), WalError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io(path, "creating a segment"))?;
    f.write_all(MAGIC)
        .and_then(|_| f.sync_all())
        .map_err(io(path, "writing a segment's magic"))?;
    sync_dir(dir)
}

fn rewrite_magic(path: &Path) -> Result<(), WalError> {
    let mut f = File::create(path).map_err(io(path, "rewriting a segment's magic"))?;
    f.write_all(MAGIC)
        .and_then(|_| f.sync_all())
        .map_err(io(path, "rewriting a segment's magic"))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync of the log folder"))
}

/// Measures the disk under `dir`: `n` times, appends a 4 KiB block to a scratch file and
/// waits for fdatasync, as a group commit does. Returns each round's time in microseconds;
/// the file is removed afterwards.
pub fn fsync_probe(dir: &Path, n: usize) -> Result<Vec<u64>, WalError> {
    let path = dir.join(".fsync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io(&path, "creating the fsync probe"))?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        f.write_all(&block)
            .and_then(|_| f.sync_data())
            .map_err(io(&path, "fsync probe"))?;
        times.push(t.elapsed().as_micros() as u64);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Opened = (Wal, OpenReport, Vec<(u64, Vec<u8>)>);

    fn open_all(dir: &Path, opts: WalOptions) -> Result<Opened, WalError> {
        let mut got = Vec::new();
        let (w, r) = Wal::open(dir, opts, 0, |lsn, p| {
            got.push((lsn, p.to_vec()));
            Ok(())
        })?;
        Ok((w, r, got))
    }

    fn write_groups(dir: &Path, opts: WalOptions, n: u64) {
        let (mut w, _, _) = open_all(dir, opts).unwrap();
        for i in 0..n {
            w.append(format!("group {i}").as_bytes());
            w.sync().unwrap();
        }
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_reopens() {
        let d = tempfile::tempdir().unwrap();
        let opts = WalOptions { segment_bytes: 100 };
        write_groups(d.path(), opts, 10);
        write_groups(d.path(), opts, 5);
        let (w, r, got) = open_all(d.path(), opts).unwrap();
        assert_eq!(r.records, 15);
        assert_eq!(r.next_lsn, 16);
        assert_eq!(w.next_lsn(), 16);
        assert!(w.segment_count() > 3, "small segments roll");
        let lsns: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(lsns, (1..=15).collect::<Vec<_>>());
        assert_eq!(got[11].1, b"group 1");
    }

    #[test]
    fn replay_starts_after_the_given_lsn_and_purge_keeps_the_end() {
        let d = tempfile::tempdir().unwrap();
        let opts = WalOptions { segment_bytes: 60 };
        write_groups(d.path(), opts, 12);
        let (mut w, _, _) = open_all(d.path(), opts).unwrap();
        let before = w.segment_count();
        assert!(w.purge_through(12).unwrap() > 0);
        assert_eq!(
            w.segment_count(),
            1,
            "everything checkpointed: only the newest stays"
        );
        assert!(before > 1);
        drop(w);
        let mut seen = Vec::new();
        let (w, r) = Wal::open(d.path(), opts, 12, |lsn, _| {
            seen.push(lsn);
            Ok(())
        })
        .unwrap();
        assert!(seen.is_empty());
        assert_eq!(
            r.next_lsn, 13,
            "the empty newest segment still names the next LSN"
        );
        assert_eq!(w.next_lsn(), 13);
    }

    mod damage {
        use super::*;

        fn flip(path: &Path, at: u64) {
            let mut b = std::fs::read(path).unwrap();
            b[at as usize] ^= 0x40;
            std::fs::write(path, b).unwrap();
        }

        #[test]
        fn a_flipped_byte_in_a_closed_segment_is_refused_with_file_and_offset() {
            let d = tempfile::tempdir().unwrap();
            let opts = WalOptions { segment_bytes: 60 };
            write_groups(d.path(), opts, 6);
            let first = segments(d.path())[0].clone();
            flip(&first, 8 + HEADER as u64 + 2);
            let err = open_all(d.path(), opts).err().expect("refused");
            let msg = err.to_string();
            assert!(msg.contains(&first.display().to_string()), "{msg}");
            assert!(msg.contains("at byte 8"), "{msg}");
            assert!(msg.contains("checksum mismatch"), "{msg}");
        }

        #[test]
        fn a_flipped_byte_before_valid_records_of_the_newest_segment_is_refused() {
            let d = tempfile::tempdir().unwrap();
            write_groups(d.path(), WalOptions::default(), 5);
            let seg = segments(d.path())[0].clone();
            flip(&seg, 8 + 2);
            let err = open_all(d.path(), WalOptions::default())
                .err()
                .expect("refused");
            assert!(matches!(err, WalError::Damaged { offset: 8, .. }), "{err}");
        }

        #[test]
        fn an_interrupted_last_write_is_cut_and_appends_continue() {
            let d = tempfile::tempdir().unwrap();
            write_groups(d.path(), WalOptions::default(), 3);
            let seg = segments(d.path())[0].clone();
            let whole = std::fs::metadata(&seg).unwrap().len();
            // Half of a fourth record: as if the process died inside write().
            let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
            f.write_all(&[7, 0, 0, 0, 1, 2]).unwrap();
            drop(f);
            let (mut w, r, got) = open_all(d.path(), WalOptions::default()).unwrap();
            assert_eq!(r.torn_tail_bytes, 6);
            assert_eq!(got.len(), 3);
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), whole);
            assert_eq!(w.append(b"next"), 4);
            w.sync().unwrap();
            drop(w);
            let (_, r, got) = open_all(d.path(), WalOptions::default()).unwrap();
            assert_eq!(r.torn_tail_bytes, 0);
            assert_eq!(got.last().unwrap(), &(4, b"next".to_vec()));
        }

        #[test]
        fn a_missing_segment_is_refused() {
            let d = tempfile::tempdir().unwrap();
            let opts = WalOptions { segment_bytes: 60 };
            write_groups(d.path(), opts, 8);
            let segs = segments(d.path());
            assert!(segs.len() >= 3);
            std::fs::remove_file(&segs[1]).unwrap();
            let err = open_all(d.path(), opts).err().expect("refused").to_string();
            assert!(err.contains("a segment is missing"), "{err}");
        }

        #[test]
        fn a_record_out_of_sequence_is_refused() {
            let d = tempfile::tempdir().unwrap();
            write_groups(d.path(), WalOptions::default(), 2);
            let seg = segments(d.path())[0].clone();
            // A well-formed record with a wrong LSN: a segment spliced from elsewhere.
            let mut rec = Vec::new();
            rec.extend_from_slice(&3u32.to_le_bytes());
            rec.extend_from_slice(&crc(9, b"abc").to_le_bytes());
            rec.extend_from_slice(&9u64.to_le_bytes());
            rec.extend_from_slice(b"abc");
            let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
            f.write_all(&rec).unwrap();
            drop(f);
            let err = open_all(d.path(), WalOptions::default())
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains("LSN 9 where 3 was due"), "{err}");
        }

        #[test]
        fn a_foreign_file_is_refused() {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join(segment_name(1)), b"PK\x03\x04 not a log").unwrap();
            let err = open_all(d.path(), WalOptions::default())
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains("bad magic"), "{err}");
        }
    }
}
