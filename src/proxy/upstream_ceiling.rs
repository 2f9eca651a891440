//! The ceiling on upstream connections the requests open, shared by every worker. Each HTTP/2
//! stream (an ordinary request, or a WebSocket tunnel) may hold an upstream connection of its
//! own, so without it a few HTTP/2 client connections, each one place under
//! `server.max_connections`, could open hundreds of upstream connections apiece and take every
//! descriptor. The place is held by the connection's task or its IO ([`Counted`]), whichever
//! lives as long as the socket, and freed when the connection closes, so a request on a kept-alive connection pays nothing for it.
//!
//! Idle pooled connections hold places too (they are descriptors), but they give them up: a
//! connect that finds the ceiling reached makes some pool, of any worker, drop an idle
//! connection and waits (within the connect timeout) for a place to free. Only when every place
//! is held by a connection in use is a request answered `503 overloaded`, at once, without
//! reaching the upstream and without counting against the target's health (it is the gateway's
//! state, not the target's).
//!
//! Envoy's cluster circuit breaker (`max_connections`, `upstream_cx_overflow`) is the same idea;
//! here one ceiling covers every upstream, since what runs out is the process's descriptors.

use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::ceiling::{Slot, Slots};
use crate::metrics::Metrics;

/// No place is left for a new upstream connection.
#[derive(Debug, thiserror::Error)]
#[error("upstream connection ceiling reached ({0} open)")]
pub(crate) struct CeilingReached(usize);

/// The registered pools, and the length at which the dead ones are next pruned.
struct Pools {
    list: Vec<Weak<dyn Reclaim>>,
    prune_at: usize,
}

const MIN_PRUNE: usize = 64;

/// A pool of connections that can give an idle one up (`UpstreamClient`).
pub(crate) trait Reclaim: Send + Sync {
    /// Drop one idle connection, if there is one; its place frees once its task has ended.
    fn drop_idle(&self) -> bool;
}

/// The process's upstream connection ceiling, with its two metrics.
pub(crate) struct UpstreamCeiling {
    slots: Arc<Slots>,
    /// Told when a place frees, for connects waiting on a reclaimed one.
    freed: Arc<Notify>,
    /// Every pool that may hold idle connections (dead ones pruned as the list grows).
    pools: Mutex<Pools>,
    open: IntGauge,
    refused: IntCounter,
}

impl UpstreamCeiling {
    pub(crate) fn new(max: usize, metrics: &Metrics) -> Arc<UpstreamCeiling> {
        Arc::new(UpstreamCeiling {
            slots: Slots::new(max),
            freed: Arc::new(Notify::new()),
            pools: Mutex::new(Pools {
                list: Vec::new(),
                prune_at: MIN_PRUNE,
            }),
            open: metrics.upstream_connections_open.clone(),
            refused: metrics.upstream_connections_refused.clone(),
        })
    }

    /// Let the ceiling take idle connections back from `pool` when it needs places.
    pub(crate) fn register(&self, pool: Weak<dyn Reclaim>) {
        let mut pools = self.pools.lock();
        // Pools come and go with endpoints; pruning once the list has doubled since the last
        // prune keeps each registration O(1) amortized and the list at most twice the live
        // pools (or `MIN_PRUNE`).
        if pools.list.len() >= pools.prune_at {
            pools.list.retain(|p| p.strong_count() > 0);
            pools.prune_at = (pools.list.len() * 2).max(MIN_PRUNE);
        }
        pools.list.push(pool);
    }

    /// A place for one new connection, taken before connecting. When none is free, this
    /// request reclaims one idle connection and awaits a freed place until `deadline`; with
    /// nothing idle to reclaim the answer is at once. A freed place wakes one waiter (the
    /// longest waiting), so a burst closes one warm connection per waiting request, not one
    /// per waiter per freed place. A woken waiter that finds no place (a request that never
    /// waited took it first, or the wake-up was left by a close nobody waited for) reclaims
    /// once more: otherwise it would wait out its deadline with idle connections left to give.
    pub(crate) async fn place(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Place, CeilingReached> {
        if let Some(place) = self.try_place() {
            return Ok(place);
        }
        let mut reclaimed = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Queued before looking again, so a place freed in between is not missed.
            freed.as_mut().enable();
            if let Some(place) = self.try_place() {
                return Ok(place);
            }
            if self.reclaim_one() {
                reclaimed = true;
            } else if !reclaimed {
                // Every place is held by a connection in use.
                break;
            }
            // Nothing left to reclaim on a later pass: an earlier reclaim (ours or another
            // waiter's) may still free a place.
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break;
            }
        }
        self.refused.inc();
        Err(CeilingReached(self.slots.max()))
    }

    fn try_place(&self) -> Option<Place> {
        let slot = self.slots.acquire()?;
        self.open.inc();
        Some(Place {
            slot: Some(slot),
            open: self.open.clone(),
            freed: self.freed.clone(),
        })
    }

    /// Make one pool drop one idle connection. The list is copied out so that no pool's lock
    /// is taken under this one.
    fn reclaim_one(&self) -> bool {
        let pools: Vec<Arc<dyn Reclaim>> = self
            .pools
            .lock()
            .list
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        pools.iter().any(|pool| pool.drop_idle())
    }
}

/// One connection's place under the ceiling, freed when dropped.
pub(crate) struct Place {
    /// Always `Some` until dropped.
    slot: Option<Slot>,
    open: IntGauge,
    freed: Arc<Notify>,
}

impl Drop for Place {
    fn drop(&mut self) {
        // The slot is given back before the waiter is told: woken first, it could look, find
        // the slot still held and wait for a notification that had already come.
        drop(self.slot.take());
        self.open.dec();
        // A connection closing, not a request: cheap enough, and rare.
        self.freed.notify_one();
    }
}

/// The IO of an upstream connection holding its place (none for a health check's): used where
/// the IO outlives the task we spawn for the connection (an HTTP/2 connection, whose IO hyper
/// drives in a task of its own; one that switched protocols, whose IO the tunnel holds after a
/// 101). A plain HTTP/1.1 connection's place is held by its task instead, which keeps this
/// wrapper out of the IO type hyper's per-request HTTP/1.1 code is built for.
pub(crate) struct Counted<T> {
    io: T,
    _place: Option<Place>,
}

impl<T> Counted<T> {
    pub(crate) fn new(io: T, place: Option<Place>) -> Self {
        Counted { io, _place: place }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    fn wait() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    /// A pool whose idle connections are places, each dropped on reclaim from another task
    /// after its delay (as a connection's task would drop its IO once it noticed).
    struct IdlePool(Mutex<Vec<(Place, Duration)>>);

    impl Reclaim for IdlePool {
        fn drop_idle(&self) -> bool {
            let Some((place, delay)) = self.0.lock().pop() else {
                return false;
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                drop(place);
            });
            true
        }
    }

    fn pool_of(ceiling: &UpstreamCeiling, places: Vec<(Place, Duration)>) -> Arc<IdlePool> {
        registered(ceiling, Arc::new(IdlePool(Mutex::new(places))))
    }

    fn registered<P: Reclaim + 'static>(ceiling: &UpstreamCeiling, pool: Arc<P>) -> Arc<P> {
        let weak: Weak<dyn Reclaim> = Arc::downgrade(&(pool.clone() as Arc<dyn Reclaim>));
        ceiling.register(weak);
        pool
    }

    /// A pool whose first reclaimed place is taken, the moment it frees, by a request that
    /// never waited (it found a place free at once).
    struct RacedPool {
        ceiling: Arc<UpstreamCeiling>,
        idle: Mutex<Vec<Place>>,
        taken: Mutex<Option<Place>>,
    }

    impl Reclaim for RacedPool {
        fn drop_idle(&self) -> bool {
            let Some(place) = self.idle.lock().pop() else {
                return false;
            };
            drop(place);
            let mut taken = self.taken.lock();
            if taken.is_none() {
                *taken = self.ceiling.try_place();
            }
            true
        }
    }

    /// The waiter's reclaimed place went to a request that did not wait: it reclaims another
    /// instead of waiting out its deadline (the CI failure of stop 20).
    #[tokio::test]
    async fn a_place_taken_by_a_newcomer_is_made_up_for() {
        let metrics = Metrics::new().unwrap();
        let ceiling = UpstreamCeiling::new(2, &metrics);
        let idle = vec![
            ceiling.place(wait()).await.unwrap(),
            ceiling.place(wait()).await.unwrap(),
        ];
        let pool = registered(
            &ceiling,
            Arc::new(RacedPool {
                ceiling: ceiling.clone(),
                idle: Mutex::new(idle),
                taken: Mutex::new(None),
            }),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let place = tokio::time::timeout(Duration::from_secs(2), ceiling.place(deadline)).await;
        assert!(matches!(place, Ok(Ok(_))));
        assert!(pool.taken.lock().is_some());
        assert_eq!(metrics.upstream_connections_refused.get(), 0);
    }

    #[tokio::test]
    async fn places_are_counted_refused_past_the_ceiling_and_freed() {
        let metrics = Metrics::new().unwrap();
        let ceiling = UpstreamCeiling::new(2, &metrics);
        let a = ceiling.place(wait()).await.unwrap();
        let b = ceiling.place(wait()).await.unwrap();
        assert_eq!(metrics.upstream_connections_open.get(), 2);
        // Nothing idle to take back: refused at once, not after the wait.
        let refused = tokio::time::timeout(Duration::from_secs(1), ceiling.place(wait())).await;
        assert!(matches!(refused, Ok(Err(CeilingReached(2)))));
        assert_eq!(metrics.upstream_connections_refused.get(), 1);
        drop(a);
        let c = ceiling.place(wait()).await.unwrap();
        drop((b, c));
        assert_eq!(metrics.upstream_connections_open.get(), 0);
        assert_eq!(ceiling.slots.used(), 0);
    }

    #[tokio::test]
    async fn idle_connections_give_their_places_up() {
        let metrics = Metrics::new().unwrap();
        let ceiling = UpstreamCeiling::new(2, &metrics);
        let pool = pool_of(
            &ceiling,
            vec![
                (ceiling.place(wait()).await.unwrap(), Duration::ZERO),
                (ceiling.place(wait()).await.unwrap(), Duration::ZERO),
            ],
        );
        let a = ceiling.place(wait()).await.unwrap();
        let b = ceiling.place(wait()).await.unwrap();
        assert!(pool.0.lock().is_empty());
        assert_eq!(metrics.upstream_connections_refused.get(), 0);
        assert!(ceiling.place(wait()).await.is_err());
        drop((a, b));
    }

    /// Two requests each reclaim an idle connection; the first place to free wakes both and
    /// goes to one: the other waits for the place its own reclaim frees, not refused.
    #[tokio::test]
    async fn a_waiter_outrun_to_a_place_waits_for_the_next() {
        let metrics = Metrics::new().unwrap();
        let ceiling = UpstreamCeiling::new(2, &metrics);
        let _pool = pool_of(
            &ceiling,
            vec![
                (
                    ceiling.place(wait()).await.unwrap(),
                    Duration::from_millis(50),
                ),
                (ceiling.place(wait()).await.unwrap(), Duration::ZERO),
            ],
        );
        let (a, b) = tokio::join!(ceiling.place(wait()), ceiling.place(wait()));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(metrics.upstream_connections_refused.get(), 0);
    }
}
