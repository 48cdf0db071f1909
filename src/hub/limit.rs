//! Per-connection rate limits: two token buckets, one for data messages
//! and one for their bytes, checked by the read loop before the handler
//! runs. Time is tokio's clock, so tests can pause and advance it.

use tokio::time::Instant;

/// How fast one connection may send data messages ([`HubConfig::rate_limit`](super::HubConfig::rate_limit)).
/// A connection over either bucket is closed with 1008 (policy violation,
/// reason "Rate limit") and counted in [`Stats::rate_limited`](super::Stats::rate_limited).
///
/// Each bucket starts full, holds at most its burst, and refills at its
/// rate; a message takes one token from the message bucket and its length
/// from the byte bucket.
///
/// ```
/// use sabai::hub::RateLimit;
///
/// // 50 messages a second, 100 at once, and 256 KiB a second.
/// let limit = RateLimit::new(50.0, 100).bytes(256 * 1024);
/// # let _ = limit;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Data messages per second, sustained.
    pub messages_per_sec: f64,
    /// Messages at once above the rate: the message bucket's size (at least 1).
    pub burst: u32,
    /// Payload bytes per second, sustained; `None`: bytes are not limited.
    pub bytes_per_sec: Option<u64>,
    /// The byte bucket's size (by default one second's worth). The hub
    /// raises it to `max_message_size` if it is smaller, so that one
    /// message of the largest size can always pass a full bucket.
    pub bytes_burst: u64,
}

impl RateLimit {
    /// `messages_per_sec` sustained, `burst` at once; bytes not limited.
    /// A rate that is not a positive number is taken as the smallest
    /// positive one (nothing refills, in practice).
    pub fn new(messages_per_sec: f64, burst: u32) -> RateLimit {
        let rate = if messages_per_sec.is_finite() && messages_per_sec > 0.0 {
            messages_per_sec
        } else {
            f64::MIN_POSITIVE
        };
        RateLimit { messages_per_sec: rate, burst: burst.max(1), bytes_per_sec: None, bytes_burst: 0 }
    }

    /// Also at most `per_sec` payload bytes a second, with one second's
    /// worth at once.
    pub fn bytes(mut self, per_sec: u64) -> RateLimit {
        self.bytes_per_sec = Some(per_sec);
        self.bytes_burst = per_sec;
        self
    }

    /// Sets the byte bucket's size.
    pub fn bytes_burst(mut self, bytes: u64) -> RateLimit {
        self.bytes_burst = bytes;
        self
    }
}

/// A token bucket: full at the start, `capacity` at most, `rate` tokens a
/// second.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: f64, capacity: f64, now: Instant) -> Bucket {
        Bucket { capacity, rate, tokens: capacity, at: now }
    }

    /// Adds what accrued since the last call, up to the capacity.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.capacity);
    }

    /// Whether `n` tokens are there now (after refilling).
    fn has(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= n
    }

    fn take(&mut self, n: f64) {
        self.tokens -= n;
    }
}

/// A connection's two buckets.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    messages: Bucket,
    bytes: Option<Bucket>,
}

impl Limiter {
    pub(crate) fn new(limit: &RateLimit, max_message_size: usize, now: Instant) -> Limiter {
        let messages = Bucket::new(limit.messages_per_sec, f64::from(limit.burst.max(1)), now);
        let bytes = limit.bytes_per_sec.map(|rate| {
            let capacity = limit.bytes_burst.max(max_message_size as u64).max(1);
            Bucket::new(rate as f64, capacity as f64, now)
        });
        Limiter { messages, bytes }
    }

    /// Takes a message of `len` bytes if both buckets allow it; takes
    /// nothing and says `false` if either does not.
    pub(crate) fn admit(&mut self, len: usize, now: Instant) -> bool {
        let len = len as f64;
        let bytes_ok = self.bytes.as_mut().is_none_or(|b| b.has(len, now));
        if !(self.messages.has(1.0, now) && bytes_ok) {
            return false;
        }
        self.messages.take(1.0);
        if let Some(bytes) = &mut self.bytes {
            bytes.take(len);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut limiter = Limiter::new(&RateLimit::new(10.0, 5), 0, start);
        for i in 0..5 {
            assert!(limiter.admit(1, start), "message {i} of the burst");
        }
        assert!(!limiter.admit(1, start), "the burst is spent");
        assert!(!limiter.admit(1, start + ms(90)), "0.9 of a token is not one");
        assert!(limiter.admit(1, start + ms(110)), "one token after 100 ms at 10/s");
        assert!(!limiter.admit(1, start + ms(150)));
        // Idle for a minute: back to the burst, never more.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| limiter.admit(1, later)).count(), 5);
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let start = Instant::now();
        let mut limiter = Limiter::new(&RateLimit::new(50.0, 2), 0, start);
        for i in 0..1000 {
            assert!(limiter.admit(10, start + ms(20 * i)), "message {i}");
        }
        // Twice the rate: the burst of 2 and what accrues meanwhile, then refused.
        let start = start + Duration::from_secs(30);
        let refused = (0..10).position(|i| !limiter.admit(10, start + ms(10 * i)));
        assert_eq!(refused, Some(3));
    }

    #[test]
    fn bytes_are_limited_by_their_own_bucket() {
        let start = Instant::now();
        let limit = RateLimit::new(1000.0, 1000).bytes(1000);
        let mut limiter = Limiter::new(&limit, 100, start);
        assert!(limiter.admit(600, start));
        assert!(limiter.admit(400, start));
        assert!(!limiter.admit(1, start), "1000 bytes a second, 1000 at once");
        assert!(!limiter.admit(200, start + ms(150)), "150 bytes accrued");
        assert!(limiter.admit(200, start + ms(250)));
        // A refused message takes nothing from either bucket.
        assert!(!limiter.admit(500, start + ms(250)));
        assert!(limiter.admit(50, start + ms(300)));
    }

    #[test]
    fn the_byte_bucket_holds_at_least_one_message_of_the_largest_size() {
        let start = Instant::now();
        let limit = RateLimit::new(10.0, 10).bytes(100);
        let mut limiter = Limiter::new(&limit, 8192, start);
        assert!(limiter.admit(8192, start), "one message of the limit passes a full bucket");
        assert!(!limiter.admit(1, start + ms(5)), "0.5 bytes accrued at 100 a second");
        assert!(limiter.admit(1, start + ms(15)));
        assert_eq!(limiter.bytes.as_ref().unwrap().capacity, 8192.0);
        let custom = RateLimit::new(1.0, 1).bytes(10).bytes_burst(20_000);
        assert_eq!(Limiter::new(&custom, 8192, start).bytes.unwrap().capacity, 20_000.0);
    }

    #[test]
    fn nonsense_rates_are_made_safe() {
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let limit = RateLimit::new(rate, 0);
            assert!(limit.messages_per_sec > 0.0 && limit.messages_per_sec.is_finite());
            assert_eq!(limit.burst, 1);
            let start = Instant::now();
            let mut limiter = Limiter::new(&limit, 0, start);
            assert!(limiter.admit(1, start));
            assert!(!limiter.admit(1, start + Duration::from_secs(3600)));
        }
    }
}
