//! The target column: task inference, class order, encoding.

use serde::{Deserialize, Serialize};

use crate::error::{FeaturizeError, Result, name_list, preview};
use crate::infer::parse_number;
use crate::matrix::Target;
use crate::metric::Task;
use crate::table::{RawValues, Table};

/// Integer targets with at most this many distinct values are read as classes.
const MAX_INTEGER_CLASSES: usize = 20;
/// More classes than this is almost always a regression target or an ID.
const MAX_CLASSES: usize = 1000;

/// How the target column maps to a [`Target`]; fitted on training data, reused for evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetEncoder {
    pub name: String,
    pub task: Task,
    /// Class labels in code order (empty for regression). For binary, `classes[1]` is positive.
    pub classes: Vec<String>,
}

impl TargetEncoder {
    /// Infers the task (unless given) and the class order from the training table.
    pub fn fit(table: &Table, name: &str, task: Option<Task>) -> Result<TargetEncoder> {
        let column = table.column(name).ok_or_else(|| FeaturizeError::MissingTarget {
            name: name.to_string(),
            available: name_list(table.column_names().into_iter()),
        })?;
        let bad = |message: String| FeaturizeError::BadTarget { name: name.to_string(), message };
        let values = &column.values;
        // One pass, no per-row copies: a 300k-row target must not cost a String per row.
        // Distinct labels are collected up to one past MAX_CLASSES; past it the count is moot.
        let mut distinct: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut overflow = false;
        let (mut n_present, mut all_numeric, mut all_int) = (0usize, true, true);
        for i in 0..table.n_rows {
            let Some(label) = values.text(i) else { continue };
            n_present += 1;
            let number = match values {
                RawValues::Number(v) => Some(v[i]),
                RawValues::Bool(_) | RawValues::Timestamp(_) => None,
                RawValues::Text(_) => parse_number(&label),
            };
            match number {
                Some(x) => all_int &= x.fract() == 0.0,
                None => all_numeric = false,
            }
            if distinct.len() <= MAX_CLASSES {
                distinct.insert(label.into_owned());
            } else if !distinct.contains(label.as_ref()) {
                overflow = true;
            }
        }
        if n_present == 0 {
            return Err(bad("every value is missing".to_string()));
        }
        let numbers = all_numeric.then_some(all_int);
        let mut distinct: Vec<String> = distinct.into_iter().collect();
        let task = match task {
            Some(t) => t,
            None => match numbers {
                Some(all_int) => {
                    if all_int && distinct.len() == 2 {
                        Task::Binary
                    } else if all_int && distinct.len() <= MAX_INTEGER_CLASSES {
                        Task::Multiclass
                    } else {
                        Task::Regression
                    }
                }
                None if distinct.len() == 2 => Task::Binary,
                None => Task::Multiclass,
            },
        };
        match task {
            Task::Regression => {
                if numbers.is_none() {
                    return Err(bad(
                        "regression needs a numeric target, but some values are not numbers".into()
                    ));
                }
                if distinct.len() < 2 {
                    return Err(bad("has a single value; there is nothing to predict".into()));
                }
                Ok(TargetEncoder { name: name.to_string(), task, classes: Vec::new() })
            }
            Task::Binary | Task::Multiclass => {
                if distinct.len() < 2 {
                    return Err(bad(format!(
                        "has one class ({}); classification needs at least two",
                        preview(distinct.first().map(String::as_str).unwrap_or(""))
                    )));
                }
                if task == Task::Binary && distinct.len() != 2 {
                    return Err(bad(format!("binary task, but the target has {} classes", distinct.len())));
                }
                if distinct.len() > MAX_CLASSES || overflow {
                    return Err(bad(format!(
                        "more than {MAX_CLASSES} distinct values is too many classes; use --task regression"
                    )));
                }
                if numbers.is_some() {
                    // Numeric labels in numeric order: "10" after "9".
                    distinct.sort_by(|a, b| {
                        let (x, y) =
                            (parse_number(a).unwrap_or(f64::NAN), parse_number(b).unwrap_or(f64::NAN));
                        x.total_cmp(&y)
                    });
                }
                let task = if distinct.len() == 2 { Task::Binary } else { Task::Multiclass };
                Ok(TargetEncoder { name: name.to_string(), task, classes: distinct })
            }
        }
    }

    /// Encodes the target of `table`; rows whose target is missing are left out and the
    /// indices of the kept rows are returned with it.
    pub fn encode(&self, table: &Table) -> Result<(Target, Vec<usize>)> {
        let column = table.column(&self.name).ok_or_else(|| FeaturizeError::MissingTarget {
            name: self.name.clone(),
            available: name_list(table.column_names().into_iter()),
        })?;
        let mut kept = Vec::with_capacity(table.n_rows);
        if self.task == Task::Regression {
            let mut values = Vec::with_capacity(table.n_rows);
            for i in 0..table.n_rows {
                let v = match &column.values {
                    RawValues::Number(v) => Some(v[i]),
                    other => other.text(i).and_then(|s| parse_number(&s)),
                };
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    values.push(v);
                    kept.push(i);
                } else if let Some(s) = column.values.text(i).filter(|s| parse_number(s).is_none()) {
                    return Err(FeaturizeError::BadTarget {
                        name: self.name.clone(),
                        message: format!("row {}: {} is not a number", i + 1, preview(&s)),
                    });
                }
            }
            if kept.is_empty() && table.n_rows > 0 {
                return Err(FeaturizeError::BadTarget {
                    name: self.name.clone(),
                    message: "no row has a finite numeric value".to_string(),
                });
            }
            return Ok((Target::Values(values), kept));
        }
        let index: std::collections::HashMap<&str, u32> =
            self.classes.iter().enumerate().map(|(k, c)| (c.as_str(), k as u32)).collect();
        let mut codes = Vec::with_capacity(table.n_rows);
        for i in 0..table.n_rows {
            let Some(label) = column.values.text(i) else { continue };
            let code = index.get(label.as_ref()).copied().or_else(|| {
                // "1.0" in one file and "1" in another are the same class.
                let x = parse_number(&label)?;
                self.classes.iter().position(|c| parse_number(c) == Some(x)).map(|k| k as u32)
            });
            match code {
                Some(c) => {
                    codes.push(c);
                    kept.push(i);
                }
                None => {
                    return Err(FeaturizeError::BadTarget {
                        name: self.name.clone(),
                        message: format!("row {}: class {} was not seen in training", i + 1, preview(&label)),
                    });
                }
            }
        }
        Ok((Target::Classes { classes: self.classes.clone(), codes }, kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{RawColumn, StrColumn};

    fn table(values: &[&str]) -> Table {
        let mut c = StrColumn::new();
        for v in values {
            c.push(Some(v));
        }
        Table {
            n_rows: values.len(),
            columns: vec![RawColumn { name: "y".into(), values: RawValues::Text(c) }],
        }
    }

    #[test]
    fn infers_tasks() {
        let t = |v: &[&str]| TargetEncoder::fit(&table(v), "y", None).map(|e| e.task).ok();
        assert_eq!(t(&["0", "1", "1"]), Some(Task::Binary));
        assert_eq!(t(&["a", "b", "c"]), Some(Task::Multiclass));
        assert_eq!(t(&["1.5", "2.25", "3"]), Some(Task::Regression));
        assert_eq!(t(&["yes", "no", ""]), Some(Task::Binary));
        assert!(t(&["a", "a"]).is_none());
    }

    #[test]
    fn numeric_classes_sort_numerically_and_missing_rows_drop() {
        let enc =
            TargetEncoder::fit(&table(&["10", "9", "2", "9"]), "y", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(enc.classes, vec!["2", "9", "10"]);
        let (target, kept) = enc.encode(&table(&["9", "", "10"])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kept, vec![0, 2]);
        assert_eq!(target, Target::Classes { classes: enc.classes.clone(), codes: vec![1, 2] });
    }
}
