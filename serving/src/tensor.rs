//! Tensor data of the Open Inference Protocol as the text cells a CSV file would hold: JSON
//! `data` arrays (parsed straight into cells, never into a generic JSON tree, so a request costs
//! about its own size in memory) and the binary tensor data extension (Triton's
//! `extension_binary_data`: little-endian, row-major, BOOL as one byte, BYTES as a 4-byte
//! little-endian length and the bytes).

use std::fmt;

use quarry_featurize::StrColumn;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};

/// The JSON type of one cell, kept so the datatype can be checked once the whole request is
/// read (`datatype` may come after `data` in the object).
#[derive(Debug, Clone, Copy, PartialEq)]
enum CellKind {
    Null,
    Bool,
    Number,
    Str,
}

/// A JSON tensor's `data`, flattened row-major (nested arrays are read in order) into text.
#[derive(Debug, Default)]
pub struct JsonCells {
    text: String,
    /// `ends[i]` is where cell i's text ends in `text`.
    ends: Vec<u32>,
    kinds: Vec<CellKind>,
}

impl JsonCells {
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    fn cell(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn push(&mut self, kind: CellKind, text: &str) -> std::result::Result<(), &'static str> {
        self.text.push_str(text);
        let end = u32::try_from(self.text.len()).map_err(|_| "the tensor's text is over 4 GiB")?;
        self.ends.push(end);
        self.kinds.push(kind);
        Ok(())
    }

    /// The cells as a column of CSV-like text for an input of `datatype`: numbers print as
    /// written (integers without ".0", floats in shortest round-trip form), so the featurizer
    /// parses back exactly the number that was sent; NaN (a string, see
    /// `oip::non_finite_to_strings`) and null are missing.
    pub fn to_column(&self, datatype: &str) -> std::result::Result<StrColumn, String> {
        let mut out = StrColumn::new();
        out.reserve(self.len(), self.text.len());
        for i in 0..self.len() {
            let text = self.cell(i);
            let value = match self.kinds[i] {
                CellKind::Null => None,
                CellKind::Str if datatype == "BYTES" => Some(text),
                CellKind::Str if matches!(text, "NaN" | "inf" | "-inf") => Some(text).filter(|s| *s != "NaN"),
                CellKind::Bool if datatype == "BOOL" => Some(text),
                CellKind::Number if datatype != "BYTES" && datatype != "BOOL" => Some(text),
                kind => {
                    let shown = if kind == CellKind::Str { format!("{text:?}") } else { text.to_string() };
                    return Err(format!("value {shown} does not match datatype {datatype}"));
                }
            };
            if !out.push(value) {
                return Err("the tensor's text is over 4 GiB".into());
            }
        }
        Ok(out)
    }
}

impl<'de> serde::Deserialize<'de> for JsonCells {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut cells = JsonCells::default();
        AppendTo(&mut cells).deserialize(d)?;
        Ok(cells)
    }
}

/// Appends one JSON value (a scalar, or an array of them, nested at any depth) to the cells.
struct AppendTo<'a>(&'a mut JsonCells);

impl<'de> DeserializeSeed<'de> for AppendTo<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AppendTo<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers, strings, booleans or nulls")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while seq.next_element_seed(AppendTo(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.0.push(CellKind::Null, "").map_err(E::custom)
    }

    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.visit_unit()
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<(), E> {
        self.0.push(CellKind::Bool, if v { "true" } else { "false" }).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<(), E> {
        self.0.push(CellKind::Number, &v.to_string()).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<(), E> {
        self.0.push(CellKind::Number, &v.to_string()).map_err(E::custom)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<(), E> {
        self.0.push(CellKind::Number, &v.to_string()).map_err(E::custom)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<(), E> {
        self.0.push(CellKind::Str, v).map_err(E::custom)
    }
}

/// The datatypes of the protocol.
pub const DATATYPES: &[&str] = &[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
    "BYTES",
];

/// Decodes one input's binary tensor data into `out`; returns the number of elements.
pub fn decode_binary(
    datatype: &str,
    bytes: &[u8],
    out: &mut StrColumn,
) -> std::result::Result<usize, String> {
    if datatype == "BYTES" {
        return decode_bytes(bytes, out);
    }
    let width = match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        other => return Err(format!("unknown datatype {other:?}")),
    };
    if !bytes.len().is_multiple_of(width) {
        return Err(format!(
            "{} bytes of binary data are not a whole number of {datatype} elements ({width} bytes each)",
            bytes.len()
        ));
    }
    out.reserve(bytes.len() / width, bytes.len() * 3);
    for (i, e) in bytes.chunks_exact(width).enumerate() {
        let text = match datatype {
            "BOOL" => match e[0] {
                0 => Some("false".to_string()),
                1 => Some("true".to_string()),
                b => return Err(format!("BOOL element {i} is {b}, not 0 or 1")),
            },
            "UINT8" => Some(e[0].to_string()),
            "INT8" => Some(i8::from_le_bytes([e[0]]).to_string()),
            "UINT16" => Some(u16::from_le_bytes([e[0], e[1]]).to_string()),
            "INT16" => Some(i16::from_le_bytes([e[0], e[1]]).to_string()),
            "FP16" => float_text(f16_to_f32(u16::from_le_bytes([e[0], e[1]]))),
            "UINT32" => Some(u32::from_le_bytes(array(e)).to_string()),
            "INT32" => Some(i32::from_le_bytes(array(e)).to_string()),
            "FP32" => float_text(f32::from_le_bytes(array(e))),
            "UINT64" => Some(u64::from_le_bytes(array(e)).to_string()),
            "INT64" => Some(i64::from_le_bytes(array(e)).to_string()),
            _ => float_text(f64::from_le_bytes(array(e))),
        };
        if !out.push(text.as_deref()) {
            return Err("the tensor's text is over 4 GiB".into());
        }
    }
    Ok(bytes.len() / width)
}

/// An IEEE half-precision value, widened exactly.
fn f16_to_f32(bits: u16) -> f32 {
    let (exponent, fraction) = (u32::from((bits >> 10) & 0x1f), u32::from(bits & 0x3ff));
    let magnitude = match exponent {
        0 => fraction as f32 * (-24f32).exp2(),
        31 if fraction == 0 => f32::INFINITY,
        31 => f32::NAN,
        // Rebias the exponent (15 → 127) and widen the fraction (10 → 23 bits).
        _ => f32::from_bits(((exponent + 112) << 23) | (fraction << 13)),
    };
    if bits >> 15 == 1 { -magnitude } else { magnitude }
}

fn array<const N: usize>(e: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&e[..N]);
    a
}

/// A float as a CSV cell: shortest round-trip text in its own width (an FP32 0.1 is "0.1"),
/// NaN missing, infinities as "inf"/"-inf" (as the JSON path reads them).
fn float_text<F: Into<f64> + fmt::Display + Copy>(v: F) -> Option<String> {
    let wide: f64 = v.into();
    if wide.is_nan() {
        None
    } else if wide.is_infinite() {
        Some(if wide > 0.0 { "inf" } else { "-inf" }.to_string())
    } else {
        Some(v.to_string())
    }
}

fn decode_bytes(bytes: &[u8], out: &mut StrColumn) -> std::result::Result<usize, String> {
    let (mut rest, mut n) = (bytes, 0usize);
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!("BYTES element {n}: {} bytes left, too few for a 4-byte length", rest.len()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!("BYTES element {n} says {len} bytes but only {} are left", tail.len()));
        }
        let (value, tail) = tail.split_at(len);
        let text = std::str::from_utf8(value).map_err(|e| format!("BYTES element {n} is not UTF-8: {e}"))?;
        if !out.push(Some(text)) {
            return Err("the tensor's text is over 4 GiB".into());
        }
        rest = tail;
        n += 1;
    }
    Ok(n)
}

/// FP64 values as binary tensor data.
pub fn encode_f64(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Strings as a BYTES binary tensor.
pub fn encode_bytes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        // A label is never near 4 GiB; saturating keeps this total without a panic.
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn texts(c: &StrColumn) -> Vec<Option<&str>> {
        c.iter().collect()
    }

    #[test]
    fn json_cells_flatten_nested_arrays_and_check_the_datatype() {
        let cells: JsonCells = serde_json::from_str(r#"[[1, 2.5], [null, "NaN"], ["-inf", 1e300]]"#).unwrap();
        let col = cells.to_column("FP64").unwrap();
        let big = 1e300f64.to_string();
        assert_eq!(texts(&col), vec![Some("1"), Some("2.5"), None, None, Some("-inf"), Some(big.as_str())]);
        let cells: JsonCells = serde_json::from_str(r#"["a", " b "]"#).unwrap();
        assert_eq!(texts(&cells.to_column("BYTES").unwrap()), vec![Some("a"), Some("b")]);
        let err = cells.to_column("FP64").unwrap_err();
        assert_eq!(err, r#"value "a" does not match datatype FP64"#);
        let cells: JsonCells = serde_json::from_str("[true]").unwrap();
        assert_eq!(cells.to_column("INT64").unwrap_err(), "value true does not match datatype INT64");
        assert!(serde_json::from_str::<JsonCells>(r#"[{"a": 1}]"#).is_err());
    }

    #[test]
    fn binary_tensors_decode_every_datatype_little_endian() {
        let mut col = StrColumn::new();
        let fp32: Vec<u8> = [0.1f32, f32::NAN, f32::INFINITY].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode_binary("FP32", &fp32, &mut col).unwrap(), 3);
        assert_eq!(decode_binary("FP64", &encode_f64(&[-2.5]), &mut col).unwrap(), 1);
        assert_eq!(decode_binary("INT32", &(-7i32).to_le_bytes(), &mut col).unwrap(), 1);
        assert_eq!(decode_binary("UINT16", &513u16.to_le_bytes(), &mut col).unwrap(), 1);
        assert_eq!(decode_binary("BOOL", &[1, 0], &mut col).unwrap(), 2);
        // 1.5 in half precision: sign 0, exponent 15, fraction 0x200.
        assert_eq!(decode_binary("FP16", &0x3e00u16.to_le_bytes(), &mut col).unwrap(), 1);
        assert_eq!(
            decode_binary("BYTES", &encode_bytes(["Biscoe", " WD ", ""].into_iter()), &mut col).unwrap(),
            3
        );
        assert_eq!(
            texts(&col),
            vec![
                Some("0.1"),
                None,
                Some("inf"),
                Some("-2.5"),
                Some("-7"),
                Some("513"),
                Some("true"),
                Some("false"),
                Some("1.5"),
                Some("Biscoe"),
                Some("WD"),
                None
            ]
        );
        let mut col = StrColumn::new();
        assert!(decode_binary("FP64", &[0; 7], &mut col).unwrap_err().contains("not a whole number"));
        assert!(
            decode_binary("BYTES", &[9, 0, 0, 0, b'a'], &mut col).unwrap_err().contains("element 0 says 9")
        );
        assert!(decode_binary("BYTES", &[1, 0], &mut col).unwrap_err().contains("too few"));
        assert!(decode_binary("BOOL", &[2], &mut col).unwrap_err().contains("not 0 or 1"));
        assert!(decode_binary("BYTES", &[1, 0, 0, 0, 0xff], &mut col).unwrap_err().contains("not UTF-8"));
    }
}
