//! One coordinator per store: an exclusive lock on the store directory (`flock` through std's
//! `File::try_lock`, released by the kernel when the process dies, however it dies), and the
//! lease-token epoch, which grows at every start (`state::epoch_of`). With `--redis`, the
//! Redis log adds an owner key for coordinators on other hosts (`RedisLog::claim`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::log::LogError;

/// Who runs a coordinator, as written in the lock file and the Redis owner key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Random, so two runs with the same pid (a container restarted) differ.
    pub id: String,
    pub pid: u32,
    pub host: String,
    /// The store directory, canonical.
    pub store: String,
}

impl Owner {
    pub fn describe(&self) -> String {
        format!("pid {} on host {} (store {})", self.pid, self.host, self.store)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The last epoch a coordinator took on this store, and which log it went with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    /// `file`, or the Redis log's redacted URL and stream key.
    pub log: String,
}

/// The store directory, held exclusively while this lives.
#[derive(Debug)]
pub struct StoreLock {
    dir: PathBuf,
    /// Holds the lock; closing it (or the process dying) releases it.
    _file: File,
    owner: Owner,
    last: EpochRecord,
}

const LOCK_FILE: &str = "lock";
const EPOCH_FILE: &str = "epoch";

impl StoreLock {
    /// Takes the store's lock, or fails naming the coordinator that holds it.
    pub fn acquire(dir: &Path) -> Result<StoreLock, LogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = serde_json::from_str::<Owner>(&text)
                    .map_or_else(|_| "a process that has not written its name yet".into(), |o| o.describe());
                return Err(LogError::Held { what: format!("store {}", dir.display()), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let store = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let owner = Owner {
            id: format!("{:016x}", rand::random::<u64>()),
            pid: std::process::id(),
            host: host_name(),
            store: store.display().to_string(),
        };
        let text = serde_json::to_vec(&owner).unwrap_or_default();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&text))
            .map_err(io(&lock_path))?;
        let epoch_path = dir.join(EPOCH_FILE);
        let last = match std::fs::read(&epoch_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LogError::Diverged {
                log: epoch_path.display().to_string(),
                message: format!("unreadable epoch record ({e}); it holds the last lease-token epoch"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => EpochRecord::default(),
            Err(e) => return Err(io(&epoch_path)(e)),
        };
        Ok(StoreLock { dir: dir.to_path_buf(), _file: file, owner, last })
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The epoch and log of the last coordinator that started on this store.
    pub fn last_epoch(&self) -> &EpochRecord {
        &self.last
    }

    /// Makes `record` the store's epoch, durably (written aside, fsynced, renamed, and the
    /// directory fsynced), before any lease of that epoch is granted.
    pub fn record_epoch(&mut self, record: EpochRecord) -> Result<(), LogError> {
        let path = self.dir.join(EPOCH_FILE);
        let tmp = self.dir.join("epoch.tmp");
        let io = |source| LogError::Io { path: path.clone(), source };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        self.last = record;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_the_epoch_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = StoreLock::acquire(dir.path()).unwrap();
        assert_eq!(first.last_epoch().epoch, 0);
        first.record_epoch(EpochRecord { epoch: 7, log: "file".into() }).unwrap();
        // A second open file description conflicts with the first even in one process.
        let err = StoreLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        let again = StoreLock::acquire(dir.path()).unwrap();
        assert_eq!(again.last_epoch(), &EpochRecord { epoch: 7, log: "file".into() });
    }
}
