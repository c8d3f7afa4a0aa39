//! Child processes that are killed and reaped when the test lets go of them.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child killed on drop (unless it already exited).
#[derive(Debug)]
pub struct Guarded {
    pub child: Child,
    pub what: String,
}

impl Guarded {
    pub fn new(child: Child, what: impl Into<String>) -> Guarded {
        Guarded {
            child,
            what: what.into(),
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"))
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(self.pid(), signal)?;
        Ok(())
    }

    /// Waits for the exit, or fails after `limit`.
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {limit:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.has_exited() {
            // A child started as the leader of its own process group (nginx, whose workers
            // outlive a killed master) takes its whole group with it.
            if nix::unistd::getpgid(Some(self.pid())) == Ok(self.pid()) {
                let _ = nix::sys::signal::killpg(self.pid(), Signal::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
