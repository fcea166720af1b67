//! A per-vault request budget, so many VaultKeys never exceed Key Vault's throttling limits
//! (per vault per 10 s: 20 software-key creates, 10 HSM creates, 4,000 other operations), and
//! no request goes to a vault inside a Retry-After window it announced.

use std::time::Duration;

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(10);

/// The longest a request waits for a slot inside a reconcile (a few slots of a create budget).
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// Which of Key Vault's limits a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    SoftwareCreate,
    HsmCreate,
    Other,
}

impl RequestClass {
    pub fn describe(self) -> &'static str {
        match self {
            RequestClass::SoftwareCreate => "key-create",
            RequestClass::HsmCreate => "HSM-key-create",
            RequestClass::Other => "request",
        }
    }
}

/// Limits per 10-second window, below Key Vault's published limits so other clients of the
/// same vault keep some room: one software-key create and one HSM create per window (Key Vault
/// has no smaller unit), 10 % of the other operations. Each request holds its slot until 10 s
/// after its answer, so the operator alone never exceeds a limit at the vault.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub software_creates: u32,
    pub hsm_creates: u32,
    pub other: u32,
    /// Requests in flight at once (not a Key Vault limit: the operator's per-vault concurrency).
    pub in_flight: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            software_creates: 19,
            hsm_creates: 9,
            other: 3600,
            in_flight: 16,
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
    /// The next time [`Bucket::promise`] may hand out: promises are spaced one slot apart.
    next_promise: Option<Instant>,
}

impl Bucket {
    fn new(per_window: u32) -> Self {
        Bucket {
            limit: per_window.max(1) as usize,
            in_flight: 0,
            answered: VecDeque::new(),
            next_promise: None,
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

    /// When a caller that found no slot should come back: no earlier than a slot can free,
    /// and one slot's share of the window after the previous promise.
    fn promise(&mut self, now: Instant, wait: Duration) -> Duration {
        let at = self
            .next_promise
            .map_or(now + wait, |next| next.max(now + wait));
        self.next_promise = Some(at + WINDOW / self.limit as u32);
        at - now
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
    in_flight: tokio::sync::Semaphore,
}

/// A request's slot: dropping it (when the answer is in, or the request was abandoned) starts
/// the slot's 10 seconds.
#[must_use = "the slot is released when the permit is dropped, after the request"]
pub struct Permit<'a> {
    budget: &'a Budget,
    class: RequestClass,
    _sending: Option<tokio::sync::SemaphorePermit<'a>>,
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
            in_flight: tokio::sync::Semaphore::new(limits.in_flight.max(1) as usize),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a request, waiting up to [`MAX_WAIT`] for one; keep the permit until
    /// the answer is in. When no slot frees within that, nothing is sent and the answer is how
    /// long to wait before asking again: a time promised to this caller alone, so callers of a
    /// saturated vault come back one by one at the rate its budget admits them, and a
    /// throttled vault never holds the reconciles that other vaults need.
    pub async fn acquire(&self, class: RequestClass) -> Result<Permit<'_>, Duration> {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let wait = {
                let mut state = self.lock();
                let now = Instant::now();
                let wait = match state.paused_until {
                    Some(until) if until > now => Some(until - now),
                    // None: a slot is taken.
                    _ => state.bucket(class).take(now).err(),
                };
                match wait {
                    None => break,
                    Some(wait) if now + wait > deadline => {
                        return Err(state.bucket(class).promise(now, wait));
                    }
                    // Answers may free a slot earlier than computed: look again soon.
                    Some(wait) => wait.min(Duration::from_millis(250)),
                }
            };
            tokio::time::sleep(wait).await;
        }
        // Built before waiting for a place in flight: a wait given up still returns the slot.
        let mut permit = Permit {
            budget: self,
            class,
            _sending: None,
        };
        // The semaphore is never closed.
        permit._sending = self.in_flight.acquire().await.ok();
        Ok(permit)
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

    /// A caller that comes back when it was told to, as a requeued reconcile does.
    async fn acquire_eventually(budget: &Budget, class: RequestClass) -> Permit<'_> {
        loop {
            match budget.acquire(class).await {
                Ok(permit) => return permit,
                Err(retry_in) => tokio::time::sleep(retry_in).await,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn creates_are_paced_to_the_window() {
        let budget = Budget::new(Limits {
            software_creates: 4,
            hsm_creates: 1,
            other: 100,
            in_flight: 16,
        });
        let start = Instant::now();
        for _ in 0..4 {
            drop(budget.acquire(RequestClass::SoftwareCreate).await.unwrap());
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first window's burst is free"
        );
        // The fifth is told to come back when the first leaves the 10-second window.
        let retry_in = budget
            .acquire(RequestClass::SoftwareCreate)
            .await
            .err()
            .expect("no slot for 10 s");
        assert_eq!(retry_in, Duration::from_secs(10));
        assert_eq!(start.elapsed(), Duration::ZERO, "it did not wait");
        // Other requests have their own window.
        drop(budget.acquire(RequestClass::Other).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_a_moment_away_is_waited_for() {
        let budget = Budget::new(Limits {
            software_creates: 1,
            hsm_creates: 1,
            other: 100,
            in_flight: 16,
        });
        let start = Instant::now();
        drop(budget.acquire(RequestClass::SoftwareCreate).await.unwrap());
        tokio::time::sleep(WINDOW - Duration::from_secs(1)).await;
        drop(budget.acquire(RequestClass::SoftwareCreate).await.unwrap());
        assert_eq!(start.elapsed(), WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_without_a_slot_are_promised_distinct_times() {
        let budget = Budget::new(Limits {
            software_creates: 20,
            hsm_creates: 10,
            other: 4000,
            in_flight: 16,
        });
        for _ in 0..20 {
            drop(budget.acquire(RequestClass::SoftwareCreate).await.unwrap());
        }
        let mut promised = Vec::new();
        for _ in 0..5 {
            let answer = budget.acquire(RequestClass::SoftwareCreate).await;
            promised.push(answer.err().expect("no slot for 10 s"));
        }
        let half_second = Duration::from_millis(500);
        assert_eq!(
            promised,
            [0, 1, 2, 3, 4].map(|i| WINDOW + half_second * i),
            "one slot's share of the window apart, from when the first slot frees"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_ten_second_window_holds_more_than_the_limit() {
        let budget = Budget::new(Limits {
            software_creates: 20,
            hsm_creates: 10,
            other: 4000,
            in_flight: 16,
        });
        let start = Instant::now();
        let sent = std::sync::Mutex::new(Vec::new());
        // 100 callers at once, each coming back when told.
        futures::future::join_all((0..100).map(|_| async {
            drop(acquire_eventually(&budget, RequestClass::SoftwareCreate).await);
            sent.lock().unwrap().push(start.elapsed());
        }))
        .await;
        let mut sent = sent.into_inner().unwrap();
        sent.sort();
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|u| **u < *t + WINDOW).count();
            assert!(in_window <= 20, "{in_window} sends in the 10 s from {t:?}");
        }
        // 100 creates at 20 per 10 s: the last one goes at 40 s at the earliest, and
        // promises keep the budget busy: it goes before 50 s.
        let last = *sent.last().unwrap();
        assert!(
            last >= Duration::from_secs(40) && last < Duration::from_secs(50),
            "{last:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_are_capped_per_vault() {
        let budget = Budget::new(Limits {
            in_flight: 2,
            ..Limits::default()
        });
        let first = budget.acquire(RequestClass::Other).await.unwrap();
        let _second = budget.acquire(RequestClass::Other).await.unwrap();
        let third = budget.acquire(RequestClass::Other);
        tokio::pin!(third);
        assert!(
            futures::poll!(third.as_mut()).is_pending(),
            "a third waits for an answer"
        );
        drop(first);
        assert!(futures::poll!(third.as_mut()).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_inside_a_retry_after_window() {
        let budget = Budget::new(Limits::default());
        let start = Instant::now();
        budget.pause(Duration::from_secs(7)).await;
        budget.pause(Duration::from_secs(3)).await; // a shorter pause never shortens the window
        let retry_in = budget
            .acquire(RequestClass::Other)
            .await
            .err()
            .expect("paused for 7 s");
        assert!(retry_in >= Duration::from_secs(7), "{retry_in:?}");
        budget.pause(Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_millis(6500)).await;
        // Half a second of the pause is left: that is waited for.
        drop(budget.acquire(RequestClass::Other).await.unwrap());
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }
}
