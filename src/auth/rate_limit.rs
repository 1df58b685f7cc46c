//! Per-principal rate limits (not per IP: many agents share a NAT, and a gateway may be one IP):
//! a token bucket per principal, refilled continuously.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::Principal;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second per principal.
    pub per_second: f64,
    /// How many requests may come at once after a quiet period.
    pub burst: f64,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets kept at most; beyond it, the full (idle) ones are forgotten.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `principal`; `false` when its bucket is empty.
    pub fn allow(&self, principal: &Principal) -> bool {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() > MAX_BUCKETS {
            let (rate, burst) = (self.limit.per_second, self.limit.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let key = format!("{}:{}", principal.role.as_str(), principal.subject);
        let (tokens, at) = buckets.entry(key).or_insert((self.limit.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.limit.per_second)
            .min(self.limit.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn principal(subject: &str) -> Principal {
        Principal {
            subject: subject.into(),
            role: Role::Agent,
            gateway_id: None,
        }
    }

    #[test]
    fn a_burst_is_allowed_then_refused_and_principals_are_independent() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.001,
            burst: 3.0,
        });
        let a = principal("a-1");
        let allowed = (0..5).filter(|_| limiter.allow(&a)).count();
        assert_eq!(allowed, 3);
        assert!(
            limiter.allow(&principal("a-2")),
            "another principal has its own bucket"
        );
    }

    #[test]
    fn tokens_come_back_over_time() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1000.0,
            burst: 1.0,
        });
        let a = principal("a-1");
        assert!(limiter.allow(&a));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(limiter.allow(&a));
    }
}
