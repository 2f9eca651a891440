//! Per-client rejection counting for the threshold alert: a fixed window per client that starts at
//! its first rejection, one alert when the count reaches the threshold, then quiet until the
//! window ends. Counted per instance (it needs no shared state and no store call), and bounded.

use std::time::Instant;

use parking_lot::Mutex;

use crate::config::compiled::AlertThreshold;
use crate::lru::Lru;

/// Clients tracked at most. Past this, a new client replaces the one rejected least recently
/// (O(1)): a client still being rejected is never the one forgotten.
const TRACK_MAX: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct Tracker {
    windows: Mutex<Lru<Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u64,
}

impl Tracker {
    /// Count one rejection; `Some(count)` exactly when this one reaches the threshold.
    pub(crate) fn count(&self, client: &str, threshold: AlertThreshold) -> Option<u64> {
        self.count_at(client, threshold, Instant::now())
    }

    fn count_at(&self, client: &str, threshold: AlertThreshold, now: Instant) -> Option<u64> {
        let expired = |w: &Window| now.saturating_duration_since(w.started) >= threshold.window;
        let fresh = Window {
            started: now,
            count: 0,
        };
        let mut windows = self.windows.lock();
        let slot = match windows.find(0, client) {
            Some(slot) => {
                windows.touch(slot);
                slot
            }
            None => {
                if windows.len() >= TRACK_MAX {
                    if let Some(oldest) = windows.oldest() {
                        windows.remove(oldest);
                    }
                }
                windows.insert(0, client, fresh)?
            }
        };
        let window = windows.get_mut(slot)?;
        if expired(window) {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        window.count += 1;
        (window.count == threshold.rejections).then_some(window.count)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_alert_per_window() {
        let t = Tracker::default();
        let th = AlertThreshold {
            rejections: 3,
            window: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.count_at("a", th, at(0)), None);
        assert_eq!(t.count_at("b", th, at(1)), None);
        assert_eq!(t.count_at("a", th, at(2)), None);
        assert_eq!(t.count_at("a", th, at(3)), Some(3));
        assert_eq!(t.count_at("a", th, at(4)), None);
        // The window started at 0: at 60 a new one starts.
        assert_eq!(t.count_at("a", th, at(60)), None);
        assert_eq!(t.count_at("a", th, at(61)), None);
        assert_eq!(t.count_at("a", th, at(62)), Some(3));
        // Spread out beyond the window: never reaches it.
        for s in [100, 200, 300, 400] {
            assert_eq!(t.count_at("c", th, at(s)), None);
        }
    }

    #[test]
    fn bounded() {
        let t = Tracker::default();
        let th = AlertThreshold {
            rejections: 1,
            window: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        for i in 0..TRACK_MAX {
            assert_eq!(t.count_at(&format!("c{i}"), th, t0), Some(1));
        }
        // A new client is still counted: the least recently rejected one (c0) makes room.
        assert_eq!(t.count_at("late", th, t0), Some(1));
        assert_eq!(t.windows.lock().len(), TRACK_MAX);
        assert!(t.windows.lock().find(0, "c0").is_none());
        // c1 is touched, so c2 is the next to go.
        let th2 = AlertThreshold {
            rejections: 2,
            ..th
        };
        assert_eq!(t.count_at("c1", th2, t0), Some(2));
        assert_eq!(t.count_at("later", th, t0), Some(1));
        assert!(t.windows.lock().find(0, "c1").is_some());
        assert!(t.windows.lock().find(0, "c2").is_none());
    }
}
