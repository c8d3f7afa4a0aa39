//! A budget of request-body bytes in flight, shared by every connection: a request reserves
//! its body's size (the declared `Content-Length`, or the largest body accepted when none is
//! declared) before the body is read, and gives it back when its answer is built, so the
//! memory of the requests in flight (body, decoded pod, engine copies, patch) stays bounded
//! whatever the number of connections. Requests over the budget wait their turn (queueing, not
//! refusing: with `failurePolicy: Fail` a refusal fails the pod creation), up to a deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default budget. A large pod in flight costs the injector about 10 times its body (body,
/// decoded pod, the engine's copies, the patch, and what the allocator keeps; measured with
/// `bench/injector-load --pods large`), on top of 25-33 MiB at rest: 2 MiB of bodies at once, or
/// one body up to the 6 MiB limit alone, stays well under the Deployment's 128 Mi, and still
/// lets a hundred ordinary pods (a few KiB to 20 KiB) through at once, more than two cores can
/// inject.
pub const DEFAULT_BUDGET_BYTES: usize = 2 * 1024 * 1024;

/// The shared budget.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

/// A request waited for its share longer than its deadline.
#[derive(Debug, thiserror::Error)]
#[error(
    "sidecar injector busy: {wanted} bytes of request body waited {waited:?} for the budget of \
     request bodies in flight ({total} bytes, --max-inflight-body-bytes; {free} free)"
)]
pub struct Busy {
    pub wanted: usize,
    pub total: usize,
    pub free: usize,
    pub waited: Duration,
}

impl BodyBudget {
    /// A budget of `total` bytes (at least 1).
    pub fn new(total: usize) -> BodyBudget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not reserved now.
    pub fn free(&self) -> usize {
        self.permits.available_permits()
    }

    /// Whether a reservation of `bytes` would wait now.
    pub fn would_wait(&self, bytes: usize) -> bool {
        self.free() < bytes.clamp(1, self.total)
    }

    /// Reserve `bytes` (at most the whole budget: a body larger than the budget runs alone),
    /// waiting up to `deadline`. Waiters are served in arrival order (tokio's semaphore is
    /// fair), so a large body is not starved by a stream of small ones.
    pub async fn reserve(&self, bytes: usize, deadline: Duration) -> Result<Reservation, Busy> {
        let wanted = bytes.clamp(1, self.total);
        // A budget over 4 GiB reserves at most 4 GiB per request.
        let count = u32::try_from(wanted).unwrap_or(u32::MAX);
        match tokio::time::timeout(deadline, self.permits.clone().acquire_many_owned(count)).await {
            Ok(Ok(permit)) => Ok(Reservation { _permit: permit }),
            // The semaphore is never closed; treat it as busy anyway.
            Ok(Err(_)) | Err(_) => Err(Busy {
                wanted: bytes,
                total: self.total,
                free: self.free(),
                waited: deadline,
            }),
        }
    }
}

/// Bytes of the budget held by one request; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_body_waits_until_the_first_gives_its_bytes_back() {
        let budget = BodyBudget::new(100);
        let first = budget
            .reserve(80, Duration::from_secs(1))
            .await
            .expect("fits");
        assert_eq!(budget.free(), 20);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(50, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "50 bytes do not fit in the 20 left");
        drop(first);
        let second = waiting
            .await
            .expect("task")
            .expect("reserved after the release");
        assert_eq!(budget.free(), 50);
        drop(second);
        assert_eq!(budget.free(), 100);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_budget_runs_alone() {
        let budget = BodyBudget::new(100);
        let alone = budget
            .reserve(1000, Duration::from_secs(1))
            .await
            .expect("whole budget");
        assert_eq!(budget.free(), 0);
        drop(alone);
    }

    #[tokio::test]
    async fn a_wait_past_the_deadline_is_answered_busy_with_the_figures() {
        let budget = BodyBudget::new(100);
        let _held = budget
            .reserve(100, Duration::from_secs(1))
            .await
            .expect("fits");
        let busy = budget
            .reserve(10, Duration::from_millis(100))
            .await
            .expect_err("never freed");
        let message = busy.to_string();
        assert!(
            message.contains("10 bytes of request body waited 100ms"),
            "{message}"
        );
        assert!(
            message.contains("(100 bytes, --max-inflight-body-bytes; 0 free)"),
            "{message}"
        );
    }
}
