//! User overrides of inferred column kinds, and columns to drop.
//!
//! The CLI's `--column-type NAME=KIND` flag feeds [`ColumnOverrides::parse_kind_arg`]; a
//! config file ([`ColumnOverrides::from_file`]) is TOML (`.toml`: a `[columns]` table of
//! `name = "kind"` and a `drop = [...]` list) or plain `NAME=KIND` lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{FeaturizeError, Result};
use crate::infer::ColumnKind;

/// Kinds a user may force, by the name they type.
pub const OVERRIDE_KIND_NAMES: &[&str] =
    &["numeric", "boolean", "categorical", "datetime", "text", "id", "ignore"];

/// Forced kinds and dropped columns, applied by [`crate::Featurizer::fit_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnOverrides {
    /// Column name → the kind to use instead of the inferred one.
    pub kinds: BTreeMap<String, ColumnKind>,
    /// Columns to leave out entirely (`NAME=ignore`).
    pub drop: BTreeSet<String>,
}

impl ColumnOverrides {
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.drop.is_empty()
    }

    /// Parses one `NAME=KIND` argument (KIND: numeric, boolean, categorical, datetime, text, id,
    /// ignore) and records it. The split is at the last `=`, so a name may itself contain `=`.
    /// A later argument for the same column replaces an earlier one.
    pub fn parse_kind_arg(&mut self, arg: &str) -> Result<()> {
        let bad = |message: String| FeaturizeError::BadOverride { arg: arg.to_string(), message };
        let Some((name, kind)) = arg.rsplit_once('=') else {
            return Err(bad("expected NAME=KIND, e.g. zip_code=categorical".to_string()));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(bad("the column name is empty".to_string()));
        }
        let kind = kind.trim().to_ascii_lowercase();
        self.kinds.remove(name);
        self.drop.remove(name);
        match kind.as_str() {
            "ignore" | "drop" => {
                self.drop.insert(name.to_string());
            }
            other => {
                let kind = parse_kind(other).ok_or_else(|| {
                    bad(format!("unknown kind {other:?}; choose one of {}", OVERRIDE_KIND_NAMES.join(", ")))
                })?;
                self.kinds.insert(name.to_string(), kind);
            }
        }
        Ok(())
    }

    /// All `NAME=KIND` arguments of a command line, in order.
    pub fn from_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<ColumnOverrides> {
        let mut out = ColumnOverrides::default();
        for a in args {
            out.parse_kind_arg(a)?;
        }
        Ok(out)
    }

    /// A spec file: one `NAME=KIND` per line; blank lines and lines starting with `#` are skipped.
    /// Errors name the line.
    pub fn from_spec_str(text: &str) -> Result<ColumnOverrides> {
        let mut out = ColumnOverrides::default();
        for (k, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.parse_kind_arg(line).map_err(|e| match e {
                FeaturizeError::BadOverride { arg, message } => {
                    FeaturizeError::BadOverride { arg, message: format!("line {}: {message}", k + 1) }
                }
                other => other,
            })?;
        }
        Ok(out)
    }

    /// A TOML config: top-level `drop = ["col", ...]` and a `[columns]` table of
    /// `name = "kind"`. Unknown keys are errors; errors name the key (and the line, for
    /// syntax errors).
    pub fn from_toml_str(text: &str) -> Result<ColumnOverrides> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ConfigFile {
            #[serde(default)]
            columns: BTreeMap<String, String>,
            #[serde(default)]
            drop: Vec<String>,
        }
        let file: ConfigFile = toml::from_str(text).map_err(|e| FeaturizeError::BadOverride {
            arg: "config".to_string(),
            message: crate::error::one_line(&e.to_string()),
        })?;
        let mut out = ColumnOverrides::default();
        for (name, kind) in &file.columns {
            out.parse_kind_arg(&format!("{name}={kind}")).map_err(|e| match e {
                FeaturizeError::BadOverride { message, .. } => {
                    FeaturizeError::BadOverride { arg: format!("columns.{name}"), message }
                }
                other => other,
            })?;
        }
        for name in file.drop {
            if name.trim().is_empty() {
                return Err(FeaturizeError::BadOverride {
                    arg: "drop".to_string(),
                    message: "a column name is empty".to_string(),
                });
            }
            out.kinds.remove(&name);
            out.drop.insert(name);
        }
        Ok(out)
    }

    /// Reads a config file: TOML when the name ends in `.toml`, else `NAME=KIND` lines
    /// ([`ColumnOverrides::from_spec_str`]). Errors name the file.
    pub fn from_file(path: &Path) -> Result<ColumnOverrides> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| FeaturizeError::Io { path: path.to_path_buf(), error })?;
        let is_toml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        let parsed = if is_toml {
            ColumnOverrides::from_toml_str(&text)
        } else {
            ColumnOverrides::from_spec_str(&text)
        };
        parsed.map_err(|e| FeaturizeError::ConfigFile { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Every column name the overrides mention, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut all: Vec<&str> = self.kinds.keys().chain(self.drop.iter()).map(String::as_str).collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }
}

fn parse_kind(name: &str) -> Option<ColumnKind> {
    Some(match name {
        "numeric" | "number" => ColumnKind::Numeric,
        "boolean" | "bool" => ColumnKind::Boolean,
        "categorical" | "category" => ColumnKind::Categorical,
        "datetime" | "date" => ColumnKind::Datetime,
        "text" => ColumnKind::Text,
        "id" => ColumnKind::IdLike,
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_kind_args() {
        let o = ColumnOverrides::from_args(["zip=categorical", "note = TEXT", "a=b=numeric", "junk=ignore"])
            .unwrap();
        assert_eq!(o.kinds["zip"], ColumnKind::Categorical);
        assert_eq!(o.kinds["note"], ColumnKind::Text);
        assert_eq!(o.kinds["a=b"], ColumnKind::Numeric);
        assert!(o.drop.contains("junk"));
        assert_eq!(o.names().collect::<Vec<_>>(), vec!["a=b", "junk", "note", "zip"]);

        let later_wins = ColumnOverrides::from_args(["x=ignore", "x=id"]).unwrap();
        assert_eq!(later_wins.kinds["x"], ColumnKind::IdLike);
        assert!(later_wins.drop.is_empty());
    }

    #[test]
    fn rejects_bad_kind_args() {
        let mut o = ColumnOverrides::default();
        let e = o.parse_kind_arg("zip").unwrap_err().to_string();
        assert!(e.contains("\"zip\"") && e.contains("NAME=KIND"), "{e}");
        let e = o.parse_kind_arg("zip=colour").unwrap_err().to_string();
        assert!(e.contains("unknown kind \"colour\"") && e.contains("categorical"), "{e}");
        let e = o.parse_kind_arg("=numeric").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn toml_config_sets_kinds_and_drops() {
        let text = "drop = [\"id\", \"notes\"]\n\n[columns]\nzip = \"categorical\"\n\"odd name\" = \"TEXT\"\nnotes = \"numeric\"\n";
        let o = ColumnOverrides::from_toml_str(text).unwrap();
        assert_eq!(o.kinds["zip"], ColumnKind::Categorical);
        assert_eq!(o.kinds["odd name"], ColumnKind::Text);
        // `drop` wins over a kind given for the same column.
        assert!(!o.kinds.contains_key("notes"));
        assert_eq!(o.drop.iter().map(String::as_str).collect::<Vec<_>>(), ["id", "notes"]);
        assert!(ColumnOverrides::from_toml_str("").unwrap().is_empty());
    }

    #[test]
    fn toml_config_errors_name_the_key() {
        let e = ColumnOverrides::from_toml_str("[columns]\nzip = \"colour\"\n").unwrap_err().to_string();
        assert!(e.contains("columns.zip") && e.contains("unknown kind \"colour\""), "{e}");
        let e = ColumnOverrides::from_toml_str("dorp = [\"a\"]\n").unwrap_err().to_string();
        assert!(e.contains("dorp") && e.contains("line 1"), "{e}");
        let e = ColumnOverrides::from_toml_str("[columns]\nzip = 3\n").unwrap_err().to_string();
        assert!(e.contains("zip") && e.contains("string"), "{e}");
        let e = ColumnOverrides::from_toml_str("drop = \"a\"\n").unwrap_err().to_string();
        assert!(e.contains("drop"), "{e}");
        let e = ColumnOverrides::from_toml_str("[columns\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn config_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("cols.toml");
        std::fs::write(&toml_path, "drop = [\"a\"]\n[columns]\nb = \"wat\"\n").unwrap();
        let e = ColumnOverrides::from_file(&toml_path).unwrap_err().to_string();
        assert!(e.contains("cols.toml") && e.contains("columns.b"), "{e}");
        let lines_path = dir.path().join("cols.txt");
        std::fs::write(&lines_path, "b=numeric\n").unwrap();
        assert_eq!(ColumnOverrides::from_file(&lines_path).unwrap().kinds["b"], ColumnKind::Numeric);
        let e = ColumnOverrides::from_file(&dir.path().join("none.toml")).unwrap_err().to_string();
        assert!(e.contains("none.toml"), "{e}");
    }

    #[test]
    fn spec_file_errors_name_the_line() {
        let o = ColumnOverrides::from_spec_str("# kinds\nzip = categorical\n\nnote=text\n").unwrap();
        assert_eq!(o.kinds.len(), 2);
        let e = ColumnOverrides::from_spec_str("a=numeric\nb=wat\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
