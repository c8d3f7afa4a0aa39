//! Capture workers, as Envoy's worker threads: `--concurrency` threads, each a current-thread
//! runtime with its own capture listeners (`SO_REUSEPORT`: the kernel spreads captured
//! connections over them) and its own upstream connections, so a request never leaves the
//! thread that accepted it. One thread serving a connection and its upstream exchange wakes
//! no other thread per request; a shared work-stealing runtime did, twice per request.

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::forward::Forwarder;
use crate::listener;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread is (0 outside the workers): the key of per-worker state such as the
/// upstream connections.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// What one worker serves: its own listeners and the forwarder of each.
#[derive(Debug)]
pub struct Assignment {
    pub listeners: Vec<(std::net::TcpListener, Arc<Forwarder>)>,
}

/// What a started worker is handed.
#[derive(Debug)]
struct Start {
    assignment: Assignment,
    stop: CancellationToken,
    tracker: TaskTracker,
    accepting_done: oneshot::Sender<()>,
}

/// The worker threads. Spawned when the proxy binds (a failure is a start-up error), they
/// wait for their listeners; dropping this stops them (their runtimes drop every
/// connection), so a proxy dropped or aborted does not leave threads behind.
#[derive(Debug)]
pub struct Workers {
    exit: CancellationToken,
    threads: Vec<JoinHandle<()>>,
    starts: Vec<oneshot::Sender<Start>>,
    /// Fired by each worker once its accept loops have ended (after the accept token).
    accepting: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Spawns `count` threads, each with its runtime, idle until [`Workers::start`].
    pub fn spawn(count: usize) -> io::Result<Self> {
        let exit = CancellationToken::new();
        let mut threads = Vec::new();
        let mut starts = Vec::new();
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (start, started) = oneshot::channel::<Start>();
            let exit = exit.clone();
            let thread = std::thread::Builder::new()
                .name(format!("outrigger-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    runtime.block_on(async move {
                        // Dropped unstarted: the proxy never ran.
                        if let Ok(start) = started.await {
                            serve(start, exit).await;
                        }
                    });
                })?;
            threads.push(thread);
            starts.push(start);
        }
        Ok(Workers {
            exit,
            threads,
            starts,
            accepting: Vec::new(),
        })
    }

    /// How many worker threads there are.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Hands each worker its listeners (as many assignments as workers). Each accepts until
    /// `stop` fires, every connection a task of `tracker`, and keeps serving those
    /// connections until [`Workers::exit`].
    pub fn start(
        &mut self,
        assignments: Vec<Assignment>,
        stop: &CancellationToken,
        tracker: &TaskTracker,
    ) {
        for (start, assignment) in std::mem::take(&mut self.starts)
            .into_iter()
            .zip(assignments)
        {
            let (accepting_done, accepting) = oneshot::channel();
            let start = start.send(Start {
                assignment,
                stop: stop.clone(),
                tracker: tracker.clone(),
                accepting_done,
            });
            if start.is_err() {
                tracing::error!("a worker thread ended before it was started");
            }
            self.accepting.push(accepting);
        }
    }

    /// Waits until every worker has stopped accepting.
    pub async fn accepting_stopped(&mut self) {
        for accepted in &mut self.accepting {
            let _ = accepted.await;
        }
    }

    /// Stops the workers (what is still open is dropped) and waits for their threads.
    pub async fn exit(mut self) {
        self.exit.cancel();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        });
        if joined.await.is_err() {
            tracing::error!("cannot wait for the worker threads");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.exit.cancel();
    }
}

async fn serve(start: Start, exit: CancellationToken) {
    let Start {
        assignment,
        stop,
        tracker,
        accepting_done,
    } = start;
    let mut accept_loops = JoinSet::new();
    for (listener, forwarder) in assignment.listeners {
        // Registered with this thread's runtime: its connections are polled here.
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => {
                accept_loops.spawn(listener::accept_loop(
                    listener,
                    forwarder,
                    stop.clone(),
                    tracker.clone(),
                ));
            }
            Err(error) => tracing::error!(%error, worker = index(), "cannot use a listener"),
        }
    }
    tokio::select! {
        () = async { while accept_loops.join_next().await.is_some() {} } => {}
        () = exit.cancelled() => return,
    }
    let _ = accepting_done.send(());
    exit.cancelled().await;
}
