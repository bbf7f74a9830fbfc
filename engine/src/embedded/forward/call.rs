//! One forwarded call: which node each attempt goes to and what happens
//! after a failure (the retry rules of the `forward` module contract).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::link::{Forwarder, Stubs, ATTEMPT_TIMEOUT, MAX_ATTEMPTS};
use crate::runtime::NodeHandle;
use d_engine_api::{status_codec, Error, Result, RetryPolicy};

/// What to do after a failed attempt.
enum Next {
    Fail,
    /// Retry at once at this URL (a leader hint).
    Redirect(String),
    Backoff,
}

/// One forwarded call in progress.
pub(super) struct Call<'a> {
    pub(super) fwd: &'a Forwarder,
    pub(super) handle: &'a NodeHandle,
    pub(super) deadline: Instant,
    /// URLs of the other members' client APIs.
    pub(super) others: Vec<String>,
    /// Where the next attempt goes (a `NotLeader` hint).
    pub(super) hint: Option<String>,
    /// The URL that last failed to answer.
    pub(super) last_failed: Option<String>,
}

impl Call<'_> {
    /// Runs `rpc` against the leader per the module contract.
    pub(super) async fn run<T, F, Fut>(&mut self, op: &str, mut rpc: F) -> Result<T>
    where
        F: FnMut(Stubs, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut redirects_in_a_row = 0u32;
        let mut backoffs = 0u32;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let url = self.target();
            let budget = self
                .deadline
                .saturating_duration_since(Instant::now())
                .min(ATTEMPT_TIMEOUT);
            let result = match self.fwd.channel(&url) {
                Err(e) => Err(e),
                Ok(_) if budget.is_zero() => Err(Error::Timeout(format!(
                    "{op} forwarded to the leader: request timeout reached"
                ))),
                Ok(ch) => match tokio::time::timeout(budget, rpc(self.fwd.stubs(ch), budget)).await
                {
                    Ok(Ok(resp)) => Ok(resp.into_inner()),
                    Ok(Err(status)) => Err(status_codec::from_status(&status)),
                    Err(_) => Err(Error::Timeout(format!(
                        "{op} forwarded to {url}: no answer within {budget:?}"
                    ))),
                },
            };
            let err = match result {
                Ok(v) => {
                    self.fwd.set_leader(&url);
                    return Ok(v);
                }
                Err(e) => e,
            };
            tracing::debug!(op, attempt, %url, error = %err, "forwarded attempt failed");
            let next = self.on_error(&url, &err);
            if matches!(next, Next::Fail) || attempt >= MAX_ATTEMPTS {
                return Err(err);
            }
            let now = Instant::now();
            if now >= self.deadline {
                return Err(err);
            }
            match next {
                Next::Redirect(to) if redirects_in_a_row < 2 => {
                    redirects_in_a_row += 1;
                    self.hint = Some(to);
                }
                _ => {
                    redirects_in_a_row = 0;
                    backoffs += 1;
                    let wait = backoff(backoffs, random_unit());
                    if now + wait >= self.deadline {
                        // Report the real cause now, not a bare timeout later.
                        return Err(err);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Where the next attempt goes (module contract).
    fn target(&mut self) -> String {
        if let Some(h) = self.hint.take() {
            return h;
        }
        if let Some(l) = self.fwd.cached_leader() {
            return l;
        }
        let known = self.handle.leader();
        if known.id != 0 && known.id != self.handle.id() && !known.client_addr.is_empty() {
            let url = self.fwd.url(&known.client_addr);
            if self.last_failed.as_deref() != Some(url.as_str()) {
                return url;
            }
        }
        let i = self.fwd.cursor.fetch_add(1, Ordering::Relaxed);
        self.others[i % self.others.len()].clone()
    }

    fn on_error(&mut self, url: &str, err: &Error) -> Next {
        match err {
            Error::NotLeader { leader_addr, .. } => {
                let hint = leader_addr
                    .as_deref()
                    .filter(|a| !a.is_empty())
                    .map(|a| self.fwd.url(a));
                match hint {
                    Some(h) if h != url => {
                        self.fwd.set_leader(&h);
                        Next::Redirect(h)
                    }
                    _ => {
                        self.fwd.forget_leader(url);
                        Next::Backoff
                    }
                }
            }
            Error::NoLeader(_) => {
                self.fwd.forget_leader(url);
                Next::Backoff
            }
            Error::Unavailable(_) | Error::ShuttingDown(_) | Error::Timeout(_) => {
                self.fwd.forget_leader(url);
                self.last_failed = Some(url.to_string());
                Next::Backoff
            }
            Error::Overloaded(_) | Error::ChangeInProgress(_) => Next::Backoff,
            _ => Next::Fail,
        }
    }
}

/// The wait before backoff number `n` (1-based) for a jitter sample `unit`
/// in `[0, 1]`: the Rust client's default curve (upper half of
/// `min(1 s, 50 ms * 2^(n-1))`).
fn backoff(n: u32, unit: f64) -> Duration {
    RetryPolicy::default().delay_with(n, unit)
}

fn random_unit() -> f64 {
    getrandom::u32().map_or(0.5, |r| f64::from(r) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_one_second_in_the_upper_half() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(1, 0.0), ms(25));
        assert_eq!(backoff(1, 1.0), ms(50));
        assert_eq!(backoff(3, 0.5), ms(150));
        assert_eq!(backoff(6, 1.0), ms(1000));
        assert_eq!(backoff(u32::MAX, 0.0), ms(500));
        assert_eq!(backoff(2, 9.0), ms(100), "sample clamped");
    }
}
