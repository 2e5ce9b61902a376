//! The one check for a user- or network-supplied name that becomes part of a path (registry
//! names, uploaded file names, job ids in a worker's cache, downloaded artifact paths): it
//! must stay one plain path component, whatever it contains otherwise.

/// The longest name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// `Ok` when `name` is safe as one path component; otherwise why not. Refuses the empty name,
/// names over [`MAX_NAME_BYTES`], `/` and `\` (so absolute paths and Windows separators too),
/// NUL and other control characters, and any `..`.
pub fn safe_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err("the name is longer than 128 bytes");
    }
    if name.contains(['/', '\\']) {
        return Err("a name cannot contain '/' or '\\'");
    }
    if name.chars().any(char::is_control) {
        return Err("a name cannot contain NUL or other control characters");
    }
    if name == "." || name.contains("..") {
        return Err("a name cannot be '.' or contain '..'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_separators_control_characters_and_long_names_are_refused() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/../b",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "C:\\x",
            "a\0b",
            "a\nb",
            "x..",
            &long,
        ] {
            assert!(safe_name(bad).is_err(), "{bad:?} passed");
        }
        let longest = "a".repeat(MAX_NAME_BYTES);
        for good in ["train.csv", "my data (1).csv", "\"><script>.csv", "ünïcode.parquet", "job-12", &longest]
        {
            assert_eq!(safe_name(good), Ok(()), "{good:?}");
        }
    }
}
