//! `shared::share` and `share_items`: every task runs exactly once, whatever the helpers, the
//! tasks and the timing; states come back the calling thread's first; a panicking task panics
//! the call.

use burn_sparse_kernels::shared::{helpers_for, share, share_items};
use proptest::prelude::*;

proptest! {
    #[test]
    fn every_task_runs_exactly_once(helpers in 0usize..5, tasks in 0usize..300, sleep in 0u64..3) {
        let caller = std::thread::current().id();
        let states = share(
            helpers,
            tasks,
            || (std::thread::current().id(), Vec::new()),
            |(_, done): &mut (std::thread::ThreadId, Vec<usize>), i| {
                if sleep > 0 && i % 50 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(sleep * 100));
                }
                done.push(i);
            },
        );
        // The calling thread's state first, one per helper (none beyond the tasks).
        prop_assert_eq!(states[0].0, caller);
        prop_assert_eq!(states.len(), 1 + helpers.min(tasks.saturating_sub(1)));
        prop_assert!(states[1..].iter().all(|(id, _)| *id != caller));
        let mut all: Vec<usize> = states.into_iter().flat_map(|(_, d)| d).collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..tasks).collect::<Vec<_>>());
    }
}

proptest! {
    #[test]
    fn every_item_is_written_once_by_whoever_takes_it(helpers in 0usize..4, n in 0usize..500, per in 1usize..40) {
        let mut out = vec![0u32; n];
        let chunks: Vec<(usize, &mut [u32])> = out.chunks_mut(per).enumerate().collect();
        share_items(helpers, chunks, |(i, o)| {
            for (j, v) in o.iter_mut().enumerate() {
                *v += (i * per + j) as u32 + 1;
            }
        });
        prop_assert_eq!(out, (1..=n as u32).collect::<Vec<_>>());
    }
}

#[test]
fn a_panicking_task_panics_the_call() {
    let r = std::panic::catch_unwind(|| {
        share(
            2,
            64,
            || (),
            |_, i| {
                if i == 40 {
                    panic!("task 40");
                }
            },
        )
    });
    assert!(r.is_err());
}

#[test]
fn helpers_follow_the_pool_and_the_threshold() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| {
        assert_eq!(helpers_for(99, 100), 0);
        assert_eq!(helpers_for(100, 100), 2);
    });
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    one.install(|| assert_eq!(helpers_for(1 << 40, 100), 0));
}
