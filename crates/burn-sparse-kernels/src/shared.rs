//! Work shared between the calling thread and rayon's pool when the pool may be asleep: the
//! products of a training step (between two of them the idle workers go to sleep) and the
//! bursts that run once in many steps (a topology update).
//!
//! A parallel iterator called from outside the pool hands all of its work to the pool and
//! blocks the calling thread until the workers wake; on the 2-core machine measured, a split
//! that waited for a second worker took 0.7 ms to start its second half (see [`share`]). Here
//! the calling thread starts on the tasks at once and the workers take what is left when they
//! wake.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `run(state, task)` for every task `0..tasks`, each exactly once, on the calling thread
/// and up to `helpers` jobs on the current rayon pool, each with its own `init()` state;
/// returns the states, the calling thread's first.
///
/// Every thread takes the next task in order until none are left, so the calling thread starts
/// at once and a helper that starts late takes fewer tasks (none, if it starts after the last
/// was taken): the call takes about as long as the calling thread alone would, or less, plus
/// at most one worker's wake-up if the calling thread finishes before a helper started. Which
/// thread ran which task depends on timing; callers combine the states so that the result does
/// not. A task that panics panics the call (after the other tasks).
///
/// Measured on the 2-core machine (AMD EPYC, shared; 40 trials each after 50 ms of one busy
/// thread): a job spawned on rayon's pool from outside it started a median 0.11 ms later and
/// cost the caller next to nothing; a scoped OS thread started after 0.2 ms and its spawn cost
/// the caller 0.11 ms; the second half of a `rayon::join` called from outside the pool started
/// after 0.7 ms (the worker that woke ran the first half, the other stayed asleep).
pub fn share<S, I, R>(helpers: usize, tasks: usize, init: I, run: R) -> Vec<S>
where
    S: Send,
    I: Fn() -> S + Sync,
    R: Fn(&mut S, usize) + Sync,
{
    let helpers = helpers.min(tasks.saturating_sub(1));
    let next = AtomicUsize::new(0);
    let take = || {
        let mut state = init();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= tasks {
                return state;
            }
            run(&mut state, i);
        }
    };
    if helpers == 0 {
        return vec![take()];
    }
    let theirs: Vec<Mutex<Option<S>>> = (0..helpers).map(|_| Mutex::new(None)).collect();
    let mine = rayon::in_place_scope(|s| {
        for slot in &theirs {
            s.spawn(move |_| {
                let state = take();
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
            });
        }
        take()
    });
    let mut states = vec![mine];
    states.extend(
        theirs
            .into_iter()
            .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())),
    );
    states
}

/// Runs `run(item)` for every item, each exactly once, shared between the calling thread and
/// up to `helpers` jobs on the pool as [`share`] shares tasks (the calling thread starts at
/// once, the others take what is left as they wake). The items are typically disjoint
/// `&mut` pieces of one output, each written by whoever takes it.
pub fn share_items<T, R>(helpers: usize, items: Vec<T>, run: R)
where
    T: Send,
    R: Fn(T) + Sync,
{
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    share(
        helpers,
        slots.len(),
        || (),
        |_, i| {
            let item = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(item) = item {
                run(item);
            }
        },
    );
}

/// The helpers a burst of work should use next to the calling thread: none below
/// `min_work` (in whatever unit the caller counts, where the spawn would cost more than it
/// saves), else [`helpers`].
pub fn helpers_for(work: u128, min_work: u128) -> usize {
    if work < min_work { 0 } else { helpers() }
}

/// One fewer than the current rayon pool's threads (`RAYON_NUM_THREADS=1`: none, everything
/// on the calling thread).
pub fn helpers() -> usize {
    rayon::current_num_threads().saturating_sub(1)
}
