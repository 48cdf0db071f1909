//! Per-IP limits: how many connections one address may hold open, and how
//! fast it may open new WebSockets and SSE streams (a token bucket).
//!
//! The address is the TCP peer's, or, when the peer is a trusted proxy
//! (`--trusted-proxy`), the last address in `X-Forwarded-For` that is not
//! one of the trusted proxies (the one the nearest untrusted hop added;
//! the entries before it could be made up by the client). Loopback
//! addresses are not limited unless asked (`--limit-loopback`), so local
//! benchmarks and demos are not throttled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;
use tokio::time::Instant;

/// Entries idle this long (nothing open, bucket full) are forgotten.
const FORGET_AFTER_SECS: f64 = 60.0;

/// The settings, from flags.
#[derive(Clone, Debug)]
pub struct IpLimitSettings {
    /// New WebSockets and SSE streams per second per address.
    pub rate: f64,
    /// How many may be opened at once before the rate applies.
    pub burst: f64,
    /// TCP connections open at once per address.
    pub max_open: usize,
    pub loopback: bool,
    pub trusted: Vec<IpNet>,
}

impl Default for IpLimitSettings {
    fn default() -> Self {
        IpLimitSettings { rate: 20.0, burst: 50.0, max_open: 200, loopback: false, trusted: Vec::new() }
    }
}

#[derive(Debug)]
struct Entry {
    tokens: f64,
    refilled: Instant,
    open: usize,
}

/// The limits and what each address has used.
#[derive(Debug)]
pub struct IpLimits {
    settings: IpLimitSettings,
    entries: Mutex<HashMap<IpAddr, Entry>>,
    swept: Mutex<Instant>,
}

/// Why an address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    TooManyOpen,
    TooFast,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limited::TooManyOpen => "too many connections from this address",
            Limited::TooFast => "too many new connections from this address: slow down",
        })
    }
}

/// An open connection counted against its address until dropped.
#[derive(Debug)]
pub struct Open {
    limits: Arc<IpLimits>,
    ip: Option<IpAddr>,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            if let Some(entry) = self.limits.lock().get_mut(&ip) {
                entry.open = entry.open.saturating_sub(1);
            }
        }
    }
}

impl IpLimits {
    pub fn new(settings: IpLimitSettings) -> Arc<IpLimits> {
        Arc::new(IpLimits { settings, entries: Mutex::default(), swept: Mutex::new(Instant::now()) })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limited(&self, ip: IpAddr) -> bool {
        self.settings.loopback || !ip.is_loopback()
    }

    /// Whether the TCP peer is a proxy whose `X-Forwarded-For` we believe.
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.settings.trusted.iter().any(|net| net.contains(&peer))
    }

    /// The client's address: the peer, or behind a trusted proxy the last
    /// untrusted address it forwarded (or the peer if none parses).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops = forwarded_for.unwrap_or_default().split(',').rev();
        let addresses = hops.filter_map(|hop| hop.trim().parse::<IpAddr>().ok());
        addresses.into_iter().find(|ip| !self.is_trusted(*ip)).unwrap_or(peer)
    }

    /// Counts a new TCP connection from `peer`; refused past `max_open`
    /// (a trusted proxy is counted per forwarded client instead, later).
    pub fn open(self: &Arc<Self>, peer: IpAddr) -> Result<Open, Limited> {
        if !self.limited(peer) || self.is_trusted(peer) {
            return Ok(Open { limits: self.clone(), ip: None });
        }
        let now = Instant::now();
        self.sweep(now);
        let mut entries = self.lock();
        let entry = entries.entry(peer).or_insert_with(|| Entry {
            tokens: self.settings.burst,
            refilled: now,
            open: 0,
        });
        if entry.open >= self.settings.max_open {
            return Err(Limited::TooManyOpen);
        }
        entry.open += 1;
        Ok(Open { limits: self.clone(), ip: Some(peer) })
    }

    /// Takes one token for a new WebSocket or SSE stream from `ip`.
    pub fn handshake(&self, ip: IpAddr) -> Result<(), Limited> {
        if !self.limited(ip) {
            return Ok(());
        }
        let now = Instant::now();
        let mut entries = self.lock();
        let entry = entries.entry(ip).or_insert_with(|| Entry {
            tokens: self.settings.burst,
            refilled: now,
            open: 0,
        });
        let elapsed = now.duration_since(entry.refilled).as_secs_f64();
        entry.tokens = (entry.tokens + elapsed * self.settings.rate).min(self.settings.burst);
        entry.refilled = now;
        if entry.tokens < 1.0 {
            return Err(Limited::TooFast);
        }
        entry.tokens -= 1.0;
        Ok(())
    }

    /// Forgets addresses with nothing open and a full bucket, at most
    /// once a minute: the map holds the active addresses only.
    fn sweep(&self, now: Instant) {
        let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(*swept).as_secs_f64() < FORGET_AFTER_SECS {
            return;
        }
        *swept = now;
        drop(swept);
        let (rate, burst) = (self.settings.rate, self.settings.burst);
        self.lock().retain(|_, e| {
            let tokens = e.tokens + now.duration_since(e.refilled).as_secs_f64() * rate;
            e.open > 0 || tokens < burst
        });
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(loopback: bool) -> Arc<IpLimits> {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        IpLimits::new(IpLimitSettings { rate: 2.0, burst: 3.0, max_open: 2, loopback, trusted })
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

    #[tokio::test(start_paused = true)]
    async fn handshakes_are_a_token_bucket_per_address() {
        let limits = limits(false);
        for _ in 0..3 {
            assert_eq!(limits.handshake(CLIENT), Ok(()));
        }
        assert_eq!(limits.handshake(CLIENT), Err(Limited::TooFast), "the burst is spent");
        let other = "198.51.100.1".parse().unwrap();
        assert_eq!(limits.handshake(other), Ok(()), "another address has its own bucket");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(limits.handshake(CLIENT), Ok(()), "2 per second: one back after half a second");
        assert_eq!(limits.handshake(CLIENT), Err(Limited::TooFast));
        let loopback = "127.0.0.1".parse().unwrap();
        assert!((0..100).all(|_| limits.handshake(loopback).is_ok()), "loopback is not limited by default");
        let strict = self::limits(true);
        assert!((0..100).any(|_| strict.handshake(loopback).is_err()), "unless asked");
    }

    #[tokio::test(start_paused = true)]
    async fn open_connections_are_counted_until_dropped_and_idle_addresses_forgotten() {
        let limits = limits(false);
        let a = limits.open(CLIENT).unwrap();
        let _b = limits.open(CLIENT).unwrap();
        assert_eq!(limits.open(CLIENT).unwrap_err(), Limited::TooManyOpen);
        drop(a);
        let _c = limits.open(CLIENT).unwrap();
        drop((_b, _c));
        tokio::time::advance(Duration::from_secs(61)).await;
        let _d = limits.open("198.51.100.9".parse().unwrap()).unwrap();
        assert_eq!(limits.tracked(), 1, "the idle address was forgotten");
    }

    #[test]
    fn behind_a_trusted_proxy_the_forwarded_client_counts() {
        let limits = limits(false);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        // The client may have made up the first entry; the last untrusted
        // one was added by a proxy we trust.
        let forwarded = Some("1.2.3.4, 203.0.113.7, 10.9.9.9");
        assert_eq!(limits.client_ip(proxy, forwarded), CLIENT);
        assert_eq!(limits.client_ip(proxy, None), proxy);
        assert_eq!(limits.client_ip(proxy, Some("garbage")), proxy);
        assert_eq!(
            limits.client_ip(CLIENT, Some("1.2.3.4")),
            CLIENT,
            "an untrusted peer's header is ignored"
        );
        assert!(limits.open(proxy).unwrap().ip.is_none(), "a trusted proxy's connections are not capped");
    }
}
