//! `quarry data …` and `quarry models …`: the file-based dataset and model registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use quarry_serving::Registry;
use quarry_serving::registry::parse_ref;

#[derive(Args)]
pub struct StoreArg {
    /// The store directory (shared with `quarry serve --store`).
    #[arg(long, default_value = "quarry-store", global = true)]
    pub store: PathBuf,
}

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Store a data file by content hash as NAME:VERSION (the same content keeps its version).
    Register {
        file: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Every registered dataset version.
    List,
    /// A dataset version's record and profile, as JSON (NAME = the latest version).
    Show { reference: String },
}

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Register a run folder as NAME:VERSION, with lineage.
    Register {
        run_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// KEY=VALUE, repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Every registered model version, with its aliases.
    List,
    /// A model version's record as JSON (NAME:VERSION, NAME:ALIAS or NAME for the latest).
    Show { reference: String },
    /// Recreate a registered run folder.
    Download {
        reference: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Point a stage alias (e.g. production) at NAME:VERSION.
    Alias { reference: String, alias: String },
}

pub fn data(args: DataArgs) -> Result<()> {
    let registry = Registry::open(&args.store.store);
    match args.command {
        DataCommand::Register { file, name } => {
            let (r, new) = registry.register_dataset(&file, &name)?;
            let note = if new { "registered" } else { "already registered (same content)" };
            eprintln!("{note}: {} rows, sha256 {}", r.n_rows, r.sha256);
            println!("{}:{}", r.name, r.version);
        }
        DataCommand::List => {
            println!("{:<32} {:>8} {:>10} {:>12}  sha256", "name:version", "rows", "columns", "bytes");
            for r in registry.datasets()? {
                let id = format!("{}:{}", r.name, r.version);
                println!("{id:<32} {:>8} {:>10} {:>12}  {}", r.n_rows, r.profile.len(), r.size, r.sha256);
            }
        }
        DataCommand::Show { reference } => {
            let r = registry.dataset(&reference)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
    }
    Ok(())
}

pub fn models(args: ModelsArgs) -> Result<()> {
    let registry = Registry::open(&args.store.store);
    match args.command {
        ModelsCommand::Register { run_dir, name, tags } => {
            let mut map = BTreeMap::new();
            for t in &tags {
                let Some((k, v)) = t.split_once('=') else { bail!("--tag {t:?}: expected KEY=VALUE") };
                map.insert(k.to_string(), v.to_string());
            }
            let (r, new) = registry.register_model(&run_dir, &name, map)?;
            let note = if new { "registered" } else { "already registered (same run content)" };
            let dataset =
                r.lineage.dataset.as_deref().or(r.lineage.dataset_sha256.as_deref()).unwrap_or("unknown");
            eprintln!("{note}: run {}, dataset {dataset}", r.lineage.run_id);
            println!("{}:{}", r.name, r.version);
        }
        ModelsCommand::List => {
            println!(
                "{:<32} {:<12} {:<10} {:>12}  {:<20} aliases",
                "name:version", "task", "metric", "score", "dataset"
            );
            let mut aliases: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
            for r in registry.models()? {
                if !aliases.contains_key(&r.name) {
                    aliases.insert(r.name.clone(), registry.aliases(&r.name)?);
                }
                let names: Vec<&str> = aliases[&r.name]
                    .iter()
                    .filter(|(_, v)| **v == r.version)
                    .map(|(a, _)| a.as_str())
                    .collect();
                let l = &r.lineage;
                println!(
                    "{:<32} {:<12} {:<10} {:>12}  {:<20} {}",
                    format!("{}:{}", r.name, r.version),
                    l.task.as_deref().unwrap_or("-"),
                    l.metric.as_deref().unwrap_or("-"),
                    l.validation_score.map_or("-".into(), |s| format!("{s:.5}")),
                    l.dataset.as_deref().unwrap_or("-"),
                    names.join(",")
                );
            }
        }
        ModelsCommand::Show { reference } => {
            let (name, version) = parse_ref(&reference)?;
            let r = registry.model(name, version)?;
            let mut v = serde_json::to_value(&r)?;
            let aliases: Vec<String> = registry
                .aliases(name)?
                .into_iter()
                .filter(|(_, v)| *v == r.version)
                .map(|(a, _)| a)
                .collect();
            v["aliases"] = serde_json::json!(aliases);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ModelsCommand::Download { reference, out } => {
            let (name, version) = parse_ref(&reference)?;
            let r = registry.model(name, version)?;
            registry.download(&r, &out).with_context(|| format!("downloading {reference}"))?;
            eprintln!("wrote {}:{} to {}", r.name, r.version, out.display());
        }
        ModelsCommand::Alias { reference, alias } => {
            let (name, version) = parse_ref(&reference)?;
            let Some(version) = version else { bail!("{reference:?}: give NAME:VERSION") };
            let r = registry.set_alias(name, version, &alias)?;
            println!("{}:{alias} -> {}:{}", r.name, r.name, r.version);
        }
    }
    Ok(())
}

/// `--data NAME:VERSION` (or NAME, the latest version) → the registered file, when no file of
/// that name exists. The run then records the registered content's hash, which is how model
/// lineage finds the dataset version.
pub fn resolve_data(data: &mut PathBuf, store: &Path) -> Result<()> {
    if data.exists() {
        return Ok(());
    }
    let Some(reference) = data.to_str().filter(|r| parse_ref(r).is_ok()).map(str::to_string) else {
        return Ok(());
    };
    let registry = Registry::open(store);
    let record = match registry.dataset(&reference) {
        Ok(r) => r,
        // Not a registered name either: let the loader report the missing file.
        Err(_) if !reference.contains(':') => return Ok(()),
        Err(e) => {
            bail!(
                "--data {reference}: no such file, and not a registered dataset in {}: {e}",
                store.display()
            )
        }
    };
    *data = registry.dataset_file(&record)?;
    tracing::info!(dataset = reference, file = %data.display(), "using a registered dataset");
    Ok(())
}
