//! The file-based registry of datasets and models, under a store directory shared with
//! `quarry serve --store` (the same content-addressed `blobs/<sha256>`):
//!
//! ```text
//! STORE/blobs/<sha256>                              file contents (datasets, run files, references)
//! STORE/registry/datasets/<NAME>/<V>.json           DatasetRecord
//! STORE/registry/models/<NAME>/<V>.json             ModelRecord
//! STORE/registry/models/<NAME>/aliases.json         {"production": 3, ...}
//! STORE/registry/cache/                             unpacked run folders and dataset files
//! ```
//!
//! A version file is created with `create_new`, so two concurrent registrations never get the
//! same number; identical content maps to the version that already holds it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use quarry_featurize::{ColumnProfile, load_table, profile_column};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::drift::Reference;
use crate::error::{Result, ServingError};
use crate::model::{input_kinds, load_pipeline, training_file};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub name: String,
    pub version: u32,
    pub sha256: String,
    pub size: u64,
    /// The registered file's name (its extension says CSV or Parquet).
    pub file_name: String,
    pub registered_at: u64,
    pub n_rows: usize,
    pub profile: Vec<ColumnProfile>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Lineage {
    /// The first 16 hex digits of the run's content hash.
    pub run_id: String,
    pub run_dir: String,
    pub dataset_sha256: Option<String>,
    /// `NAME:VERSION` of the registered dataset with that content, if any.
    pub dataset: Option<String>,
    pub task: Option<String>,
    pub metric: Option<String>,
    pub validation_score: Option<f64>,
    pub family: Option<String>,
    pub quarry_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub version: u32,
    /// SHA-256 over the sorted (path, file hash) list: equal runs have equal hashes.
    pub content_hash: String,
    /// Run-folder-relative path → blob hash.
    pub files: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub lineage: Lineage,
    /// Blob hash of the drift reference sampled from the training file at registration.
    pub reference: Option<String>,
    pub registered_at: u64,
}

/// Checks a dataset, model or alias name: it becomes a directory name, so only
/// `[A-Za-z0-9._-]`, starting with a letter or digit, at most 64 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(ServingError::BadName(name.to_string(), why.to_string()));
    quarry_featurize::safe_name(name).or_else(bad)?;
    if name.is_empty() || name.len() > 64 {
        return bad("names have 1 to 64 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return bad("use only letters, digits, '.', '_' and '-'");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() || name.contains("..") {
        return bad("names start with a letter or digit and contain no '..'");
    }
    Ok(())
}

fn validate_alias(alias: &str) -> Result<()> {
    validate_name(alias)?;
    if alias.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServingError::BadName(
            alias.into(),
            "an alias cannot be a number (numbers are versions)".into(),
        ));
    }
    Ok(())
}

/// Splits `NAME[:VERSION]`.
pub fn parse_ref(reference: &str) -> Result<(&str, Option<&str>)> {
    let (name, version) = match reference.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (reference, None),
    };
    validate_name(name)?;
    Ok((name, version))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| ServingError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| ServingError::io(path, e))
}

/// Writes via a temporary file and a rename, so readers never see half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| ServingError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ServingError::io(path, e))
}

#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    pub fn open(store: &Path) -> Registry {
        Registry { root: store.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, parts: &[&str]) -> PathBuf {
        let mut p = self.root.join("registry");
        for part in parts {
            p.push(part);
        }
        p
    }

    pub fn blob_path(&self, hash: &str) -> PathBuf {
        self.root.join("blobs").join(hash)
    }

    /// Copies a file into the blob store; returns (sha256, size).
    fn put_file(&self, path: &Path) -> Result<(String, u64)> {
        let blobs = self.root.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| ServingError::io(&blobs, e))?;
        let tmp = blobs.join(format!(".upload-{}-{}", std::process::id(), now()));
        let mut src = std::fs::File::open(path).map_err(|e| ServingError::io(path, e))?;
        let mut dst = std::fs::File::create(&tmp).map_err(|e| ServingError::io(&tmp, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = src.read(&mut buf).map_err(|e| ServingError::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            dst.write_all(&buf[..n]).map_err(|e| ServingError::io(&tmp, e))?;
            size += n as u64;
        }
        dst.sync_all().map_err(|e| ServingError::io(&tmp, e))?;
        let hash = hex::encode(hasher.finalize());
        let dest = self.blob_path(&hash);
        std::fs::rename(&tmp, &dest).map_err(|e| ServingError::io(&dest, e))?;
        Ok((hash, size))
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let hash = hex::encode(Sha256::digest(bytes));
        let dest = self.blob_path(&hash);
        if !dest.exists() {
            let blobs = self.root.join("blobs");
            std::fs::create_dir_all(&blobs).map_err(|e| ServingError::io(&blobs, e))?;
            write_atomic(&dest, bytes)?;
        }
        Ok(hash)
    }

    /// Records of one kind (`datasets`/`models`) and name, by version.
    fn versions<T: for<'de> Deserialize<'de>>(&self, kind: &str, name: &str) -> Result<Vec<(u32, T)>> {
        let dir = self.dir(&[kind, name]);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(v) =
                file.to_str().and_then(|f| f.strip_suffix(".json")).and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            out.push((v, read_json(&entry.path())?));
        }
        out.sort_by_key(|(v, _)| *v);
        Ok(out)
    }

    fn names(&self, kind: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir(&[kind])) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| validate_name(n).is_ok())
            .collect();
        names.sort();
        names
    }

    /// Writes `record(version)` as the next free version of `kind/name`.
    fn create_version(&self, kind: &str, name: &str, record: impl Fn(u32) -> Result<Vec<u8>>) -> Result<u32> {
        let dir = self.dir(&[kind, name]);
        std::fs::create_dir_all(&dir).map_err(|e| ServingError::io(&dir, e))?;
        let mut version = self.versions::<serde_json::Value>(kind, name)?.last().map_or(1, |(v, _)| v + 1);
        loop {
            let path = dir.join(format!("{version}.json"));
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let bytes = record(version)?;
                    f.write_all(&bytes)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| ServingError::io(&path, e))?;
                    return Ok(version);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => version += 1,
                Err(e) => return Err(ServingError::io(&path, e)),
            }
        }
    }

    /// Registers a data file; returns its record and whether it is new (the same content under
    /// the same name returns the existing version).
    pub fn register_dataset(&self, file: &Path, name: &str) -> Result<(DatasetRecord, bool)> {
        validate_name(name)?;
        let loaded = load_table(file).map_err(|e| ServingError::Data(e.to_string()))?;
        if let Some((_, r)) = self
            .versions::<DatasetRecord>("datasets", name)?
            .into_iter()
            .find(|(_, r)| r.sha256 == loaded.content_hash)
        {
            return Ok((r, false));
        }
        let (sha256, size) = self.put_file(file)?;
        let profile: Vec<ColumnProfile> = loaded.table.columns.iter().map(profile_column).collect();
        let file_name = file.file_name().and_then(|f| f.to_str()).unwrap_or("data.csv").to_string();
        let make = |version| DatasetRecord {
            name: name.to_string(),
            version,
            sha256: sha256.clone(),
            size,
            file_name: file_name.clone(),
            registered_at: now(),
            n_rows: loaded.table.n_rows,
            profile: profile.clone(),
        };
        let version = self.create_version("datasets", name, |v| {
            serde_json::to_vec_pretty(&make(v)).map_err(|e| ServingError::Data(e.to_string()))
        })?;
        Ok((make(version), true))
    }

    pub fn datasets(&self) -> Result<Vec<DatasetRecord>> {
        let mut out = Vec::new();
        for name in self.names("datasets") {
            out.extend(self.versions::<DatasetRecord>("datasets", &name)?.into_iter().map(|(_, r)| r));
        }
        Ok(out)
    }

    /// `NAME` (latest) or `NAME:VERSION`.
    pub fn dataset(&self, reference: &str) -> Result<DatasetRecord> {
        let (name, version) = parse_ref(reference)?;
        let all = self.versions::<DatasetRecord>("datasets", name)?;
        let found = match version {
            None => all.into_iter().last(),
            Some(v) => {
                let v: u32 = v
                    .parse()
                    .map_err(|_| ServingError::UnknownVersion { name: name.into(), version: v.into() })?;
                all.into_iter().find(|(n, _)| *n == v)
            }
        };
        match found {
            Some((_, r)) => Ok(r),
            None if version.is_some() => Err(ServingError::UnknownVersion {
                name: name.into(),
                version: version.unwrap_or_default().into(),
            }),
            None => Err(ServingError::UnknownDataset(name.into())),
        }
    }

    /// A path to the dataset's content with its original extension (the loader picks CSV or
    /// Parquet by extension), linked from the blob store.
    pub fn dataset_file(&self, record: &DatasetRecord) -> Result<PathBuf> {
        let ext = Path::new(&record.file_name).extension().and_then(|e| e.to_str()).unwrap_or("csv");
        let dir = self.dir(&["cache", "datasets"]);
        std::fs::create_dir_all(&dir).map_err(|e| ServingError::io(&dir, e))?;
        let path = dir.join(format!("{}.{ext}", record.sha256));
        if !path.exists() {
            let blob = self.blob_path(&record.sha256);
            if std::fs::hard_link(&blob, &path).is_err() {
                std::fs::copy(&blob, &path).map_err(|e| ServingError::io(&blob, e))?;
            }
        }
        Ok(path)
    }

    /// Registers a run folder; returns its record and whether it is new.
    pub fn register_model(
        &self,
        run_dir: &Path,
        name: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<(ModelRecord, bool)> {
        validate_name(name)?;
        for k in tags.keys() {
            validate_name(k)?;
        }
        if !run_dir.join("model").is_dir() {
            return Err(ServingError::Data(format!(
                "{}: not a run folder (no model/ subfolder)",
                run_dir.display()
            )));
        }
        let mut paths = Vec::new();
        collect_files(run_dir, run_dir, &mut paths)?;
        let mut files = BTreeMap::new();
        for (rel, path) in &paths {
            files.insert(rel.clone(), self.put_file(path)?.0);
        }
        let mut h = Sha256::new();
        for (rel, hash) in &files {
            h.update(format!("{rel}\t{hash}\n"));
        }
        let content_hash = hex::encode(h.finalize());
        if let Some((_, r)) = self
            .versions::<ModelRecord>("models", name)?
            .into_iter()
            .find(|(_, r)| r.content_hash == content_hash)
        {
            return Ok((r, false));
        }
        let lineage = self.lineage(run_dir, &content_hash);
        let reference = self.sample_reference(run_dir, lineage.dataset_sha256.as_deref());
        let reference = match reference {
            Some(r) => {
                Some(self.put_bytes(&serde_json::to_vec(&r).map_err(|e| ServingError::Data(e.to_string()))?)?)
            }
            None => None,
        };
        let make = |version| ModelRecord {
            name: name.to_string(),
            version,
            content_hash: content_hash.clone(),
            files: files.clone(),
            tags: tags.clone(),
            lineage: lineage.clone(),
            reference: reference.clone(),
            registered_at: now(),
        };
        let version = self.create_version("models", name, |v| {
            serde_json::to_vec_pretty(&make(v)).map_err(|e| ServingError::Data(e.to_string()))
        })?;
        Ok((make(version), true))
    }

    fn lineage(&self, run_dir: &Path, content_hash: &str) -> Lineage {
        let run: serde_json::Value = std::fs::read(run_dir.join("run.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let dataset_sha256 = text(&run["dataset"]["content_hash"]);
        let dataset = dataset_sha256.as_ref().and_then(|sha| {
            self.datasets()
                .ok()?
                .into_iter()
                .find(|d| &d.sha256 == sha)
                .map(|d| format!("{}:{}", d.name, d.version))
        });
        let metric = text(&run["metric"]);
        let validation_score = run["best_validation_score"]
            .as_f64()
            .or_else(|| metric.as_ref().and_then(|m| run["validation_metrics"][m].as_f64()));
        Lineage {
            run_id: content_hash.chars().take(16).collect(),
            run_dir: std::fs::canonicalize(run_dir)
                .unwrap_or_else(|_| run_dir.to_path_buf())
                .display()
                .to_string(),
            dataset_sha256,
            dataset,
            task: text(&run["task"]),
            metric,
            validation_score,
            family: text(&run["best_family"]).or_else(|| text(&run["family"])),
            quarry_version: text(&run["quarry_version"]),
        }
    }

    /// A drift reference from the run's training file (still at its recorded path, or
    /// registered here as a dataset with the same hash).
    fn sample_reference(&self, run_dir: &Path, dataset_sha: Option<&str>) -> Option<Reference> {
        let pipeline = load_pipeline(run_dir).ok()?;
        let file = match training_file(run_dir) {
            Some((path, _)) => path,
            None => {
                let sha = dataset_sha?;
                let record = self.datasets().ok()?.into_iter().find(|d| d.sha256 == sha)?;
                self.dataset_file(&record).ok()?
            }
        };
        let table = load_table(&file).ok()?.table;
        Some(Reference::from_table(&table, Some(&input_kinds(&pipeline)), &[], 0))
    }

    pub fn reference(&self, record: &ModelRecord) -> Option<Reference> {
        let hash = record.reference.as_ref()?;
        read_json(&self.blob_path(hash)).ok()
    }

    pub fn models(&self) -> Result<Vec<ModelRecord>> {
        let mut out = Vec::new();
        for name in self.names("models") {
            out.extend(self.versions::<ModelRecord>("models", &name)?.into_iter().map(|(_, r)| r));
        }
        Ok(out)
    }

    pub fn aliases(&self, name: &str) -> Result<BTreeMap<String, u32>> {
        validate_name(name)?;
        let path = self.dir(&["models", name, "aliases.json"]);
        if !path.exists() {
            return Ok(BTreeMap::new());
        }
        read_json(&path)
    }

    /// A model by name and version: a number, an alias, or `None` for the latest.
    pub fn model(&self, name: &str, version: Option<&str>) -> Result<ModelRecord> {
        validate_name(name)?;
        let all = self.versions::<ModelRecord>("models", name)?;
        if all.is_empty() {
            return Err(ServingError::UnknownModel(name.into()));
        }
        let unknown = || ServingError::UnknownVersion {
            name: name.into(),
            version: version.unwrap_or_default().into(),
        };
        let wanted = match version {
            None => return all.into_iter().last().map(|(_, r)| r).ok_or_else(unknown),
            Some(v) => match v.parse::<u32>() {
                Ok(n) => n,
                Err(_) => *self.aliases(name)?.get(v).ok_or_else(unknown)?,
            },
        };
        all.into_iter().find(|(n, _)| *n == wanted).map(|(_, r)| r).ok_or_else(unknown)
    }

    /// Points `alias` (e.g. `production`) at `name:version`.
    pub fn set_alias(&self, name: &str, version: &str, alias: &str) -> Result<ModelRecord> {
        validate_alias(alias)?;
        let record = self.model(name, Some(version))?;
        let mut aliases = self.aliases(name)?;
        aliases.insert(alias.to_string(), record.version);
        let bytes = serde_json::to_vec_pretty(&aliases).map_err(|e| ServingError::Data(e.to_string()))?;
        write_atomic(&self.dir(&["models", name, "aliases.json"]), &bytes)?;
        Ok(record)
    }

    /// Recreates the registered run folder in `out`.
    pub fn download(&self, record: &ModelRecord, out: &Path) -> Result<()> {
        for (rel, hash) in &record.files {
            let dest = out.join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| ServingError::io(parent, e))?;
            }
            let blob = self.blob_path(hash);
            std::fs::copy(&blob, &dest).map_err(|e| ServingError::io(&blob, e))?;
        }
        Ok(())
    }

    /// The model's run folder unpacked under the cache (once).
    pub fn materialize(&self, record: &ModelRecord) -> Result<PathBuf> {
        let dir = self.dir(&["cache", "models", &record.content_hash]);
        if !dir.join(".complete").exists() {
            self.download(record, &dir)?;
            std::fs::write(dir.join(".complete"), b"").map_err(|e| ServingError::io(&dir, e))?;
        }
        Ok(dir)
    }
}

/// Regular files under `dir`, as ('/'-separated relative path, path); symlinks are skipped so
/// a run folder cannot pull in files from elsewhere.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| ServingError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ServingError::io(dir, e))?;
        let ty = entry.file_type().map_err(|e| ServingError::io(&entry.path(), e))?;
        let path = entry.path();
        if ty.is_dir() {
            collect_files(root, &path, out)?;
        } else if ty.is_file() {
            let rel = path.strip_prefix(root).map_err(|e| ServingError::io(&path, e))?;
            let rel: Vec<String> =
                rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            out.push((rel.join("/"), path));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_traversal_and_odd_characters() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a..b", "a b", "é", &"x".repeat(65)] {
            assert!(matches!(validate_name(bad), Err(ServingError::BadName(..))), "{bad:?}");
        }
        for good in ["iris", "credit-v2", "a.b_c", "7up"] {
            validate_name(good).unwrap();
        }
        assert!(validate_alias("3").is_err());
    }

    #[test]
    fn same_file_same_version_and_aliases_resolve() {
        let store = tempfile::tempdir().unwrap();
        let reg = Registry::open(store.path());
        let file = store.path().join("d.csv");
        std::fs::write(&file, "a,b\n1,x\n2,y\n3,x\n").unwrap();
        let (r1, new1) = reg.register_dataset(&file, "toy").unwrap();
        let (r2, new2) = reg.register_dataset(&file, "toy").unwrap();
        assert!(new1 && !new2);
        assert_eq!((r1.version, r2.version), (1, 1));
        std::fs::write(&file, "a,b\n1,x\n2,y\n4,x\n").unwrap();
        let (r3, _) = reg.register_dataset(&file, "toy").unwrap();
        assert_eq!(r3.version, 2);
        assert_eq!(reg.dataset("toy").unwrap().version, 2);
        assert_eq!(reg.dataset("toy:1").unwrap().sha256, r1.sha256);
        assert!(matches!(reg.dataset("toy:9"), Err(ServingError::UnknownVersion { .. })));
        assert!(reg.blob_path(&r1.sha256).exists());
    }
}
