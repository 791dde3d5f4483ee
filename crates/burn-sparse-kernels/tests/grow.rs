//! The streamed grow step (`Kernels::grow_topk`) against the dense one (`reference::grow_topk`:
//! the whole `dW`, sorted): the same positions and the same gradient bits, for random layers,
//! tile widths down to one column, heavy ties and every instruction set.

use burn_sparse_kernels::{Grown, Isa, KernelError, Kernels, SparsePattern, reference};
use proptest::prelude::*;

use burn_sparse_mask::splitmix64 as splitmix;

struct Case {
    p: SparsePattern,
    keep: Vec<bool>,
    xt: Vec<f32>,
    dyt: Vec<f32>,
    batch: usize,
}

/// A random layer. With `levels > 0` the activations take `levels` values in `[-1, 1]`, so
/// many scores tie exactly.
fn case(rows: usize, cols: usize, density: f64, batch: usize, levels: u64, seed: u64) -> Case {
    let mut s = seed;
    let mut unit = move || (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64;
    let mask: Vec<bool> = (0..rows * cols).map(|_| unit() <= density).collect();
    let p = SparsePattern::from_mask(rows, cols, &mask).unwrap();
    let keep = (0..p.nnz()).map(|_| unit() < 0.7).collect();
    let mut value = || {
        let u = unit() * 2.0 - 1.0;
        if levels > 0 {
            ((u * levels as f64).round() / levels as f64) as f32
        } else {
            u as f32
        }
    };
    let xt = (0..rows * batch).map(|_| value()).collect();
    let dyt = (0..cols * batch).map(|_| value()).collect();
    Case {
        p,
        keep,
        xt,
        dyt,
        batch,
    }
}

fn candidates(c: &Case) -> usize {
    c.p.rows() * c.p.cols() - c.keep.iter().filter(|&&k| k).count()
}

fn bits(g: &[Grown]) -> Vec<(u32, u32, u32)> {
    g.iter().map(|g| (g.row, g.col, g.grad.to_bits())).collect()
}

fn check(c: &Case, k: usize, block_cols: usize) {
    let want = reference::grow_topk(&c.p, &c.keep, &c.xt, &c.dyt, c.batch, k);
    assert_eq!(want.len(), k);
    for isa in Isa::all_available() {
        let kern = Kernels::with_isa(isa).unwrap();
        let got = kern
            .grow_topk(&c.p, &c.keep, &c.xt, &c.dyt, c.batch, k, block_cols)
            .unwrap();
        assert_eq!(
            bits(&got),
            bits(&want),
            "{isa:?}, k {k}, block {block_cols}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::with_cases(64)
    })]
    #[test]
    fn streamed_grow_is_the_dense_grow(
        rows in 1usize..150, cols in 1usize..40, density in 0.0f64..0.9,
        batch in 1usize..70, levels in 0u64..4, frac in 0.0f64..=1.0,
        block_cols in 1usize..20, seed in any::<u64>(),
    ) {
        let c = case(rows, cols, density, batch, levels, seed);
        let k = (frac * candidates(&c) as f64).floor() as usize;
        check(&c, k, block_cols);
    }
}

#[test]
fn all_ties_go_to_the_lower_flat_index() {
    // Every score is 0: the first k candidates in row-major order, skipping kept positions.
    let mask = [true, false, false, true, false, false];
    let p = SparsePattern::from_mask(2, 3, &mask).unwrap();
    let keep = [true, false]; // (0,0) stays; (1,0) was dropped and may be regrown
    let xt = vec![0.0; 2 * 4];
    let dyt = vec![0.0; 3 * 4];
    let got = Kernels::default()
        .grow_topk(&p, &keep, &xt, &dyt, 4, 3, 1)
        .unwrap();
    let pos: Vec<(u32, u32)> = got.iter().map(|g| (g.row, g.col)).collect();
    assert_eq!(pos, [(0, 1), (0, 2), (1, 0)]);
}

#[test]
fn hand_computed_grow() {
    // x = [[1, 2], [3, 4]] as xᵀ rows (features 0 and 1 over a batch of 2), dY likewise:
    // dW[k, n] = <xᵀ[k], dyᵀ[n]>: xᵀ0 = (1, 0), xᵀ1 = (0, 2); dyᵀ0 = (3, 0), dyᵀ1 = (0, -1),
    // dyᵀ2 = (1, 1). dW = [[3, 0, 1], [0, -2, 2]]. (0, 0) active and kept.
    let p = SparsePattern::from_mask(2, 3, &[true, false, false, false, false, false]).unwrap();
    let xt = [1.0, 0.0, 0.0, 2.0];
    let dyt = [3.0, 0.0, 0.0, -1.0, 1.0, 1.0];
    let got = Kernels::default()
        .grow_topk(&p, &[true], &xt, &dyt, 2, 2, 2)
        .unwrap();
    // |dW| among the candidates: (0,1) 0, (0,2) 1, (1,0) 0, (1,1) 2, (1,2) 2: the two 2s.
    assert_eq!(
        got,
        [
            Grown {
                row: 1,
                col: 1,
                grad: -2.0
            },
            Grown {
                row: 1,
                col: 2,
                grad: 2.0
            },
        ]
    );
}

#[test]
fn large_layer_takes_the_parallel_path() {
    // 1100 x 1000 x 128 = 141M multiply-adds: far above the single-thread threshold (16.8M),
    // and enough rows for the sampled floor.
    let c = case(1100, 1000, 0.03, 128, 0, 7);
    let k = candidates(&c) / 100;
    check(&c, k, 1024);
}

/// LeNet-300-100's first layer (784 x 300 x 128 = 30M multiply-adds: shared with helper
/// threads) in pools of 1 to 4 threads: the same positions and bits as the dense reference
/// whatever the number of helpers and however the row chunks fall to them.
#[test]
fn the_shared_scan_does_not_depend_on_the_threads() {
    let c = case(784, 300, 0.05, 128, 0, 3);
    let k = c.p.nnz() * 3 / 10;
    for threads in 1..=4 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| check(&c, k, 1024));
    }
    // Heavy ties: the lower flat index must win across chunks too.
    let c = case(784, 300, 0.05, 128, 2, 4);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| check(&c, 5000, 64));
}

/// A layer of 512 rows gets a floor estimated from every 32nd row (16, 48, 80 ...). Those rows
/// score 10^4 times higher than the others here, so the floor lies above every score outside
/// them and fewer than `k` candidates reach it: the scan must notice and repeat without it.
/// With a NaN outside the sample, the error names it.
#[test]
fn a_misleading_floor_sample_is_repeated_without_it() {
    let mut c = case(512, 64, 0.05, 32, 0, 5);
    for r in 0..512 {
        let scale = if r % 32 == 16 { 100.0 } else { 0.01 };
        for v in &mut c.xt[r * 32..(r + 1) * 32] {
            *v *= scale;
        }
    }
    // 16 sampled rows x 64 columns (less the kept ones) score high; k reaches past them.
    for k in [800, 2500, 5000] {
        check(&c, k, 1024);
    }
    c.xt[100 * 32 + 5] = f32::NAN;
    let first = (0..64)
        .find(|&col| !(0..c.p.nnz()).any(|s| c.keep[s] && c.p.flat_index(s) == 100 * 64 + col))
        .unwrap();
    match Kernels::default().grow_topk(&c.p, &c.keep, &c.xt, &c.dyt, c.batch, 2500, 1024) {
        Err(KernelError::NanScore { row, col }) => assert_eq!((row, col), (100, first)),
        other => panic!("expected NanScore, got {other:?}"),
    }
}

/// The running top-k prunes its buffer (at 2k, at least 1024 candidates) many times on a layer
/// of 57000 candidates: small and large `k`, with and without ties.
#[test]
fn the_running_top_k_prunes_exactly() {
    for levels in [0, 3] {
        let c = case(300, 200, 0.05, 8, levels, 11);
        for k in [
            1,
            7,
            300,
            511,
            513,
            5000,
            candidates(&c) - 1,
            candidates(&c),
        ] {
            check(&c, k, 64);
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let c = case(4, 5, 0.5, 3, 0, 1);
    let kern = Kernels::default();
    let n = candidates(&c);
    assert!(matches!(
        kern.grow_topk(&c.p, &c.keep, &c.xt, &c.dyt, c.batch, n + 1, 2),
        Err(KernelError::TooLarge { .. })
    ));
    assert!(matches!(
        kern.grow_topk(&c.p, &c.keep[1..], &c.xt, &c.dyt, c.batch, 1, 2),
        Err(KernelError::Length { what: "keep", .. })
    ));
    assert!(matches!(
        kern.grow_topk(&c.p, &c.keep, &c.xt[1..], &c.dyt, c.batch, 1, 2),
        Err(KernelError::Length { .. })
    ));
    let mut xt = c.xt.clone();
    xt[3 * c.batch] = f32::NAN; // feature 3: every candidate of row 3 scores NaN
    let first = (0..5)
        .find(|&col| !(0..c.p.nnz()).any(|s| c.keep[s] && c.p.flat_index(s) == 3 * 5 + col))
        .unwrap();
    match kern.grow_topk(&c.p, &c.keep, &xt, &c.dyt, c.batch, 1, 2) {
        Err(KernelError::NanScore { row, col }) => assert_eq!((row, col), (3, first)),
        other => panic!("expected NanScore, got {other:?}"),
    }
    assert_eq!(
        kern.grow_topk(&c.p, &c.keep, &c.xt, &c.dyt, c.batch, 0, 2)
            .unwrap(),
        []
    );
}
