//! What one request may put into the event log. Every string a client or worker sends that
//! reaches an [`Event`] is capped here, every number must be finite, and every event is
//! size-checked before it is applied: a record the log cannot take (over
//! [`crate::log::MAX_RECORD`]) or cannot read back (serde_json writes NaN as `null`) would
//! otherwise stop the log thread or the next restart, for every user, because of one request.
//! The callers (the gRPC and HTTP boundaries, `Coordinator::create_job`/`complete`/`fail`)
//! refuse only that request, as InvalidArgument / 400 naming the field.

use crate::state::{Artifact, Event, JobSpec, PreparedShape, StateError};

/// A name, target, column spec, task, metric, family or artifact name.
pub const MAX_FIELD_BYTES: usize = 4 << 10;
/// A failure reason is cut to this (not refused: the failure is still worth recording).
pub const MAX_REASON_BYTES: usize = 4 << 10;
/// The contents of a `--column-types-file`.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Entries of a list field: column types, dropped columns, families, artifacts of a result.
pub const MAX_ITEMS: usize = 4096;
/// One serialized event; far under the log's record limit, so no request can reach it.
pub const MAX_EVENT_BYTES: usize = 8 << 20;

fn invalid(field: impl Into<String>, message: String) -> StateError {
    StateError::Invalid { field: field.into(), message }
}

/// `value` must be at most `max` bytes.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), StateError> {
    if value.len() > max {
        return Err(invalid(field, format!("{} bytes, more than the {max} allowed", value.len())));
    }
    Ok(())
}

/// A short field: at most [`MAX_FIELD_BYTES`].
pub fn check_field(field: &str, value: &str) -> Result<(), StateError> {
    check_len(field, value, MAX_FIELD_BYTES)
}

/// A list of short fields: at most [`MAX_ITEMS`] entries of at most [`MAX_FIELD_BYTES`].
pub fn check_list(field: &str, values: &[String]) -> Result<(), StateError> {
    check_count(field, values.len())?;
    values.iter().try_for_each(|v| check_field(field, v))
}

fn check_count(field: &str, n: usize) -> Result<(), StateError> {
    if n > MAX_ITEMS {
        return Err(invalid(field, format!("{n} entries, more than the {MAX_ITEMS} allowed")));
    }
    Ok(())
}

/// A number that reaches the log: NaN and ±inf do not survive JSON (they come back as `null`,
/// or not at all).
pub fn check_finite(field: &str, value: f64) -> Result<(), StateError> {
    if !value.is_finite() {
        return Err(invalid(field, format!("{value} is not a finite number")));
    }
    Ok(())
}

pub fn check_spec(s: &JobSpec) -> Result<(), StateError> {
    for (field, value) in [
        ("experiment", &s.experiment),
        ("dataset_hash", &s.dataset_hash),
        ("file_name", &s.file_name),
        ("target", &s.target),
        ("task", &s.task),
        ("metric", &s.metric),
        ("scheduler", &s.scheduler),
        ("searcher", &s.searcher),
    ] {
        check_field(field, value)?;
    }
    if let Some(g) = &s.group_column {
        check_field("group_column", g)?;
    }
    check_list("column_types", &s.column_types)?;
    check_list("drop_columns", &s.drop_columns)?;
    if let Some(text) = &s.column_types_file {
        check_len("column_types_file", text, MAX_TEXT_BYTES)?;
    }
    Ok(())
}

pub fn check_shape(s: &PreparedShape) -> Result<(), StateError> {
    check_field("shape.task", &s.task)?;
    check_field("shape.metric", &s.metric)?;
    check_list("shape.families", &s.families)
}

pub fn check_artifacts(artifacts: &[Artifact]) -> Result<(), StateError> {
    check_count("artifacts", artifacts.len())?;
    for a in artifacts {
        check_field("artifact name", &a.name)?;
        check_field("artifact hash", &a.hash)?;
    }
    Ok(())
}

/// Cuts a free-text reason to [`MAX_REASON_BYTES`] (on a character boundary), saying so.
pub fn cap_reason(mut reason: String) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let total = reason.len();
    let mut end = MAX_REASON_BYTES - 64;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason.push_str(&format!("… ({} more bytes cut)", total - end));
    reason
}

/// The last check before an event carrying a request's data is applied: its numbers are
/// finite and its record fits [`MAX_EVENT_BYTES`]. Its record is what replay will read, so
/// what passes here reads back as the same event.
pub fn check_event(e: &Event) -> Result<(), StateError> {
    if let Event::TrialFinished { outcome, .. } = e {
        check_finite("fit_seconds", outcome.fit_seconds)?;
        if let Some(score) = outcome.score {
            check_finite("score", score)?;
        }
    }
    let len = serde_json::to_vec(e).map_err(|err| invalid("event", err.to_string()))?.len();
    if len > MAX_EVENT_BYTES {
        return Err(invalid(
            "request",
            format!("it would be a {len}-byte log record, more than the {MAX_EVENT_BYTES} allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary_and_say_so() {
        assert_eq!(cap_reason("short".into()), "short");
        let long = "é".repeat(MAX_REASON_BYTES);
        let cut = cap_reason(long.clone());
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
        assert!(cut.starts_with("éé") && cut.ends_with("more bytes cut)"), "{cut}");
    }

    #[test]
    fn every_spec_field_is_capped_and_named() {
        let big = "x".repeat(MAX_FIELD_BYTES + 1);
        let ok = JobSpec { target: "y".into(), ..JobSpec::default() };
        assert_eq!(check_spec(&ok), Ok(()));
        let cases: Vec<(&str, JobSpec)> = vec![
            ("target", JobSpec { target: big.clone(), ..ok.clone() }),
            ("experiment", JobSpec { experiment: big.clone(), ..ok.clone() }),
            ("group_column", JobSpec { group_column: Some(big.clone()), ..ok.clone() }),
            ("column_types", JobSpec { column_types: vec![big.clone()], ..ok.clone() }),
            ("drop_columns", JobSpec { drop_columns: vec![String::new(); MAX_ITEMS + 1], ..ok.clone() }),
            (
                "column_types_file",
                JobSpec { column_types_file: Some("x".repeat(MAX_TEXT_BYTES + 1)), ..ok.clone() },
            ),
        ];
        for (field, spec) in cases {
            match check_spec(&spec) {
                Err(e @ StateError::Invalid { .. }) => assert!(e.to_string().starts_with(field), "{e}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
