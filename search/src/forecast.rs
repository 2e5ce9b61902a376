//! Rolling-origin validation for forecasting: several windows of `horizon` grid points at the
//! end of the data, each trained only on what came before its cutoff.

use serde::{Deserialize, Serialize};

/// Train on grid indices `< cutoff`; score the forecasts of `cutoff..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForecastWindow {
    pub cutoff: i64,
    pub end: i64,
}

/// Up to `max_windows` back-to-back windows of length `horizon` ending at `last_end` (one past
/// the last grid index), oldest first; a window is kept only when at least `min_train` grid
/// points (counted from `first`) lie before its cutoff. Fewer windows come back for short data,
/// none when even the last window leaves too little to train on.
pub fn rolling_origin_windows(
    first: i64,
    last_end: i64,
    horizon: usize,
    max_windows: usize,
    min_train: usize,
) -> Vec<ForecastWindow> {
    let h = horizon.max(1) as i64;
    let mut out: Vec<ForecastWindow> = (1..=max_windows as i64)
        .map(|k| ForecastWindow { cutoff: last_end - k * h, end: last_end - (k - 1) * h })
        .take_while(|w| w.cutoff - first >= min_train as i64)
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tile_the_end_without_overlap() {
        let w = rolling_origin_windows(0, 100, 12, 3, 24);
        assert_eq!(
            w,
            vec![
                ForecastWindow { cutoff: 64, end: 76 },
                ForecastWindow { cutoff: 76, end: 88 },
                ForecastWindow { cutoff: 88, end: 100 },
            ]
        );
    }

    #[test]
    fn short_data_gets_fewer_windows() {
        assert_eq!(rolling_origin_windows(0, 40, 12, 3, 20).len(), 1);
        assert!(rolling_origin_windows(0, 20, 12, 3, 20).is_empty());
    }
}
