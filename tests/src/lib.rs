//! Helpers for the end-to-end tests: find (and if needed build) the real `quarry` binary,
//! run it, and read what it wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// The workspace root (where `examples/` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

pub fn example(path: &str) -> PathBuf {
    repo_root().join("examples/data").join(path)
}

/// The `quarry` binary built with the same profile as this test. `cargo test` does not build
/// another package's binaries, so the first call builds it (`QUARRY_BIN` overrides). It builds
/// the whole workspace's binaries and tests, the selection `cargo test --workspace` compiles:
/// features are unified over the selected packages, so `-p quarry-cli` alone would compile
/// arrow, parquet, burn and tonic a second time with other features (minutes on 2 cores).
pub fn quarry_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("QUARRY_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test-binary>  →  target/<profile>/quarry
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        let profile_dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins", "--tests"]).current_dir(repo_root());
        if release {
            cmd.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target_dir);
        }
        let status = cmd.status().unwrap_or_else(|e| panic!("running cargo build: {e}"));
        assert!(status.success(), "cargo build --workspace --bins --tests failed");
        profile_dir.join("quarry")
    })
}

pub fn quarry(args: &[&str]) -> Output {
    Command::new(quarry_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", quarry_bin().display()))
}

/// Runs quarry and fails the test (showing stderr) unless it exits 0.
pub fn quarry_ok(args: &[&str]) -> String {
    let out = quarry(args);
    assert!(
        out.status.success(),
        "quarry {args:?} failed with {:?}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a CSV written by `quarry predict` (no quoted fields in our outputs).
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().split(',').map(str::to_string).collect();
    let rows = lines.map(|l| l.split(',').map(str::to_string).collect()).collect();
    (header, rows)
}

fn path_arg(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

/// `quarry predict --model MODEL --data DATA --out OUT`, whatever its exit status.
pub fn predict(model: &Path, data: &Path, out: &Path) -> Output {
    quarry(&["predict", "--model", path_arg(model), "--data", path_arg(data), "--out", path_arg(out)])
}

/// `quarry predict --model MODEL --data DATA --out OUT`, failing the test unless it exits 0;
/// returns the CSV it wrote.
pub fn predict_csv(model: &Path, data: &Path, out: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    quarry_ok(&["predict", "--model", path_arg(model), "--data", path_arg(data), "--out", path_arg(out)]);
    read_csv(out)
}

/// The python of the venv a `scripts/*_venv.sh` script creates (once per test process and
/// script): the script prints it.
pub fn venv_python(script: &str) -> PathBuf {
    static CACHE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(script.to_string())
        .or_insert_with(|| {
            let out = Command::new(repo_root().join("scripts").join(script))
                .output()
                .unwrap_or_else(|e| panic!("running scripts/{script}: {e}"));
            assert!(out.status.success(), "scripts/{script}: {}", String::from_utf8_lossy(&out.stderr));
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

pub mod cluster;
