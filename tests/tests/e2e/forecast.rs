//! `fit --task forecast` → run folder → `predict` on the shipped forecasting examples.

use std::path::Path;

use quarry_tests::{example, quarry, quarry_ok, read_csv, read_json};

fn fit_forecast(data: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "fit",
        "--task",
        "forecast",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--budget",
        "60s",
    ];
    args.extend_from_slice(extra);
    quarry_ok(&args);
}

fn column(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

#[test]
fn airpassengers_beats_seasonal_naive() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let train = example("airpassengers/train.csv");
    fit_forecast(&train, &run, &["--target", "passengers", "--time-column", "month", "--horizon", "12"]);
    for f in ["leaderboard.json", "run.json", "guardrails.json", "model/forecast.json"] {
        assert!(run.join(f).exists(), "run folder lacks {f}");
    }
    let record = read_json(&run.join("run.json"));
    assert_eq!(record["frequency"], "MS");
    assert_eq!(record["seasonality"], 12);
    assert_eq!(record["onnx"]["exported"], false);
    assert!(record["validation"]["windows"].as_array().unwrap().len() >= 2);

    let out = dir.path().join("forecast.csv");
    quarry_ok(&["predict", "--model", run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let (header, rows) = read_csv(&out);
    assert_eq!(header, ["month", "prediction", "q10", "q50", "q90"]);
    assert_eq!(rows.len(), 12);
    assert_eq!(rows[0][0], "1960-01-01");

    // Test MASE against the held-out year; seasonal naive scores 1.5709 on it.
    let (_, test) = read_csv(&example("airpassengers/test.csv"));
    let (_, hist) = read_csv(&train);
    let y: Vec<f64> = hist.iter().map(|r| r[1].parse().unwrap()).collect();
    let scale = y[12..].iter().zip(&y).map(|(a, b)| (a - b).abs()).sum::<f64>() / (y.len() - 12) as f64;
    let mut abs_err = 0.0;
    for (r, t) in rows.iter().zip(&test) {
        assert_eq!(r[0], t[0]);
        let p: f64 = r[1].parse().unwrap();
        let (q10, q50, q90): (f64, f64, f64) =
            (r[2].parse().unwrap(), r[3].parse().unwrap(), r[4].parse().unwrap());
        assert!(q10 <= q50 && q50 <= q90 && q10 < q90, "quantiles out of order: {r:?}");
        abs_err += (p - t[1].parse::<f64>().unwrap()).abs();
    }
    let mase = abs_err / 12.0 / scale;
    assert!(mase < 1.5709, "test MASE {mase} is no better than seasonal naive");
}

#[test]
fn multi_series_row_order_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let train = example("sales_synthetic/train.csv");
    let text = std::fs::read_to_string(&train).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let header = lines.remove(0);
    lines.reverse();
    let shuffled = dir.path().join("shuffled.csv");
    std::fs::write(&shuffled, format!("{header}\n{}\n", lines.join("\n"))).unwrap();

    let args = ["--target", "sales", "--time-column", "month", "--horizon", "6", "--series-id", "store"];
    let test = example("sales_synthetic/test.csv");
    let mut outputs = Vec::new();
    for (name, data) in [("a", &train), ("b", &shuffled)] {
        let run = dir.path().join(name);
        fit_forecast(data, &run, &args);
        let out = dir.path().join(format!("{name}.csv"));
        quarry_ok(&[
            "predict",
            "--model",
            run.to_str().unwrap(),
            "--data",
            test.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        outputs.push(std::fs::read_to_string(&out).unwrap());
        let guard = read_json(&run.join("guardrails.json"));
        assert_eq!(guard["n_series"], 3);
        assert_eq!(guard["gaps_filled_as_missing"], 2, "two missing months of store north");
        assert_eq!(guard["missing_targets"], 1);
    }
    assert_eq!(outputs[0], outputs[1], "forecasts depend on the row order");
    let (header, rows) = read_csv(&dir.path().join("a.csv"));
    assert_eq!(header[..3], ["store", "month", "prediction"]);
    assert_eq!(rows.len(), 18);
    // Forecasts are on the scale of each store, in the test file's row order.
    let (_, truth) = read_csv(&test);
    let p = column(&header, "prediction");
    for (r, t) in rows.iter().zip(&truth) {
        assert_eq!(r[..2], t[..2]);
        let (pred, actual): (f64, f64) = (r[p].parse().unwrap(), t[2].parse().unwrap());
        assert!((pred - actual).abs() / actual < 0.35, "{r:?} vs {t:?}");
    }
}

#[test]
fn forecast_input_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, "id,date,y\na,2020-01-01,1\nb,2020-01-01,2\nb,2020-01-01,3\n").unwrap();
    let out = quarry(&[
        "fit",
        "--task",
        "forecast",
        "--data",
        dup.to_str().unwrap(),
        "--target",
        "y",
        "--time-column",
        "date",
        "--horizon",
        "2",
        "--series-id",
        "id",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("series \"b\"") && err.contains("2020-01-01"), "{err}");

    let run = dir.path().join("air");
    fit_forecast(
        &example("airpassengers/train.csv"),
        &run,
        &["--target", "passengers", "--time-column", "month", "--horizon", "12"],
    );
    let past = dir.path().join("past.csv");
    std::fs::write(&past, "month\n1955-01-01\n").unwrap();
    let out = quarry(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--data",
        past.to_str().unwrap(),
        "--out",
        dir.path().join("p.csv").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not after the end of the training data"));
}
