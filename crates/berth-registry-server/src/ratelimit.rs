//! Per-client token buckets: how many failed sign-ins a client may make.
//!
//! Every password check that would run bcrypt first takes a token from the client's bucket
//! and gives it back when the password was right, so only failures cost. An empty bucket
//! means the check is refused before bcrypt runs (`429` with `Retry-After`); the bucket refills
//! at a steady rate up to its capacity. Clients are told apart by address: an IPv4 address, or
//! the /64 network of an IPv6 address (one host usually has a whole /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The part of an address that names a client: IPv4 as is (IPv4-mapped IPv6 as IPv4), IPv6
/// masked to its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by client.
pub struct Limiter {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Buckets kept before full ones (clients that stopped failing) are dropped.
const PRUNE_ABOVE: usize = 4096;

impl Limiter {
    /// `capacity` tokens at most (and at first), `per_minute` tokens added each minute.
    pub fn new(capacity: u32, per_minute: u32) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            per_second: f64::from(per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * self.per_second).min(self.capacity);
        b.at = now;
    }

    /// Takes a token for `client`; `Err(wait)` when the bucket is empty, `wait` being the time
    /// until the next token.
    pub fn take(&self, client: IpAddr) -> Result<(), Duration> {
        self.take_at(client_key(client), Instant::now())
    }

    fn take_at(&self, key: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut m = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > PRUNE_ABOVE {
            m.retain(|_, b| {
                let mut b2 = *b;
                self.refill(&mut b2, now);
                b2.tokens < self.capacity
            });
        }
        let b = m.entry(key).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        if self.per_second <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
    }

    /// Gives back the token [`take`](Self::take) took (the attempt succeeded).
    pub fn give_back(&self, client: IpAddr) {
        let mut m = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = m.get_mut(&client_key(client)) {
            b.tokens = (b.tokens + 1.0).min(self.capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
    }

    #[test]
    fn bucket_empties_refills_and_keeps_clients_apart() {
        let l = Limiter::new(3, 60); // one token a second
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take_at(x, t0).is_ok());
        }
        let wait = l.take_at(x, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        // Another client is not affected.
        assert!(l.take_at(y, t0).is_ok());
        // Half a second later: still empty, half a second to wait.
        let wait = l.take_at(x, t0 + Duration::from_millis(500)).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        // A second later: one token again, not more.
        assert!(l.take_at(x, t0 + Duration::from_millis(1000)).is_ok());
        assert!(l.take_at(x, t0 + Duration::from_millis(1000)).is_err());
        // Much later: full, never more than the capacity.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(l.take_at(x, later).is_ok());
        }
        assert!(l.take_at(x, later).is_err());
    }

    #[test]
    fn successes_give_their_token_back() {
        let l = Limiter::new(2, 0);
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10 {
            l.take(x).unwrap();
            l.give_back(x);
        }
        l.take(x).unwrap();
        l.take(x).unwrap();
        assert!(l.take(x).is_err());
        l.give_back(x);
        l.give_back(x);
        l.give_back(x);
        l.take(x).unwrap();
        l.take(x).unwrap();
        assert!(l.take(x).is_err(), "never above the capacity");
    }
}
