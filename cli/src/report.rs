//! `report.html` in a run folder (`quarry fit`, `quarry download`): the folder's JSON files
//! rendered by `quarry_coordinator::http::report` into one self-contained page.

use std::path::Path;

use quarry_coordinator::http::report::{RunFiles, render};

fn read_json(dir: &Path, name: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `DIR/report.html`. The report is a view of files already written, so a failure is
/// a warning, never a failed run.
pub fn write(dir: &Path) {
    let files = RunFiles {
        run: read_json(dir, "run.json"),
        leaderboard: read_json(dir, "leaderboard.json"),
        guardrails: read_json(dir, "guardrails.json"),
        explanations: read_json(dir, "explanations.json"),
    };
    let path = dir.join("report.html");
    if let Err(e) = std::fs::write(&path, render(&files)) {
        eprintln!("warning: could not write {}: {e}", path.display());
    }
}
