//! `quarry profile`, and the column options it shares with `fit`.

use anyhow::{Context, Result};
use quarry_featurize::{ColumnOverrides, ColumnTransform, Featurizer, TargetEncoder, guardrails, load_table};

use crate::args::{ColumnArgs, ProfileArgs};

impl ColumnArgs {
    pub fn overrides(&self) -> Result<ColumnOverrides> {
        let mut o = match &self.column_types_file {
            Some(path) => ColumnOverrides::from_file(path)?,
            None => ColumnOverrides::default(),
        };
        for arg in &self.column_types {
            o.parse_kind_arg(arg)?;
        }
        o.drop.extend(self.drop.iter().cloned());
        Ok(o)
    }
}

pub fn describe(t: &ColumnTransform) -> String {
    match t {
        ColumnTransform::Numeric => "numeric".into(),
        ColumnTransform::Boolean => "0/1".into(),
        ColumnTransform::Categorical { levels, has_other } => {
            format!("{} levels{}", levels.len(), if *has_other { " + other" } else { "" })
        }
        ColumnTransform::Datetime { with_time } => {
            format!("calendar parts{}", if *with_time { " + hour" } else { "" })
        }
        ColumnTransform::HighCardinality(enc) => {
            let codes = if enc.n_codes > 0 {
                format!("codes for top {} + other, ", enc.n_codes)
            } else {
                String::new()
            };
            format!("{} levels: {codes}frequency + target encoding (out-of-fold)", enc.levels.len())
        }
        ColumnTransform::Dropped { reason } => format!("dropped: {reason}"),
        other => format!("{other:?}").chars().take(40).collect(),
    }
}

pub fn run(args: ProfileArgs) -> Result<()> {
    let loaded = load_table(&args.data)?;
    let table = &loaded.table;
    let overrides = args.columns.overrides()?;
    let encoder = match &args.target {
        Some(t) => Some(TargetEncoder::fit(table, t, None).with_context(|| args.data.display().to_string())?),
        None => None,
    };
    let exclude: Vec<&str> = args.target.iter().map(String::as_str).collect();
    let featurizer = Featurizer::fit_with(table, &exclude, &overrides)?;
    println!(
        "{}: {} rows, {} columns, sha256 {}",
        args.data.display(),
        table.n_rows,
        table.columns.len(),
        loaded.content_hash
    );
    if let Some(e) = &encoder {
        println!(
            "target {:?}: {} task{}",
            e.name,
            e.task,
            if e.classes.is_empty() { String::new() } else { format!(", classes {:?}", e.classes) }
        );
    }
    println!("\n{:<28} {:<12} {:>8} {:>9}  transform", "column", "kind", "missing", "distinct");
    for c in &featurizer.columns {
        println!(
            "{:<28} {:<12} {:>8} {:>9}  {}",
            c.name,
            format!("{:?}", c.kind).to_lowercase(),
            c.n_missing,
            c.n_distinct,
            describe(&c.transform)
        );
    }
    if let Some(e) = &encoder {
        let g = guardrails(table, e, &featurizer);
        println!("\nguardrails:");
        for f in &g.findings {
            println!("  {:<8} {}", format!("{:?}", f.severity).to_lowercase(), f.message);
        }
        if g.findings.is_empty() {
            println!("  nothing to report");
        }
    }
    if args.featurize {
        let x = featurizer.transform_owned(loaded.table)?;
        let mb = (x.n_rows * x.n_features() * std::mem::size_of::<f32>()) as f64 / (1024.0 * 1024.0);
        println!("\nfeatures: {} columns × {} rows ({mb:.1} MiB of f32)", x.n_features(), x.n_rows);
    }
    Ok(())
}
