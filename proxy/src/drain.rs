//! Lifecycle of the proxy: ready, draining (not ready, still accepting), no longer accepting,
//! and the shutdown sequence run on SIGTERM, `/quitquitquit` or after `/drain`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A request to the shutdown coordinator from the status server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `POST /drain`: become not ready; stop accepting after the drain duration.
    Drain,
    /// `POST /quitquitquit`: stop accepting now, let connections finish briefly, exit 0.
    Quit,
}

/// Shared view of the proxy's state, cheap to clone.
#[derive(Debug, Clone)]
pub struct Lifecycle(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    listening: AtomicBool,
    drain_started: Mutex<Option<Instant>>,
    accept: CancellationToken,
    connections: CancellationToken,
    requests: mpsc::UnboundedSender<Request>,
}

/// Receiving end of [`Request`]s, owned by the coordinator.
#[derive(Debug)]
pub struct Requests(mpsc::UnboundedReceiver<Request>);

impl Requests {
    /// The next pending request, without waiting.
    pub fn try_next(&mut self) -> Option<Request> {
        self.0.try_recv().ok()
    }
}

impl Lifecycle {
    pub fn new() -> (Lifecycle, Requests) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let lifecycle = Lifecycle(Arc::new(Inner {
            listening: AtomicBool::new(false),
            drain_started: Mutex::new(None),
            accept: CancellationToken::new(),
            connections: CancellationToken::new(),
            requests: sender,
        }));
        (lifecycle, Requests(receiver))
    }

    /// The capture listeners are bound and accepting.
    pub fn mark_listening(&self) {
        self.0.listening.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.listening.load(Ordering::SeqCst) && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.lock_drain().is_some()
    }

    /// Marks the proxy not ready; returns when the drain began (the first call wins).
    pub fn start_draining(&self) -> Instant {
        *self.lock_drain().get_or_insert_with(Instant::now)
    }

    /// Fires when the listeners must stop accepting.
    pub fn accept_token(&self) -> CancellationToken {
        self.0.accept.clone()
    }

    /// Fires when open connections must be closed.
    pub fn connections_token(&self) -> CancellationToken {
        self.0.connections.clone()
    }

    pub fn stop_accepting(&self) {
        self.0.accept.cancel();
    }

    /// Asks the coordinator for a drain or a quit. Fails only when it already finished.
    pub fn request(&self, request: Request) -> bool {
        self.0.requests.send(request).is_ok()
    }

    fn lock_drain(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // A poisoned lock only means a panic elsewhere; the Option inside is still valid.
        self.0
            .drain_started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Drain timing from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct DrainTiming {
    pub drain_duration: Duration,
    pub termination_grace: Duration,
}

/// What ended the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Signal,
    Quit,
}

/// Waits for a termination trigger and runs the shutdown sequence; returns when every
/// connection task tracked by `tracker` has finished (or was closed).
///
/// SIGTERM: not ready at once; keep accepting until the drain duration has passed (counted from
/// an earlier `/drain` if there was one); stop accepting; let connections finish until the
/// termination grace (from the signal) and then close them.
/// `/quitquitquit`: stop accepting at once; connections get the drain duration, then close.
pub async fn coordinate(
    lifecycle: &Lifecycle,
    mut requests: Requests,
    signal: impl Future<Output = ()>,
    timing: DrainTiming,
    tracker: &TaskTracker,
) -> Ended {
    tokio::pin!(signal);
    let ended = loop {
        tokio::select! {
            () = &mut signal => break Ended::Signal,
            request = requests.0.recv() => match request {
                Some(Request::Drain) => {
                    let began = lifecycle.start_draining();
                    tracing::info!(drain_duration = ?timing.drain_duration, "drain requested: not ready");
                    let lifecycle = lifecycle.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(began + timing.drain_duration).await;
                        tracing::info!("drain duration over: no longer accepting connections");
                        lifecycle.stop_accepting();
                    });
                }
                Some(Request::Quit) => break Ended::Quit,
                None => std::future::pending::<()>().await,
            },
        }
    };
    let now = Instant::now();
    let close_at = match ended {
        Ended::Signal => {
            let began = lifecycle.start_draining();
            tracing::info!(drain_duration = ?timing.drain_duration, termination_grace = ?timing.termination_grace, "SIGTERM: draining");
            tokio::time::sleep_until(began + timing.drain_duration).await;
            now + timing.termination_grace
        }
        Ended::Quit => {
            lifecycle.start_draining();
            tracing::info!("quitquitquit: stopping");
            now + timing.drain_duration
        }
    };
    lifecycle.stop_accepting();
    tracker.close();
    if tokio::time::timeout_at(close_at, tracker.wait())
        .await
        .is_err()
    {
        tracing::info!(
            open = tracker.len(),
            "termination grace over: closing open connections"
        );
        lifecycle.0.connections.cancel();
        tracker.wait().await;
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(drain_ms: u64, grace_ms: u64) -> DrainTiming {
        DrainTiming {
            drain_duration: Duration::from_millis(drain_ms),
            termination_grace: Duration::from_millis(grace_ms),
        }
    }

    #[tokio::test]
    async fn readiness_follows_listening_and_draining() {
        let (lifecycle, _requests) = Lifecycle::new();
        assert!(!lifecycle.is_ready());
        lifecycle.mark_listening();
        assert!(lifecycle.is_ready());
        let first = lifecycle.start_draining();
        assert!(!lifecycle.is_ready());
        assert!(lifecycle.is_draining());
        assert_eq!(
            lifecycle.start_draining(),
            first,
            "the first drain start wins"
        );
    }

    #[tokio::test]
    async fn sigterm_keeps_accepting_for_the_drain_then_closes_connections_at_grace() {
        let (lifecycle, requests) = Lifecycle::new();
        lifecycle.mark_listening();
        let tracker = TaskTracker::new();
        // A connection that never finishes on its own.
        let closed = lifecycle.connections_token();
        let connection = tracker.spawn(async move { closed.cancelled().await });
        let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let run = {
            let lifecycle = lifecycle.clone();
            let tracker = tracker.clone();
            tokio::spawn(async move {
                let signal = async {
                    let _ = signal_rx.await;
                };
                coordinate(&lifecycle, requests, signal, timing(1000, 1500), &tracker).await
            })
        };
        signal_tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!lifecycle.is_ready(), "not ready right after SIGTERM");
        assert!(
            !lifecycle.accept_token().is_cancelled(),
            "still accepting during the drain duration"
        );
        lifecycle.accept_token().cancelled().await;
        let stop_accepting = started.elapsed();
        assert!(
            stop_accepting >= Duration::from_millis(1000),
            "{stop_accepting:?}"
        );
        assert!(
            !connection.is_finished(),
            "connection survives the drain duration"
        );
        assert_eq!(run.await.unwrap(), Ended::Signal);
        let total = started.elapsed();
        assert!(
            total >= Duration::from_millis(1500),
            "closed at grace: {total:?}"
        );
        assert!(connection.is_finished());
    }

    #[tokio::test]
    async fn sigterm_ends_early_when_connections_finish() {
        let (lifecycle, requests) = Lifecycle::new();
        let tracker = TaskTracker::new();
        tracker.spawn(tokio::time::sleep(Duration::from_millis(100)));
        let started = Instant::now();
        let ended = coordinate(&lifecycle, requests, async {}, timing(0, 5_000), &tracker).await;
        assert_eq!(ended, Ended::Signal);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!lifecycle.connections_token().is_cancelled());
    }

    #[tokio::test]
    async fn drain_request_stops_accepting_after_the_drain_duration_and_quit_ends() {
        let (lifecycle, requests) = Lifecycle::new();
        lifecycle.mark_listening();
        let tracker = TaskTracker::new();
        let run = {
            let lifecycle = lifecycle.clone();
            let tracker = tracker.clone();
            tokio::spawn(async move {
                coordinate(
                    &lifecycle,
                    requests,
                    std::future::pending(),
                    timing(100, 1_000),
                    &tracker,
                )
                .await
            })
        };
        assert!(lifecycle.request(Request::Drain));
        tokio::time::timeout(Duration::from_secs(2), lifecycle.accept_token().cancelled())
            .await
            .expect("stops accepting after the drain duration");
        assert!(!lifecycle.is_ready());
        assert!(!run.is_finished(), "a drain alone does not exit");
        assert!(lifecycle.request(Request::Quit));
        assert_eq!(run.await.unwrap(), Ended::Quit);
    }
}
