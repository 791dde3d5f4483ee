//! N:M and block masks: hand-computed cases with ties, errors, and the invariants by property.

use burn::module::ParamId;
use burn_sparse_mask::{
    LayerScores, MaskError, ParamInfo, Scope, Sparsity, SparsityDistribution, Structure,
    has_structure, structured_masks,
};
use proptest::prelude::*;

fn param(path: &str, shape: &[usize]) -> ParamInfo {
    ParamInfo {
        path: path.into(),
        id: ParamId::new(),
        shape: shape.to_vec(),
        trainable: true,
        module: "Linear".into(),
    }
}

fn ones(m: &[bool]) -> Vec<usize> {
    (0..m.len()).filter(|&i| m[i]).collect()
}

/// A `Linear` weight `[8, 2]` given by columns: flat index `row * 2 + col`.
fn linear_8x2() -> LayerScores {
    let col0 = [0.1f32, 0.9, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3];
    let col1 = [1.0f32, 2.0, 3.0, 4.0, 4.0, 3.0, 2.0, 1.0];
    let mut scores = vec![0.0; 16];
    for r in 0..8 {
        scores[r * 2] = col0[r];
        scores[r * 2 + 1] = col1[r];
    }
    LayerScores {
        param: param("fc.weight", &[8, 2]),
        scores,
    }
}

#[test]
fn two_by_four_and_one_by_four_by_hand() {
    // Groups run down each column (d_in). Column 0: rows 0-3 [.1, .9, .5, .5] keep row 1 and
    // the tie .5/.5 goes to row 2; rows 4-7 all .3 keep rows 4 and 5. Column 1: [1, 2, 3, 4]
    // keeps rows 2, 3; [4, 3, 2, 1] keeps rows 4, 5. Flat index = row * 2 + column.
    let l = linear_8x2();
    let s24 = Structure::NByM { n: 2, m: 4 };
    let m = structured_masks(
        std::slice::from_ref(&l),
        Sparsity::new(0.5).unwrap(),
        &Scope::Global,
        s24,
        false,
    )
    .unwrap();
    assert_eq!(ones(&m[0]), vec![2, 4, 5, 7, 8, 9, 10, 11]);
    assert!(has_structure(s24, &l.param, &m[0]).unwrap());
    // 1:4: column 0 keeps rows 1 and 4 (the tie to the lower row), column 1 rows 3 and 4.
    let s14 = Structure::NByM { n: 1, m: 4 };
    let m = structured_masks(
        std::slice::from_ref(&l),
        Sparsity::new(0.75).unwrap(),
        &Scope::Layerwise(SparsityDistribution::Erk),
        s14,
        false,
    )
    .unwrap();
    assert_eq!(ones(&m[0]), vec![2, 7, 8, 9]);
    assert!(has_structure(s14, &l.param, &m[0]).unwrap());
    assert!(!has_structure(s24, &l.param, &m[0]).unwrap());
}

#[test]
fn n_by_m_on_a_convolution_groups_each_channels_flattened_inputs() {
    // [out 2, in 1, 2, 4]: channel o's 8 entries o*8..o*8+8 in groups of 4. Scores
    // channel 0: [4, 3, 2, 1 | 1, 2, 3, 4], channel 1: [0, 0, 0, 0 | 9, 0, 9, 0].
    let p = param("conv.weight", &[2, 1, 2, 4]);
    let scores = vec![
        4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 9.0, 0.0,
    ];
    let m = structured_masks(
        &[LayerScores { param: p, scores }],
        Sparsity::new(0.5).unwrap(),
        &Scope::Global,
        Structure::NByM { n: 2, m: 4 },
        false,
    )
    .unwrap();
    assert_eq!(ones(&m[0]), vec![0, 1, 6, 7, 8, 9, 12, 14]);
}

#[test]
fn block_masks_keep_whole_blocks_by_summed_score() {
    // [4, 4] in 2x2 blocks: block (0,0) = rows 0-1, cols 0-1, ... Scores make the block sums
    // (0,0) 4, (0,1) 8, (1,0) 8, (1,1) 1: at 50% (2 of 4 blocks) the tie of 8 and 8 keeps
    // both, at 75% (1 block) the tie goes to the lower block index (0,1).
    let p = param("fc.weight", &[4, 4]);
    #[rustfmt::skip]
    let scores = vec![
        1.0, 1.0, 2.0, 2.0,
        1.0, 1.0, 2.0, 2.0,
        2.0, 2.0, 0.25, 0.25,
        2.0, 2.0, 0.25, 0.25,
    ];
    let l = LayerScores { param: p, scores };
    let block = Structure::Block { rows: 2, cols: 2 };
    let m = structured_masks(
        std::slice::from_ref(&l),
        Sparsity::new(0.5).unwrap(),
        &Scope::Global,
        block,
        false,
    )
    .unwrap();
    assert_eq!(ones(&m[0]), vec![2, 3, 6, 7, 8, 9, 12, 13]);
    assert!(has_structure(block, &l.param, &m[0]).unwrap());
    let m = structured_masks(
        std::slice::from_ref(&l),
        Sparsity::new(0.75).unwrap(),
        &Scope::Layerwise(SparsityDistribution::Uniform),
        block,
        false,
    )
    .unwrap();
    assert_eq!(ones(&m[0]), vec![2, 3, 6, 7]);
    let mut broken = m[0].clone();
    broken[2] = false;
    assert!(!has_structure(block, &l.param, &broken).unwrap());
}

#[test]
fn shapes_that_do_not_divide_and_bad_settings_are_typed_errors() {
    // d_in = 6 at 2:4: groups rows 0-3 and a padded 4-5 (keeps both); 3:4: the padded group
    // keeps min(3, 2) = 2.
    let odd = LayerScores {
        param: param("fc.weight", &[6, 1]),
        scores: vec![1.0, 4.0, 3.0, 2.0, 0.5, 0.25],
    };
    let m = structured_masks(
        std::slice::from_ref(&odd),
        Sparsity::new(0.5).unwrap(),
        &Scope::Global,
        Structure::NByM { n: 2, m: 4 },
        false,
    )
    .unwrap();
    assert_eq!(ones(&m[0]), vec![1, 2, 4, 5]);
    let s34 = Structure::NByM { n: 3, m: 4 };
    let m = structured_masks(
        std::slice::from_ref(&odd),
        Sparsity::new(0.25).unwrap(),
        &Scope::Global,
        s34,
        false,
    )
    .unwrap();
    assert_eq!(ones(&m[0]), vec![1, 2, 3, 4, 5]);
    assert!(has_structure(s34, &odd.param, &m[0]).unwrap());
    // Blocks do not pad: a typed error naming the layer.
    let e = structured_masks(
        &[LayerScores {
            param: param("fc.weight", &[6, 2]),
            scores: vec![1.0; 12],
        }],
        Sparsity::new(0.5).unwrap(),
        &Scope::Global,
        Structure::Block { rows: 4, cols: 2 },
        false,
    )
    .unwrap_err();
    assert!(
        matches!(e, MaskError::InvalidConfig { field: "structure", ref message } if message.contains("fc.weight")),
        "{e}"
    );
    let e = structured_masks(
        &[linear_8x2()],
        Sparsity::new(0.6).unwrap(),
        &Scope::Global,
        Structure::NByM { n: 2, m: 4 },
        false,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            MaskError::InvalidConfig {
                field: "sparsity",
                ..
            }
        ),
        "{e}"
    );
    assert!(Structure::NByM { n: 5, m: 4 }.validate().is_err());
    assert!(Structure::NByM { n: 0, m: 4 }.validate().is_err());
    assert!(Structure::Block { rows: 0, cols: 2 }.validate().is_err());
    let bias = param("fc.bias", &[8]);
    assert!(Structure::NByM { n: 2, m: 4 }.groups(&bias).is_err());
    let e = structured_masks(
        &[LayerScores {
            param: param("b", &[4, 4]),
            scores: vec![
                1.0,
                f32::NAN,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
            ],
        }],
        Sparsity::new(0.5).unwrap(),
        &Scope::Global,
        Structure::NByM { n: 2, m: 4 },
        false,
    )
    .unwrap_err();
    assert!(matches!(e, MaskError::NanScore { index: 1, .. }), "{e}");
}

proptest! {
    #![proptest_config(burn_sparse_test_support::proptest_config(64))]
    /// Every N:M group keeps exactly n (min(n, r) in a padded group of r), the total follows,
    /// and each kept weight scores at least as high as every removed one of its group.
    #[test]
    fn n_by_m_invariants(
        m in 1usize..9, n_frac in 0.0f64..1.0, groups in 1usize..5, extra_frac in 0.0f64..1.0,
        cols in 1usize..6, conv in any::<bool>(), seed in any::<u64>(),
    ) {
        let n = 1 + ((m - 1) as f64 * n_frac) as usize;
        let extra = (m as f64 * extra_frac) as usize % m;
        let red = groups * m + extra;
        let shape = if conv { vec![cols, red, 1, 1] } else { vec![red, cols] };
        let p = param("w", &shape);
        let mut rng = burn_sparse_mask::SparseRng::new(seed);
        let scores: Vec<f32> = (0..p.numel()).map(|_| (rng.next_f32() * 8.0).floor()).collect();
        let s = Structure::NByM { n, m };
        let mask = structured_masks(
            &[LayerScores { param: p.clone(), scores: scores.clone() }],
            s.implied_sparsity().unwrap(),
            &Scope::Global,
            s,
            true,
        ).unwrap().pop().unwrap();
        prop_assert!(has_structure(s, &p, &mask).unwrap());
        prop_assert_eq!(mask.iter().filter(|&&b| b).count(), cols * (groups * n + n.min(extra)));
        for g in s.groups(&p).unwrap().unwrap() {
            let kept_min = g.iter().filter(|&&i| mask[i]).map(|&i| scores[i]).fold(f32::INFINITY, f32::min);
            let gone_max = g.iter().filter(|&&i| !mask[i]).map(|&i| scores[i]).fold(f32::NEG_INFINITY, f32::max);
            prop_assert!(kept_min >= gone_max);
        }
    }
}
