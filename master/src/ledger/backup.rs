//! Online backup and restore: a consistent snapshot of the ledger in one self-checking file.
//!
//! A backup is taken while the master runs and holds everything acknowledged before it
//! began. The caller first waits for a barrier (every group acknowledged so far is applied
//! to the state store); [`Ledger::write_backup`] then holds apply still while it copies the
//! state tree, so the copy is the state at one LSN. Acknowledgement does not stop meanwhile:
//! the log keeps taking groups, and apply catches up in one larger batch afterwards.
//!
//! File layout, little-endian:
//!
//! ```text
//! header:  magic "HMBACKUP" | version u32 | ledger format u64 | LSN u64 | taken at (Unix us) i64
//! entries: key len u32 | value len u32 | key | value      (in key order)
//! end:     0xFFFF_FFFF u32 | entries u64 | crc32 u32 over every byte before it
//! ```
//!
//! [`restore`] rebuilds a data directory from it: the state store with every entry, and an
//! empty log that continues at the next LSN, so the ledger opens it as any other. A file
//! that is cut short, altered or not a backup is refused with the offset named, and the
//! directory is left as it was.

use super::codec::{self, APPLIED_KEY, FORMAT, FORMAT_KEY};
use super::{Ledger, LedgerError, wal};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// First bytes of a backup file.
pub const MAGIC: &[u8; 8] = b"HMBACKUP";
const VERSION: u32 = 1;
const END: u32 = u32::MAX;
/// Name prefix of a backup being written in the data directory (removed once sent).
pub const PARTIAL_PREFIX: &str = "backup-";
const PARTIAL_SUFFIX: &str = ".partial";

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupInfo {
    /// The ledger format of its entries.
    pub format: u64,
    /// The log position it is consistent at: every group up to this one, none after.
    pub lsn: u64,
    /// When it was taken, Unix microseconds.
    pub taken_us: i64,
    /// State entries (tasks, journal entries, keys, placements, readings, markers).
    pub entries: u64,
    /// Tasks among them.
    pub tasks: u64,
    /// The highest task id among them.
    pub max_task_id: u64,
    /// File size, bytes.
    pub bytes: u64,
}

/// Why a backup could not be taken, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file operation failed.
    #[error("{file}: {what}: {source}")]
    Io {
        /// The file or folder.
        file: String,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a whole, unaltered heatmesh backup.
    #[error("{file} at byte {offset}: {reason}; it cannot be restored")]
    Damaged {
        /// The backup file.
        file: String,
        /// Where reading stopped.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Restore would overwrite a data directory.
    #[error(
        "{0} is not empty: restore builds a new data directory; give a new path, or move this one aside"
    )]
    NotEmpty(String),
    /// The state store refused an operation.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

fn io<'a>(file: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        file: file.display().to_string(),
        what,
        source,
    }
}

/// A writer that counts and checksums what passes through.
struct Summing<W> {
    w: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Summing<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.bytes += b.len() as u64;
        self.w.write_all(b)
    }
}

/// What the entries of a backup hold, counted as they pass (written or read).
#[derive(Default)]
struct Tally {
    entries: u64,
    tasks: u64,
    max_task_id: u64,
}

impl Tally {
    fn add(&mut self, k: &[u8]) {
        self.entries += 1;
        if k.len() == 9 && k[0] == b'T' {
            let id = u64::from_be_bytes(k[1..9].try_into().unwrap_or([0; 8]));
            self.tasks += 1;
            self.max_task_id = self.max_task_id.max(id);
        }
    }

    fn info(self, format: u64, lsn: u64, taken_us: i64, bytes: u64) -> BackupInfo {
        BackupInfo {
            format,
            lsn,
            taken_us,
            entries: self.entries,
            tasks: self.tasks,
            max_task_id: self.max_task_id,
            bytes,
        }
    }
}

impl Ledger {
    /// Writes a backup of the state as it is now to `out`: apply is held still meanwhile, so
    /// the copy is the state at one LSN. Wait for [`Ledger::barrier`] first so it holds
    /// everything acknowledged so far.
    pub fn write_backup(&self, out: impl Write) -> Result<BackupInfo, BackupError> {
        let w = |e: std::io::Error| BackupError::Io {
            file: "backup".into(),
            what: "writing",
            source: e,
        };
        let mut s = Summing {
            w: BufWriter::with_capacity(1 << 20, out),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        let gate = self
            .pos
            .apply_gate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let get = |k: &[u8]| -> Result<u64, BackupError> {
            Ok(self
                .state
                .get(k)
                .map_err(LedgerError::from)?
                .and_then(|v| codec::u64_value(&v))
                .unwrap_or(0))
        };
        let lsn = get(APPLIED_KEY)?;
        let format = get(FORMAT_KEY)?;
        let taken_us = crate::task::now_us() as i64;
        let mut header = Vec::with_capacity(36);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&format.to_le_bytes());
        header.extend_from_slice(&lsn.to_le_bytes());
        header.extend_from_slice(&taken_us.to_le_bytes());
        s.put(&header).map_err(w)?;
        let mut tally = Tally::default();
        for kv in self.state.iter() {
            let (k, v) = kv.map_err(LedgerError::from)?;
            s.put(&(k.len() as u32).to_le_bytes()).map_err(w)?;
            s.put(&(v.len() as u32).to_le_bytes()).map_err(w)?;
            s.put(&k).map_err(w)?;
            s.put(&v).map_err(w)?;
            tally.add(&k);
        }
        drop(gate);
        s.put(&END.to_le_bytes()).map_err(w)?;
        s.put(&tally.entries.to_le_bytes()).map_err(w)?;
        let crc = s.crc.clone().finalize();
        s.w.write_all(&crc.to_le_bytes()).map_err(w)?;
        s.w.flush().map_err(w)?;
        Ok(tally.info(format, lsn, taken_us, s.bytes + 4))
    }

    /// Writes a backup into a new file in `dir` (the data directory: the disk that has room
    /// for the state), removed when the returned guard is dropped.
    pub fn write_backup_file(
        &self,
        dir: &Path,
    ) -> Result<(PartialBackup, BackupInfo), BackupError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(
            "{PARTIAL_PREFIX}{}-{n}{PARTIAL_SUFFIX}",
            std::process::id()
        ));
        let f = std::fs::File::create(&path).map_err(io(&path, "creating"))?;
        let guard = PartialBackup(path);
        let info = self.write_backup(f)?;
        Ok((guard, info))
    }
}

/// A backup file being sent; removed on drop.
#[derive(Debug)]
pub struct PartialBackup(PathBuf);

impl PartialBackup {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PartialBackup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes backups a master that died mid-backup left in its data directory.
pub fn remove_partials(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(PARTIAL_PREFIX) && name.ends_with(PARTIAL_SUFFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A reader that checksums and counts what it reads, for error offsets.
struct Checked<R> {
    r: BufReader<R>,
    crc: crc32fast::Hasher,
    at: u64,
    file: String,
}

impl<R: Read> Checked<R> {
    fn damaged(&self, reason: impl Into<String>) -> BackupError {
        BackupError::Damaged {
            file: self.file.clone(),
            offset: self.at,
            reason: reason.into(),
        }
    }

    fn take(&mut self, buf: &mut [u8], what: &str) -> Result<(), BackupError> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                self.damaged(format!("the file ends inside {what}: it was cut short"))
            }
            _ => BackupError::Io {
                file: self.file.clone(),
                what: "reading",
                source: e,
            },
        })?;
        self.crc.update(buf);
        self.at += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32, BackupError> {
        let mut b = [0u8; 4];
        self.take(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &str) -> Result<u64, BackupError> {
        let mut b = [0u8; 8];
        self.take(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Longest key or value a backup may hold; a longer length field is damage.
const MAX_FIELD: u32 = 1 << 30;

/// Reads a backup from `r` (`file` names it in errors), handing every entry to `each`, and
/// checks it whole: magic, version, format, lengths, the entry count and the checksum.
pub fn read_backup(
    r: impl Read,
    file: &str,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), BackupError>,
) -> Result<BackupInfo, BackupError> {
    let mut c = Checked {
        r: BufReader::with_capacity(1 << 20, r),
        crc: crc32fast::Hasher::new(),
        at: 0,
        file: file.to_string(),
    };
    let mut magic = [0u8; 8];
    c.take(&mut magic, "the header")?;
    if &magic != MAGIC {
        c.at = 0;
        return Err(c.damaged("not a heatmesh backup (bad magic)"));
    }
    let version = c.u32("the header")?;
    if version != VERSION {
        return Err(c.damaged(format!(
            "backup version {version}; this heatmesh reads version {VERSION}"
        )));
    }
    let format = c.u64("the header")?;
    // An older format is restored as it is and upgraded when the ledger first opens.
    if !(2..=FORMAT).contains(&format) {
        return Err(c.damaged(format!(
            "it holds ledger format {format}; this heatmesh reads formats 2 to {FORMAT}"
        )));
    }
    let lsn = c.u64("the header")?;
    let taken_us = c.u64("the header")? as i64;
    let mut tally = Tally::default();
    let (mut k, mut v) = (Vec::new(), Vec::new());
    loop {
        let klen = c.u32("an entry")?;
        if klen == END {
            break;
        }
        let vlen = c.u32("an entry")?;
        if klen > MAX_FIELD || vlen > MAX_FIELD {
            return Err(c.damaged(format!(
                "entry {} claims a {klen}-byte key and a {vlen}-byte value",
                tally.entries
            )));
        }
        k.resize(klen as usize, 0);
        v.resize(vlen as usize, 0);
        c.take(&mut k, "an entry")?;
        c.take(&mut v, "an entry")?;
        each(&k, &v)?;
        tally.add(&k);
    }
    let count = c.u64("the end marker")?;
    if count != tally.entries {
        return Err(c.damaged(format!(
            "the end marker counts {count} entries but {} were read",
            tally.entries
        )));
    }
    let want = c.crc.clone().finalize();
    let mut crc = [0u8; 4];
    c.r.read_exact(&mut crc)
        .map_err(|_| c.damaged("the file ends before its checksum: it was cut short"))?;
    if u32::from_le_bytes(crc) != want {
        return Err(c.damaged("checksum mismatch: the file was altered or damaged"));
    }
    let mut rest = [0u8; 1];
    if c.r
        .read(&mut rest)
        .map_err(io(Path::new(file), "reading"))?
        != 0
    {
        return Err(c.damaged("bytes follow the checksum"));
    }
    Ok(tally.info(format, lsn, taken_us, c.at + 4))
}

/// Checks a backup file whole without restoring it.
pub fn verify(file: &Path) -> Result<BackupInfo, BackupError> {
    let f = std::fs::File::open(file).map_err(io(file, "opening"))?;
    read_backup(f, &file.display().to_string(), |_, _| Ok(()))
}

/// Rebuilds a data directory `dir` (new, or empty) from a backup file: checks the file
/// whole first, then writes every entry to a new state store and starts an empty log at the
/// LSN after the backup's. On any failure the directory is left empty again.
pub fn restore(file: &Path, dir: &Path) -> Result<BackupInfo, BackupError> {
    let existed = dir.exists();
    if existed {
        let mut rd = std::fs::read_dir(dir).map_err(io(dir, "listing"))?;
        if rd.next().is_some() {
            return Err(BackupError::NotEmpty(dir.display().to_string()));
        }
    }
    let info = verify(file)?;
    std::fs::create_dir_all(dir).map_err(io(dir, "creating"))?;
    let r = restore_into(file, dir, &info);
    if r.is_err() {
        if existed {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_dir_all(e.path())
                        .or_else(|_| std::fs::remove_file(e.path()));
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    r.map(|()| info)
}

fn restore_into(file: &Path, dir: &Path, info: &BackupInfo) -> Result<(), BackupError> {
    let db = sled::Config::new()
        .path(dir)
        .flush_every_ms(None)
        .open()
        .map_err(LedgerError::from)?;
    let state = db.open_tree("state").map_err(LedgerError::from)?;
    let f = std::fs::File::open(file).map_err(io(file, "opening"))?;
    let mut batch = sled::Batch::default();
    let mut n = 0usize;
    let again = read_backup(f, &file.display().to_string(), |k, v| {
        batch.insert(k, v);
        n += 1;
        if n.is_multiple_of(10_000) {
            state
                .apply_batch(std::mem::take(&mut batch))
                .map_err(LedgerError::from)?;
        }
        Ok(())
    })?;
    // The file changed between the check and the copy.
    if again != *info {
        return Err(BackupError::Damaged {
            file: file.display().to_string(),
            offset: 0,
            reason: "the file changed while it was being restored".into(),
        });
    }
    state.apply_batch(batch).map_err(LedgerError::from)?;
    db.flush().map_err(LedgerError::from)?;
    drop(state);
    drop(db);
    wal::create_empty(&dir.join("wal"), info.lsn + 1).map_err(|e| {
        LedgerError::Storage(format!("creating the log of the restored directory: {e}"))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Commit, LedgerOptions, Op};
    use crate::task::TaskRecord;
    use std::time::Duration;

    fn opts() -> LedgerOptions {
        LedgerOptions {
            checkpoint_every: Duration::from_millis(20),
            reserve_bytes: 0,
            ..LedgerOptions::default()
        }
    }

    async fn filled(dir: &Path, n: u64) -> Ledger {
        let l = Ledger::open_with(dir, opts()).unwrap();
        for id in 1..=n {
            let rec = TaskRecord::pending(id, "Plant-001", "GL-009", format!(r#"{{"n":{id}}}"#));
            let (tx, rx) = tokio::sync::oneshot::channel();
            l.submit(Commit {
                ops: vec![Op::Put(rec), Op::Idem(format!("key-{id}"), id)],
                done: Some(Box::new(move |r| {
                    let _ = tx.send(r);
                })),
                ..Commit::default()
            })
            .unwrap();
            rx.await.unwrap().unwrap();
        }
        l.barrier().await.unwrap();
        l
    }

    fn open_again(dir: &Path) -> Ledger {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Ledger::open_with(dir, opts()) {
                Err(LedgerError::Storage(_)) if std::time::Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r.unwrap(),
            }
        }
    }

    #[tokio::test]
    async fn a_restored_directory_opens_with_every_task_and_continues_the_log() {
        let d = tempfile::tempdir().unwrap();
        let l = filled(&d.path().join("live"), 300).await;
        let (part, info) = l.write_backup_file(d.path()).unwrap();
        assert_eq!((info.tasks, info.max_task_id), (300, 300));
        assert!(info.lsn >= 300, "{info:?}");
        assert_eq!(verify(part.path()).unwrap(), info);
        let file = d.path().join("copy.hmbak");
        std::fs::copy(part.path(), &file).unwrap();
        drop(part);
        assert!(
            !std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".partial")),
            "the partial file is removed once dropped"
        );

        let target = d.path().join("restored");
        assert_eq!(restore(&file, &target).unwrap(), info);
        let r = open_again(&target);
        for id in [1, 150, 300] {
            assert_eq!(r.get(id).unwrap(), l.get(id).unwrap(), "task {id}");
        }
        assert_eq!(r.idempotent("key-7").unwrap(), Some(7));
        // The restored log continues where the backup ends, and takes writes.
        let rec = TaskRecord::pending(301, "Plant-001", "GL-009", "{}".into());
        let (tx, rx) = tokio::sync::oneshot::channel();
        r.submit(Commit {
            ops: vec![Op::Put(rec.clone())],
            applied: Some(Box::new(move |x| {
                let _ = tx.send(x);
            })),
            ..Commit::default()
        })
        .unwrap();
        rx.await.unwrap().unwrap();
        assert_eq!(r.get(301).unwrap(), Some(rec));

        // Restore never writes over a data directory.
        let err = restore(&file, &target).unwrap_err();
        assert!(matches!(err, BackupError::NotEmpty(_)), "{err}");
    }

    #[tokio::test]
    async fn a_cut_altered_or_foreign_file_is_refused_and_leaves_no_directory() {
        let d = tempfile::tempdir().unwrap();
        let l = filled(&d.path().join("live"), 50).await;
        let good = d.path().join("good.hmbak");
        l.write_backup(std::fs::File::create(&good).unwrap())
            .unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x40;
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        let cases: [(&str, Vec<u8>, &str); 5] = [
            (
                "cut in the middle",
                bytes[..bytes.len() / 2].to_vec(),
                "cut short",
            ),
            (
                "cut before the checksum",
                bytes[..bytes.len() - 2].to_vec(),
                "cut short",
            ),
            ("a flipped byte", flipped, ""),
            ("not a backup", foreign, "bad magic"),
            (
                "extra bytes",
                [bytes.as_slice(), b"x"].concat(),
                "follow the checksum",
            ),
        ];
        for (name, data, says) in cases {
            let f = d.path().join(format!("{name}.hmbak"));
            std::fs::write(&f, data).unwrap();
            let target = d.path().join(format!("{name}-restored"));
            let err = restore(&f, &target).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, BackupError::Damaged { .. }), "{name}: {msg}");
            assert!(msg.contains(&f.display().to_string()), "{name}: {msg}");
            assert!(msg.contains(says), "{name}: {msg}");
            assert!(!target.exists(), "{name}: a directory was left behind");
        }
    }
}
