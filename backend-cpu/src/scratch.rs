//! Reusable scratch memory, so that kernels needing temporary buffers (im2col, per-task
//! accumulators, footprints) allocate only on their first call: a training step then allocates
//! nothing after the first step. The backend keeps one pool per element type (`f32` for
//! im2col and the like, `f64` for partial sums and interpolation tables).

use std::sync::Mutex;

/// A free list of vectors of `T` shared by every task of a backend.
#[derive(Debug, Default)]
pub(crate) struct ScratchPool<T: Copy + Default> {
    free: Mutex<Vec<Vec<T>>>,
}

/// A scratch vector borrowed from the pool (its first `len` values); it goes back when dropped.
/// The vector keeps the longest length it was ever given, so that handing it out again for
/// fewer values and then for more does not zero the difference each time.
pub(crate) struct Scratch<'a, T: Copy + Default> {
    pool: &'a ScratchPool<T>,
    buf: Vec<T>,
    len: usize,
}

impl<T: Copy + Default> ScratchPool<T> {
    /// A vector of `len` values all `T::default()` (zero for numbers), reused when the pool has
    /// one large enough.
    pub(crate) fn take(&self, len: usize) -> Scratch<'_, T> {
        let mut scratch = self.take_for_overwrite(len);
        scratch.fill(T::default());
        scratch
    }

    /// A vector of `len` values whose contents are unspecified (left over from an earlier use,
    /// zeros where it grew), for a caller that writes every value before reading it (im2col,
    /// a GEMM output with `beta = 0`): it skips [`ScratchPool::take`]'s zeroing pass.
    pub(crate) fn take_for_overwrite(&self, len: usize) -> Scratch<'_, T> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        // Best fit: the shortest free vector that is long enough, else the longest to grow.
        let pick = free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.len() >= len)
            .min_by_key(|(_, v)| v.len())
            .map(|(i, _)| i)
            .or_else(|| free.iter().enumerate().max_by_key(|(_, v)| v.len()).map(|(i, _)| i));
        let mut buf = match pick {
            Some(i) => free.swap_remove(i),
            None => Vec::new(),
        };
        drop(free);
        if buf.len() < len {
            buf.resize(len, T::default());
        }
        Scratch { pool: self, buf, len }
    }
}

impl<T: Copy + Default> std::ops::Deref for Scratch<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[..self.len]
    }
}

impl<T: Copy + Default> std::ops::DerefMut for Scratch<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[..self.len]
    }
}

impl<T: Copy + Default> Drop for Scratch<'_, T> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.pool.free.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_and_reused() {
        let pool = ScratchPool::<f32>::default();
        let ptr = {
            let mut a = pool.take(100);
            assert!(a.iter().all(|&v| v == 0.0));
            a[3] = 7.0;
            a.as_ptr()
        };
        let b = pool.take(50);
        assert_eq!(b.as_ptr(), ptr, "the freed buffer is reused");
        assert!(b.iter().all(|&v| v == 0.0) && b.len() == 50);
        let c = pool.take(10);
        assert_ne!(c.as_ptr(), ptr);
    }

    #[test]
    fn buffers_for_overwrite_are_reused_with_the_right_length() {
        let pool = ScratchPool::<f32>::default();
        let ptr = {
            let mut a = pool.take_for_overwrite(100);
            a.fill(3.0);
            a.as_ptr()
        };
        // A shorter request reuses the buffer as it is (no zeroing pass: its values are stale).
        let b = pool.take_for_overwrite(80);
        assert_eq!(b.as_ptr(), ptr, "the freed buffer is reused");
        assert_eq!(b.len(), 80);
        assert!(b.iter().all(|&v| v == 3.0));
        drop(b);
        // A longer one gets the values the buffer held past the shorter use back (no zeroing
        // pass over them either), and grows it (the allocator may move it): the part it grew by
        // is zero.
        let c = pool.take_for_overwrite(120);
        assert_eq!(c.len(), 120);
        assert!(c[..100].iter().all(|&v| v == 3.0));
        assert!(c[100..].iter().all(|&v| v == 0.0));
        drop(c);
        // `take` zeroes it all.
        assert!(pool.take(120).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn f64_buffers_are_zeroed_and_reused() {
        let pool = ScratchPool::<f64>::default();
        let ptr = {
            let mut a = pool.take(64);
            a[10] = -2.5;
            a.as_ptr()
        };
        let b = pool.take(64);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.iter().all(|&v| v == 0.0) && b.len() == 64);
    }
}
