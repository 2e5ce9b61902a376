//! Bad input gets one line naming the problem and exit code 2, never a panic.

use std::path::PathBuf;

use quarry_tests::{example, quarry, repo_root};

fn bad(name: &str) -> PathBuf {
    repo_root().join("tests/data/bad").join(name)
}

/// Runs `fit` and checks: exit 2, one `error:` line, no panic, and the message contains `needle`.
fn fit_fails(data: &std::path::Path, target: &str, needle: &str) {
    fit_fails_with(data, target, &[], needle);
}

fn fit_fails_with(data: &std::path::Path, target: &str, extra: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = vec![
        "fit",
        "--data",
        data.to_str().unwrap(),
        "--target",
        target,
        "--max-trials",
        "2",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = quarry(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}: stderr {stderr}", data.display());
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{:?} should mention {needle:?}", lines[0]);
    // Said once: a wrapped error must not repeat its cause ("X: X").
    let head: String = lines[0].trim_start_matches("error: ").chars().take(30).collect();
    assert_eq!(lines[0].matches(head.as_str()).count(), 1, "{:?} repeats itself", lines[0]);
}

#[test]
fn missing_file() {
    fit_fails(&bad("no_such_file.csv"), "y", "no_such_file.csv");
}

#[test]
fn empty_file() {
    fit_fails(&bad("empty.csv"), "y", "empty");
}

#[test]
fn header_only_file() {
    fit_fails(&bad("header_only.csv"), "y", "no data rows");
}

#[test]
fn target_column_that_does_not_exist() {
    fit_fails(&example("penguins/train.csv"), "no_such_column", "\"no_such_column\" not found");
}

#[test]
fn target_with_one_class() {
    fit_fails(&bad("one_class.csv"), "y", "one class");
}

#[test]
fn ragged_rows() {
    fit_fails(&bad("ragged_rows.csv"), "y", "line 3");
}

#[test]
fn non_utf8_file() {
    fit_fails(&bad("not_utf8.csv"), "y", "UTF-8");
}

#[test]
fn duplicate_column_names() {
    fit_fails(&bad("duplicate_columns.csv"), "y", "\"a\" appears more than once");
}

#[test]
fn no_usable_features() {
    fit_fails(&bad("only_id_feature.csv"), "y", "no usable feature");
}

#[test]
fn bad_metric_for_task() {
    fit_fails_with(&example("cars/train.csv"), "Miles_per_Gallon", &["--metric", "roc_auc"], "roc_auc");
}

#[test]
fn unknown_metric() {
    fit_fails_with(&example("cars/train.csv"), "Miles_per_Gallon", &["--metric", "f7"], "unknown metric");
}

#[test]
fn byte_order_mark_is_not_part_of_the_first_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    quarry_tests::quarry_ok(&[
        "fit",
        "--data",
        bad("bom.csv").to_str().unwrap(),
        "--target",
        "y",
        "--max-trials",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    let record = quarry_tests::read_json(&run.join("run.json"));
    assert_eq!(record["schema"][0]["name"], "x");
}

/// A 1 KiB Parquet file whose footer declares 2·10⁹ rows (issue #23, item 13): `fit` refuses
/// it from the footer, before reading a row, and a worker given it as a job fails the job
/// with the reason and keeps serving.
#[test]
fn a_parquet_declaring_two_billion_rows_is_refused_before_loading() {
    let bomb = bad("declares_2e9_rows.parquet");
    fit_fails_with(&bomb, "y", &["--memory-limit", "1GiB"], "declares 2000000000 rows × 4 columns");

    let Some(tmp) = quarry_tests::cluster::cluster_dir() else { return };
    let (_server, url) = quarry_tests::cluster::serve_store(tmp.path(), &[]);
    let mut w = quarry_tests::cluster::worker(&url, tmp.path(), 0, &["--memory-limit", "1GiB"]);
    let job = quarry_tests::cluster::submit(&url, &bomb, "y", &["--max-trials", "2"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let out = quarry(&["status", "--coordinator", &url, &job]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.starts_with("failed") {
            assert!(text.contains("too large to load"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not fail: {text}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(w.child.try_wait().unwrap().is_none(), "the worker exited");
    let data = tmp.path().join("small.csv");
    quarry_tests::cluster::small_csv(&data);
    let next = quarry_tests::cluster::submit(&url, &data, "y", &["--max-trials", "2"]);
    quarry_tests::cluster::wait_completed(&url, &next);
}
