//! Gradient/hessian histograms per node, built in parallel over features (each feature's bins
//! are summed sequentially over its rows, so results do not depend on the thread count).

use rayon::prelude::*;

use super::binning::{BinColumn, BinnedData};

/// Sums over the rows that fall in one bin.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct HistBin {
    pub g: f64,
    pub h: f64,
    pub n: u32,
}

/// Below this many row-feature updates a histogram is built on the calling thread.
const PAR_MIN_WORK: usize = 16_384;

/// Histogram of the rows `rows` (whose gradients, in the same order, are `gh`) over the
/// features in `features`; bins of other features are left at zero.
pub(crate) fn build(data: &BinnedData, features: &[usize], rows: &[u32], gh: &[(f64, f64)]) -> Vec<HistBin> {
    let mut hist = vec![HistBin::default(); data.total_bins()];
    // Split the flat histogram into per-feature slices.
    let mut slices: Vec<(usize, &mut [HistBin])> = Vec::with_capacity(features.len());
    let mut rest: &mut [HistBin] = &mut hist;
    let mut consumed = 0usize;
    for &f in features {
        let (start, end) = (data.offsets[f], data.offsets[f + 1]);
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(start - consumed);
        let (mine, tail) = tail.split_at_mut(end - start);
        rest = tail;
        consumed = end;
        slices.push((f, mine));
    }
    let work = rows.len() * features.len();
    if work < PAR_MIN_WORK {
        for (f, slice) in slices {
            accumulate(&data.columns[f], rows, gh, slice);
        }
    } else {
        slices.into_par_iter().for_each(|(f, slice)| accumulate(&data.columns[f], rows, gh, slice));
    }
    hist
}

fn accumulate(column: &BinColumn, rows: &[u32], gh: &[(f64, f64)], out: &mut [HistBin]) {
    match column {
        BinColumn::U8(bins) => accumulate_typed(bins, rows, gh, out),
        BinColumn::U16(bins) => accumulate_typed(bins, rows, gh, out),
    }
}

#[inline]
fn accumulate_typed<T: Copy + Into<usize>>(bins: &[T], rows: &[u32], gh: &[(f64, f64)], out: &mut [HistBin]) {
    for (&r, &(g, h)) in rows.iter().zip(gh) {
        let b: usize = bins[r as usize].into();
        let cell = &mut out[b];
        cell.g += g;
        cell.h += h;
        cell.n += 1;
    }
}

/// `parent -= child`, bin by bin (the subtraction trick: sibling = parent - child).
pub(crate) fn subtract_in_place(parent: &mut [HistBin], child: &[HistBin]) {
    for (p, c) in parent.iter_mut().zip(child) {
        p.g -= c.g;
        p.h -= c.h;
        p.n -= c.n;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quarry_featurize::matrix::{FeatureColumn, FeatureKind, FeatureMatrix};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn subtraction_trick_matches_direct_build() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 3_000;
        let columns = (0..4)
            .map(|j| FeatureColumn {
                name: format!("f{j}"),
                source: format!("f{j}"),
                kind: if j == 3 { FeatureKind::Categorical { n_levels: 6 } } else { FeatureKind::Numeric },
                values: (0..n)
                    .map(|_| {
                        if rng.random::<f64>() < 0.1 {
                            f32::NAN
                        } else if j == 3 {
                            rng.random_range(0..6) as f32
                        } else {
                            rng.random::<f32>()
                        }
                    })
                    .collect(),
            })
            .collect();
        let x = FeatureMatrix { n_rows: n, columns };
        let data = BinnedData::build(&x, 32);
        let gh: Vec<(f64, f64)> = (0..n).map(|_| (rng.random::<f64>() - 0.5, rng.random::<f64>())).collect();
        let features: Vec<usize> = (0..4).collect();
        let all: Vec<u32> = (0..n as u32).collect();
        let (left, right): (Vec<u32>, Vec<u32>) = all.iter().partition(|&&r| r % 3 == 0);
        let pick = |rows: &[u32]| -> Vec<(f64, f64)> { rows.iter().map(|&r| gh[r as usize]).collect() };
        let mut parent = build(&data, &features, &all, &gh);
        let small = build(&data, &features, &left, &pick(&left));
        let direct = build(&data, &features, &right, &pick(&right));
        subtract_in_place(&mut parent, &small);
        assert_eq!(parent.len(), direct.len());
        let total_n: u32 = direct.iter().map(|b| b.n).sum();
        assert_eq!(total_n as usize, right.len() * 4);
        for (a, b) in parent.iter().zip(&direct) {
            assert_eq!(a.n, b.n);
            assert!((a.g - b.g).abs() < 1e-9, "{a:?} vs {b:?}");
            assert!((a.h - b.h).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }
}
