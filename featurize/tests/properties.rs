//! Property tests of the fit/transform round trip on random small tables.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use quarry_featurize::{
    ColumnTransform, FeatureKind, FeatureMatrix, FeaturizeError, Featurizer, RawColumn, RawValues, StrColumn,
    Table, Target,
};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Numeric,
    Categorical,
    Datetime,
    Words,
}

fn cell(kind: Kind) -> BoxedStrategy<Option<String>> {
    let value: BoxedStrategy<String> = match kind {
        Kind::Numeric => prop_oneof![
            (-1e6..1e6f64).prop_map(|x| format!("{x}")),
            (-5i32..5).prop_map(|x| x.to_string()),
            Just("inf".to_string()),
        ]
        .boxed(),
        Kind::Categorical => {
            prop::sample::select(vec!["a", "b", "c", "dd", "e e", "Ω"]).prop_map(str::to_string).boxed()
        }
        Kind::Datetime => (1990i32..2030, 1u32..=12, 1u32..=28, prop::option::of((0u32..24, 0u32..60)))
            .prop_map(|(y, m, d, t)| match t {
                Some((h, mi)) => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:00"),
                None => format!("{y:04}-{m:02}-{d:02}"),
            })
            .boxed(),
        Kind::Words => prop::collection::vec(
            prop::sample::select(vec![
                "red", "green", "apple", "Pie", "with", "cream", "and", "more", "words",
            ]),
            4..9,
        )
        .prop_map(|w| w.join(" "))
        .boxed(),
    };
    // About one cell in five missing, as an empty cell or a pandas marker.
    prop_oneof![
        4 => value.prop_map(Some),
        1 => prop::sample::select(vec!["", "NA", "null"]).prop_map(|s| Some(s.to_string())),
    ]
    .boxed()
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Numeric), Just(Kind::Categorical), Just(Kind::Datetime), Just(Kind::Words)]
}

/// A table of 1..=40 rows and 1..=5 text columns (as a CSV would load), plus a target `y`.
fn table() -> impl Strategy<Value = Table> {
    (1usize..=40, prop::collection::vec(kind(), 1..=5)).prop_flat_map(|(n, kinds)| {
        let cols: Vec<BoxedStrategy<Vec<Option<String>>>> =
            kinds.iter().map(|&k| prop::collection::vec(cell(k), n).boxed()).collect();
        (cols, prop::collection::vec(prop::sample::select(vec!["0", "1"]), n)).prop_map(move |(cols, y)| {
            let mut columns: Vec<RawColumn> = cols
                .into_iter()
                .enumerate()
                .map(|(j, cells)| {
                    let mut c = StrColumn::new();
                    for v in &cells {
                        c.push(v.as_deref());
                    }
                    RawColumn { name: format!("c{j}"), values: RawValues::Text(c) }
                })
                .collect();
            let mut c = StrColumn::new();
            for v in &y {
                c.push(Some(v));
            }
            columns.push(RawColumn { name: "y".to_string(), values: RawValues::Text(c) });
            Table { n_rows: n, columns }
        })
    })
}

/// Fits, accepting only "no usable features" (every random column constant) as failure.
fn fit(t: &Table) -> Option<Featurizer> {
    match Featurizer::fit(t, &["y"]) {
        Ok(f) => Some(f),
        Err(FeaturizeError::NoFeatures { .. }) => None,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Values compared bit for bit, so NaN equals NaN.
fn bits(m: &FeatureMatrix) -> Vec<(String, Vec<u32>)> {
    m.columns.iter().map(|c| (c.name.clone(), c.values.iter().map(|v| v.to_bits()).collect())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn transform_has_one_value_per_row_and_feature(t in table()) {
        let Some(f) = fit(&t) else { return Ok(()) };
        let m = f.transform(&t).unwrap();
        prop_assert_eq!(m.n_rows, t.n_rows);
        prop_assert!(m.n_features() > 0);
        for c in &m.columns {
            prop_assert_eq!(c.values.len(), t.n_rows, "feature {}", &c.name);
            prop_assert!(f.used_columns().any(|u| u.name == c.source));
            match c.kind {
                FeatureKind::Categorical { n_levels } => {
                    for v in &c.values {
                        prop_assert!(v.is_nan() || (*v >= 0.0 && v.fract() == 0.0 && (*v as u32) < n_levels),
                            "feature {} code {} not in 0..{}", &c.name, v, n_levels);
                    }
                }
                FeatureKind::Numeric => prop_assert!(c.values.iter().all(|v| !v.is_infinite())),
            }
        }
    }

    #[test]
    fn fitting_is_deterministic_and_survives_json(t in table()) {
        let Some(a) = fit(&t) else { return Ok(()) };
        let b = fit(&t).unwrap();
        prop_assert_eq!(&a, &b);
        let back: Featurizer = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        prop_assert_eq!(bits(&back.transform(&t).unwrap()), bits(&a.transform(&t).unwrap()));
    }

    #[test]
    fn rows_are_independent_and_order_free(t in table(), seed in any::<u64>()) {
        let Some(f) = fit(&t) else { return Ok(()) };
        // A seeded Fisher–Yates permutation of the rows.
        let mut perm: Vec<usize> = (0..t.n_rows).collect();
        let mut s = seed | 1;
        for i in (1..perm.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            perm.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let shuffled = t.select_rows(&perm);
        // Transforming shuffled rows shuffles the features the same way...
        let whole = f.transform(&t).unwrap();
        prop_assert_eq!(bits(&f.transform(&shuffled).unwrap()), bits(&whole.select_rows(&perm)));
        // ...and fitting does not depend on row order.
        let refit = fit(&shuffled);
        prop_assert_eq!(refit.as_ref(), Some(&f));
        // One row alone gets the features it gets inside the table.
        let last = t.n_rows - 1;
        prop_assert_eq!(bits(&f.transform(&t.select_rows(&[last])).unwrap()), bits(&whole.select_rows(&[last])));
    }
}

/// 1200..=1600 rows of a `shop` column drawn from 300..900 levels (so more than the 254
/// native codes hold, yet each level repeats, so the column is not ID-like), some missing, and
/// a binary or 3-class target.
fn high_cardinality_table() -> impl Strategy<Value = (Table, Target)> {
    (1200usize..=1600, 300u32..900, 2u32..=3).prop_flat_map(|(n, n_levels, n_classes)| {
        let shop = prop::collection::vec(prop::option::weighted(0.95, 0..n_levels), n);
        let y = prop::collection::vec(0..n_classes, n);
        (shop, y).prop_map(move |(shop, y)| {
            let mut c = StrColumn::new();
            for s in &shop {
                c.push(s.map(|s| format!("s{s}")).as_deref());
            }
            let table = Table {
                n_rows: n,
                columns: vec![RawColumn { name: "shop".into(), values: RawValues::Text(c) }],
            };
            let classes = (0..n_classes).map(|k| format!("c{k}")).collect();
            (table, Target::Classes { classes, codes: y })
        })
    })
}

fn column<'a>(m: &'a FeatureMatrix, name: &str) -> Option<&'a [f32]> {
    m.columns.iter().find(|c| c.name == name).map(|c| c.values.as_slice())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn target_and_frequency_encodings_round_trip(case in high_cardinality_table()) {
        let (t, y) = case;
        let mut f = Featurizer::fit(&t, &[]).unwrap();
        let ColumnTransform::HighCardinality(_) = &f.columns[0].transform else {
            // Few distinct levels drawn: plain codes, covered above.
            return Ok(());
        };
        let enc = f.fit_target(&t, &y).unwrap();
        let width = if y.n_classes() == 2 { 1 } else { y.n_classes() };
        prop_assert_eq!(enc.feature_names().count(), width);
        let m = f.transform(&t).unwrap();
        // JSON round trip: the same features, bit for bit.
        let back: Featurizer = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        prop_assert_eq!(&back, &f);
        prop_assert_eq!(bits(&back.transform(&t).unwrap()), bits(&m));
        // Means of 0/1 indicators stay in [0, 1]; frequencies too; a missing cell is NaN.
        for name in enc.feature_names().chain(["shop__freq"]) {
            let v = column(&m, name).unwrap();
            for (i, x) in v.iter().enumerate() {
                if t.columns[0].values.is_missing(i) {
                    prop_assert!(x.is_nan());
                } else {
                    prop_assert!((0.0..=1.0).contains(x), "{} = {}", name, x);
                }
            }
        }
        // Unseen levels get the prior and frequency 0, and the "other" code.
        let mut c = StrColumn::new();
        c.push(Some("never seen"));
        let unseen = Table { n_rows: 1, columns: vec![RawColumn { name: "shop".into(), values: RawValues::Text(c) }] };
        let u = f.transform(&unseen).unwrap();
        prop_assert_eq!(column(&u, "shop__freq").unwrap(), &[0.0][..]);
        let ColumnTransform::HighCardinality(level) = &f.columns[0].transform else { unreachable!() };
        for (k, name) in enc.feature_names().enumerate() {
            prop_assert_eq!(column(&u, name).unwrap()[0], level.prior[k]);
        }
        if let Some(code) = column(&u, "shop") {
            prop_assert_eq!(code[0], level.n_codes as f32);
        }
        // Cross-fitted values never read a row's own label: flipping row 0's class leaves
        // row 0's value unchanged.
        let mut cross = m.clone();
        enc.cross_fit_into(&mut cross, &y);
        let Target::Classes { classes, codes } = &y else { unreachable!() };
        let mut flipped = codes.clone();
        flipped[0] = (flipped[0] + 1) % classes.len() as u32;
        let flipped = Target::Classes { classes: classes.clone(), codes: flipped };
        let mut cross_flipped = m.clone();
        enc.cross_fit_into(&mut cross_flipped, &flipped);
        for name in enc.feature_names() {
            let (a, b) = (column(&cross, name).unwrap()[0], column(&cross_flipped, name).unwrap()[0]);
            prop_assert!(a.to_bits() == b.to_bits(), "{}: {} vs {}", name, a, b);
        }
    }
}
