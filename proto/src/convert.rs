//! `pb` ↔ domain conversions, the only place that knows both shapes.

use quarry_search::{ParamValue, TrialId, TrialOutcome, TrialSpec, TrialStatus};

use crate::pb;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConversionError {
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("field {field}: {message}")]
    Invalid { field: &'static str, message: String },
}

impl From<&TrialSpec> for pb::TrialSpec {
    fn from(t: &TrialSpec) -> Self {
        pb::TrialSpec {
            trial_id: t.id.0,
            family: t.family.clone(),
            params: t.config.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
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
        let config = t
            .params
            .into_iter()
            .map(|(k, v)| {
                // Text is the wire form; integers and floats come back as what they print as.
                let value = if let Ok(i) = v.parse::<i64>() {
                    ParamValue::Int(i)
                } else if let Ok(f) = v.parse::<f64>() {
                    ParamValue::Float(f)
                } else {
                    ParamValue::Str(v)
                };
                (k, value)
            })
            .collect();
        Ok(TrialSpec { id: TrialId(t.trial_id), family: t.family, config, seed: t.seed })
    }
}

impl From<&TrialOutcome> for pb::TrialOutcome {
    fn from(o: &TrialOutcome) -> Self {
        let status = match o.status {
            TrialStatus::Completed => pb::TrialStatus::Completed,
            TrialStatus::Failed => pb::TrialStatus::Failed,
            TrialStatus::Cancelled => pb::TrialStatus::Cancelled,
            TrialStatus::Pruned => pb::TrialStatus::Pruned,
        };
        pb::TrialOutcome {
            trial_id: o.id.0,
            status: status as i32,
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
        let status = match pb::TrialStatus::try_from(o.status) {
            Ok(pb::TrialStatus::Completed) => TrialStatus::Completed,
            Ok(pb::TrialStatus::Failed) => TrialStatus::Failed,
            Ok(pb::TrialStatus::Cancelled) => TrialStatus::Cancelled,
            Ok(pb::TrialStatus::Pruned) => TrialStatus::Pruned,
            Ok(pb::TrialStatus::Unspecified) => return Err(ConversionError::MissingField("status")),
            Err(_) => {
                return Err(ConversionError::Invalid {
                    field: "status",
                    message: format!("unknown value {}", o.status),
                });
            }
        };
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
    fn outcome_without_status_is_rejected() {
        let o = pb::TrialOutcome { trial_id: 1, ..Default::default() };
        assert_eq!(TrialOutcome::try_from(o), Err(ConversionError::MissingField("status")));
    }
}
