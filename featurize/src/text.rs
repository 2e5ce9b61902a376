//! Free text as word uni/bigram TF-IDF features.
//!
//! Words ([`words`]) are the lowercased pieces of the text between spaces. Fitting counts, for
//! every word and every pair of adjacent words, how many training rows contain it (document
//! frequency), keeps the most frequent terms (the vocabulary, saved with the model) and their
//! IDF weights. A transformed row is `count × idf` over the kept terms, L2-normalised; a
//! missing or wordless cell is all zeros.
//!
//! The tokenizer is deliberately what standard ONNX string ops compute (`StringNormalizer`
//! LOWER, then `StringSplit` on spaces, then `TfIdfVectorizer` over the vocabulary), so the
//! exported graph reproduces the features exactly: punctuation stays part of a word, and
//! tabs and newlines do not separate words.
//!
//! Bundles saved before the vocabulary existed use hashed buckets ([`for_each_bucket`]:
//! alphanumeric runs hashed into [`HASH_BUCKETS`]); they still load and predict, but have no
//! ONNX export (a hash has no standard ONNX op).

use std::collections::HashMap;

use crate::table::RawValues;

/// Buckets words and bigrams are hashed into before selection.
pub const HASH_BUCKETS: usize = 1 << 10;
/// At most this many buckets (feature columns) are kept per text column.
pub const MAX_TFIDF_FEATURES: usize = 256;
/// Feature cells one text column may produce (`rows × buckets`, dense `f32`): 64 Mi cells,
/// 256 MiB. Large tables keep fewer buckets rather than exhausting memory.
const MAX_TFIDF_CELLS: usize = 1 << 26;
/// Even a huge table keeps at least this many buckets.
const MIN_TFIDF_FEATURES: usize = 16;

/// 64-bit FNV-1a. Written out rather than taken from `std::hash`: the bucket of a word is part
/// of the fitted model (saved in `pipeline.json` and applied at predict time, possibly by
/// another build on another machine), so the hash must be identical across runs, processes,
/// platforms and Rust releases. `std`'s `DefaultHasher` (SipHash) promises none of that, and
/// `RandomState` is deliberately different in every process.
#[derive(Clone, Copy)]
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv1a(Self::OFFSET)
    }

    fn write(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
        self
    }

    /// Folds the high half in: FNV's low bits alone mix poorly.
    fn bucket(self) -> u32 {
        ((self.0 ^ (self.0 >> 32)) % HASH_BUCKETS as u64) as u32
    }
}

/// Stable 64-bit FNV-1a of `bytes` (also used to fingerprint rows for duplicate counting).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    Fnv1a::new().write(bytes).0
}

/// Calls `f` with the bucket of every unigram and bigram of `text`, in order.
pub fn for_each_bucket(text: &str, mut f: impl FnMut(u32)) {
    let mut prev: Option<Fnv1a> = None;
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let lower = word.to_lowercase();
        let unigram = Fnv1a::new().write(lower.as_bytes());
        f(unigram.bucket());
        if let Some(p) = prev {
            // The bigram hash continues the previous word's state across a separator byte that
            // no word contains, so "ab c" and "a bc" differ.
            f(p.write(b" ").write(lower.as_bytes()).bucket());
        }
        prev = Some(unigram);
    }
}

/// Lowercases one character as `towlower` does (Unicode simple case mapping), which is what
/// ONNX's `StringNormalizer` applies: no context rules (final sigma), one character out.
fn lower_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut l = c.to_lowercase();
    match (l.next(), l.next()) {
        (Some(one), None) => one,
        // U+0130 (capital I with dot) lowercases to "i" + combining dot in full case mapping.
        (Some(first), Some(_)) if c == '\u{130}' => first,
        _ => c,
    }
}

/// The words of a text cell: lowercased, split on spaces (runs of spaces count as one).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(' ').filter(|w| !w.is_empty()).map(|w| w.chars().map(lower_char).collect())
}

/// Calls `f` with every term of `text`, in order: each word, then (from the second word on)
/// the pair of it and the previous word, as `"previous word"`.
fn for_each_term(text: &str, mut f: impl FnMut(&str)) {
    let mut prev: Option<String> = None;
    let mut pair = String::new();
    for w in words(text) {
        f(&w);
        if let Some(p) = &prev {
            pair.clear();
            pair.push_str(p);
            pair.push(' ');
            pair.push_str(&w);
            f(&pair);
        }
        prev = Some(w);
    }
}

/// Fits the vocabulary: the most frequent terms (by rows containing them), words first then
/// pairs, each group in byte order, with their IDF weights. Empty when no cell has a word.
pub fn fit_vocabulary(values: &RawValues) -> (Vec<String>, Vec<f32>) {
    let n = values.len();
    // term -> (document frequency, last row counted)
    let mut df: HashMap<String, (usize, usize)> = HashMap::new();
    for i in 0..n {
        if let Some(s) = values.text(i) {
            for_each_term(&s, |t| match df.get_mut(t) {
                Some(e) if e.1 == i => {}
                Some(e) => *e = (e.0 + 1, i),
                None => {
                    df.insert(t.to_string(), (1, i));
                }
            });
        }
    }
    let cap = (MAX_TFIDF_CELLS / n.max(1)).clamp(MIN_TFIDF_FEATURES, MAX_TFIDF_FEATURES);
    let mut order: Vec<(String, usize)> = df.into_iter().map(|(t, (d, _))| (t, d)).collect();
    // Most frequent first, then the term: deterministic.
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    order.truncate(cap);
    order.sort_by(|a, b| is_pair(&a.0).cmp(&is_pair(&b.0)).then_with(|| a.0.cmp(&b.0)));
    let idf = order.iter().map(|(_, d)| (((1 + n) as f64 / (1 + d) as f64).ln() + 1.0) as f32).collect();
    (order.into_iter().map(|(t, _)| t).collect(), idf)
}

/// Whether a vocabulary term is a word pair (words never contain a space).
pub fn is_pair(term: &str) -> bool {
    term.contains(' ')
}

/// One `Vec<f32>` per vocabulary term, `n` rows each. The arithmetic is the exported graph's:
/// `f32` count × idf, the squared norm summed in `f64`, `f32` multiply by the `f32` inverse norm.
pub fn transform_vocabulary(values: &RawValues, n: usize, terms: &[String], idf: &[f32]) -> Vec<Vec<f32>> {
    let slot: HashMap<&str, usize> = terms.iter().enumerate().map(|(k, t)| (t.as_str(), k)).collect();
    let mut out: Vec<Vec<f32>> = terms.iter().map(|_| vec![0.0; n]).collect();
    let mut row = vec![0f32; terms.len()];
    for i in 0..n.min(values.len()) {
        let Some(s) = values.text(i) else { continue };
        row.iter_mut().for_each(|v| *v = 0.0);
        for_each_term(&s, |t| {
            if let Some(&k) = slot.get(t) {
                row[k] += 1.0;
            }
        });
        normalise_into(&mut row, idf, &mut out, i);
    }
    out
}

fn normalise_into(row: &mut [f32], idf: &[f32], out: &mut [Vec<f32>], i: usize) {
    let mut norm = 0f64;
    for (v, w) in row.iter_mut().zip(idf) {
        *v *= w;
        norm += f64::from(*v) * f64::from(*v);
    }
    if norm > 0.0 {
        let inv = (1.0 / norm.sqrt()) as f32;
        for (col, v) in out.iter_mut().zip(row.iter()) {
            col[i] = v * inv;
        }
    }
}

/// Fits the kept buckets (ascending) and their IDF weights; empty when no cell has a word.
pub fn fit_tfidf(values: &RawValues) -> (Vec<u32>, Vec<f32>) {
    let n = values.len();
    let mut df = vec![0usize; HASH_BUCKETS];
    let mut seen_in_row = vec![usize::MAX; HASH_BUCKETS];
    for i in 0..n {
        if let Some(s) = values.text(i) {
            for_each_bucket(&s, |b| {
                let b = b as usize;
                if seen_in_row[b] != i {
                    seen_in_row[b] = i;
                    df[b] += 1;
                }
            });
        }
    }
    let cap = (MAX_TFIDF_CELLS / n.max(1)).clamp(MIN_TFIDF_FEATURES, MAX_TFIDF_FEATURES);
    let mut order: Vec<usize> = (0..HASH_BUCKETS).filter(|&b| df[b] > 0).collect();
    // Most frequent first, then bucket number: deterministic.
    order.sort_by(|&a, &b| df[b].cmp(&df[a]).then(a.cmp(&b)));
    order.truncate(cap);
    order.sort_unstable();
    // Smoothed IDF, as scikit-learn: ln((1 + n) / (1 + df)) + 1, never zero.
    let idf = order.iter().map(|&b| (((1 + n) as f64 / (1 + df[b]) as f64).ln() + 1.0) as f32).collect();
    (order.into_iter().map(|b| b as u32).collect(), idf)
}

/// One `Vec<f32>` per kept bucket, `n` rows each.
pub fn transform_tfidf(values: &RawValues, n: usize, buckets: &[u32], idf: &[f32]) -> Vec<Vec<f32>> {
    let slot: HashMap<u32, usize> = buckets.iter().enumerate().map(|(k, &b)| (b, k)).collect();
    let mut out: Vec<Vec<f32>> = buckets.iter().map(|_| vec![0.0; n]).collect();
    let mut row = vec![0f32; buckets.len()];
    for i in 0..n.min(values.len()) {
        let Some(s) = values.text(i) else { continue };
        row.iter_mut().for_each(|v| *v = 0.0);
        for_each_bucket(&s, |b| {
            if let Some(&k) = slot.get(&b) {
                row[k] += 1.0;
            }
        });
        normalise_into(&mut row, idf, &mut out, i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::StrColumn;

    fn text(values: &[Option<&str>]) -> RawValues {
        let mut c = StrColumn::new();
        for v in values {
            c.push(*v);
        }
        RawValues::Text(c)
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors: the hash must never change.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn words_are_lowercased_and_split_on_punctuation() {
        let mut a = Vec::new();
        for_each_bucket("Hello, WORLD!", |b| a.push(b));
        let mut b = Vec::new();
        for_each_bucket("hello world", |x| b.push(x));
        assert_eq!(a, b);
        assert_eq!(a.len(), 3, "two words and one bigram");
    }

    #[test]
    fn words_split_on_spaces_and_lowercase_per_character() {
        let w: Vec<String> = words("  Hello,  WORLD! ÇA\tva ΣΑΣ ").collect();
        assert_eq!(w, ["hello,", "world!", "ça\tva", "σασ"]);
        let mut terms = Vec::new();
        for_each_term("a B c", |t| terms.push(t.to_string()));
        assert_eq!(terms, ["a", "b", "a b", "c", "b c"]);
    }

    #[test]
    fn vocabulary_keeps_frequent_terms_words_first_and_normalises_rows() {
        let v = text(&[Some("red apple"), Some("green apple pie"), None, Some("   "), Some("Red apple")]);
        let (terms, idf) = fit_vocabulary(&v);
        assert_eq!(terms, ["apple", "green", "pie", "red", "apple pie", "green apple", "red apple"]);
        // apple is in 3 of 5 rows: ln(6/4) + 1.
        assert!((idf[0] - ((6.0f64 / 4.0).ln() + 1.0) as f32).abs() < 1e-7);
        let cols = transform_vocabulary(&v, 5, &terms, &idf);
        for i in [0, 1, 4] {
            let norm: f32 = cols.iter().map(|c| c[i] * c[i]).sum();
            assert!((norm - 1.0).abs() < 1e-5, "row {i}: {norm}");
        }
        assert!(cols.iter().all(|c| c[2] == 0.0 && c[3] == 0.0));
        assert_eq!(cols[3][0], cols[3][4], "case does not matter");
        assert!(cols[1][0] == 0.0 && cols[1][1] > 0.0);
    }

    #[test]
    fn rows_are_l2_normalised_and_missing_rows_are_zero() {
        let v = text(&[Some("red apple"), Some("green apple pie"), None, Some("!!!")]);
        let (buckets, idf) = fit_tfidf(&v);
        assert!(!buckets.is_empty() && buckets.len() == idf.len());
        assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        let cols = transform_tfidf(&v, 4, &buckets, &idf);
        for i in 0..2 {
            let norm: f32 = cols.iter().map(|c| c[i] * c[i]).sum();
            assert!((norm - 1.0).abs() < 1e-5, "row {i}: {norm}");
        }
        assert!(cols.iter().all(|c| c[2] == 0.0 && c[3] == 0.0));
    }
}
