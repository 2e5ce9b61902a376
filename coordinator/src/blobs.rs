//! Content-addressed blob store: `DIR/<sha256 hex>`. Writes go to a temporary file in
//! `DIR/tmp` that is renamed into place once complete (and the directory fsynced), so a reader
//! never sees half a blob. An upload that stops part way (refused, failed, its caller gone)
//! deletes its temporary file when its writer is dropped, and opening the store sweeps what a
//! crash left in `DIR/tmp`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0:?} is not a blob hash (64 lowercase hex digits)")]
    BadHash(String),
    #[error("no blob {0}")]
    Missing(String),
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

/// True for a lowercase sha256 hex digest; anything else could name a path outside the store.
pub fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An upload in progress. Dropped before [`BlobWriter::finish`], it deletes its temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    file: tokio::fs::File,
    tmp: PathBuf,
    hasher: Sha256,
    size: u64,
    dir: PathBuf,
    /// Renamed into place: nothing left to delete.
    finished: bool,
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.finished
            && let Err(e) = std::fs::remove_file(&self.tmp)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.tmp.display(), error = %e, "could not delete an unfinished upload");
        }
    }
}

impl BlobWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        self.file.write_all(data).await.map_err(|source| BlobError::Io { path: self.tmp.clone(), source })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the blob durable and visible; returns (hash, size). Identical bytes map to the
    /// same file, so a repeated upload is a no-op.
    pub async fn finish(mut self) -> Result<(String, u64), BlobError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlobError::Io { path, source }
        };
        self.file.flush().await.map_err(io(&self.tmp))?;
        self.file.sync_all().await.map_err(io(&self.tmp))?;
        let hash = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let dest = self.dir.join(&hash);
        tokio::fs::rename(&self.tmp, &dest).await.map_err(io(&dest))?;
        self.finished = true;
        // The rename is durable only once the directory is: a blob an event names must
        // survive a crash as well as the event does.
        let dir = tokio::fs::File::open(&self.dir).await.map_err(io(&self.dir))?;
        dir.sync_all().await.map_err(io(&self.dir))?;
        crate::log::note_synced(&self.dir);
        Ok((hash, self.size))
    }
}

impl BlobStore {
    /// Opens (creating if needed) the store and deletes what is left in its `tmp/`: uploads
    /// a crash cut short, which nothing can finish now.
    pub fn open(dir: &Path) -> Result<BlobStore, BlobError> {
        let tmp = dir.join("tmp");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlobError::Io { path, source }
        };
        std::fs::create_dir_all(&tmp).map_err(io(dir))?;
        let mut swept = 0u64;
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))? {
            let path = entry.map_err(io(&tmp))?.path();
            match std::fs::remove_file(&path) {
                Ok(()) => swept += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete an unfinished upload")
                }
            }
        }
        if swept > 0 {
            tracing::info!(dir = %tmp.display(), files = swept, "deleted unfinished uploads");
        }
        Ok(BlobStore { dir: dir.to_path_buf() })
    }

    pub fn path(&self, hash: &str) -> Result<PathBuf, BlobError> {
        if !is_hash(hash) {
            return Err(BlobError::BadHash(hash.to_string()));
        }
        Ok(self.dir.join(hash))
    }

    pub fn contains(&self, hash: &str) -> bool {
        self.path(hash).is_ok_and(|p| p.is_file())
    }

    pub async fn writer(&self) -> Result<BlobWriter, BlobError> {
        let tmp = self.dir.join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|source| BlobError::Io { path: tmp.clone(), source })?;
        Ok(BlobWriter { file, tmp, hasher: Sha256::new(), size: 0, dir: self.dir.clone(), finished: false })
    }

    pub async fn put(&self, data: &[u8]) -> Result<(String, u64), BlobError> {
        let mut w = self.writer().await?;
        w.write(data).await?;
        w.finish().await
    }

    pub async fn open_blob(&self, hash: &str) -> Result<tokio::fs::File, BlobError> {
        let path = self.path(hash)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::Missing(hash.to_string())),
            Err(source) => Err(BlobError::Io { path, source }),
        }
    }

    /// Deletes a blob nothing references any more; a missing one is fine.
    pub fn remove(&self, hash: &str) {
        if let Ok(p) = self.path(hash)
            && let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not delete an unreferenced blob");
        }
    }
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (h1, n) = store.put(b"hello").await.unwrap();
        // The rename into place is made durable: the store's directory is fsynced.
        let synced =
            crate::log::SYNCED_DIRS.lock().unwrap().iter().filter(|d| d.as_path() == dir.path()).count();
        assert_eq!(synced, 1, "the blob's rename was not followed by a directory fsync");
        assert_eq!(h1, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(n, 5);
        let (h2, _) = store.put(b"hello").await.unwrap();
        assert_eq!(h1, h2);
        assert!(store.contains(&h1));
        assert_eq!(std::fs::read(store.path(&h1).unwrap()).unwrap(), b"hello");
        assert!(matches!(store.path("../etc/passwd"), Err(BlobError::BadHash(_))));
        store.remove(&h1);
        assert!(!store.contains(&h1));
    }

    fn temp_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir.join("tmp")).unwrap().map(|e| e.unwrap().path()).collect()
    }

    #[tokio::test]
    async fn an_upload_dropped_part_way_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store.writer().await.unwrap();
        w.write(b"half of a blob").await.unwrap();
        assert_eq!(temp_files(dir.path()).len(), 1);
        // A handler that returns early (`?`) or is cancelled drops its writer unfinished.
        drop(w);
        assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
        // A finished one is renamed into place, not deleted.
        let mut w = store.writer().await.unwrap();
        w.write(b"whole").await.unwrap();
        let (hash, _) = w.finish().await.unwrap();
        assert!(store.contains(&hash));
        assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn opening_the_store_sweeps_temp_files_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        drop(BlobStore::open(dir.path()).unwrap());
        std::fs::write(dir.path().join("tmp").join("4242-0"), b"an upload cut by a crash").unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
        assert!(store.path(&"0".repeat(64)).is_ok());
    }
}
