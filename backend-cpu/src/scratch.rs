//! Reusable scratch memory, so that kernels needing temporary buffers (im2col, per-task
//! accumulators, footprints) allocate only on their first call: a training step then allocates
//! nothing after the first step.

use std::sync::Mutex;

/// A free list of f32 vectors shared by every task of a backend.
#[derive(Debug, Default)]
pub(crate) struct ScratchPool {
    free: Mutex<Vec<Vec<f32>>>,
}

/// A scratch vector borrowed from the pool; it goes back when dropped.
pub(crate) struct Scratch<'a> {
    pool: &'a ScratchPool,
    buf: Vec<f32>,
}

impl ScratchPool {
    /// A zero-filled vector of `len` values, reused when the pool has one large enough.
    pub(crate) fn take(&self, len: usize) -> Scratch<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        // Best fit: the smallest free vector that is large enough, else the largest to grow.
        let pick = free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)
            .or_else(|| free.iter().enumerate().max_by_key(|(_, v)| v.capacity()).map(|(i, _)| i));
        let mut buf = match pick {
            Some(i) => free.swap_remove(i),
            None => Vec::new(),
        };
        drop(free);
        buf.clear();
        buf.resize(len, 0.0);
        Scratch { pool: self, buf }
    }
}

impl std::ops::Deref for Scratch<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf
    }
}

impl std::ops::DerefMut for Scratch<'_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf
    }
}

impl Drop for Scratch<'_> {
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
        let pool = ScratchPool::default();
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
}
