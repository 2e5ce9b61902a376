//! `pb` ↔ domain conversions, the only place that knows both shapes.

use std::collections::HashMap;

use quarry_search::{Config, ParamValue, TrialId, TrialOutcome, TrialSpec, TrialStatus};

use crate::pb;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConversionError {
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("field {field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// Hyperparameters travel as text, exactly as the learners parse them.
/// Floats print in Debug form ("1.0", "1e-5"): always with a point or exponent, so they come
/// back as floats, not integers, and still parse back to the same f64.
pub fn params_to_pb(config: &Config) -> HashMap<String, String> {
    config
        .iter()
        .map(|(k, v)| {
            let text = match v {
                ParamValue::Float(f) => format!("{f:?}"),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// Integers and floats come back as what they print as; anything else stays text.
pub fn params_from_pb(params: HashMap<String, String>) -> Config {
    params
        .into_iter()
        .map(|(k, v)| {
            let value = if let Ok(i) = v.parse::<i64>() {
                ParamValue::Int(i)
            } else if let Ok(f) = v.parse::<f64>() {
                ParamValue::Float(f)
            } else {
                ParamValue::Str(v)
            };
            (k, value)
        })
        .collect()
}

/// `value` if it is a finite number; NaN and ±inf are refused naming `field`.
pub fn finite(field: &'static str, value: f64) -> Result<f64, ConversionError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ConversionError::Invalid { field, message: format!("{value} is not a finite number") })
    }
}

pub fn status_to_pb(status: TrialStatus) -> pb::TrialStatus {
    match status {
        TrialStatus::Completed => pb::TrialStatus::Completed,
        TrialStatus::Failed => pb::TrialStatus::Failed,
        TrialStatus::Cancelled => pb::TrialStatus::Cancelled,
        TrialStatus::Pruned => pb::TrialStatus::Pruned,
    }
}

pub fn status_from_pb(status: i32) -> Result<TrialStatus, ConversionError> {
    match pb::TrialStatus::try_from(status) {
        Ok(pb::TrialStatus::Completed) => Ok(TrialStatus::Completed),
        Ok(pb::TrialStatus::Failed) => Ok(TrialStatus::Failed),
        Ok(pb::TrialStatus::Cancelled) => Ok(TrialStatus::Cancelled),
        Ok(pb::TrialStatus::Pruned) => Ok(TrialStatus::Pruned),
        Ok(pb::TrialStatus::Unspecified) => Err(ConversionError::MissingField("status")),
        Err(_) => {
            Err(ConversionError::Invalid { field: "status", message: format!("unknown value {status}") })
        }
    }
}

impl pb::JobState {
    /// The state in words, as `quarry status` prints it.
    pub fn word(self) -> &'static str {
        match self {
            pb::JobState::Unspecified => "unknown",
            pb::JobState::Queued => "queued",
            pb::JobState::Running => "running",
            pb::JobState::Completed => "completed",
            pb::JobState::Failed => "failed",
            pb::JobState::Cancelled => "cancelled",
        }
    }

    /// Completed, failed or cancelled: nothing more will happen to the job.
    pub fn is_final(self) -> bool {
        matches!(self, pb::JobState::Completed | pb::JobState::Failed | pb::JobState::Cancelled)
    }
}

impl From<&TrialSpec> for pb::TrialSpec {
    fn from(t: &TrialSpec) -> Self {
        pb::TrialSpec {
            trial_id: t.id.0,
            family: t.family.clone(),
            params: params_to_pb(&t.config),
            seed: t.seed,
        }
    }
}

impl TryFrom<pb::TrialSpec> for TrialSpec {
    type Error = ConversionError;

    fn try_from(t: pb::TrialSpec) -> Result<Self, Self::Error> {
        if t.family.is_empty() {
            return Err(ConversionError::MissingField("family"));
        }
        let config = params_from_pb(t.params);
        Ok(TrialSpec { id: TrialId(t.trial_id), family: t.family, config, seed: t.seed })
    }
}

impl From<&TrialOutcome> for pb::TrialOutcome {
    fn from(o: &TrialOutcome) -> Self {
        pb::TrialOutcome {
            trial_id: o.id.0,
            status: status_to_pb(o.status) as i32,
            score: o.score,
            fit_seconds: o.fit_seconds,
            rounds: o.rounds.map(|r| r as u64),
            failure_reason: o.failure_reason.clone(),
        }
    }
}

impl TryFrom<pb::TrialOutcome> for TrialOutcome {
    type Error = ConversionError;

    fn try_from(o: pb::TrialOutcome) -> Result<Self, Self::Error> {
        let status = status_from_pb(o.status)?;
        // NaN and infinities have no JSON form: the coordinator's log would read them back as
        // something else, or not at all.
        finite("fit_seconds", o.fit_seconds)?;
        if let Some(score) = o.score {
            finite("score", score)?;
        }
        Ok(TrialOutcome {
            id: TrialId(o.trial_id),
            status,
            score: o.score,
            fit_seconds: o.fit_seconds,
            rounds: o.rounds.map(|r| r as usize),
            failure_reason: o.failure_reason,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn trial_spec_round_trips_through_bytes() {
        let spec = TrialSpec {
            id: TrialId(7),
            family: "gbdt".into(),
            config: [
                ("learning_rate".to_string(), ParamValue::Float(0.05)),
                ("num_leaves".to_string(), ParamValue::Int(31)),
                ("subsample".to_string(), ParamValue::Float(1.0)),
                ("reg_alpha".to_string(), ParamValue::Float(1e-7)),
            ]
            .into_iter()
            .collect(),
            seed: 42,
        };
        let bytes = pb::TrialSpec::from(&spec).encode_to_vec();
        let back = TrialSpec::try_from(pb::TrialSpec::decode(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn outcome_round_trips() {
        let o = TrialOutcome {
            id: TrialId(3),
            status: TrialStatus::Pruned,
            score: Some(0.25),
            fit_seconds: 1.5,
            rounds: Some(40),
            failure_reason: None,
        };
        assert_eq!(TrialOutcome::try_from(pb::TrialOutcome::from(&o)).unwrap(), o);
        assert_eq!(pb::JobState::Cancelled.word(), "cancelled");
        assert!(pb::JobState::Failed.is_final() && !pb::JobState::Running.is_final());
    }

    #[test]
    fn outcomes_with_non_finite_numbers_are_rejected_naming_the_field() {
        let ok = pb::TrialOutcome {
            trial_id: 1,
            status: pb::TrialStatus::Completed as i32,
            score: Some(0.5),
            fit_seconds: 0.25,
            ..Default::default()
        };
        assert!(TrialOutcome::try_from(ok.clone()).is_ok());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = TrialOutcome::try_from(pb::TrialOutcome { fit_seconds: bad, ..ok.clone() }).unwrap_err();
            assert!(matches!(e, ConversionError::Invalid { field: "fit_seconds", .. }), "{e:?}");
            let e = TrialOutcome::try_from(pb::TrialOutcome { score: Some(bad), ..ok.clone() }).unwrap_err();
            assert!(matches!(e, ConversionError::Invalid { field: "score", .. }), "{e:?}");
        }
    }

    #[test]
    fn outcome_without_status_is_rejected() {
        let o = pb::TrialOutcome { trial_id: 1, ..Default::default() };
        assert_eq!(TrialOutcome::try_from(o), Err(ConversionError::MissingField("status")));
    }
}
