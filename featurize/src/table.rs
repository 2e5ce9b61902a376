//! A loaded table in a compact, owned form: the only representation the rest of the
//! crate reads, whatever the file format was.

/// Strings that mean "missing", as pandas reads them, so our view of a file matches the peers'.
const MISSING_MARKERS: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

pub fn is_missing_marker(s: &str) -> bool {
    MISSING_MARKERS.contains(&s)
}

/// Strings of one column packed into one buffer; `u32` offsets keep 327k-row files lean.
#[derive(Debug, Clone, PartialEq)]
pub struct StrColumn {
    data: String,
    /// `offsets[i]..offsets[i+1]` is row i. An empty span is a missing value: the empty string
    /// is a missing marker, so no present value is ever empty and no separate mask is needed.
    offsets: Vec<u32>,
}

impl Default for StrColumn {
    fn default() -> Self {
        StrColumn::new()
    }
}

impl StrColumn {
    pub fn new() -> Self {
        StrColumn { data: String::new(), offsets: vec![0] }
    }

    /// Appends a value; missing markers become missing. Returns false if the column outgrew 4 GiB.
    pub fn push(&mut self, value: Option<&str>) -> bool {
        let value = value.map(str::trim).filter(|s| !is_missing_marker(s));
        if let Some(s) = value {
            self.data.push_str(s);
        }
        let Ok(end) = u32::try_from(self.data.len()) else {
            return false;
        };
        self.offsets.push(end);
        true
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn reserve(&mut self, rows: usize, bytes: usize) {
        self.offsets.reserve(rows);
        self.data.reserve(bytes);
    }

    pub fn shrink_to_fit(&mut self) {
        self.offsets.shrink_to_fit();
        self.data.shrink_to_fit();
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.len() == 1
    }

    pub fn get(&self, row: usize) -> Option<&str> {
        let (start, end) = (self.offsets[row] as usize, self.offsets[row + 1] as usize);
        if start == end {
            return None;
        }
        Some(&self.data[start..end])
    }

    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// One column's values in the form the file gave them.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValues {
    /// CSV cells (every CSV column) and Parquet string columns.
    Text(StrColumn),
    /// Parquet numeric columns; `NaN` is missing.
    Number(Vec<f64>),
    /// Parquet booleans.
    Bool(Vec<Option<bool>>),
    /// Parquet dates and timestamps, as Unix seconds.
    Timestamp(Vec<Option<i64>>),
}

impl RawValues {
    pub fn len(&self) -> usize {
        match self {
            RawValues::Text(s) => s.len(),
            RawValues::Number(v) => v.len(),
            RawValues::Bool(v) => v.len(),
            RawValues::Timestamp(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_missing(&self, row: usize) -> bool {
        match self {
            RawValues::Text(s) => s.get(row).is_none(),
            RawValues::Number(v) => v[row].is_nan(),
            RawValues::Bool(v) => v[row].is_none(),
            RawValues::Timestamp(v) => v[row].is_none(),
        }
    }

    /// The cell as text, as a user would have typed it (labels, categorical levels).
    pub fn text(&self, row: usize) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match self {
            RawValues::Text(s) => s.get(row).map(Cow::Borrowed),
            RawValues::Number(v) => (!v[row].is_nan()).then(|| Cow::Owned(format_number(v[row]))),
            RawValues::Bool(v) => v[row].map(|b| Cow::Borrowed(if b { "true" } else { "false" })),
            RawValues::Timestamp(v) => v[row].map(|t| Cow::Owned(t.to_string())),
        }
    }

    /// Keeps the rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> RawValues {
        match self {
            RawValues::Text(s) => {
                let mut out = StrColumn::new();
                for &i in indices {
                    out.push(s.get(i));
                }
                RawValues::Text(out)
            }
            RawValues::Number(v) => RawValues::Number(indices.iter().map(|&i| v[i]).collect()),
            RawValues::Bool(v) => RawValues::Bool(indices.iter().map(|&i| v[i]).collect()),
            RawValues::Timestamp(v) => RawValues::Timestamp(indices.iter().map(|&i| v[i]).collect()),
        }
    }
}

/// Integers print without a trailing `.0` so "1" in Parquet and "1" in CSV are the same label.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawColumn {
    pub name: String,
    pub values: RawValues,
}

/// A whole loaded file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub n_rows: usize,
    pub columns: Vec<RawColumn>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&RawColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn select_rows(&self, indices: &[usize]) -> Table {
        Table {
            n_rows: indices.len(),
            columns: self
                .columns
                .iter()
                .map(|c| RawColumn { name: c.name.clone(), values: c.values.select(indices) })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_column_round_trips_and_marks_missing() {
        let mut c = StrColumn::new();
        for v in [Some("a"), None, Some(""), Some("NA"), Some(" bb ")] {
            assert!(c.push(v));
        }
        let got: Vec<_> = c.iter().collect();
        assert_eq!(got, vec![Some("a"), None, None, None, Some("bb")]);
    }

    #[test]
    fn numbers_format_like_csv() {
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(2.5), "2.5");
    }
}
