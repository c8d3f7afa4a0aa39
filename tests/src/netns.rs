//! Network namespaces the tests create and always delete, and running code or processes in them.

use std::fs::File;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails loudly unless running as root: these tests are part of CI, which runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this end-to-end test needs root (network namespaces, iptables, setuid); run it as root \
         like CI does (scripts/test.sh)"
    );
}

/// A unique name prefix for this process and call: `<tag><pid>n<counter>`.
pub fn unique_prefix(tag: &str) -> String {
    format!(
        "{tag}{}n{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        run_ip(&["netns", "add", name])?;
        let netns = Netns {
            name: name.to_owned(),
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS`, failing with ip's stderr.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// Runs a command to completion inside the namespace (as the current user).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .with_context(|| format!("run {program} in {}", self.name))
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it opens live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(self.path()).with_context(|| format!("open {}", self.path()))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T> {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("enter {}", self.name))?;
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))?
        })
    }

    /// Starts a thread that has entered the namespace and runs `f` there (threads it creates
    /// stay in the namespace too: e.g. a server's runtime).
    pub fn thread(
        &self,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<()>>> {
        let file = File::open(self.path()).with_context(|| format!("open {}", self.path()))?;
        let name = self.name.clone();
        Ok(std::thread::spawn(move || -> Result<()> {
            setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("enter {name}"))?;
            f();
            Ok(())
        }))
    }

    /// Spawns `command` inside the namespace (the child inherits the thread's namespace;
    /// `Command::uid`/`gid` still apply).
    pub fn spawn(&self, mut command: Command) -> Result<Child> {
        self.run(move || command.spawn())?
            .with_context(|| format!("spawn a process in {}", self.name))
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {error:#}");
        }
    }
}

fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
