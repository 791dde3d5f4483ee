//! Reused buffers for the op's own temporaries: the feature-major copies of a row-major input
//! (kept for the backward pass) and of a row-major output gradient (dropped at the end of the
//! backward pass).
//!
//! Allocating those afresh every step costs more than the products themselves on a small or very
//! sparse layer: with glibc's allocator a freed buffer of a few hundred KiB goes back to the
//! kernel, so the next step pays a page fault on every 4 KiB page it writes (a profile of the
//! 784x300 layer at 98% put about a fifth of its step in page faults and zeroing). A [`Buf`]
//! returns its storage to a small pool when dropped, and the next [`Buf::for_overwrite`] of at
//! most that size takes it back, already mapped.
//!
//! A reused buffer holds the previous user's values, not zeros: it is only for outputs that are
//! written in full before they are read (a transpose's destination). The pool keeps at most
//! [`POOL_BUFFERS`] buffers of at most [`POOL_MAX_BYTES`] in all; anything beyond is freed as
//! usual.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// The most buffers the pool keeps.
pub const POOL_BUFFERS: usize = 8;

/// The most bytes the pool keeps in all (buffers that would pass it are freed).
pub const POOL_MAX_BYTES: usize = 256 << 20;

/// Free buffers, by capacity.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// An `f32` buffer whose storage goes back to the pool when dropped.
#[derive(Debug, Default)]
pub struct Buf(Vec<f32>);

impl Buf {
    /// A buffer of `n` values for a caller that writes every one of them before reading any:
    /// the smallest free buffer of at least `n` values, else a new one. Its contents are
    /// whatever the previous user left (initialised `f32`s, zeros if new).
    pub fn for_overwrite(n: usize) -> Self {
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= n)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        };
        let mut v = reused.unwrap_or_default();
        if v.len() >= n {
            v.truncate(n);
        } else {
            v.resize(n, 0.0);
        }
        Buf(v)
    }

    /// The values, as an owned vector (the storage leaves the pool for good).
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.0)
    }
}

impl Clone for Buf {
    fn clone(&self) -> Self {
        let mut b = Buf::for_overwrite(self.len());
        b.copy_from_slice(self);
        b
    }
}

impl PartialEq for Buf {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        let bytes = v.capacity() * size_of::<f32>();
        if bytes > POOL_MAX_BYTES {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        pool.push(v);
        // Over either bound: free the smallest buffers first (the large ones are the ones that
        // cost page faults to refill).
        pool.sort_unstable_by_key(|v| std::cmp::Reverse(v.capacity()));
        pool.truncate(POOL_BUFFERS);
        let mut total = 0usize;
        pool.retain(|v| {
            total += v.capacity() * size_of::<f32>();
            total <= POOL_MAX_BYTES
        });
    }
}

/// How many buffers and bytes the pool holds now.
pub fn pooled() -> (usize, usize) {
    let pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    (
        pool.len(),
        pool.iter().map(|v| v.capacity() * size_of::<f32>()).sum(),
    )
}

/// Frees every pooled buffer (the memory a long-lived process may want back between runs).
pub fn release() {
    POOL.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pool is process-wide and the tests of this crate run in parallel: these tests only
    // assert what holds whatever another thread does meanwhile.

    #[test]
    fn a_buffer_has_the_length_asked_for() {
        for n in [0, 1, 7, 4096, 100_000] {
            let b = Buf::for_overwrite(n);
            assert_eq!(b.len(), n);
        }
        let mut big = Buf::for_overwrite(10_000);
        big.fill(3.0);
        drop(big);
        // Smaller than a pooled one: truncated, still exactly n long, and writable in full.
        let mut small = Buf::for_overwrite(10);
        assert_eq!(small.len(), 10);
        small.fill(1.0);
        assert!(small.iter().all(|&v| v == 1.0));
        assert_eq!(small.into_vec(), vec![1.0; 10]);
    }

    #[test]
    fn the_pool_stays_within_its_bounds() {
        let bufs: Vec<Buf> = (1..=3 * POOL_BUFFERS)
            .map(|i| Buf::for_overwrite(i * 1000))
            .collect();
        drop(bufs);
        let (n, bytes) = pooled();
        assert!(n <= POOL_BUFFERS, "{n} buffers kept");
        assert!(bytes <= POOL_MAX_BYTES, "{bytes} bytes kept");
        // A buffer larger than the byte bound is never kept.
        drop(Buf::for_overwrite(POOL_MAX_BYTES / size_of::<f32>() + 1));
        assert!(pooled().1 <= POOL_MAX_BYTES);
    }
}
