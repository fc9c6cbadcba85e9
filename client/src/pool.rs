//! Reused byte buffers of one size, so that the save and restore pipelines do not pay for
//! fresh memory (allocation, page faults, zeroing) on every stripe.
//!
//! A buffer taken from a [`BufferPool`] goes back to it when dropped, including when it was
//! turned into [`Bytes`] ([`PooledBuf::freeze`]) and the last slice of those is dropped (a
//! shard acknowledged by its node, say). Memory is bounded two ways:
//! - a *bounded* pool ([`BufferPool::bounded`], the `save_async` staging pool) never has more
//!   than `max` buffers out or kept: [`BufferPool::take`] waits for one to come back, and
//!   [`BufferPool::try_take`] says there is none, so exhaustion is a wait, never an allocation;
//! - a *caching* pool ([`BufferPool::caching`], stripe reads and parity) never waits; it
//!   allocates when it has no free buffer and keeps at most `max` free ones (the buffers out
//!   are already bounded by the pipeline's stripes in flight).
//!
//! Buffers come back as they were left: a user overwrites what it uses (they are not zeroed
//! again). [`BufferPool::prefault`] allocates a bounded pool's buffers up front with every page
//! touched, so even the first use finds warm memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reused buffers of `buf_bytes` each; see the module doc. Cheap to clone (shared).
#[derive(Clone)]
pub(crate) struct BufferPool {
    inner: Arc<Inner>,
}

struct Inner {
    buf_bytes: usize,
    max: usize,
    free: Mutex<Vec<Vec<u8>>>,
    /// Bounded pools: one permit per buffer that may be out.
    permits: Option<Arc<Semaphore>>,
    /// Buffers allocated so far (a bounded pool never passes `max`).
    allocated: AtomicUsize,
}

/// A buffer of the pool, `buf_bytes` long; back to the pool when dropped.
pub(crate) struct PooledBuf {
    buf: Vec<u8>,
    pool: Arc<Inner>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("buf_bytes", &self.inner.buf_bytes)
            .field("max", &self.inner.max)
            .field("bounded", &self.inner.permits.is_some())
            .field("allocated", &self.allocated())
            .finish()
    }
}

impl BufferPool {
    /// At most `max` (at least 1) buffers of `buf_bytes`, out or kept; taking waits when all are
    /// out.
    pub(crate) fn bounded(buf_bytes: usize, max: usize) -> Self {
        let max = max.max(1);
        Self::with(buf_bytes, max, Some(Arc::new(Semaphore::new(max))))
    }

    /// Allocates when empty; keeps at most `max` free buffers of `buf_bytes`.
    pub(crate) fn caching(buf_bytes: usize, max: usize) -> Self {
        Self::with(buf_bytes, max, None)
    }

    fn with(buf_bytes: usize, max: usize, permits: Option<Arc<Semaphore>>) -> Self {
        let inner = Inner {
            buf_bytes,
            max,
            free: Mutex::new(Vec::new()),
            permits,
            allocated: AtomicUsize::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Bytes in each buffer.
    pub(crate) fn buf_bytes(&self) -> usize {
        self.inner.buf_bytes
    }

    /// The bound: buffers out or kept (bounded), or kept free (caching).
    pub(crate) fn max(&self) -> usize {
        self.inner.max
    }

    /// Buffers allocated so far.
    pub(crate) fn allocated(&self) -> usize {
        self.inner.allocated.load(Ordering::Relaxed)
    }

    /// Buffers kept free now.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.inner.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A buffer, waiting (bounded pool) until one is free. Errors only if the pool is closed,
    /// which it never is while a handle exists.
    pub(crate) async fn take(&self) -> Result<PooledBuf, tokio::sync::AcquireError> {
        let permit = match &self.inner.permits {
            Some(p) => Some(p.clone().acquire_owned().await?),
            None => None,
        };
        Ok(self.inner.clone().buffer(permit))
    }

    /// A buffer if one can be had at once (always, for a caching pool); `None` when a bounded
    /// pool has every buffer out.
    pub(crate) fn try_take(&self) -> Option<PooledBuf> {
        let permit = match &self.inner.permits {
            Some(p) => Some(p.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some(self.inner.clone().buffer(permit))
    }

    /// A buffer of a caching pool, at once (a kept one, or a new one).
    pub(crate) fn take_cached(&self) -> PooledBuf {
        debug_assert!(self.inner.permits.is_none(), "take_cached is for caching pools");
        self.inner.clone().buffer(None)
    }

    /// Allocates every buffer a bounded pool may hold (a caching pool: `max` of them) and
    /// touches every page, so that no later use faults. Returns the buffers allocated now.
    pub(crate) fn prefault(&self) -> usize {
        let mut made = 0;
        let mut free = self.inner.free.lock().unwrap_or_else(|e| e.into_inner());
        while self.inner.allocated.load(Ordering::Relaxed) < self.inner.max {
            // A non-zero fill writes (so faults in) every page; zeroed memory would map lazily.
            free.push(vec![PREFAULT_FILL; self.inner.buf_bytes]);
            self.inner.allocated.fetch_add(1, Ordering::Relaxed);
            made += 1;
        }
        made
    }
}

/// The byte `prefault` fills with.
const PREFAULT_FILL: u8 = 0xa5;

impl Inner {
    fn buffer(self: Arc<Self>, permit: Option<OwnedSemaphorePermit>) -> PooledBuf {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let buf = reused.unwrap_or_else(|| {
            self.allocated.fetch_add(1, Ordering::Relaxed);
            vec![0; self.buf_bytes]
        });
        PooledBuf { buf, pool: self, _permit: permit }
    }
}

impl PooledBuf {
    /// The first `len` bytes (at most the buffer's size) as shared [`Bytes`]; the buffer goes
    /// back to the pool when the last slice of them is dropped.
    pub(crate) fn freeze(self, len: usize) -> Bytes {
        let len = len.min(self.buf.len());
        Bytes::from_owner(self).slice(..len)
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if self.pool.permits.is_some() || free.len() < self.pool.max {
            free.push(buf);
        } else {
            self.pool.allocated.fetch_sub(1, Ordering::Relaxed);
        }
        // The permit (if any) is released after the buffer is back, so a waiter finds it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bounded_pool_reuses_its_buffers_and_never_allocates_past_its_bound() {
        let pool = BufferPool::bounded(4096, 2);
        let mut a = pool.take().await.expect("open");
        a.as_mut()[0] = 7;
        let a_ptr = a.as_ref().as_ptr();
        let b = pool.try_take().expect("second buffer");
        assert!(pool.try_take().is_none(), "both out: none can be had at once");
        assert_eq!(pool.allocated(), 2);
        drop(a);
        let again = pool.try_take().expect("one came back");
        assert_eq!(again.as_ref().as_ptr(), a_ptr, "the same memory is reused");
        assert_eq!(again.as_ref()[0], 7, "not zeroed again");
        drop((b, again));
        assert_eq!((pool.allocated(), pool.free()), (2, 2));
    }

    #[tokio::test]
    async fn an_exhausted_pool_makes_take_wait_until_a_buffer_comes_back() {
        let pool = BufferPool::bounded(64, 1);
        let held = pool.take().await.expect("open").freeze(10);
        let slice = held.slice(2..5);
        drop(held);
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take().await.map(|b| b.as_ref().len()) }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the only buffer is still out (a slice holds it)");
        drop(slice);
        assert_eq!(waiter.await.expect("joined").expect("open"), 64);
        assert_eq!(pool.allocated(), 1, "exhaustion waited; it did not allocate");
    }

    #[tokio::test]
    async fn a_caching_pool_never_waits_and_keeps_at_most_its_bound() {
        let pool = BufferPool::caching(128, 2);
        let bufs: Vec<PooledBuf> = (0..5).map(|_| pool.try_take().expect("never none")).collect();
        assert_eq!(pool.allocated(), 5);
        drop(bufs);
        assert_eq!((pool.free(), pool.allocated()), (2, 2), "three were freed, two kept");
        let _b = pool.take().await.expect("open");
        assert_eq!(pool.allocated(), 2, "a kept buffer is reused");
    }

    #[test]
    fn prefault_allocates_the_whole_bound_once() {
        let pool = BufferPool::bounded(8192, 3);
        assert_eq!(pool.prefault(), 3);
        assert_eq!(pool.prefault(), 0);
        assert_eq!((pool.allocated(), pool.free()), (3, 3));
        let b = pool.try_take().expect("free");
        assert!(b.as_ref().iter().all(|&x| x == PREFAULT_FILL));
        assert_eq!(b.freeze(100_000).len(), 8192, "freeze is cut to the buffer");
    }
}
