//! A per-vault request budget, so many VaultKeys never exceed Key Vault's throttling limits
//! (per vault per 10 s: 20 software-key creates, 10 HSM creates, 4,000 other operations), and
//! no request goes to a vault inside a Retry-After window it announced.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(10);

/// Which of Key Vault's limits a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    SoftwareCreate,
    HsmCreate,
    Other,
}

/// Limits per 10-second window. The defaults keep 10% headroom below Key Vault's published
/// limits for other clients of the same vault.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub software_creates: u32,
    pub hsm_creates: u32,
    pub other: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            software_creates: 18,
            hsm_creates: 9,
            other: 3600,
        }
    }
}

struct Bucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_window: u32) -> Self {
        let capacity = f64::from(per_window.max(1));
        Bucket {
            capacity,
            tokens: capacity,
            per_second: capacity / WINDOW.as_secs_f64(),
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is available.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

struct State {
    software_creates: Bucket,
    hsm_creates: Bucket,
    other: Bucket,
    paused_until: Option<Instant>,
}

pub struct Budget {
    state: Mutex<State>,
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Budget {
            state: Mutex::new(State {
                software_creates: Bucket::new(limits.software_creates),
                hsm_creates: Bucket::new(limits.hsm_creates),
                other: Bucket::new(limits.other),
                paused_until: None,
            }),
        }
    }

    /// Waits until the request may be sent. Returns how long it waited.
    pub async fn acquire(&self, class: RequestClass) -> Duration {
        let start = Instant::now();
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => until - now,
                    _ => {
                        let bucket = match class {
                            RequestClass::SoftwareCreate => &mut state.software_creates,
                            RequestClass::HsmCreate => &mut state.hsm_creates,
                            RequestClass::Other => &mut state.other,
                        };
                        match bucket.take(now) {
                            Ok(()) => return start.elapsed(),
                            Err(wait) => wait,
                        }
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Holds every request to this vault until `retry_after` has passed (after a 429).
    pub async fn pause(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut state = self.state.lock().await;
        if state.paused_until.is_none_or(|current| current < until) {
            state.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn creates_are_paced_to_the_window() {
        let budget = Budget::new(Limits {
            software_creates: 4,
            hsm_creates: 1,
            other: 100,
        });
        let start = Instant::now();
        for _ in 0..4 {
            budget.acquire(RequestClass::SoftwareCreate).await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first window's burst is free"
        );
        budget.acquire(RequestClass::SoftwareCreate).await;
        // 4 per 10 s refills one token every 2.5 s.
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
        // Other requests have their own bucket.
        budget.acquire(RequestClass::Other).await;
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_inside_a_retry_after_window() {
        let budget = Budget::new(Limits::default());
        let start = Instant::now();
        budget.pause(Duration::from_secs(7)).await;
        budget.pause(Duration::from_secs(3)).await; // a shorter pause never shortens the window
        budget.acquire(RequestClass::Other).await;
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }
}
