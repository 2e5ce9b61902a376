//! The durable event log: every state change of the server is a record here, and the state is
//! the replay of the records. Records are opaque bytes to the log (the server serialises its
//! events as JSON), so a backend only has to keep byte strings in order.
//!
//! `FileLog` layout: records `[len u32 LE][crc32 u32 LE][payload]`, fsync after each batch. A
//! crash mid-write leaves at most one torn record at the tail; replay detects it (short read or
//! checksum mismatch) and truncates it away, so the next append starts on a record boundary.

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

    /// Every intact record, oldest first.
    fn replay(&mut self) -> Result<Vec<Vec<u8>>, LogError>;

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

/// How often the log thread calls [`EventLog::keep_alive`].
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(2);

pub struct FileLog {
    path: PathBuf,
    file: File,
    seq: u64,
    /// The file's length after the last durable append: a failed append (disk full) is cut
    /// back to it, so a retry or a later append never lands after half a record.
    len: u64,
}

impl std::fmt::Debug for FileLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLog").field("path", &self.path).field("seq", &self.seq).finish()
    }
}

impl FileLog {
    /// Opens (creating if needed) the log file. Call [`EventLog::replay`] before appending: it
    /// also cuts a torn tail.
    pub fn open(path: &Path) -> Result<FileLog, LogError> {
        let io = |source| LogError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(FileLog { path: path.to_path_buf(), file, seq: 0, len })
    }

    fn io(&self, source: std::io::Error) -> LogError {
        LogError::Io { path: self.path.clone(), source }
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
        self.file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        let total = self.file.metadata().map_err(|e| self.io(e))?.len();
        let mut reader = BufReader::new(&self.file);
        let mut records = Vec::new();
        let mut offset = 0u64;
        let mut header = [0u8; 8];
        // Stops at the first record that is short or fails its checksum: that is the torn tail.
        while offset + 8 <= total {
            if reader.read_exact(&mut header).is_err() {
                break;
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len > MAX_RECORD as u64 || offset + 8 + len > total {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
                break;
            }
            records.push(payload);
            offset += 8 + len;
        }
        drop(reader);
        if offset < total {
            tracing::warn!(path = %self.path.display(), kept = offset, dropped = total - offset, "event log: dropping a torn or corrupt tail");
            self.file.set_len(offset).map_err(|e| self.io(e))?;
            self.file.sync_all().map_err(|e| self.io(e))?;
        }
        self.len = offset;
        self.seq = records.len() as u64;
        Ok(records)
    }
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
