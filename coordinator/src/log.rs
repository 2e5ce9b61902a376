//! The durable event log: every state change of the server is a record here, and the state is
//! the replay of the records. Records are opaque bytes to the log (the server serialises its
//! events as JSON), so a backend only has to keep byte strings in order.
//!
//! `FileLog` layout: records `[len u32 LE][crc32 u32 LE][payload]`, fsync after each batch. A
//! crash mid-write leaves a torn tail (a short or garbled last write); replay detects it (short
//! read or checksum mismatch with no whole record after it) and cuts it away, so the next
//! append starts on a record boundary. A bad record with whole records after it is damage, not
//! a torn write: replay refuses it, naming its byte offset, rather than drop the good records.
//!
//! Snapshots and rotation ([`EventLog::write_snapshot`]): the state at sequence N is written
//! to `events.snapshot` (to `events.snapshot.tmp`, fsynced, renamed, the directory fsynced;
//! checksummed, so a damaged one is refused, never used), then appends go to a new segment
//! `events.log.<M>` (M: the records before its first) and segments wholly at or below N are
//! deleted (kept with `keep_rotated`). Recovery loads the snapshot and replays the records after
//! N, from whichever segments hold them, so a crash between any two of those steps restarts to
//! the same state: segments still there are skipped up to N, a leftover temp file is deleted.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "event log {path}: record at byte {offset} is {len} bytes, more than the {max} a record may have"
    )]
    TooLarge { path: PathBuf, offset: u64, len: u64, max: u64 },
    /// A record in the middle of the log is damaged (whole records follow it): cutting the
    /// tail there would throw acknowledged changes away, so the log is refused instead.
    #[error(
        "event log {path}: the record at byte {offset} is damaged ({why}), and a whole record follows it \
         at byte {next}, so this is not a torn last write; refusing to start rather than drop the records \
         after it. Restore the file from a backup, or keep only what comes before the damage with \
         `truncate -s {offset}` on it"
    )]
    Corrupt { path: PathBuf, offset: u64, why: String, next: u64 },
    /// The snapshot fails its checksum or cannot be read: the records before it may be gone,
    /// so it is refused rather than used or skipped.
    #[error("state snapshot {path}: {why}; refusing to start on a damaged snapshot")]
    Snapshot { path: String, why: String },
    #[error("redis event log {url}: {message}")]
    Redis { url: String, message: String },
    /// The backend holds fewer or more records than were made durable: someone else wrote to
    /// it, or it lost acknowledged writes. Retrying cannot fix that.
    #[error("event log {log}: {message}")]
    Diverged { log: String, message: String },
    /// Another coordinator holds the store or the Redis stream.
    #[error("{what} is held by another coordinator: {holder}")]
    Held { what: String, holder: String },
    /// Redis would not keep an acknowledged write across a crash (`quarry serve --redis-unsafe`
    /// goes on anyway).
    #[error(
        "redis {url} is not durable enough for the event log: {problems}; fix its configuration, or start with --redis-unsafe to accept losing acknowledged changes"
    )]
    Unsafe { url: String, problems: String },
}

impl LogError {
    /// Whether the same append may succeed later (disk full, a backend restarting), so the
    /// server should retry it rather than stop.
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::Io { .. } | LogError::Redis { .. })
    }
}

/// Records larger than this are refused on append and treated as corruption on replay.
pub const MAX_RECORD: usize = 64 << 20;

/// An append-only sequence of records. `append_batch` is durable when it returns.
pub trait EventLog: Send {
    /// Appends the records in order and returns the sequence number (1-based, counted over
    /// the whole log) of the last one.
    fn append_batch(&mut self, records: &[Vec<u8>]) -> Result<u64, LogError>;

    fn append(&mut self, record: &[u8]) -> Result<u64, LogError> {
        self.append_batch(&[record.to_vec()])
    }

    /// Every intact record after the latest snapshot (every record when there is none),
    /// oldest first.
    fn replay(&mut self) -> Result<Vec<Vec<u8>>, LogError>;

    /// The latest snapshot and the records after it. Call once, before appending.
    fn recover(&mut self) -> Result<Recovered, LogError> {
        Ok(Recovered { snapshot: None, records: self.replay()? })
    }

    /// Stores `state`, the state after record `seq` (at most the last appended), durably and
    /// lets go of the records it covers. Backends without snapshots ignore it.
    fn write_snapshot(&mut self, _seq: u64, _state: &[u8]) -> Result<(), LogError> {
        Ok(())
    }

    /// Records this run's lease-token epoch durably in the backend, before any lease of it.
    fn set_epoch(&mut self, _epoch: u64) -> Result<(), LogError> {
        Ok(())
    }

    /// Called every [`KEEP_ALIVE`] between batches: renews what this coordinator holds in the
    /// backend (the Redis owner key). An error that is not transient means another coordinator
    /// took over, and the server stops.
    fn keep_alive(&mut self) -> Result<(), LogError> {
        Ok(())
    }
}

/// What a log holds at start: the latest snapshot (its sequence number and state bytes) and
/// the records after it.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<(u64, Vec<u8>)>,
    pub records: Vec<Vec<u8>>,
}

const SNAPSHOT_MAGIC: &[u8; 8] = b"QSNAP\x001\n";

/// A snapshot as stored: magic, `seq` u64 LE, length u64 LE, crc32 (of seq, length and
/// state) u32 LE, then the state.
pub fn encode_snapshot(seq: u64, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.len() + 28);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[8..24]);
    h.update(state);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(state);
    out
}

/// `(seq, state)` of a stored snapshot, or why it cannot be used (torn, damaged, foreign).
pub fn decode_snapshot(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    let header = bytes.get(..28).ok_or("shorter than its header")?;
    if &header[..8] != SNAPSHOT_MAGIC {
        return Err("not a quarry snapshot".into());
    }
    let num =
        |r: std::ops::Range<usize>| header.get(r).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let (seq, len) = (num(8..16).unwrap_or(0), num(16..24).unwrap_or(0));
    let crc = header.get(24..28).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes).unwrap_or(0);
    let state = &bytes[28..];
    if state.len() as u64 != len {
        return Err(format!("{} bytes of state where its header says {len}", state.len()));
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&header[8..24]);
    h.update(state);
    if h.finalize() != crc {
        return Err("its checksum does not match".into());
    }
    Ok((seq, state))
}

/// How often the log thread calls [`EventLog::keep_alive`].
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(2);

pub struct FileLog {
    /// The first segment (`events.log`); later ones are `events.log.<base>`.
    base_path: PathBuf,
    /// The segment appended to.
    path: PathBuf,
    file: File,
    seq: u64,
    /// The records before the current segment's first.
    segment_base: u64,
    /// Earlier segments still on disk, oldest first: (records before their first, path).
    older: Vec<(u64, PathBuf)>,
    /// Keep segments a snapshot covers instead of deleting them (the fault campaign reads
    /// the whole history).
    keep_rotated: bool,
    /// The file's length after the last durable append: a failed append (disk full) is cut
    /// back to it, so a retry or a later append never lands after half a record.
    len: u64,
}

impl std::fmt::Debug for FileLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLog").field("path", &self.path).field("seq", &self.seq).finish()
    }
}

/// `events.log.<base>` beside `events.log`.
fn segment_path(base_path: &Path, base: u64) -> PathBuf {
    let mut name = base_path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{base}"));
    base_path.with_file_name(name)
}

impl FileLog {
    /// Opens (creating if needed) the log. Call [`EventLog::recover`] (or `replay`) before
    /// appending: it also cuts a torn tail.
    pub fn open(path: &Path) -> Result<FileLog, LogError> {
        FileLog::open_with(path, false)
    }

    /// [`FileLog::open`]; with `keep_rotated`, segments a snapshot covers stay on disk.
    pub fn open_with(path: &Path, keep_rotated: bool) -> Result<FileLog, LogError> {
        let io = |source| LogError::Io { path: path.to_path_buf(), source };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        if path.exists() {
            segments.push((0, path.to_path_buf()));
        }
        let prefix = format!("{}.", path.file_name().unwrap_or_default().to_string_lossy());
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name.strip_prefix(&prefix).and_then(|b| b.parse::<u64>().ok()) {
                segments.push((base, dir.join(&*name)));
            }
        }
        segments.sort();
        let (segment_base, current) = segments.pop().unwrap_or((0, path.to_path_buf()));
        let existed = current.exists();
        let file = OpenOptions::new().read(true).append(true).create(true).open(&current).map_err(io)?;
        if !existed {
            // The new file's directory entry must be durable too, or a crash could lose the
            // whole log along with records already acknowledged.
            sync_dir(&current).map_err(io)?;
        }
        let len = file.metadata().map_err(io)?.len();
        Ok(FileLog {
            base_path: path.to_path_buf(),
            path: current,
            file,
            seq: segment_base,
            segment_base,
            older: segments,
            keep_rotated,
            len,
        })
    }

    fn io(&self, source: std::io::Error) -> LogError {
        LogError::Io { path: self.path.clone(), source }
    }

    fn snapshot_path(&self) -> PathBuf {
        self.base_path.with_extension("snapshot")
    }

    /// The stored snapshot, if any; a leftover temp file (a crash mid-write) is deleted.
    fn read_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        let path = self.snapshot_path();
        let tmp = path.with_extension("snapshot.tmp");
        match std::fs::remove_file(&tmp) {
            Ok(()) => tracing::warn!(path = %tmp.display(), "deleted a snapshot a crash left unfinished"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LogError::Io { path: tmp, source }),
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LogError::Io { path, source }),
        };
        let (seq, state) = decode_snapshot(&bytes)
            .map_err(|why| LogError::Snapshot { path: path.display().to_string(), why })?;
        Ok(Some((seq, state.to_vec())))
    }

    /// Deletes the older segments whose records all lie at or below `upto`.
    fn drop_covered(&mut self, upto: u64) -> Result<(), LogError> {
        if self.keep_rotated {
            return Ok(());
        }
        let mut ends: Vec<u64> = self.older.iter().skip(1).map(|s| s.0).collect();
        ends.push(self.segment_base);
        let mut kept = Vec::new();
        for ((base, path), end) in std::mem::take(&mut self.older).into_iter().zip(ends) {
            if end <= upto {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        tracing::warn!(path = %path.display(), error = %source, "cannot delete a rotated log segment");
                        kept.push((base, path));
                    }
                }
            } else {
                kept.push((base, path));
            }
        }
        self.older = kept;
        Ok(())
    }
}

impl EventLog for FileLog {
    fn append_batch(&mut self, records: &[Vec<u8>]) -> Result<u64, LogError> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.len() + 8).sum());
        for r in records {
            if r.len() > MAX_RECORD {
                return Err(LogError::TooLarge {
                    path: self.path.clone(),
                    offset: 0,
                    len: r.len() as u64,
                    max: MAX_RECORD as u64,
                });
            }
            buf.extend_from_slice(&(r.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            buf.extend_from_slice(r);
        }
        // fdatasync: the length is part of the data for an appended file, so this is enough.
        if let Err(e) = self.file.write_all(&buf).and_then(|()| self.file.sync_data()) {
            // Shrinking needs no free space, so this works on a full disk too.
            if let Err(cut) = self.file.set_len(self.len) {
                tracing::error!(path = %self.path.display(), error = %cut, "event log: cannot cut a failed append; replay will drop it");
            }
            return Err(self.io(e));
        }
        self.len += buf.len() as u64;
        self.seq += records.len() as u64;
        Ok(self.seq)
    }

    fn replay(&mut self) -> Result<Vec<Vec<u8>>, LogError> {
        Ok(self.recover()?.records)
    }

    fn recover(&mut self) -> Result<Recovered, LogError> {
        let snapshot = self.read_snapshot()?;
        let covered = snapshot.as_ref().map_or(0, |s| s.0);
        // Older segments the snapshot covers are not read (a crash after the snapshot, before
        // their deletion, left them); the first one read must start at or before the snapshot.
        self.drop_covered(covered)?;
        let first_base = self.older.first().map_or(self.segment_base, |s| s.0);
        if first_base > covered {
            return Err(LogError::Diverged {
                log: self.base_path.display().to_string(),
                message: format!(
                    "the log starts after record {first_base} but the snapshot covers only {covered}: records are missing"
                ),
            });
        }
        let mut records = Vec::new();
        let mut ends: Vec<u64> = self.older.iter().skip(1).map(|s| s.0).collect();
        ends.push(self.segment_base);
        for ((base, path), end) in self.older.clone().into_iter().zip(ends) {
            if end <= covered {
                continue;
            }
            let file = File::open(&path).map_err(|source| LogError::Io { path: path.clone(), source })?;
            let total = file.metadata().map_err(|source| LogError::Io { path: path.clone(), source })?.len();
            let (got, good) = read_records(&file, &path)?;
            // Only the last segment can have a torn tail: a rotated one was whole when the
            // next began.
            if good < total || got.len() as u64 != end - base {
                return Err(LogError::Diverged {
                    log: path.display().to_string(),
                    message: format!(
                        "a rotated segment holds {} whole records in {good} of {total} bytes where {} were written",
                        got.len(),
                        end - base
                    ),
                });
            }
            records.extend(got.into_iter().skip(covered.saturating_sub(base) as usize));
        }
        let (got, offset) = read_records(&self.file, &self.path)?;
        let total = self.file.metadata().map_err(|e| self.io(e))?.len();
        if offset < total {
            tracing::warn!(path = %self.path.display(), kept = offset, dropped = total - offset, "event log: dropping a torn or corrupt tail");
            self.file.set_len(offset).map_err(|e| self.io(e))?;
            self.file.sync_all().map_err(|e| self.io(e))?;
        }
        self.len = offset;
        self.seq = self.segment_base + got.len() as u64;
        if self.seq < covered {
            return Err(LogError::Diverged {
                log: self.path.display().to_string(),
                message: format!("the log ends at record {} but the snapshot covers {covered}", self.seq),
            });
        }
        records.extend(got.into_iter().skip(covered.saturating_sub(self.segment_base) as usize));
        Ok(Recovered { snapshot, records })
    }

    fn write_snapshot(&mut self, seq: u64, state: &[u8]) -> Result<(), LogError> {
        let path = self.snapshot_path();
        let tmp = path.with_extension("snapshot.tmp");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| LogError::Io { path: p, source }
        };
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            let written = f.write_all(&encode_snapshot(seq, state)).and_then(|()| f.sync_all());
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(io(&tmp)(e));
            }
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(&path).map_err(io(&path))?;
        // Later appends go to a new segment, so the records the snapshot covers sit in
        // segments that can be deleted whole.
        if self.seq > self.segment_base {
            let next = segment_path(&self.base_path, self.seq);
            let file =
                OpenOptions::new().read(true).append(true).create(true).open(&next).map_err(io(&next))?;
            sync_dir(&next).map_err(io(&next))?;
            let old = std::mem::replace(&mut self.path, next);
            self.older.push((self.segment_base, old));
            self.file = file;
            self.segment_base = self.seq;
            self.len = 0;
        }
        self.drop_covered(seq)
    }
}

/// The whole records at the start of `file`, and the byte offset where they end. A bad record
/// with a whole one after it is damage, not a torn write: an error naming its offset.
fn read_records(file: &File, path: &Path) -> Result<(Vec<Vec<u8>>, u64), LogError> {
    let io = |source| LogError::Io { path: path.to_path_buf(), source };
    let mut f = file;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let total = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut offset = 0u64;
    let mut header = [0u8; 8];
    // Stops at the first record that is short or fails its checksum.
    let mut bad: Option<&'static str> = None;
    while offset < total {
        if offset + 8 > total || reader.read_exact(&mut header).is_err() {
            bad = Some("a header cut short");
            break;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD as u64 || offset + 8 + len > total {
            bad = Some("its length runs past the end of the file");
            break;
        }
        let mut payload = vec![0u8; len as usize];
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            bad = Some("its checksum does not match");
            break;
        }
        records.push(payload);
        offset += 8 + len;
    }
    drop(reader);
    if let Some(why) = bad {
        // A torn write is the last thing in the file; anything whole after the bad record
        // means the damage is in the middle, and cutting there would lose those records.
        if let Some(next) = whole_record_after(file, path, offset, total)? {
            return Err(LogError::Corrupt { path: path.to_path_buf(), offset, why: why.into(), next });
        }
    }
    Ok((records, offset))
}

/// The offset of the first whole, non-empty record that starts after `bad` (which is not
/// one), if any. Every offset is tried, as a damaged length hides where the next record
/// starts; a candidate needs its length to fit in the file and its checksum to match
/// (zero bytes would pass as an empty record, so those are not counted). Only read after a
/// bad record, so a clean start costs nothing. The next true record starts within one
/// largest record of `bad` and is at most that long, so two of them bound the window.
fn whole_record_after(file: &File, path: &Path, bad: u64, total: u64) -> Result<Option<u64>, LogError> {
    let io = |source| LogError::Io { path: path.to_path_buf(), source };
    let window = (total - bad).min(2 * (MAX_RECORD as u64 + 8));
    let mut tail = Vec::with_capacity(window as usize);
    let mut f = file;
    f.seek(SeekFrom::Start(bad)).map_err(io)?;
    f.take(window).read_to_end(&mut tail).map_err(io)?;
    for at in 1..tail.len() {
        let Some(header) = tail.get(at..at + 8) else { break };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_RECORD {
            continue;
        }
        if let Some(payload) = tail.get(at + 8..at + 8 + len)
            && crc32fast::hash(payload) == crc
        {
            return Ok(Some(bad + at as u64));
        }
    }
    Ok(None)
}

/// Makes a new or renamed entry of `path`'s directory durable (`fsync` on the directory).
pub(crate) fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()?;
    note_synced(dir);
    Ok(())
}

/// Directories fsynced so far, in order (test builds only): no test short of a power cut can
/// see a missing directory fsync, so the tests check that each one is made.
#[cfg(test)]
pub(crate) static SYNCED_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Records a directory fsync for the tests ([`SYNCED_DIRS`]); nothing in other builds.
pub(crate) fn note_synced(dir: &Path) {
    #[cfg(test)]
    if let Ok(mut synced) = SYNCED_DIRS.lock() {
        synced.push(dir.to_path_buf());
    }
    #[cfg(not(test))]
    let _ = dir;
}

/// A log kept in memory only (tests, benchmarks of the state machine without a disk).
#[derive(Debug, Default)]
pub struct MemoryLog {
    records: Vec<Vec<u8>>,
}

impl EventLog for MemoryLog {
    fn append_batch(&mut self, records: &[Vec<u8>]) -> Result<u64, LogError> {
        self.records.extend(records.iter().cloned());
        Ok(self.records.len() as u64)
    }

    fn replay(&mut self) -> Result<Vec<Vec<u8>>, LogError> {
        Ok(self.records.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_new_log_file_fsyncs_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let synced = |d: &Path| SYNCED_DIRS.lock().unwrap().iter().filter(|s| s.as_path() == d).count();
        FileLog::open(&path).unwrap();
        assert_eq!(synced(dir.path()), 1, "the new file's directory entry was not fsynced");
        // Reopening an existing log creates no entry: no second fsync.
        FileLog::open(&path).unwrap();
        assert_eq!(synced(dir.path()), 1);
    }

    #[test]
    fn append_then_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut log = FileLog::open(&path).unwrap();
        assert!(log.replay().unwrap().is_empty());
        assert_eq!(log.append(b"one").unwrap(), 1);
        assert_eq!(log.append_batch(&[b"two".to_vec(), Vec::new(), b"four".to_vec()]).unwrap(), 4);
        drop(log);
        let mut log = FileLog::open(&path).unwrap();
        let got = log.replay().unwrap();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec(), Vec::new(), b"four".to_vec()]);
        assert_eq!(log.append(b"five").unwrap(), 5);
    }

    #[test]
    fn truncated_last_record_is_dropped_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut log = FileLog::open(&path).unwrap();
        log.append(b"first record").unwrap();
        log.append(b"second record").unwrap();
        drop(log);
        let full = std::fs::metadata(&path).unwrap().len();
        // Cut the second record in the middle of its payload, as a crash mid-write would.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        drop(f);
        let mut log = FileLog::open(&path).unwrap();
        assert_eq!(log.replay().unwrap(), vec![b"first record".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 + 12);
        // The next append starts on the boundary, so a later replay sees both.
        log.append(b"third").unwrap();
        drop(log);
        let mut log = FileLog::open(&path).unwrap();
        assert_eq!(log.replay().unwrap(), vec![b"first record".to_vec(), b"third".to_vec()]);
    }

    /// Three records, then `damage` applied to the file's bytes given the second record's
    /// offset; returns (path, the bytes after the damage, the second record's offset).
    fn damaged(damage: impl Fn(&mut Vec<u8>, usize)) -> (tempfile::TempDir, PathBuf, Vec<u8>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut log = FileLog::open(&path).unwrap();
        log.append(b"{\"event\":\"first\"}").unwrap();
        log.append(b"{\"event\":\"second\"}").unwrap();
        log.append(b"{\"event\":\"third\"}").unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = 8 + b"{\"event\":\"first\"}".len();
        damage(&mut bytes, second);
        std::fs::write(&path, &bytes).unwrap();
        (dir, path, bytes, second)
    }

    #[test]
    fn a_bad_record_followed_by_whole_ones_refuses_to_replay_naming_its_offset() {
        // A flipped payload byte in the middle record: its checksum fails, the third is whole.
        let (_dir, path, bytes, second) = damaged(|b, at| b[at + 8 + 3] ^= 0x20);
        let mut log = FileLog::open(&path).unwrap();
        let err = log.replay().unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("byte {second}")), "{text}");
        assert!(!err.is_transient());
        // Nothing was cut: every byte after the bad record is still there.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_damaged_length_in_the_middle_is_not_taken_for_a_torn_tail() {
        // The middle record's length now points past the end of the file, as a torn last
        // record's does; the whole record after it shows it is not the tail.
        let (_dir, path, bytes, second) = damaged(|b, at| b[at + 3] = 0x01);
        let mut log = FileLog::open(&path).unwrap();
        let text = log.replay().unwrap_err().to_string();
        assert!(text.contains(&format!("byte {second}")), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_bad_last_record_is_still_cut() {
        // Damage in the last record only (nothing whole after it): a torn tail, cut as before.
        let (_dir, path, bytes, _) = damaged(|b, _| {
            let last = b.len() - 2;
            b[last] ^= 0x20;
        });
        let mut log = FileLog::open(&path).unwrap();
        assert_eq!(
            log.replay().unwrap(),
            vec![b"{\"event\":\"first\"}".to_vec(), b"{\"event\":\"second\"}".to_vec()]
        );
        let third = 8 + b"{\"event\":\"third\"}".len();
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, bytes.len() - third);
    }

    fn recs(range: std::ops::RangeInclusive<u32>) -> Vec<Vec<u8>> {
        range.map(|i| format!("r{i}").into_bytes()).collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_snapshot_rotates_the_log_and_recovery_replays_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut log = FileLog::open(&path).unwrap();
        log.recover().unwrap();
        log.append_batch(&recs(1..=5)).unwrap();
        log.write_snapshot(5, b"state at 5").unwrap();
        assert_eq!(log.append_batch(&recs(6..=7)).unwrap(), 7);
        // The covered segment is gone; appends went to the new one.
        assert_eq!(files(dir.path()), ["events.log.5", "events.snapshot"]);
        log.write_snapshot(7, b"state at 7").unwrap();
        log.append_batch(&recs(8..=8)).unwrap();
        assert_eq!(files(dir.path()), ["events.log.7", "events.snapshot"]);
        drop(log);
        let mut log = FileLog::open(&path).unwrap();
        let got = log.recover().unwrap();
        assert_eq!(got.snapshot, Some((7, b"state at 7".to_vec())));
        assert_eq!(got.records, recs(8..=8));
        assert_eq!(log.append_batch(&recs(9..=9)).unwrap(), 9);
    }

    /// Every crash point of `write_snapshot`, replayed on the files it would leave.
    #[test]
    fn a_crash_at_any_step_of_a_snapshot_restarts_to_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let snapshot = dir.path().join("events.snapshot");
        let mut log = FileLog::open(&path).unwrap();
        log.recover().unwrap();
        log.append_batch(&recs(1..=4)).unwrap();
        drop(log);
        let recover = || {
            let mut log = FileLog::open(&path).unwrap();
            let got = log.recover().unwrap();
            let seq = log.append_batch(&[]).unwrap();
            (got.snapshot.map(|s| s.0), got.records, seq)
        };
        // 1. Killed while writing the temp file: a torn temp file, ignored and deleted.
        std::fs::write(dir.path().join("events.snapshot.tmp"), &encode_snapshot(4, b"state")[..10]).unwrap();
        assert_eq!(recover(), (None, recs(1..=4), 4));
        assert_eq!(files(dir.path()), ["events.log"]);
        // 2. Killed after the rename, before the new segment: the old one holds only records
        // the snapshot covers, and appends go on in it.
        std::fs::write(&snapshot, encode_snapshot(4, b"state")).unwrap();
        assert_eq!(recover(), (Some(4), vec![], 4));
        // 3. Killed after the new segment was created, before the old one was deleted.
        std::fs::write(dir.path().join("events.log.4"), b"").unwrap();
        let mut log = FileLog::open_with(&path, true).unwrap();
        log.recover().unwrap();
        log.append_batch(&recs(5..=5)).unwrap();
        drop(log);
        assert_eq!(files(dir.path()), ["events.log", "events.log.4", "events.snapshot"]);
        assert_eq!(recover(), (Some(4), recs(5..=5), 5));
        assert_eq!(files(dir.path()), ["events.log.4", "events.snapshot"]);
    }

    #[test]
    fn kept_segments_hold_the_whole_history_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut log = FileLog::open_with(&path, true).unwrap();
        log.recover().unwrap();
        log.append_batch(&recs(1..=3)).unwrap();
        log.write_snapshot(3, b"s3").unwrap();
        log.append_batch(&recs(4..=6)).unwrap();
        log.write_snapshot(5, b"s5").unwrap();
        log.append_batch(&recs(7..=7)).unwrap();
        drop(log);
        assert_eq!(files(dir.path()), ["events.log", "events.log.3", "events.log.6", "events.snapshot"]);
        let mut all = Vec::new();
        for name in ["events.log", "events.log.3", "events.log.6"] {
            let f = File::open(dir.path().join(name)).unwrap();
            all.extend(read_records(&f, &dir.path().join(name)).unwrap().0);
        }
        assert_eq!(all, recs(1..=7));
        // A snapshot inside a segment (5, in the one starting at 3): its tail is 6 and 7.
        let got = FileLog::open_with(&path, true).unwrap().recover().unwrap();
        assert_eq!((got.snapshot.map(|s| s.0), got.records), (Some(5), recs(6..=7)));
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_nothing_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut log = FileLog::open(&path).unwrap();
        log.recover().unwrap();
        log.append_batch(&recs(1..=3)).unwrap();
        log.write_snapshot(3, b"the state").unwrap();
        log.append_batch(&recs(4..=4)).unwrap();
        drop(log);
        let snapshot = dir.path().join("events.snapshot");
        let mut bytes = std::fs::read(&snapshot).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&snapshot, &bytes).unwrap();
        let err = FileLog::open(&path).unwrap().recover().unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(!err.is_transient());
        // A snapshot cut short is refused too.
        std::fs::write(&snapshot, &bytes[..bytes.len() - 3]).unwrap();
        let err = FileLog::open(&path).unwrap().recover().unwrap_err();
        assert!(err.to_string().contains("state snapshot"), "{err}");
        assert_eq!(files(dir.path()), ["events.log.3", "events.snapshot"]);
    }

    #[test]
    fn transient_errors_are_io_and_redis() {
        let io = LogError::Io { path: "x".into(), source: std::io::Error::other("full") };
        assert!(io.is_transient());
        let big = LogError::TooLarge { path: "x".into(), offset: 0, len: 1, max: 0 };
        assert!(!big.is_transient());
        assert!(!LogError::Diverged { log: "x".into(), message: "lost".into() }.is_transient());
    }

    #[test]
    fn corrupt_last_record_and_torn_header_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut log = FileLog::open(&path).unwrap();
        log.append(b"good").unwrap();
        log.append(b"flipped").unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        // Plus three bytes of a header that never finished.
        bytes.extend_from_slice(&[9, 0, 0]);
        std::fs::write(&path, &bytes).unwrap();
        let mut log = FileLog::open(&path).unwrap();
        assert_eq!(log.replay().unwrap(), vec![b"good".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12);
    }
}
