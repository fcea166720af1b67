//! A per-vault request budget, so many VaultKeys never exceed Key Vault's throttling limits
//! (per vault per 10 s: 20 software-key creates, 10 HSM creates, 4,000 other operations), and
//! no request goes to a vault inside a Retry-After window it announced.

use std::time::Duration;

use std::collections::VecDeque;
use std::sync::Mutex;

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

/// One class of requests. Key Vault counts the requests that *arrive* in any 10-second window;
/// a request arrives somewhere between the moment it was let go and the moment its answer came
/// back. So a request holds its slot from [`Budget::acquire`] until [`WINDOW`] after its answer:
/// however late it arrived, no 10-second window at the vault sees more than `limit` requests.
/// (A token bucket of capacity `limit` refilled at `limit` per 10 s admits nearly twice that
/// in the first window, and counting from the send time alone is undone by send jitter.)
struct Bucket {
    limit: usize,
    in_flight: usize,
    /// When the answers of the requests of the last 10 s came back, oldest first.
    answered: VecDeque<Instant>,
}

impl Bucket {
    fn new(per_window: u32) -> Self {
        Bucket {
            limit: per_window.max(1) as usize,
            in_flight: 0,
            answered: VecDeque::new(),
        }
    }

    /// Takes a slot, or says how long to wait before asking again.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        while self
            .answered
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.answered.pop_front();
        }
        if self.in_flight + self.answered.len() < self.limit {
            self.in_flight += 1;
            return Ok(());
        }
        Err(match self.answered.front() {
            Some(oldest) => (*oldest + WINDOW).saturating_duration_since(now),
            // Every slot is in flight: one frees 10 s after its answer at the earliest.
            None => WINDOW,
        })
    }

    fn answered(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.answered.push_back(now);
    }
}

struct State {
    software_creates: Bucket,
    hsm_creates: Bucket,
    other: Bucket,
    paused_until: Option<Instant>,
}

impl State {
    fn bucket(&mut self, class: RequestClass) -> &mut Bucket {
        match class {
            RequestClass::SoftwareCreate => &mut self.software_creates,
            RequestClass::HsmCreate => &mut self.hsm_creates,
            RequestClass::Other => &mut self.other,
        }
    }
}

pub struct Budget {
    state: Mutex<State>,
}

/// A request's slot: dropping it (when the answer is in, or the request was abandoned) starts
/// the slot's 10 seconds.
#[must_use = "the slot is released when the permit is dropped, after the request"]
pub struct Permit<'a> {
    budget: &'a Budget,
    class: RequestClass,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        self.budget.lock().bucket(self.class).answered(now);
    }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the request may be sent; keep the permit until its answer is in.
    pub async fn acquire(&self, class: RequestClass) -> Permit<'_> {
        loop {
            let wait = {
                let mut state = self.lock();
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => until - now,
                    _ => match state.bucket(class).take(now) {
                        Ok(()) => {
                            return Permit {
                                budget: self,
                                class,
                            };
                        }
                        // Answers may free a slot earlier than computed: look again soon.
                        Err(wait) => wait.min(Duration::from_millis(250)),
                    },
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Holds every request to this vault until `retry_after` has passed (after a 429).
    pub async fn pause(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut state = self.lock();
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
            drop(budget.acquire(RequestClass::SoftwareCreate).await);
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first window's burst is free"
        );
        drop(budget.acquire(RequestClass::SoftwareCreate).await);
        // The fifth waits until the first leaves the 10-second window.
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // Other requests have their own window.
        drop(budget.acquire(RequestClass::Other).await);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn no_ten_second_window_holds_more_than_the_limit() {
        let budget = Budget::new(Limits {
            software_creates: 20,
            hsm_creates: 10,
            other: 4000,
        });
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..100 {
            drop(budget.acquire(RequestClass::SoftwareCreate).await);
            sent.push(start.elapsed());
        }
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|u| **u < *t + WINDOW).count();
            assert!(in_window <= 20, "{in_window} sends in the 10 s from {t:?}");
        }
        // 100 creates at 20 per 10 s: the last batch starts at 40 s.
        assert_eq!(*sent.last().unwrap(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_inside_a_retry_after_window() {
        let budget = Budget::new(Limits::default());
        let start = Instant::now();
        budget.pause(Duration::from_secs(7)).await;
        budget.pause(Duration::from_secs(3)).await; // a shorter pause never shortens the window
        drop(budget.acquire(RequestClass::Other).await);
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }
}
