//! Gates: the first `n` requests matching a method and path are held until all `n` have
//! arrived, then released together (or each after a timeout), so a test can make clients race
//! (two replicas that both read before either creates).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// A gate set with [`super::FakeApiServer::hold`]: what the test can ask about it.
#[derive(Debug, Clone)]
pub struct Gate {
    state: Arc<GateState>,
}

#[derive(Debug)]
pub(super) struct GateState {
    method: String,
    path: String,
    n: usize,
    timeout: Duration,
    arrived: AtomicUsize,
    timed_out: AtomicBool,
    open: watch::Sender<bool>,
}

impl Gate {
    pub(super) fn new(
        method: &str,
        path: &str,
        n: usize,
        timeout: Duration,
    ) -> (Gate, Arc<GateState>) {
        let state = Arc::new(GateState {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            n,
            timeout,
            arrived: AtomicUsize::new(0),
            timed_out: AtomicBool::new(false),
            open: watch::channel(n == 0).0,
        });
        (
            Gate {
                state: state.clone(),
            },
            state,
        )
    }

    /// Matching requests that have reached the gate so far (held or released; at most `n`).
    pub fn arrived(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }

    /// Whether all `n` requests arrived (and so were released together).
    pub fn opened(&self) -> bool {
        *self.state.open.borrow()
    }

    /// Whether some held request gave up waiting after the timeout and went on alone.
    pub fn timed_out(&self) -> bool {
        self.state.timed_out.load(Ordering::SeqCst)
    }
}

impl GateState {
    /// Holds this request if it is one of the first `n` that match; returns when the gate has
    /// opened or the timeout passed. Requests after the first `n` pass at once.
    pub(super) async fn pass(&self, method: &str, path: &str) {
        if method != self.method || path != self.path {
            return;
        }
        let claimed = self
            .arrived
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |arrived| {
                (arrived < self.n).then_some(arrived + 1)
            });
        let Ok(before) = claimed else {
            return;
        };
        if before + 1 == self.n {
            self.open.send_replace(true);
            return;
        }
        let mut open = self.open.subscribe();
        let opened = tokio::time::timeout(self.timeout, open.wait_for(|open| *open)).await;
        if opened.is_err() {
            self.timed_out.store(true, Ordering::SeqCst);
        }
    }
}
