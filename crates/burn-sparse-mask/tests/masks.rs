//! Masks on user models: enumeration, filters, shapes, application, exact counts.

use burn::module::Module;
use burn_sparse_mask::prelude::*;
use burn_sparse_mask::{MaskError, Verdict, param_infos};
use burn_sparse_test_support::{ConvNet, Mlp, device};
use proptest::prelude::*;

#[test]
fn enumerates_paths_shapes_and_ids_of_conv_and_linear() {
    let d = device();
    let m = ConvNet::new(&d);
    let infos = param_infos(&m);
    let listed: Vec<(String, Vec<usize>)> = infos
        .iter()
        .map(|p| (p.path.clone(), p.shape.clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("features.0.weight".into(), vec![4, 1, 3, 3]),
            ("features.0.bias".into(), vec![4]),
            ("features.1.weight".into(), vec![6, 4, 3, 3]),
            ("features.1.bias".into(), vec![6]),
            ("head.weight".into(), vec![96, 3]),
            ("head.bias".into(), vec![3]),
        ]
    );
    // Ids are stable across clone.
    assert_eq!(param_infos(&m.clone()), infos);
}

#[test]
fn filter_defaults_and_options() {
    let d = device();
    let m = ConvNet::new(&d);
    let paths = |f: &ParamFilter| -> Vec<String> {
        f.select(&m).unwrap().into_iter().map(|p| p.path).collect()
    };
    assert_eq!(
        paths(&ParamFilter::new()),
        ["features.0.weight", "features.1.weight", "head.weight"]
    );
    assert_eq!(
        paths(
            &ParamFilter::new()
                .keep_first_dense(true)
                .keep_last_dense(true)
        ),
        ["features.1.weight"]
    );
    assert_eq!(
        paths(&ParamFilter::new().with_regex(r"^features\.").unwrap()),
        ["features.0.weight", "features.1.weight"]
    );
    assert_eq!(
        paths(&ParamFilter::new().with_names(["head.weight"])),
        ["head.weight"]
    );
    assert_eq!(
        paths(
            &ParamFilter::new()
                .with_min_rank(1)
                .excluding_regex("weight")
                .unwrap()
        ),
        ["features.0.bias", "features.1.bias", "head.bias"]
    );
    let err = ParamFilter::new()
        .with_names(["nope.weight"])
        .select(&m)
        .unwrap_err();
    assert!(matches!(err, MaskError::UnknownParam { ref name, .. } if name == "nope.weight"));
    assert!(err.to_string().contains("head.weight"), "{err}");
    assert!(matches!(
        ParamFilter::new().with_regex("zzz").unwrap().select(&m),
        Err(MaskError::EmptyPrunableSet(_))
    ));
    assert!(matches!(
        ParamFilter::new().with_regex("("),
        Err(MaskError::InvalidRegex { .. })
    ));
}

#[test]
fn shape_mismatch_and_unknown_layer_are_errors() {
    let d = device();
    let m = ConvNet::new(&d);
    let params = ParamFilter::new().select(&m).unwrap();
    let mut bits: Vec<Vec<bool>> = params.iter().map(|p| vec![true; p.numel()]).collect();
    bits[1].pop();
    let err = MaskSet::from_bits(&m, params.clone(), bits).unwrap_err();
    assert!(
        matches!(err, MaskError::ShapeMismatch { ref param, .. } if param == "features.1.weight")
    );
    let mut masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    assert!(matches!(
        masks.set_layer("head.bias", vec![true; 3]),
        Err(MaskError::UnknownParam { .. })
    ));
    assert!(matches!(
        masks.set_layer("head.weight", vec![true; 3]),
        Err(MaskError::ShapeMismatch { .. })
    ));
    // A mask set of one model does not fit another model (other ids).
    let other = ConvNet::new(&d);
    assert!(matches!(
        masks.check_model(&other),
        Err(MaskError::ModelMismatch(_))
    ));
}

#[test]
fn magnitude_masks_apply_zeros_to_rank_2_and_rank_4() {
    let d = device();
    let m = ConvNet::new(&d);
    let s = Sparsity::new(0.8).unwrap();
    let masks = magnitude_masks(&m, &ParamFilter::new(), s, &Scope::Global).unwrap();
    // 36 + 216 + 288 = 540 prunable weights; keep round(0.2 * 540) = 108.
    assert_eq!(masks.numel(), 540);
    assert_eq!(masks.nnz(), 108);
    // The dense weights, read before masking (same parameter ids as the masked model).
    let dense = masks.read_weights(&m).unwrap();
    let m = masks.apply(m);
    assert!(masks.violations(&m).unwrap().iter().all(|(_, v)| *v == 0));
    // Global scope: every kept weight is at least as large in |w| as every pruned one, over all
    // three layers together.
    let (mut kept_min, mut pruned_max) = (f32::INFINITY, 0.0f32);
    for (l, w) in masks.layers().iter().zip(&dense) {
        for (b, v) in l.bits().iter().zip(w) {
            if *b {
                kept_min = kept_min.min(v.abs());
            } else {
                pruned_max = pruned_max.max(v.abs());
            }
        }
    }
    assert!(
        kept_min >= pruned_max && pruned_max > 0.0,
        "kept min {kept_min} < pruned max {pruned_max}"
    );
    // Layerwise ERK, hand-computed. Scores sum(shape)/prod(shape): conv1 [4,1,3,3] 11/36,
    // conv2 [6,4,3,3] 16/216, head [96,3] 99/288. eps * (11 + 16 + 99) = 108 gives eps = 6/7
    // and shares 9.43, 13.71, 84.86; largest remainder rounds them to 9, 14, 85.
    let masks = magnitude_masks(
        &m,
        &ParamFilter::new(),
        s,
        &Scope::Layerwise(SparsityDistribution::Erk),
    )
    .unwrap();
    assert_eq!(masks.nnz(), 108);
    let got: Vec<usize> = masks.layers().iter().map(|l| l.nnz()).collect();
    assert_eq!(got, vec![9, 14, 85]);
    // The overflow loop at 30% sparsity (keep 378): eps = 3 makes the head 1.03 dense, so it
    // becomes dense (288) and leaves the budget; 90 left over conv1 + conv2 gives eps = 10/3,
    // conv1 1.02 dense -> dense (36); conv2 keeps the last 54.
    let counts = SparsityDistribution::Erk
        .layer_counts(
            &masks.params(),
            Sparsity::new(0.3).unwrap(),
            &Default::default(),
        )
        .unwrap();
    assert_eq!(counts, vec![36, 54, 288]);
    // A case the naive split (clamp at 1, hand the excess round-robin to the other layers)
    // gets wrong: [12,16], [16,10], [10,3] (scores 28/192, 26/160, 13/30) at 30% sparsity.
    // 0.7 * 382 = 267.4; eps = 267.4/67 puts the head at 1.73: dense (30). Then
    // eps = 237.4/54 = 4.396 gives 123.10 and 114.30 of the 237 left: [123, 114, 30]. The naive
    // split would give [122, 115, 30].
    let mlp = burn_sparse_test_support::Mlp::seeded([12, 16, 10, 3], 1, &d);
    let params = ParamFilter::new().select(&mlp).unwrap();
    let counts = SparsityDistribution::Erk
        .layer_counts(&params, Sparsity::new(0.3).unwrap(), &Default::default())
        .unwrap();
    assert_eq!(counts, vec![123, 114, 30]);
    let shown = masks.to_string();
    assert!(
        shown.contains("features.1.weight") && shown.contains("total"),
        "{shown}"
    );
}

#[test]
fn applying_keeps_autodiff_and_ids() {
    let d = device();
    let m = Mlp::new([6, 5, 4, 3], &d);
    let masks = magnitude_masks(
        &m,
        &ParamFilter::new(),
        Sparsity::new(0.5).unwrap(),
        &Scope::Global,
    )
    .unwrap();
    let before = param_infos(&m);
    let m = masks.apply(m);
    assert_eq!(param_infos(&m), before);
    assert!(m.l1.weight.is_require_grad());
    // A valid (no autodiff) model stays without autodiff.
    let v = masks.apply(m.valid());
    assert!(!v.l1.weight.val().is_autodiff());
}

proptest! {
    #![proptest_config(burn_sparse_test_support::proptest_config(24))]

    /// Exact nnz for random shapes, sparsities and scopes, with many ties in the scores.
    #[test]
    fn exact_nnz_for_random_shapes(
        dims in proptest::collection::vec(1usize..40, 4),
        s in 0.0f64..0.999,
        levels in 1u32..6,
        seed in any::<u64>(),
        global in any::<bool>(),
    ) {
        let d = device();
        let m = Mlp::new([dims[0], dims[1], dims[2], dims[3]], &d);
        let params = ParamFilter::new().select(&m).unwrap();
        let mut rng = SparseRng::new(seed);
        // Quantised scores: lots of ties.
        let scores: Vec<LayerScores> = params.iter().map(|p| LayerScores {
            param: p.clone(),
            scores: (0..p.numel()).map(|_| rng.below(levels as u64) as f32).collect(),
        }).collect();
        let sp = Sparsity::new(s).unwrap();
        let total: usize = params.iter().map(|p| p.numel()).sum();
        let scope = if global { Scope::Global } else { Scope::Layerwise(SparsityDistribution::Erk) };
        let bits = masks_from_scores(&scores, sp, &scope, true).unwrap();
        let nnz: usize = bits.iter().map(|b| b.iter().filter(|x| **x).count()).sum();
        prop_assert_eq!(nnz, sp.kept(total));
        // Deterministic: same scores, same masks.
        prop_assert_eq!(masks_from_scores(&scores, sp, &scope, true).unwrap(), bits.clone());
        // Within a layer (layerwise) or overall (global), every kept score >= every dropped one.
        let all: Vec<(f32, bool)> = scores.iter().zip(&bits)
            .flat_map(|(l, b)| l.scores.iter().copied().zip(b.iter().copied())).collect();
        if global {
            let min_kept = all.iter().filter(|x| x.1).map(|x| x.0).fold(f32::INFINITY, f32::min);
            let max_drop = all.iter().filter(|x| !x.1).map(|x| x.0).fold(f32::NEG_INFINITY, f32::max);
            prop_assert!(min_kept >= max_drop);
        }
    }

    /// Every distribution: exact total, each layer within one weight of its real-valued share.
    #[test]
    fn distribution_totals_exact(
        dims in proptest::collection::vec(1usize..60, 4),
        s in 0.0f64..0.999,
        kind in 0usize..3,
    ) {
        let d = device();
        let m = Mlp::new([dims[0], dims[1], dims[2], dims[3]], &d);
        let params = ParamFilter::new().select(&m).unwrap();
        let dist = [SparsityDistribution::Uniform, SparsityDistribution::Er, SparsityDistribution::Erk][kind].clone();
        let sp = Sparsity::new(s).unwrap();
        let counts = dist.layer_counts(&params, sp, &Default::default()).unwrap();
        let dens = dist.layer_densities(&params, sp, &Default::default()).unwrap();
        let total: usize = params.iter().map(|p| p.numel()).sum();
        prop_assert_eq!(counts.iter().sum::<usize>(), sp.kept(total));
        for ((c, dn), p) in counts.iter().zip(&dens).zip(&params) {
            prop_assert!(*dn <= 1.0 + 1e-12);
            let share = dn * p.numel() as f64;
            prop_assert!((*c as f64 - share).abs() <= 1.0 + 1e-9, "{} vs {}", c, share);
        }
    }
}

#[derive(burn::module::Module, Debug)]
struct LinearAndConv {
    /// `[d_in = 4, d_out = 2]`.
    lin: burn::module::Param<burn::tensor::Tensor<2>>,
    /// `[out = 2, in = 1, 2, 2]`.
    conv: burn::module::Param<burn::tensor::Tensor<4>>,
}

#[test]
fn sparse_fan_in_rescales_each_unit_by_its_kept_inputs() {
    // Linear [4, 2]: column 0 keeps rows {0, 1, 2, 3} (f = 4: x1), column 1 keeps {0} (f = 1:
    // x sqrt(4/1) = 2). Conv [2, 1, 2, 2]: channel 0 keeps 1 of 4 (x2), channel 1 none (left
    // as is). Pruned entries stay 0.
    let d = device();
    let m = LinearAndConv {
        lin: burn::module::Param::from_data(
            [[1.0f32, 0.5], [2.0, 0.0], [-3.0, 0.0], [4.0, 0.0]],
            &d,
        ),
        conv: burn::module::Param::from_data(
            [[[[0.25f32, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]],
            &d,
        ),
    };
    let masks = MaskSet::from_paths(
        &m,
        vec![
            (
                "lin".into(),
                vec![true, true, true, false, true, false, true, false],
            ),
            (
                "conv".into(),
                vec![true, false, false, false, false, false, false, false],
            ),
        ],
    )
    .unwrap();
    let m = masks.sparse_fan_in(masks.apply(m)).unwrap();
    let w = masks.read_weights(&m).unwrap();
    assert_eq!(w[0], vec![1.0, 1.0, 2.0, 0.0, -3.0, 0.0, 4.0, 0.0]);
    assert_eq!(w[1], vec![0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    // A dense mask changes nothing, bit for bit.
    let mlp = Mlp::seeded([6, 5, 4, 3], 2, &d);
    let before = mlp.bits();
    let dense = MaskSet::dense(&mlp, &ParamFilter::new()).unwrap();
    assert_eq!(dense.sparse_fan_in(mlp).unwrap().bits(), before);
}

#[derive(burn::module::Module, Debug)]
struct TokenModel {
    embed: burn::nn::Embedding,
    proj: burn::nn::Linear,
    norm: burn::nn::LayerNorm,
    attn: burn::nn::attention::MultiHeadAttention,
    head: burn::nn::Linear,
}

#[test]
fn the_default_filter_keeps_embeddings_and_norms_dense_by_module_type() {
    // Embedding [50, 16], Linear 16 -> 16, LayerNorm(16), attention (4 Linear 16 -> 16 inside),
    // Linear 16 -> 5: the default prunes the six Linear weights only, says why for each other
    // parameter, and options change it.
    let d = device();
    let m = TokenModel {
        embed: burn::nn::EmbeddingConfig::new(50, 16).init(&d),
        proj: burn::nn::LinearConfig::new(16, 16).init(&d),
        norm: burn::nn::LayerNormConfig::new(16).init(&d),
        attn: burn::nn::attention::MultiHeadAttentionConfig::new(16, 4).init(&d),
        head: burn::nn::LinearConfig::new(16, 5).init(&d),
    };
    let paths = |f: &ParamFilter| -> Vec<String> {
        f.select(&m).unwrap().into_iter().map(|p| p.path).collect()
    };
    let default = paths(&ParamFilter::new());
    assert_eq!(
        default,
        [
            "proj.weight",
            "attn.query.weight",
            "attn.key.weight",
            "attn.value.weight",
            "attn.output.weight",
            "head.weight"
        ]
    );
    let report = ParamFilter::new().explain(&m);
    let why = |path: &str| {
        report
            .iter()
            .find(|(p, _)| p.path == path)
            .map(|(p, v)| (p.module.clone(), v.clone()))
            .unwrap()
    };
    assert_eq!(
        why("embed.weight"),
        (
            "Embedding".into(),
            Verdict::DenseModuleType("Embedding".into())
        )
    );
    assert_eq!(why("norm.gamma").1, Verdict::RankBelow(2));
    assert_eq!(why("proj.bias").1, Verdict::RankBelow(2));
    assert_eq!(
        why("attn.query.weight"),
        ("Linear".into(), Verdict::Prunable)
    );
    assert!(why("embed.weight").1.to_string().contains("Embedding"));
    // Options: embeddings too; only some types; a type kept dense; a name overrides the type.
    assert_eq!(
        paths(&ParamFilter::new().with_embeddings(true))[0],
        "embed.weight"
    );
    assert_eq!(paths(&ParamFilter::new().with_embeddings(true)).len(), 7);
    assert_eq!(
        paths(&ParamFilter::new().excluding_types(["MultiHeadAttention"])).len(),
        6,
        "the attention's Linear weights are held by Linear, not by the attention"
    );
    assert_eq!(
        paths(
            &ParamFilter::new()
                .with_types(["Embedding"])
                .with_embeddings(true)
        ),
        ["embed.weight"]
    );
    assert_eq!(
        paths(&ParamFilter::new().with_names(["embed.weight", "head.weight"])),
        ["embed.weight", "head.weight"]
    );
    let first_last = ParamFilter::new()
        .keep_first_dense(true)
        .keep_last_dense(true);
    assert_eq!(paths(&first_last).len(), 4);
    let r = first_last.explain(&m);
    assert!(
        r.iter()
            .any(|(p, v)| p.path == "proj.weight" && *v == Verdict::FirstKeptDense)
    );
    assert!(
        r.iter()
            .any(|(p, v)| p.path == "head.weight" && *v == Verdict::LastKeptDense)
    );
}

fn info(path: &str, shape: &[usize], module: &str) -> burn_sparse_mask::ParamInfo {
    burn_sparse_mask::ParamInfo {
        path: path.into(),
        id: burn::module::ParamId::new(),
        shape: shape.to_vec(),
        trainable: true,
        module: module.into(),
    }
}

#[test]
fn er_and_erk_for_conv1d_conv3d_and_transposed_weights_by_hand() {
    // Conv1d [out 6, in 4, k 3] (72 weights) and Conv3d [out 4, in 2, 3, 3, 3] (216), 80%
    // sparse: keep round(0.2 * 288) = 58.
    // ER (channel dims in, out): scores 10/24 and 6/8; eps (10/24 * 72 + 6/8 * 216) = 57.6
    // gives eps = 0.3, densities 0.125 and 0.225, shares 9 and 48.6: [9, 49].
    // ERK (all dims): scores 13/72 and 15/216; eps (13 + 15) = 57.6, eps = 2.057, shares
    // 26.74 and 30.86: floors 26 + 30 = 56, the two remainders take one each: [27, 31].
    let layers = [
        info("c1.weight", &[6, 4, 3], "Conv1d"),
        info("c3.weight", &[4, 2, 3, 3, 3], "Conv3d"),
    ];
    let s = Sparsity::new(0.8).unwrap();
    let none = Default::default();
    assert_eq!(
        SparsityDistribution::Er
            .layer_counts(&layers, s, &none)
            .unwrap(),
        vec![9, 49]
    );
    let d = SparsityDistribution::Er
        .layer_densities(&layers, s, &none)
        .unwrap();
    assert!(
        (d[0] - 0.125).abs() < 1e-12 && (d[1] - 0.225).abs() < 1e-12,
        "{d:?}"
    );
    assert_eq!(
        SparsityDistribution::Erk
            .layer_counts(&layers, s, &none)
            .unwrap(),
        vec![27, 31]
    );
    // A transposed convolution stores [in, out, k1, k2]: ER's score is symmetric in the two
    // channel dims and ERK's uses all dims, so it gets what the same Conv2d [out, in, ..] gets.
    let conv = [
        info("a", &[6, 4, 3, 3], "Conv2d"),
        info("b", &[10, 10], "Linear"),
    ];
    let tconv = [
        info("a", &[4, 6, 3, 3], "ConvTranspose2d"),
        info("b", &[10, 10], "Linear"),
    ];
    for dist in [SparsityDistribution::Er, SparsityDistribution::Erk] {
        assert_eq!(
            dist.layer_counts(&conv, s, &none).unwrap(),
            dist.layer_counts(&tconv, s, &none).unwrap()
        );
    }
}
