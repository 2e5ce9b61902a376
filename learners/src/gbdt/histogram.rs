//! Gradient/hessian histograms per node. Row-major ("dense") features are accumulated
//! row by row, all of a task's features per row; wide (`u16`) features column by column.
//! Every bin is summed over the node's rows in row order, however the features are split
//! into parallel tasks, so results do not depend on the thread count.

use rayon::prelude::*;

use super::binning::{BinnedData, Layout};

/// Sums over the rows that fall in one bin.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct HistBin {
    pub g: f64,
    pub h: f64,
    pub n: u32,
}

/// Below this many row-feature updates a histogram is built on the calling thread.
const PAR_MIN_WORK: usize = 32_768;

/// One unit of (possibly parallel) work: some features' histogram slices.
struct Task<'a> {
    /// Dense features: (byte slot in a row, offset of its bins in `out`).
    dense: Vec<(usize, usize)>,
    /// Wide features: (column, offset in `out`).
    wide: Vec<(&'a [u16], usize)>,
    out: &'a mut [HistBin],
}

/// Histogram of the rows `rows` (whose gradients, in the same order, are `gh`) over the
/// features in `features` (ascending); bins of other features are left at zero.
pub(crate) fn build(data: &BinnedData, features: &[usize], rows: &[u32], gh: &[(f64, f64)]) -> Vec<HistBin> {
    let mut hist = Vec::new();
    build_into(data, features, rows, gh, false, &mut hist);
    hist
}

/// [`build`] into a recycled buffer (cleared and resized here). With `unit_hess` (every
/// hessian is exactly 1: regression, random forest, extra trees) row counts are not
/// accumulated but read off the hessian sums, which are then exact integers.
pub(crate) fn build_into(
    data: &BinnedData,
    features: &[usize],
    rows: &[u32],
    gh: &[(f64, f64)],
    unit_hess: bool,
    hist: &mut Vec<HistBin>,
) {
    hist.clear();
    hist.resize(data.total_bins(), HistBin::default());
    if features.is_empty() || rows.is_empty() {
        return;
    }
    let threads = rayon::current_num_threads();
    let work = rows.len() * features.len();
    let n_tasks = if work < PAR_MIN_WORK || threads == 1 { 1 } else { threads.min(features.len()) };
    // Consecutive runs of features, each owning the histogram range its features span.
    let mut tasks: Vec<Task> = Vec::with_capacity(n_tasks);
    let mut rest: &mut [HistBin] = hist;
    let mut consumed = 0usize;
    for group in features.chunks(features.len().div_ceil(n_tasks)) {
        let (first, last) = (group[0], group[group.len() - 1]);
        let (start, end) = (data.offsets[first], data.offsets[last + 1]);
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(start - consumed);
        let (mine, tail) = tail.split_at_mut(end - start);
        rest = tail;
        consumed = end;
        let mut task = Task { dense: Vec::new(), wide: Vec::new(), out: mine };
        for &f in group {
            let off = data.offsets[f] - start;
            match &data.layout[f] {
                Layout::Dense(slot) => task.dense.push((*slot, off)),
                Layout::Wide(col) => task.wide.push((col, off)),
            }
        }
        tasks.push(task);
    }
    let run = if unit_hess { run::<false> } else { run::<true> };
    if tasks.len() == 1 {
        for task in tasks {
            run(data, task, rows, gh);
        }
    } else {
        tasks.into_par_iter().for_each(|task| run(data, task, rows, gh));
    }
    if unit_hess {
        for cell in hist.iter_mut() {
            cell.n = cell.h as u32;
        }
    }
}

#[inline(always)]
fn add<const COUNT: bool>(cell: &mut HistBin, g: f64, h: f64) {
    cell.g += g;
    cell.h += h;
    if COUNT {
        cell.n += 1;
    }
}

fn run<const COUNT: bool>(data: &BinnedData, task: Task, rows: &[u32], gh: &[(f64, f64)]) {
    let Task { dense, wide, out } = task;
    if !dense.is_empty() {
        accumulate_dense::<COUNT>(&data.dense, data.width, &dense, rows, gh, out);
    }
    for (col, off) in wide {
        for (&r, &(g, h)) in rows.iter().zip(gh) {
            add::<COUNT>(&mut out[off + usize::from(col[r as usize])], g, h);
        }
    }
}

#[inline]
fn accumulate_dense<const COUNT: bool>(
    bins: &[u8],
    width: usize,
    feats: &[(usize, usize)],
    rows: &[u32],
    gh: &[(f64, f64)],
    out: &mut [HistBin],
) {
    let contiguous = feats.windows(2).all(|w| w[1].0 == w[0].0 + 1);
    if contiguous {
        // The common case (no feature sampling): the task's bytes are one run of each row.
        let s0 = feats[0].0;
        let offs: Vec<usize> = feats.iter().map(|&(_, o)| o).collect();
        for (&r, &(g, h)) in rows.iter().zip(gh) {
            let at = r as usize * width + s0;
            let row = &bins[at..at + offs.len()];
            for (&b, &off) in row.iter().zip(&offs) {
                add::<COUNT>(&mut out[off + usize::from(b)], g, h);
            }
        }
    } else {
        for (&r, &(g, h)) in rows.iter().zip(gh) {
            let row = &bins[r as usize * width..(r as usize + 1) * width];
            for &(slot, off) in feats {
                add::<COUNT>(&mut out[off + usize::from(row[slot])], g, h);
            }
        }
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
