#![allow(clippy::unwrap_used, clippy::type_complexity)]

use std::path::PathBuf;

use proptest::prelude::*;
use quarry_featurize::{FeatureMatrix, Featurizer, Metric, TargetEncoder, Task, load_table};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::fast_tree_shap::{FastTree, MAX_TABLE_SLOTS, RowValues};
use super::tree_shap::{PathElem, ShapTree};
use super::*;
use crate::family::{Family, check_params, fit};
use crate::gbdt::binning::FeatureInfo;
use crate::gbdt::tree::{Node, Tree};
use crate::params::ParamMap;
use crate::pipeline::Member;

/// A random tree over `n_features` numeric features, nodes in breadth-first order (children
/// after parents), integer covers that add up, some splits sending missing values left.
fn random_tree(rng: &mut ChaCha8Rng, n_features: usize, max_depth: usize) -> Tree {
    random_mixed_tree(rng, &vec![FeatureInfo::Numeric; n_features], max_depth)
}

/// [`random_tree`] over features of the given kinds: categorical splits send a random set of
/// bins (the missing and "other" bins included) left.
fn random_mixed_tree(rng: &mut ChaCha8Rng, infos: &[FeatureInfo], max_depth: usize) -> Tree {
    let mut nodes = vec![Node::leaf(0.0)];
    let mut cat_bits = Vec::new();
    let mut depth = vec![0usize];
    let mut i = 0;
    while i < nodes.len() {
        let split = depth[i] < max_depth && (depth[i] == 0 || rng.random::<f64>() < 0.75);
        if split {
            let l = nodes.len() as u32;
            nodes.push(Node::leaf(0.0));
            nodes.push(Node::leaf(0.0));
            depth.push(depth[i] + 1);
            depth.push(depth[i] + 1);
            let f = rng.random_range(0..infos.len());
            let nd = &mut nodes[i];
            nd.feature = f as u32;
            nd.threshold = rng.random_range(-1.0..1.0);
            nd.default_left = rng.random::<bool>();
            nd.left = l;
            nd.right = l + 1;
            if let FeatureInfo::Categorical { .. } = infos[f] {
                nd.cat_start = cat_bits.len() as u32;
                nd.cat_words = 1;
                cat_bits.push(rng.random::<u32>());
            }
        } else {
            nodes[i].value = rng.random_range(-2.0..2.0);
            nodes[i].cover = rng.random_range(1..40);
        }
        i += 1;
    }
    for i in (0..nodes.len()).rev() {
        if !nodes[i].is_leaf() {
            nodes[i].cover = nodes[nodes[i].left as usize].cover + nodes[nodes[i].right as usize].cover;
        }
    }
    Tree { nodes, cat_bits }
}

/// A random row: numeric values around the thresholds, category codes past the direct and
/// known levels and negative, about 15% missing, now and then `+inf`.
fn random_row(rng: &mut ChaCha8Rng, infos: &[FeatureInfo]) -> Vec<f32> {
    infos
        .iter()
        .map(|info| {
            if rng.random::<f64>() < 0.15 {
                return f32::NAN;
            }
            match info {
                FeatureInfo::Numeric if rng.random::<f64>() < 0.03 => f32::INFINITY,
                FeatureInfo::Numeric => rng.random_range(-1.2..1.2),
                FeatureInfo::Categorical { .. } => rng.random_range(-1..9) as f32,
            }
        })
        .collect()
}

/// Shapley values of one tree on one row by the table engine (`None` if the tree is too
/// deep for tables).
fn fast_values(st: &ShapTree, infos: &[FeatureInfo], x: &[f32], n_players: usize) -> Option<Vec<f64>> {
    let mut ft = FastTree::new(st, x.len())?;
    ft.fill_tables();
    let cols = x
        .iter()
        .enumerate()
        .map(|(j, &v)| quarry_featurize::FeatureColumn {
            name: format!("f{j}"),
            source: format!("f{j}"),
            kind: quarry_featurize::FeatureKind::Numeric,
            values: vec![v],
        })
        .collect();
    let mut rv = RowValues::new();
    rv.load(&FeatureMatrix { n_rows: 1, columns: cols }, infos, 0..1);
    let (xv, bins) = rv.row(0);
    let mut phi = vec![0.0; n_players];
    ft.explain_row(xv, bins, &mut phi, &mut Vec::new());
    Some(phi)
}

/// `E[f(x) | x_S]` by the tree's path weights: players in `s` follow `x`, others split by cover.
fn cond_expectation(
    t: &Tree,
    infos: &[FeatureInfo],
    player_of: &[u32],
    x: &[f32],
    s: u32,
    node: usize,
) -> f64 {
    let nd = &t.nodes[node];
    if nd.is_leaf() {
        return nd.value;
    }
    let f = nd.feature as usize;
    if s >> player_of[f] & 1 == 1 {
        let next = if t.goes_left(nd, x[f], &infos[f]) { nd.left } else { nd.right };
        return cond_expectation(t, infos, player_of, x, s, next as usize);
    }
    let (l, r) = (nd.left as usize, nd.right as usize);
    let c = f64::from(nd.cover);
    f64::from(t.nodes[l].cover) / c * cond_expectation(t, infos, player_of, x, s, l)
        + f64::from(t.nodes[r].cover) / c * cond_expectation(t, infos, player_of, x, s, r)
}

fn factorial(n: usize) -> f64 {
    (1..=n).map(|v| v as f64).product()
}

/// Shapley values by enumerating every coalition of `m` players.
fn brute_force(t: &Tree, infos: &[FeatureInfo], player_of: &[u32], m: usize, x: &[f32]) -> Vec<f64> {
    let v: Vec<f64> = (0..1u32 << m).map(|s| cond_expectation(t, infos, player_of, x, s, 0)).collect();
    (0..m)
        .map(|i| {
            (0..1u32 << m)
                .filter(|s| s >> i & 1 == 0)
                .map(|s| {
                    let k = s.count_ones() as usize;
                    factorial(k) * factorial(m - k - 1) / factorial(m)
                        * (v[(s | 1 << i) as usize] - v[s as usize])
                })
                .sum()
        })
        .collect()
}

fn check_tree(
    seed: u64,
    n_features: usize,
    max_depth: usize,
    n_players: usize,
) -> std::result::Result<(), TestCaseError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tree = random_tree(&mut rng, n_features, max_depth);
    let infos = vec![FeatureInfo::Numeric; n_features];
    let player_of: Vec<u32> = (0..n_features).map(|f| (f % n_players) as u32).collect();
    let st = ShapTree::new(&tree, &infos, &player_of, None);
    let mut buf: Vec<PathElem> = Vec::new();
    for _ in 0..4 {
        let x: Vec<f32> = (0..n_features)
            .map(|_| if rng.random::<f64>() < 0.15 { f32::NAN } else { rng.random_range(-1.2..1.2) })
            .collect();
        let mut phi = vec![0.0; n_players];
        st.explain_row(&x, &infos, &mut phi, &mut buf);
        let want = brute_force(&tree, &infos, &player_of, n_players, &x);
        for (a, b) in phi.iter().zip(&want) {
            prop_assert!((a - b).abs() < 1e-9, "tree shap {phi:?} vs brute force {want:?}");
        }
        let fast = fast_values(&st, &infos, &x, n_players).unwrap();
        for (a, b) in fast.iter().zip(&want) {
            prop_assert!((a - b).abs() < 1e-9, "table tree shap {fast:?} vs brute force {want:?}");
        }
        let fx = cond_expectation(&tree, &infos, &player_of, &x, (1u32 << n_players) - 1, 0);
        prop_assert!((st.expected + phi.iter().sum::<f64>() - fx).abs() < 1e-9);
        prop_assert!((st.expected - cond_expectation(&tree, &infos, &player_of, &x, 0, 0)).abs() < 1e-9);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn tree_shap_equals_brute_force_shapley(seed in any::<u64>(), n_features in 1usize..=8, depth in 1usize..=7) {
        check_tree(seed, n_features, depth, n_features)?;
    }

    /// Features sharing a raw column are one player: the exact Shapley value of the column.
    #[test]
    fn grouped_tree_shap_equals_brute_force_over_columns(seed in any::<u64>(), n_features in 2usize..=8, groups in 1usize..=4) {
        check_tree(seed, n_features, 6, groups.min(n_features))?;
    }
}

/// Table TreeSHAP against Algorithm 2 on trees with categorical splits, missing values and
/// repeated features, up to the depth where tables give way to Algorithm 2.
fn check_fast_equals_paths(
    seed: u64,
    n_features: usize,
    max_depth: usize,
) -> std::result::Result<(), TestCaseError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let infos: Vec<FeatureInfo> = (0..n_features)
        .map(|_| {
            if rng.random::<bool>() {
                FeatureInfo::Categorical { n_levels: 7, n_direct: rng.random_range(2..=7) }
            } else {
                FeatureInfo::Numeric
            }
        })
        .collect();
    let tree = random_mixed_tree(&mut rng, &infos, max_depth);
    let n_players = rng.random_range(1..=n_features);
    let player_of: Vec<u32> = (0..n_features).map(|f| (f % n_players) as u32).collect();
    let st = ShapTree::new(&tree, &infos, &player_of, None);
    let mut buf: Vec<PathElem> = Vec::new();
    for _ in 0..6 {
        let x = random_row(&mut rng, &infos);
        let mut want = vec![0.0; n_players];
        st.explain_row(&x, &infos, &mut want, &mut buf);
        let Some(got) = fast_values(&st, &infos, &x, n_players) else {
            prop_assert!(max_depth > MAX_TABLE_SLOTS, "no tables for a depth-{max_depth} tree");
            continue;
        };
        for (a, b) in got.iter().zip(&want) {
            prop_assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "tables {got:?} vs Algorithm 2 {want:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn table_tree_shap_equals_algorithm_2(seed in any::<u64>(), n_features in 1usize..=16, depth in 1usize..=10) {
        check_fast_equals_paths(seed, n_features, depth)?;
    }
}

/// A boosted model large enough for table TreeSHAP, explained by a whole ensemble call: the
/// same values as Algorithm 2 tree by tree, and bit for bit the same on 1 and 3 threads.
#[test]
fn ensemble_tree_shap_matches_algorithm_2_and_ignores_threads() {
    let (p, x) = pipeline_for(
        "credit_data",
        "Status",
        &[(Family::Gbdt, &[("n_estimators", "20"), ("num_leaves", "40"), ("min_child_samples", "3")], 1.0)],
    );
    let FittedModel::Trees(m) = &p.members[0].model else { panic!("not a tree model") };
    let xs = x.select_rows(&(0..300.min(x.n_rows)).collect::<Vec<_>>());
    let columns: Vec<String> = p.featurizer.used_columns().map(|c| c.name.clone()).collect();
    let player_of = players_of(&xs, &columns).unwrap();
    let np = columns.len();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| tree_contributions(m, &xs, &player_of, np, None))
    };
    let one = run(1);
    let three = run(3);
    assert_eq!(one.phi, three.phi);
    let infos = m.feature_infos();
    let trees: Vec<ShapTree> = m.trees().iter().map(|t| ShapTree::new(t, infos, &player_of, None)).collect();
    let fast = trees.iter().filter(|st| FastTree::new(st, xs.columns.len()).is_some()).count();
    assert_eq!(fast, trees.len(), "every tree should take the table path");
    let mut buf = Vec::new();
    for r in 0..xs.n_rows {
        let row: Vec<f32> = xs.columns.iter().map(|c| c.values[r]).collect();
        let mut want = vec![0.0; np];
        for st in &trees {
            st.explain_row(&row, infos, &mut want, &mut buf);
        }
        for (a, b) in one.phi[r * np..(r + 1) * np].iter().zip(&want) {
            assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "row {r}: {a} vs {b}");
        }
    }
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/data").join(name).join("train.csv")
}

fn pipeline_for(
    data: &str,
    target: &str,
    members: &[(Family, &[(&str, &str)], f64)],
) -> (Pipeline, FeatureMatrix) {
    let table = load_table(&example(data)).unwrap().table;
    let encoder = TargetEncoder::fit(&table, target, None).unwrap();
    let (y, kept) = encoder.encode(&table).unwrap();
    let table = table.select_rows(&kept);
    let featurizer = Featurizer::fit(&table, &[target]).unwrap();
    let x = featurizer.transform(&table).unwrap();
    let task = encoder.task;
    let built: Vec<Member> = members
        .iter()
        .enumerate()
        .map(|(i, (family, params, weight))| {
            let params: ParamMap = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let spec = check_params(*family, &params).unwrap();
            let model = fit(&spec, &x, &y, task, None, i as u64, &mut |_, _| true).unwrap();
            Member { weight: *weight, family: *family, params, model }
        })
        .collect();
    (Pipeline::new(task, Metric::parse(task.default_metric().name()).unwrap(), featurizer, encoder, built), x)
}

/// Explains up to `n` rows and checks additivity and that the output is the prediction.
fn check_additivity(p: &Pipeline, x: &FeatureMatrix, n: usize) -> Explanation {
    let rows = sample_rows(x.n_rows, n, 1);
    let xs = x.select_rows(&rows);
    let bg = x.select_rows(&sample_rows(x.n_rows, BACKGROUND_ROWS, 2));
    let e = explain(p, &xs, &bg, &ExplainOptions::default()).unwrap();
    assert_eq!(e.n_rows, xs.n_rows);
    let err = e.max_additivity_error();
    assert!(err < 1e-6, "{:?}: additivity error {err}", e.methods);
    let pred = p.predict_features(&xs).unwrap();
    let k = e.n_outputs();
    for r in 0..xs.n_rows {
        let got = &e.output[r * k..(r + 1) * k];
        let want: Vec<f64> = match (&pred, e.space) {
            (Predictions::Values(v), _) => vec![v[r]],
            (Predictions::Probabilities { n_classes, values }, space) => {
                let probs = &values[r * n_classes..(r + 1) * n_classes];
                let from_output = match space {
                    OutputSpace::LogOdds => vec![sigmoid(got[0])],
                    OutputSpace::Margin => softmax(got),
                    _ => got.to_vec(),
                };
                // Binary explains the positive class only.
                let probs = if *n_classes == 2 { vec![probs[1]] } else { probs.to_vec() };
                assert!(
                    from_output.iter().zip(&probs).all(|(a, b)| (a - b).abs() < 1e-6),
                    "row {r}: {from_output:?} vs predicted {probs:?}"
                );
                continue;
            }
        };
        assert!((got[0] - want[0]).abs() < 1e-6 * (1.0 + want[0].abs()), "row {r}: {got:?} vs {want:?}");
    }
    e
}

const GBDT: &[(&str, &str)] = &[("n_estimators", "30"), ("num_leaves", "15"), ("min_child_samples", "5")];
const FOREST: &[(&str, &str)] = &[("n_estimators", "20")];

#[test]
fn every_family_is_additive_on_penguins() {
    for family in Family::ALL {
        let params = match family {
            Family::Gbdt => GBDT,
            Family::RandomForest | Family::ExtraTrees => FOREST,
            _ => &[],
        };
        let (p, x) = pipeline_for("penguins", "species", &[(family, params, 1.0)]);
        let e = check_additivity(&p, &x, 40);
        let want = match family {
            Family::Gbdt | Family::Linear => OutputSpace::Margin,
            _ => OutputSpace::Probability,
        };
        assert_eq!(e.space, want, "{family}");
        assert_eq!(e.columns.len(), 7, "{:?}", e.columns);
        assert_eq!(e.n_outputs(), 3);
    }
}

#[test]
fn every_family_is_additive_on_credit_data() {
    for family in Family::ALL {
        let params = match family {
            Family::Gbdt => GBDT,
            Family::RandomForest | Family::ExtraTrees => FOREST,
            Family::Mlp => &[("epochs", "20"), ("hidden", "16")],
            _ => &[],
        };
        let (p, x) = pipeline_for("credit_data", "Status", &[(family, params, 1.0)]);
        let kernel_shap = matches!(family, Family::Knn | Family::NaiveBayes | Family::Mlp | Family::Svm);
        let n = if kernel_shap { 8 } else { 200 };
        let e = check_additivity(&p, &x, n);
        assert_eq!(e.n_outputs(), 1);
        let want = if matches!(family, Family::Gbdt | Family::Linear) {
            OutputSpace::LogOdds
        } else {
            OutputSpace::Probability
        };
        assert_eq!(e.space, want, "{family}");
        // 13 columns: sampled KernelSHAP states an error.
        if let Some(k) = &e.kernel {
            assert!(!k.exact && k.std_error.is_finite(), "{k:?}");
        }
    }
}

#[test]
fn regression_families_are_additive_on_cars() {
    for family in [Family::Gbdt, Family::RandomForest, Family::ExtraTrees, Family::Linear, Family::Knn] {
        let params = match family {
            Family::Gbdt => GBDT,
            Family::RandomForest | Family::ExtraTrees => FOREST,
            _ => &[],
        };
        let (p, x) = pipeline_for("cars", "Miles_per_Gallon", &[(family, params, 1.0)]);
        let e = check_additivity(&p, &x, 60);
        assert_eq!(e.space, OutputSpace::Value);
        // Year is a datetime: its calendar parts add up to one column.
        assert!(e.columns.iter().any(|c| c == "Year"), "{:?}", e.columns);
        assert!(e.kernel.as_ref().is_none_or(|k| k.exact), "{:?}", e.kernel);
    }
}

#[test]
fn ensembles_are_the_weighted_sum_of_their_members() {
    let members: &[(Family, &[(&str, &str)], f64)] = &[
        (Family::Gbdt, GBDT, 0.5),
        (Family::Gbdt, GBDT, 0.5),
        (Family::RandomForest, FOREST, 1.0),
        (Family::Linear, &[], 0.5),
        (Family::NaiveBayes, &[], 0.5),
    ];
    let (p, x) = pipeline_for("penguins", "species", members);
    let e = check_additivity(&p, &x, 30);
    assert_eq!(e.space, OutputSpace::Probability);
    assert!(e.methods.len() >= 3, "{:?}", e.methods);
    // The same by hand: each member alone, weighted.
    let rows = sample_rows(x.n_rows, 30, 1);
    let xs = x.select_rows(&rows);
    let bg = x.select_rows(&sample_rows(x.n_rows, BACKGROUND_ROWS, 2));
    let total: f64 = members.iter().map(|m| m.2).sum();
    let mut sum = vec![0.0; e.phi.len()];
    for (i, m) in p.members.iter().enumerate() {
        let alone = Pipeline { members: vec![Member { weight: 1.0, ..m.clone() }], ..p.clone() };
        let mut alone_e =
            explain(&alone, &xs, &bg, &ExplainOptions { seed: i as u64, ..Default::default() }).unwrap();
        if alone_e.space == OutputSpace::Margin {
            let c = Contributions {
                n_outputs: 3,
                n_players: alone_e.columns.len(),
                expected: alone_e.expected.clone(),
                phi: alone_e.phi.clone(),
                output: alone_e.output.clone(),
            };
            alone_e.phi = margin_to_probability(c).phi;
        }
        sum.iter_mut().zip(&alone_e.phi).for_each(|(s, v)| *s += m.weight / total * v);
    }
    for (a, b) in sum.iter().zip(&e.phi) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    // Regression ensemble (a bag of boosters and a forest) stays in raw value.
    let (p, x) = pipeline_for(
        "cars",
        "Miles_per_Gallon",
        &[(Family::Gbdt, GBDT, 0.3), (Family::Gbdt, GBDT, 0.3), (Family::ExtraTrees, FOREST, 0.4)],
    );
    assert_eq!(check_additivity(&p, &x, 50).space, OutputSpace::Value);
}

#[test]
fn binary_negative_class_mirrors_the_positive() {
    let (p, x) = pipeline_for("credit_data", "Status", &[(Family::Gbdt, GBDT, 1.0)]);
    let xs = x.select_rows(&[0, 1, 2]);
    let e = explain(&p, &xs, &xs, &ExplainOptions::default()).unwrap();
    let classes = &p.target.classes;
    let pos = e.select(None, classes).unwrap();
    let neg = e.select(Some(&classes[0]), classes).unwrap();
    assert_eq!(pos.name, classes[1]);
    assert_eq!(neg.expected, -pos.expected);
    assert_eq!(neg.phi[0], -pos.phi[0]);
    assert!(e.select(Some("nope"), classes).is_err());
}

#[test]
fn permutation_importance_finds_the_signal() {
    let (p, x) = pipeline_for("penguins", "species", &[(Family::Gbdt, GBDT, 1.0)]);
    let table = load_table(&example("penguins")).unwrap().table;
    let (y, _) = p.target.encode(&table).unwrap();
    let (base, imp) = permutation_importance(&p, &x, &y, 2, 0).unwrap();
    assert!(base < 0.2, "training log loss {base}");
    let cols: Vec<&str> = p.featurizer.used_columns().map(|c| c.name.as_str()).collect();
    let best = imp.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert!(
        ["bill_length_mm", "flipper_length_mm", "bill_depth_mm", "island"].contains(&cols[best]),
        "{cols:?} {imp:?}"
    );
    // `year` carries no signal about the species.
    let year = cols.iter().position(|c| *c == "year").unwrap();
    assert!(imp[year] < imp[best] / 5.0, "{imp:?}");
}

#[test]
fn trees_saved_without_covers_still_explain_additively() {
    let (mut p, x) = pipeline_for("cars", "Miles_per_Gallon", &[(Family::Gbdt, GBDT, 1.0)]);
    let json = serde_json::to_string(&p.members[0].model).unwrap();
    assert!(json.contains("\"cover\""));
    // An older bundle: no cover arrays.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for t in v["trees"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("cover");
    }
    p.members[0].model = serde_json::from_value(v).unwrap();
    check_additivity(&p, &x, 30);
    assert_eq!(p.task, Task::Regression);
}
