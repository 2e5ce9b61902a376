//! `quarry predict` on a forecast run folder.

use super::*;

pub(super) fn format_time(t: i64) -> String {
    let c = civil_from_unix(t);
    if t.rem_euclid(86_400) == 0 {
        format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
    } else {
        format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second)
    }
}

pub fn predict(args: &PredictArgs, path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let bundle: Bundle = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid forecast bundle", path.display()))?;
    if bundle.format_version != BUNDLE_FORMAT_VERSION {
        bail!(
            "{}: forecast bundle format {} but this quarry reads format {}",
            path.display(),
            bundle.format_version,
            BUNDLE_FORMAT_VERSION
        );
    }
    let freq = bundle.frequency;
    // Requested (series index, step from the series' end starting at 0, time text) per output row.
    let mut wanted: Vec<(usize, usize, String)> = Vec::new();
    // Known covariates' future values per requested row, in `bundle.known_covariates` order.
    let mut future_known: Vec<Vec<f64>> = Vec::new();
    match &args.data {
        Some(data) => {
            let loaded = load_table(data)?;
            let table = &loaded.table;
            for c in &bundle.known_covariates {
                if table.column(c).is_none() {
                    bail!(
                        "{}: column {c:?} is missing; the model reads this known covariate's future values",
                        data.display()
                    );
                }
            }
            let index: std::collections::HashMap<&str, usize> =
                bundle.series.iter().enumerate().map(|(i, s)| (s.key.as_str(), i)).collect();
            for row in 0..table.n_rows {
                let t = parse_time(table, &bundle.time_column, row)
                    .with_context(|| data.display().to_string())?;
                let key = series_key(table, &bundle.series_id_columns, row)
                    .with_context(|| data.display().to_string())?
                    .join("|");
                let &i = index.get(key.as_str()).with_context(|| {
                    format!(
                        "{}: row {}: series {key:?} was not in the training data",
                        data.display(),
                        row + 1
                    )
                })?;
                let s = &bundle.series[i];
                let g = freq.index(t).with_context(|| {
                    format!(
                        "{}: row {}: time {} is not on the {} grid",
                        data.display(),
                        row + 1,
                        format_time(t),
                        freq.code()
                    )
                })?;
                if g < s.end() {
                    bail!(
                        "{}: row {}: time {} of series {key:?} is not after the end of the training data ({})",
                        data.display(),
                        row + 1,
                        format_time(t),
                        format_time(freq.time_at(s.end() - 1))
                    );
                }
                wanted.push((i, (g - s.end()) as usize, format_time(t)));
                future_known.push(
                    bundle
                        .known_covariates
                        .iter()
                        .map(|c| parse_number(table, c, row, "known covariate"))
                        .collect::<quarry_featurize::Result<_>>()
                        .with_context(|| data.display().to_string())?,
                );
            }
        }
        None => {
            if !bundle.known_covariates.is_empty() {
                bail!(
                    "the model reads known covariates {:?}: pass --data with their future values",
                    bundle.known_covariates
                );
            }
            let h = args.horizon.unwrap_or(bundle.horizon);
            for (i, s) in bundle.series.iter().enumerate() {
                for k in 0..h {
                    wanted.push((i, k, format_time(freq.time_at(s.end() + k as i64))));
                }
            }
        }
    }
    let mut steps = vec![0usize; bundle.series.len()];
    for (i, k, _) in &wanted {
        steps[*i] = steps[*i].max(k + 1);
    }
    // Covariates over history + requested steps: known ones from the file, the rest unknown.
    let mut covariates: Vec<Vec<Vec<f64>>> = bundle
        .series
        .iter()
        .zip(&steps)
        .map(|(s, &n)| {
            s.covariates
                .iter()
                .map(|c| c.iter().copied().chain(std::iter::repeat_n(f64::NAN, n)).collect())
                .collect()
        })
        .collect();
    for ((i, k, _), values) in wanted.iter().zip(&future_known) {
        let at = bundle.series[*i].values.len() + k;
        for (name, v) in bundle.known_covariates.iter().zip(values) {
            if let Some(c) = bundle.covariates.iter().position(|n| n == name)
                && let Some(slot) = covariates[*i].get_mut(c).and_then(|col| col.get_mut(at))
            {
                *slot = *v;
            }
        }
    }
    let views: Vec<SeriesView> = bundle
        .series
        .iter()
        .zip(&covariates)
        .map(|(s, c)| SeriesView::new(s.start, &s.values).with_covariates(c))
        .collect();
    let mut point: Vec<Vec<f64>> = steps.iter().map(|&n| vec![0.0; n]).collect();
    for member in &bundle.members {
        let f = member.model.forecast(&views, &freq, &steps);
        for (acc, fi) in point.iter_mut().zip(f) {
            for (a, v) in acc.iter_mut().zip(fi) {
                *a += member.weight * v;
            }
        }
    }
    let mut header: Vec<String> = bundle.series_id_columns.clone();
    header.push(bundle.time_column.clone());
    header.push("prediction".into());
    header.extend(bundle.quantiles.levels.iter().map(|q| format!("q{:02}", (q * 100.0).round() as i64)));
    let rows = wanted.iter().map(|(i, k, time)| {
        let s = &bundle.series[*i];
        let p = point[*i][*k];
        let mut row = s.ids.clone();
        row.push(time.clone());
        row.push(p.to_string());
        for q in 0..bundle.quantiles.levels.len() {
            row.push((p + bundle.quantiles.offset(*k, q) * views[*i].scale).to_string());
        }
        row
    });
    write_csv(&args.out, &header, rows)?;
    eprintln!("wrote {} forecasts to {}", wanted.len(), args.out.display());
    Ok(())
}
