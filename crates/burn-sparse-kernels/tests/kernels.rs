//! The kernels against plain references: exact for the forward product and the input gradient
//! (same summation order), within a stated tolerance for the values' gradient (a 32-lane tree
//! against a double-precision sum); every instruction set bit-identical to the portable one.

use burn_sparse_kernels::{Isa, KernelError, Kernels, SparsePattern, reference};
use proptest::prelude::*;

use burn_sparse_mask::splitmix64 as splitmix;

fn uniform(state: &mut u64) -> f32 {
    (splitmix(state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
}

#[derive(Clone)]
struct Case {
    p: SparsePattern,
    values: Vec<f32>,
    xt: Vec<f32>,
    dyt: Vec<f32>,
    batch: usize,
}

fn case(rows: usize, cols: usize, density: f64, batch: usize, seed: u64) -> Case {
    let mut s = seed;
    let mask: Vec<bool> = (0..rows * cols)
        .map(|_| (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64 <= density)
        .collect();
    let p = SparsePattern::from_mask(rows, cols, &mask).unwrap();
    let values = (0..p.nnz()).map(|_| uniform(&mut s)).collect();
    let xt = (0..rows * batch).map(|_| uniform(&mut s)).collect();
    let dyt = (0..cols * batch).map(|_| uniform(&mut s)).collect();
    Case {
        p,
        values,
        xt,
        dyt,
        batch,
    }
}

fn run(k: &Kernels, c: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut yt = vec![f32::NAN; c.p.cols() * c.batch];
    let mut dxt = vec![f32::NAN; c.p.rows() * c.batch];
    let mut dv = vec![f32::NAN; c.p.nnz()];
    k.forward(&c.p, &c.values, &c.xt, c.batch, &mut yt).unwrap();
    k.backward_input(&c.p, &c.values, &c.dyt, c.batch, &mut dxt)
        .unwrap();
    k.backward_values(&c.p, &c.xt, &c.dyt, c.batch, &mut dv)
        .unwrap();
    (yt, dxt, dv)
}

fn check(c: &Case) {
    let portable = Kernels::with_isa(Isa::Portable).unwrap();
    let (yt, dxt, dv) = run(&portable, c);
    assert_eq!(yt, reference::forward(&c.p, &c.values, &c.xt, c.batch));
    assert_eq!(
        dxt,
        reference::backward_input(&c.p, &c.values, &c.dyt, c.batch)
    );
    let exact = reference::backward_values(&c.p, &c.xt, &c.dyt, c.batch);
    for (s, (&got, &want)) in dv.iter().zip(&exact).enumerate() {
        // |error| of a float sum of `batch` products of values in [-1, 1].
        let tol = 1e-6 * (c.batch as f64 + 1.0);
        assert!(
            (got as f64 - want).abs() <= tol,
            "dv[{s}] = {got}, exact {want}"
        );
    }
    for isa in Isa::all_available() {
        let k = Kernels::with_isa(isa).unwrap();
        let (y2, dx2, dv2) = run(&k, c);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y2), bits(&yt), "{isa:?} forward");
        assert_eq!(bits(&dx2), bits(&dxt), "{isa:?} dX");
        assert_eq!(bits(&dv2), bits(&dv), "{isa:?} dW");
    }
}

proptest! {
    // As burn-sparse-test-support's `proptest_config` (this crate stays free of burn, even in
    // its tests): failing seeds persist in tests/kernels.proptest-regressions.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::with_cases(64)
    })]
    #[test]
    fn kernels_match_reference(
        rows in 1usize..40, cols in 1usize..40, density in 0.0f64..1.0,
        batch in 1usize..150, seed in any::<u64>(),
    ) {
        check(&case(rows, cols, density, batch, seed));
    }

    /// The merging `reassign` is `SparsePattern::new` on the moved coordinates: the same
    /// pattern (every orientation, slot order, CSR-order flag) or the same error, for moves
    /// that collide with kept slots or with each other, leave the layer, or name a slot twice.
    #[test]
    fn reassign_is_new_on_the_moved_coordinates(
        rows in 1usize..30, cols in 1usize..30, density in 0.0f64..1.0,
        n_moves in 0usize..40, seed in any::<u64>(),
    ) {
        let c = case(rows, cols, density, 1, seed);
        let p = c.p;
        let mut s = seed ^ 0x5eed;
        let mut below = |n: usize| (splitmix(&mut s) % n.max(1) as u64) as u32;
        let moves: Vec<(u32, u32, u32)> = (0..n_moves)
            .map(|i| {
                // Mostly valid slots and coordinates, now and then one out of range.
                let slot = if i % 13 == 12 { p.nnz() as u32 } else { below(p.nnz()) };
                let r = if i % 17 == 16 { rows as u32 } else { below(rows) };
                (slot, r, below(cols))
            })
            .filter(|&(slot, ..)| p.nnz() > 0 || slot > 0)
            .collect();
        let got = p.reassign(&moves);
        if moves.iter().any(|&(slot, ..)| slot as usize >= p.nnz()) {
            let first = moves.iter().find(|&&(slot, ..)| slot as usize >= p.nnz()).unwrap();
            let named = matches!(got, Err(KernelError::OutOfRange { slot, .. }) if slot == first.0 as usize);
            prop_assert!(named, "{:?}", got);
        } else {
            let (mut r, mut col) = (p.slot_rows().to_vec(), p.slot_cols().to_vec());
            for &(slot, row, c) in &moves {
                r[slot as usize] = row;
                col[slot as usize] = c;
            }
            prop_assert_eq!(got, SparsePattern::new(rows, cols, r, col));
        }
    }
}

#[test]
fn edge_shapes() {
    // Fully dense, one weight, empty (all rows and columns empty), a single row or column,
    // and batches that hit every block width (64, 16 and the scalar tail).
    for (rows, cols, density) in [
        (7, 5, 1.0),
        (9, 6, -1.0),
        (1, 13, 0.5),
        (13, 1, 0.5),
        (1, 1, 1.0),
    ] {
        for batch in [1, 15, 16, 17, 63, 64, 65, 80, 128, 131] {
            check(&case(rows, cols, density, batch, 7));
        }
    }
    let one = SparsePattern::new(5, 4, vec![3], vec![2]).unwrap();
    let mut s = 3;
    let c = Case {
        values: vec![0.75],
        xt: (0..5 * 33).map(|_| uniform(&mut s)).collect(),
        dyt: (0..4 * 33).map(|_| uniform(&mut s)).collect(),
        p: one,
        batch: 33,
    };
    check(&c);
    // The only non-zero output column is 2 and the only non-zero dX row is 3.
    let (yt, dxt, _) = run(&Kernels::default(), &c);
    for n in 0..4 {
        let nonzero = yt[n * 33..(n + 1) * 33].iter().any(|&v| v != 0.0);
        assert_eq!(nonzero, n == 2);
    }
    for k in 0..5 {
        let nonzero = dxt[k * 33..(k + 1) * 33].iter().any(|&v| v != 0.0);
        assert_eq!(nonzero, k == 3);
    }
}

#[test]
fn parallel_path_matches_reference() {
    // Large enough that every kernel splits its work over the rayon pool (over 2M
    // multiply-adds: 6.6M and 4.7M).
    check(&case(1024, 500, 0.1, 128, 11));
    check(&case(784, 300, 0.2, 100, 12));
}

/// `c` with its slots renumbered in a scrambled order (the same positions and values), as a
/// layer's slots are after topology updates: neither orientation reads them in order.
fn scrambled(c: Case, seed: u64) -> Case {
    let nnz = c.p.nnz();
    let mut order: Vec<usize> = (0..nnz).collect();
    let mut s = seed;
    for i in (1..nnz).rev() {
        order.swap(i, (splitmix(&mut s) % (i as u64 + 1)) as usize);
    }
    let rows = order.iter().map(|&o| c.p.slot_rows()[o]).collect();
    let cols = order.iter().map(|&o| c.p.slot_cols()[o]).collect();
    Case {
        p: SparsePattern::new(c.p.rows(), c.p.cols(), rows, cols).unwrap(),
        values: order.iter().map(|&o| c.values[o]).collect(),
        ..c
    }
}

#[test]
fn column_blocked_dw_and_copied_weights_match_reference() {
    // dyᵀ over 256 KiB (700, 600 and 1100 columns at batch 128): the sampled dW walks the
    // pattern's column blocks, serially (300x700 at 5%: 1.3M multiply-adds) and split
    // over the pool; 84k and 73k non-zeros: the forward product copies its weights into CSC
    // order first; 1100 x 1100: both gathering products read a source of over 512 KiB, and
    // prefetch; 300 x 2200: the forward product prefetches its 150 KiB source, which 1.1 MiB
    // of output stream past. Slots in mask order and scrambled.
    for (rows, cols, density, seed) in [
        (300, 700, 0.05, 21),
        (700, 600, 0.2, 22),
        (1100, 1100, 0.06, 24),
        (300, 2200, 0.1, 28),
    ] {
        // Mask order: `dW` is written in slot order directly; scrambled: through the CSR
        // buffer and the permutation.
        let c = case(rows, cols, density, 128, seed);
        assert!(c.p.slots_in_csr_order());
        check(&c);
        let c = scrambled(c, seed);
        assert!(!c.p.slots_in_csr_order());
        check(&c);
    }
}

#[test]
fn column_blocks_are_built_once_and_leave_equality_alone() {
    // The sampled dW of a layer wider than two blocks builds its column blocks on first use
    // (counted by `heap_bytes`); a pattern is equal to its copy from before.
    let c = case(300, 1100, 0.05, 128, 27);
    let fresh = c.p.clone();
    let before = c.p.heap_bytes();
    let k = Kernels::default();
    let mut dv = vec![0.0; c.p.nnz()];
    k.backward_values(&c.p, &c.xt, &c.dyt, c.batch, &mut dv)
        .unwrap();
    assert_eq!(c.p, fresh);
    let built = before + 12 * c.p.nnz() + 8 * (1100usize.div_ceil(256) + 1);
    assert_eq!(c.p.heap_bytes(), built);
    k.backward_values(&c.p, &c.xt, &c.dyt, c.batch, &mut dv)
        .unwrap();
    assert_eq!(c.p.heap_bytes(), built);
}

#[test]
fn sampled_dw_is_each_positions_own_dot_product() {
    // Whatever the traversal, the column blocks and the pairing in `dot2`, a position's
    // gradient has the bits of the one dot product a single-weight pattern computes.
    // Scrambled slots (through the CSR buffer) and mask order (written directly): every slot
    // is written (`dv` starts NaN). 600 columns at batch 128 walk the pattern's column blocks;
    // at batch 300 the rows' CSR runs, resumed block by block at a cursor; 400 columns one
    // block. Each has the bits of the single dot product, so the traversals agree bit for bit.
    let plain = case(700, 600, 0.2, 128, 23);
    let cursor = case(700, 600, 0.2, 300, 25);
    let narrow = case(300, 400, 0.2, 128, 26);
    for (c, isa) in [scrambled(plain.clone(), 23), plain, cursor, narrow]
        .into_iter()
        .flat_map(|c| {
            Isa::all_available()
                .into_iter()
                .map(move |i| (c.clone(), i))
        })
    {
        let k = Kernels::with_isa(isa).unwrap();
        let mut dv = vec![f32::NAN; c.p.nnz()];
        k.backward_values(&c.p, &c.xt, &c.dyt, c.batch, &mut dv)
            .unwrap();
        for s in (0..c.p.nnz()).step_by(97) {
            let (r, col) = (c.p.slot_rows()[s], c.p.slot_cols()[s]);
            let one = SparsePattern::new(c.p.rows(), c.p.cols(), vec![r], vec![col]).unwrap();
            let mut single = [f32::NAN];
            k.backward_values(&one, &c.xt, &c.dyt, c.batch, &mut single)
                .unwrap();
            assert_eq!(dv[s].to_bits(), single[0].to_bits(), "{isa:?} slot {s}");
        }
    }
}

#[test]
fn hand_computed_layer() {
    // W = [[1, 0, 2], [0, 3, 0]] (2 inputs, 3 outputs); x = [[1, 2], [3, 4]] (batch 2).
    let p = SparsePattern::from_mask(2, 3, &[true, false, true, false, true, false]).unwrap();
    let values = [1.0, 2.0, 3.0];
    let xt = [1.0, 3.0, 2.0, 4.0]; // xᵀ[k, b]
    let k = Kernels::default();
    let mut yt = [0.0; 6];
    k.forward(&p, &values, &xt, 2, &mut yt).unwrap();
    // y = x W = [[1, 6, 2], [3, 12, 6]]; yᵀ:
    assert_eq!(yt, [1.0, 3.0, 6.0, 12.0, 2.0, 6.0]);
    // dY = [[1, 1, 1], [0, 1, 2]]: dX = dY Wᵀ = [[3, 3], [4, 3]]; dW at (0,0),(0,2),(1,1):
    // xᵀ dY = [[1, 4, 7], [2, 6, 10]] -> (1, 7, 6).
    let dyt = [1.0, 0.0, 1.0, 1.0, 1.0, 2.0];
    let mut dxt = [0.0; 4];
    k.backward_input(&p, &values, &dyt, 2, &mut dxt).unwrap();
    assert_eq!(dxt, [3.0, 4.0, 3.0, 3.0]);
    let mut dv = [0.0; 3];
    k.backward_values(&p, &xt, &dyt, 2, &mut dv).unwrap();
    assert_eq!(dv, [1.0, 7.0, 6.0]);
}

#[test]
fn results_do_not_depend_on_thread_count() {
    // 6.1M and 8.4M multiply-adds per product: parallel with more than one thread; the
    // second layer's sampled dW walks its column blocks, each thread its own rows of them.
    for c in [case(400, 300, 0.4, 128, 5), case(300, 1100, 0.2, 128, 6)] {
        let k = Kernels::default();
        let many = run(&k, &c);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| run(&k, &c));
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| run(&k, &c));
        assert_eq!(many, one);
        assert_eq!(many, three);
    }
}

#[test]
fn transpose_is_exact_on_every_instruction_set() {
    // Shapes with whole 8 x 8 tiles, ragged edges on either side, and parallel strips.
    for isa in Isa::all_available() {
        let k = Kernels::with_isa(isa).unwrap();
        for (r, c) in [
            (1, 1),
            (3, 17),
            (8, 8),
            (16, 24),
            (128, 784),
            (300, 33),
            (17, 5),
            (9, 1031),
            // Over 2^18 elements: parallel strips.
            (300, 1031),
        ] {
            let mut s = 1;
            let src: Vec<f32> = (0..r * c).map(|_| uniform(&mut s)).collect();
            let mut dst = vec![f32::NAN; r * c];
            k.transpose(&src, r, c, &mut dst).unwrap();
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(
                        dst[j * r + i].to_bits(),
                        src[i * c + j].to_bits(),
                        "{isa:?} {r}x{c}"
                    );
                }
            }
        }
    }
    let k = Kernels::default();
    let mut dst = vec![0.0; 5];
    assert!(matches!(
        k.transpose(&[0.0; 6], 2, 3, &mut dst),
        Err(KernelError::Length { .. })
    ));
}

#[test]
fn pattern_orientations_agree() {
    let c = case(37, 23, 0.3, 1, 9);
    let p = &c.p;
    // Every slot appears once in each orientation, at its coordinate, sorted within runs.
    let mut seen = vec![0u8; p.nnz()];
    for col in 0..p.cols() {
        let r = p.col_ptr()[col]..p.col_ptr()[col + 1];
        for j in r.clone() {
            let s = p.csc_slots()[j] as usize;
            seen[s] += 1;
            assert_eq!(p.slot_cols()[s] as usize, col);
            assert_eq!(p.slot_rows()[s], p.csc_rows()[j]);
            if j > r.start {
                assert!(p.csc_rows()[j - 1] < p.csc_rows()[j]);
            }
        }
    }
    for row in 0..p.rows() {
        let r = p.row_ptr()[row]..p.row_ptr()[row + 1];
        for j in r.clone() {
            let s = p.csr_slots()[j] as usize;
            seen[s] += 1;
            assert_eq!(p.slot_rows()[s] as usize, row);
            assert_eq!(p.slot_cols()[s], p.csr_cols()[j]);
            assert_eq!(p.slot_csr()[s] as usize, j);
            if j > r.start {
                assert!(p.csr_cols()[j - 1] < p.csr_cols()[j]);
            }
        }
    }
    assert!(seen.iter().all(|&n| n == 2));
    // Dense round trip.
    let w = p.to_dense(&c.values).unwrap();
    assert_eq!(p.gather(&w).unwrap(), c.values);
    assert_eq!(w.iter().filter(|&&x| x != 0.0).count(), p.nnz());
}

#[test]
fn reassign_moves_only_named_slots() {
    let p = SparsePattern::new(4, 4, vec![0, 1, 2], vec![0, 1, 2]).unwrap();
    let q = p.reassign(&[(1, 3, 0)]).unwrap();
    assert_eq!(q.slot_rows(), &[0, 3, 2]);
    assert_eq!(q.slot_cols(), &[0, 0, 2]);
    // Column 0 now holds rows 0 and 3 (slots 0, 1), in row order.
    assert_eq!(&q.col_ptr()[..2], &[0, 2]);
    assert_eq!(&q.csc_rows()[..2], &[0, 3]);
    assert_eq!(&q.csc_slots()[..2], &[0, 1]);
    assert_eq!(
        q,
        SparsePattern::new(4, 4, vec![0, 3, 2], vec![0, 0, 2]).unwrap()
    );
    // Moving a slot onto an occupied coordinate is refused and names both slots.
    assert_eq!(
        p.reassign(&[(1, 2, 2)]).unwrap_err(),
        KernelError::Duplicate {
            first: 1,
            second: 2,
            row: 2,
            col: 2
        }
    );
    assert!(matches!(
        p.reassign(&[(3, 0, 0)]),
        Err(KernelError::OutOfRange { slot: 3, .. })
    ));
}

#[test]
fn bad_input_is_a_typed_error() {
    assert!(matches!(
        SparsePattern::new(2, 2, vec![0, 2], vec![0, 0]),
        Err(KernelError::OutOfRange {
            slot: 1,
            row: 2,
            ..
        })
    ));
    assert!(matches!(
        SparsePattern::new(2, 2, vec![0], vec![0, 1]),
        Err(KernelError::CoordLength { rows: 1, cols: 2 })
    ));
    assert!(matches!(
        SparsePattern::from_mask(2, 3, &[true; 5]),
        Err(KernelError::Length {
            expected: 6,
            got: 5,
            ..
        })
    ));
    assert!(matches!(
        SparsePattern::new(1 << 33, 1, vec![], vec![]),
        Err(KernelError::TooLarge { what: "rows", .. })
    ));
    let p = SparsePattern::from_mask(2, 2, &[true, false, false, true]).unwrap();
    let k = Kernels::default();
    let mut out = [0.0; 4];
    assert!(matches!(
        k.forward(&p, &[1.0], &[0.0; 4], 2, &mut out),
        Err(KernelError::Length {
            what: "values",
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        k.forward(&p, &[1.0, 1.0], &[0.0; 3], 2, &mut out),
        Err(KernelError::Length { what: "xᵀ", .. })
    ));
    assert!(matches!(
        k.backward_values(&p, &[0.0; 4], &[0.0; 4], 2, &mut [0.0; 3]),
        Err(KernelError::Length { what: "dv", .. })
    ));
    // An empty batch is a no-op, not an error.
    k.forward(&p, &[1.0, 1.0], &[], 0, &mut []).unwrap();
}
