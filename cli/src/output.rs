//! Writing run folders, tables and CSV.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use quarry_coordinator::LeaderboardEntry;
use quarry_featurize::Metric;
use quarry_featurize::datetime::civil_from_unix;

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// `runs/20261127-224500`, with a numeric suffix if that folder already exists.
pub fn default_run_dir(root: &Path) -> Result<PathBuf> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let c = civil_from_unix(now);
    let stamp =
        format!("{:04}{:02}{:02}-{:02}{:02}{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second);
    let mut dir = root.join(&stamp);
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = root.join(format!("{stamp}-{n}"));
    }
    Ok(dir)
}

pub fn print_leaderboard(board: &[LeaderboardEntry], metric: Metric, top: usize) {
    println!("{:>4}  {:>5}  {:<14} {:>12}  {:>8}  status", "rank", "trial", "family", metric.name(), "fit s");
    for (rank, e) in board.iter().take(top).enumerate() {
        let score = e.validation_score.map_or_else(|| "-".to_string(), |s| format!("{s:.5}"));
        let status = match &e.failure_reason {
            Some(r) => format!("{:?}: {}", e.status, truncate(r, 60)).to_lowercase(),
            None => format!("{:?}", e.status).to_lowercase(),
        };
        println!(
            "{:>4}  {:>5}  {:<14} {:>12}  {:>8.2}  {status}",
            rank + 1,
            e.id.0,
            e.family,
            score,
            e.fit_seconds
        );
    }
    if board.len() > top {
        println!("  … {} more trials in leaderboard.json", board.len() - top);
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n).collect::<String>() + "…" }
}

/// Quotes a CSV field when it needs it (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn write_csv(path: &Path, header: &[String], rows: impl Iterator<Item = Vec<String>>) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let line = |fields: &[String]| fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
    writeln!(w, "{}", line(header)).with_context(|| format!("writing {}", path.display()))?;
    for row in rows {
        writeln!(w, "{}", line(&row)).with_context(|| format!("writing {}", path.display()))?;
    }
    w.flush().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
