//! Sampling frequencies: a fixed step in seconds (minutes, hours, days, weeks) or a number of
//! calendar months (months, quarters, years) anchored on the first or last day of the month.
//! Every timestamp maps to an integer grid index, so gaps are index jumps.

use serde::{Deserialize, Serialize};

use crate::datetime::{civil_from_unix, days_from_civil};
use crate::error::{FeaturizeError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonthAnchor {
    Start,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "unit")]
pub enum FrequencyKind {
    Fixed { seconds: i64 },
    Monthly { months: i64, anchor: MonthAnchor },
}

/// A frequency plus the grid offset (so weekly data on Sundays or 15-minute data starting at
/// :05 stay on their own grid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frequency {
    pub kind: FrequencyKind,
    pub offset: i64,
}

const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;

fn days_in_month(year: i64, month: i64) -> i64 {
    let next =
        if month == 12 { days_from_civil(year + 1, 1, 1) } else { days_from_civil(year, month + 1, 1) };
    next - days_from_civil(year, month, 1)
}

impl FrequencyKind {
    /// Parses a pandas-style alias: `H`, `D`, `W`, `min`, `S`, `MS`, `M`, `QS`, `Q`, `YS`, `Y`,
    /// optionally with a multiple (`15min`, `2H`). `auto` gives `None`.
    pub fn parse(code: &str) -> Result<Option<FrequencyKind>> {
        let bad = || {
            FeaturizeError::Forecast(format!(
                "unknown frequency {code:?}; use auto, min, H, D, W, MS, M, QS, Q, YS or Y (optionally with a multiple, e.g. 15min)"
            ))
        };
        let code = code.trim();
        if code.eq_ignore_ascii_case("auto") {
            return Ok(None);
        }
        let digits: String = code.chars().take_while(char::is_ascii_digit).collect();
        let unit = &code[digits.len()..];
        let n: i64 = if digits.is_empty() { 1 } else { digits.parse().map_err(|_| bad())? };
        if n <= 0 {
            return Err(bad());
        }
        let kind = match unit {
            "S" | "s" => FrequencyKind::Fixed { seconds: n },
            "min" | "T" => FrequencyKind::Fixed { seconds: 60 * n },
            "H" | "h" => FrequencyKind::Fixed { seconds: 3600 * n },
            "D" | "d" => FrequencyKind::Fixed { seconds: DAY * n },
            "W" | "w" => FrequencyKind::Fixed { seconds: 7 * DAY * n },
            "MS" => FrequencyKind::Monthly { months: n, anchor: MonthAnchor::Start },
            "M" | "ME" => FrequencyKind::Monthly { months: n, anchor: MonthAnchor::End },
            "QS" => FrequencyKind::Monthly { months: 3 * n, anchor: MonthAnchor::Start },
            "Q" | "QE" => FrequencyKind::Monthly { months: 3 * n, anchor: MonthAnchor::End },
            "YS" | "AS" => FrequencyKind::Monthly { months: 12 * n, anchor: MonthAnchor::Start },
            "Y" | "A" | "YE" => FrequencyKind::Monthly { months: 12 * n, anchor: MonthAnchor::End },
            _ => return Err(bad()),
        };
        Ok(Some(kind))
    }

    /// Absolute position of a timestamp in units of this kind (before dividing by the step),
    /// or `None` when the time is not on an anchor (e.g. the 15th for month-start data).
    fn position(&self, t: i64) -> Option<i64> {
        match *self {
            FrequencyKind::Fixed { .. } => Some(t),
            FrequencyKind::Monthly { anchor, .. } => {
                let c = civil_from_unix(t);
                if t.rem_euclid(DAY) != 0 {
                    return None;
                }
                let ok = match anchor {
                    MonthAnchor::Start => c.day == 1,
                    MonthAnchor::End => c.day == days_in_month(c.year, c.month),
                };
                ok.then_some(c.year * 12 + c.month - 1)
            }
        }
    }

    fn step(&self) -> i64 {
        match *self {
            FrequencyKind::Fixed { seconds } => seconds,
            FrequencyKind::Monthly { months, .. } => months,
        }
    }
}

impl Frequency {
    /// A frequency whose grid passes through `first` (the earliest timestamp).
    pub fn anchored(kind: FrequencyKind, first: i64) -> Frequency {
        let offset = kind.position(first).map_or(0, |p| p.rem_euclid(kind.step()));
        Frequency { kind, offset }
    }

    /// Grid index of a timestamp, or `None` when it is off the grid.
    pub fn index(&self, t: i64) -> Option<i64> {
        let p = self.kind.position(t)? - self.offset;
        let step = self.kind.step();
        (p.rem_euclid(step) == 0).then(|| p.div_euclid(step))
    }

    /// The timestamp of a grid index (inverse of [`Frequency::index`]).
    pub fn time_at(&self, index: i64) -> i64 {
        let p = index * self.kind.step() + self.offset;
        match self.kind {
            FrequencyKind::Fixed { .. } => p,
            FrequencyKind::Monthly { anchor, .. } => {
                let (year, month) = (p.div_euclid(12), p.rem_euclid(12) + 1);
                let day = match anchor {
                    MonthAnchor::Start => 1,
                    MonthAnchor::End => days_in_month(year, month),
                };
                days_from_civil(year, month, day) * DAY
            }
        }
    }

    /// The pandas-style alias (`D`, `MS`, `15min`, …).
    pub fn code(&self) -> String {
        match self.kind {
            FrequencyKind::Fixed { seconds } => {
                for (unit, name) in [(7 * DAY, "W"), (DAY, "D"), (3600, "H"), (60, "min")] {
                    if seconds % unit == 0 {
                        let n = seconds / unit;
                        return if n == 1 { name.to_string() } else { format!("{n}{name}") };
                    }
                }
                format!("{seconds}S")
            }
            FrequencyKind::Monthly { months, anchor } => {
                let (n, base) = if months % 12 == 0 {
                    (months / 12, "Y")
                } else if months % 3 == 0 {
                    (months / 3, "Q")
                } else {
                    (months, "M")
                };
                let suffix = if anchor == MonthAnchor::Start { "S" } else { "" };
                if n == 1 { format!("{base}{suffix}") } else { format!("{n}{base}{suffix}") }
            }
        }
    }

    /// The usual seasonal period: 24 for hourly, 7 for daily, 52 for weekly, 12 for monthly,
    /// 4 for quarterly; 1 (no season) otherwise.
    pub fn default_seasonality(&self) -> usize {
        match self.kind {
            FrequencyKind::Fixed { seconds: 3600 } => 24,
            FrequencyKind::Fixed { seconds: DAY } => 7,
            FrequencyKind::Fixed { seconds: WEEK } => 52,
            FrequencyKind::Monthly { months: 1, .. } => 12,
            FrequencyKind::Monthly { months: 3, .. } => 4,
            _ => 1,
        }
    }

    /// Detects the frequency from sorted, duplicate-free timestamps of each series: the smallest
    /// step between neighbours (gaps are multiples of it), read as months when it spans 28–31
    /// days (quarters 89–92, years 365–366) and every time sits on a month start or end.
    pub fn detect(series: &[&[i64]]) -> Result<Frequency> {
        let step = series
            .iter()
            .flat_map(|s| s.windows(2).map(|w| w[1] - w[0]))
            .filter(|d| *d > 0)
            .min()
            .ok_or_else(|| {
                FeaturizeError::Forecast(
                    "cannot detect the frequency: no series has two distinct timestamps; pass --frequency"
                        .into(),
                )
            })?;
        let first = series.iter().filter_map(|s| s.first().copied()).min().unwrap_or(0);
        let months = match step / DAY {
            28..=31 => Some(1),
            89..=92 => Some(3),
            365..=366 => Some(12),
            _ => None,
        };
        if let Some(months) = months.filter(|_| step % DAY == 0) {
            for anchor in [MonthAnchor::Start, MonthAnchor::End] {
                let kind = FrequencyKind::Monthly { months, anchor };
                let f = Frequency::anchored(kind, first);
                if series.iter().all(|s| s.iter().all(|t| f.index(*t).is_some())) {
                    return Ok(f);
                }
            }
        }
        Ok(Frequency::anchored(FrequencyKind::Fixed { seconds: step }, first))
    }
}

/// Calendar parts used as features: what is known for any future time.
pub fn calendar_parts(freq: &Frequency, t: i64) -> Vec<(&'static str, f32)> {
    let c = civil_from_unix(t);
    match freq.kind {
        FrequencyKind::Monthly { months, .. } if months < 12 => vec![("month", c.month as f32)],
        FrequencyKind::Monthly { .. } => Vec::new(),
        FrequencyKind::Fixed { seconds } if seconds >= 7 * DAY => {
            vec![("week_of_year", ((c.day_of_year - 1) / 7) as f32), ("month", c.month as f32)]
        }
        FrequencyKind::Fixed { seconds } if seconds >= DAY => vec![
            ("weekday", c.weekday as f32),
            ("day_of_month", c.day as f32),
            ("month", c.month as f32),
            ("day_of_year", c.day_of_year as f32),
        ],
        FrequencyKind::Fixed { .. } => {
            vec![("hour", c.hour as f32), ("minute", c.minute as f32), ("weekday", c.weekday as f32)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datetime::parse_datetime;

    fn times(v: &[&str]) -> Vec<i64> {
        v.iter().map(|s| parse_datetime(s).unwrap_or(i64::MIN)).collect()
    }

    #[test]
    fn detects_common_frequencies() {
        let cases: [(&[&str], &str); 7] = [
            (&["2020-01-01", "2020-01-02", "2020-01-05"], "D"),
            (&["2020-01-05", "2020-01-12", "2020-01-26"], "W"),
            (&["2020-01-01", "2020-02-01", "2020-04-01"], "MS"),
            (&["2020-01-31", "2020-02-29", "2020-03-31"], "M"),
            (&["2020-01-01", "2020-04-01", "2020-10-01"], "QS"),
            (&["2019-01-01", "2020-01-01", "2021-01-01"], "YS"),
            (&["2020-01-01T00:00", "2020-01-01T01:00", "2020-01-01T03:00"], "H"),
        ];
        for (input, code) in cases {
            let t = times(input);
            let f = Frequency::detect(&[&t]).unwrap_or_else(|e| panic!("{code}: {e}"));
            assert_eq!(f.code(), code, "{input:?}");
            for (i, ti) in t.iter().enumerate() {
                let idx = f.index(*ti).unwrap_or(i64::MIN);
                assert_eq!(f.time_at(idx), *ti, "{code} round trip at {i}");
            }
        }
        assert!(Frequency::detect(&[&times(&["2020-01-01"])]).is_err());
    }

    #[test]
    fn gaps_are_index_jumps() {
        let t = times(&["2020-01-01", "2020-02-01", "2020-05-01"]);
        let f = Frequency::detect(&[&t]).unwrap_or_else(|e| panic!("{e}"));
        let idx: Vec<i64> = t.iter().map(|x| f.index(*x).unwrap_or(-1)).collect();
        assert_eq!(idx[1] - idx[0], 1);
        assert_eq!(idx[2] - idx[1], 3);
        // Off the month-start grid.
        assert_eq!(f.index(parse_datetime("2020-03-15").unwrap_or(0)), None);
    }

    #[test]
    fn parses_aliases() {
        assert_eq!(FrequencyKind::parse("auto").ok().flatten(), None);
        assert_eq!(FrequencyKind::parse("15min").ok().flatten(), Some(FrequencyKind::Fixed { seconds: 900 }));
        assert_eq!(
            FrequencyKind::parse("MS").ok().flatten(),
            Some(FrequencyKind::Monthly { months: 1, anchor: MonthAnchor::Start })
        );
        assert!(FrequencyKind::parse("fortnightly").is_err());
    }
}
