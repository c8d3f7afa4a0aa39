//! Zero-copy relaying of one direction with Linux `splice(2)`: socket → pipe → socket, the
//! bytes never enter user space. Same contract as the buffered pump in [`crate::relay`].

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Pipe capacity asked for, and most bytes moved per splice call: fewer calls per megabyte
/// than the 64 KiB default. If the kernel refuses (pipe-max-size), the default is kept.
const CHUNK: usize = 256 * 1024;

/// The pipe is created on the first data, so a connection that never sends holds none.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        if let Err(error) = fcntl(&write, FcntlArg::F_SETPIPE_SZ(CHUNK as i32)) {
            tracing::debug!(%error, "keeping the default pipe size");
        }
        Ok(Pipe { read, write })
    }
}

/// Which end failed, so the caller can name the side.
#[derive(Debug)]
pub enum SpliceError {
    Read(io::Error),
    Write(io::Error),
}

/// Moves bytes from `from` to `to` until EOF (then forwards the FIN), calling `count` per chunk.
pub async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    count: &(dyn Fn(u64) + Sync),
) -> Result<(), SpliceError> {
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    let mut pipe: Option<Pipe> = None;
    loop {
        from.as_ref().readable().await.map_err(SpliceError::Read)?;
        let pipe = match &mut pipe {
            Some(pipe) => pipe,
            None => pipe.insert(Pipe::new().map_err(SpliceError::Read)?),
        };
        let source = from.as_ref();
        // The pipe is always empty here, so EAGAIN can only mean "socket not readable".
        let moved = source.try_io(Interest::READABLE, || {
            splice(source, None, &pipe.write, None, CHUNK, flags).map_err(io::Error::from)
        });
        let n = match moved {
            Ok(0) => return to.shutdown().await.map_err(SpliceError::Write),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(SpliceError::Read(e)),
        };
        let mut left = n;
        while left > 0 {
            let sink = to.as_ref();
            let written = sink.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, sink, None, left, flags).map_err(io::Error::from)
            });
            match written {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sink.writable().await.map_err(SpliceError::Write)?;
                }
                Err(e) => return Err(SpliceError::Write(e)),
            }
        }
        count(n as u64);
    }
}
