//! The load roles, each a short blocking program run inside a pod:
//! - `serve ADDR...`: per connection, the first byte picks the mode: `B` reads to EOF and
//!   answers the byte count (8 bytes, big endian); `E` echoes everything.
//! - `bulk ADDR BYTES`: sends BYTES in bulk, prints `secs <s>`.
//! - `rr ADDR ITERS SIZE`: ping-pong of SIZE bytes, prints `p50_us <x> p99_us <y>`.
//! - `connect ADDR SECS THREADS`: connect, exchange one byte, close; prints `per_sec <n>`.
//! - `hold ADDR N`: opens N echo connections, prints `held N`, keeps them until stdin closes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const CHUNK: usize = 256 * 1024;
const RR_WARMUP: usize = 1000;

pub fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing argument {i}"))
    };
    let number = |i: usize| -> Result<usize> { arg(i)?.parse().context("a number") };
    match arg(0)? {
        "serve" => serve(&args[1..]),
        "bulk" => bulk(arg(1)?, number(2)?),
        "rr" => rr(arg(1)?, number(2)?, number(3)?),
        "connect" => connect_rate(arg(1)?, number(2)?, number(3)?),
        "hold" => hold(arg(1)?, number(2)?),
        other => bail!("unknown role {other:?}"),
    }
}

fn serve(addrs: &[String]) -> Result<()> {
    let mut listeners = Vec::new();
    for addr in addrs {
        listeners.push(TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?);
    }
    println!("listening");
    std::io::stdout().flush()?;
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    std::thread::spawn(move || serve_one(stream));
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

fn serve_one(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    stream.read_exact(&mut mode)?;
    let mut buf = vec![0u8; CHUNK];
    match mode[0] {
        b'B' => {
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            stream.write_all(&total.to_be_bytes())?;
        }
        _ => loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n])?;
        },
    }
    stream.shutdown(Shutdown::Write)
}

fn bulk(addr: &str, bytes: usize) -> Result<()> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.write_all(b"B")?;
    let chunk = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        stream.write_all(&chunk[..n])?;
        left -= n;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .context("read the byte count")?;
    let secs = started.elapsed().as_secs_f64();
    if u64::from_be_bytes(count) != bytes as u64 {
        bail!(
            "server counted {} bytes, sent {bytes}",
            u64::from_be_bytes(count)
        );
    }
    println!("secs {secs}");
    Ok(())
}

fn rr(addr: &str, iters: usize, size: usize) -> Result<()> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"E")?;
    let message = vec![0x42u8; size];
    let mut answer = vec![0u8; size];
    let mut samples = Vec::with_capacity(iters);
    for i in 0..RR_WARMUP + iters {
        let started = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut answer)?;
        if i >= RR_WARMUP {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "p50_us {:.1} p99_us {:.1}",
        micros(pick(0.50)),
        micros(pick(0.99))
    );
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn connect_rate(addr: &str, secs: usize, threads: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs as u64);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let addr = addr.to_owned();
            std::thread::spawn(move || -> Result<u64> {
                let mut count = 0;
                let mut byte = [0u8; 1];
                while Instant::now() < deadline {
                    let mut stream = TcpStream::connect(&addr)?;
                    stream.set_nodelay(true)?;
                    stream.write_all(b"Ex")?;
                    stream.read_exact(&mut byte)?;
                    count += 1;
                }
                Ok(count)
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker
            .join()
            .map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    println!(
        "per_sec {:.0}",
        total as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn hold(addr: &str, count: usize) -> Result<()> {
    let mut held = Vec::with_capacity(count);
    let mut byte = [0u8; 1];
    for i in 0..count {
        let mut stream =
            TcpStream::connect(addr).with_context(|| format!("connection {i} to {addr}"))?;
        stream.write_all(b"Ex")?;
        stream.read_exact(&mut byte)?;
        held.push(stream);
    }
    println!("held {count}");
    std::io::stdout().flush()?;
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest)?;
    Ok(())
}
