//! The test application behind `e2e-app`: small blocking servers and clients, one thread per
//! connection, enough HTTP/1.1 for the tests and nothing more.
//!
//! Commands:
//! - `http-server ADDR`: `GET /` answers `hello from ADDR`; `GET /ready` answers 200 or 503;
//!   `POST /admin/unready` and `POST /admin/ready` flip it; `GET /metrics` serves one counter;
//!   `GET /slow` answers `hello from ADDR` after 3 s; any other `GET /<path>` under a route the
//!   mesh tests use (`/reviews`, `/split`) answers like `/`.
//! - `http-get ADDR PATH`: prints `<status>\n<body>`; exits 0 on any HTTP answer.
//! - `echo-server ADDR after-eof|stream`: `after-eof` reads to EOF then answers everything and
//!   closes (proves half-close); `stream` echoes as data arrives.
//! - `echo-client ADDR BYTES`: sends a pattern, half-closes, checks the echo, prints `ok BYTES`.
//! - `hold ADDR`: forwards stdin lines to the connection and prints the echoed lines, `EOF` when
//!   the connection closes, `ERR <reason>` on error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

pub fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing argument {i}; usage in outrigger_e2e::app"))
    };
    match arg(0)? {
        "http-server" => http_server(arg(1)?),
        "http-get" => http_get(arg(1)?, arg(2)?),
        "echo-server" => echo_server(arg(1)?, arg(2)?),
        "echo-client" => echo_client(arg(1)?, arg(2)?.parse().context("BYTES")?),
        "hold" => hold(arg(1)?),
        other => bail!("unknown command {other:?}"),
    }
}

fn http_server(addr: &str) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    let ready = Arc::new(AtomicBool::new(true));
    let requests = Arc::new(AtomicU64::new(0));
    println!("listening {addr}");
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (ready, requests, addr) = (ready.clone(), requests.clone(), addr.to_owned());
        std::thread::spawn(move || {
            let _ = serve_http(stream, &ready, &requests, &addr);
        });
    }
    Ok(())
}

fn serve_http(
    mut stream: TcpStream,
    ready: &AtomicBool,
    requests: &AtomicU64,
    addr: &str,
) -> Result<()> {
    let head = read_head(&mut stream)?;
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    requests.fetch_add(1, Ordering::SeqCst);
    let (status, body) = match (method, path) {
        ("GET", "/" | "/reviews" | "/split") => (200, format!("hello from {addr}\n")),
        ("GET", "/slow") => {
            std::thread::sleep(std::time::Duration::from_secs(3));
            (200, format!("hello from {addr}\n"))
        }
        ("GET", "/ready") if ready.load(Ordering::SeqCst) => (200, "ready\n".to_owned()),
        ("GET", "/ready") => (503, "not ready\n".to_owned()),
        ("POST", "/admin/unready") => {
            ready.store(false, Ordering::SeqCst);
            (200, "now unready\n".to_owned())
        }
        ("POST", "/admin/ready") => {
            ready.store(true, Ordering::SeqCst);
            (200, "now ready\n".to_owned())
        }
        ("GET", "/metrics") => (
            200,
            format!(
                "# TYPE e2e_app_requests_total counter\ne2e_app_requests_total {}\n",
                requests.load(Ordering::SeqCst)
            ),
        ),
        _ => (404, "not found\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

fn read_head(stream: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            bail!("connection closed inside the request head");
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn http_get(addr: &str, path: &str) -> Result<()> {
    let (status, body) = crate::http::request(addr, "GET", path)?;
    print!("{status}\n{body}");
    Ok(())
}

fn echo_server(addr: &str, mode: &str) -> Result<()> {
    let after_eof = match mode {
        "after-eof" => true,
        "stream" => false,
        other => bail!("unknown echo mode {other:?}"),
    };
    let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    println!("listening {addr}");
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || -> std::io::Result<()> {
            if after_eof {
                let mut data = Vec::new();
                stream.read_to_end(&mut data)?;
                stream.write_all(&data)?;
            } else {
                let mut reader = stream.try_clone()?;
                std::io::copy(&mut reader, &mut stream)?;
            }
            stream.shutdown(Shutdown::Write)
        });
    }
    Ok(())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn echo_client(addr: &str, bytes: usize) -> Result<()> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    let data = pattern(bytes);
    stream.write_all(&data)?;
    stream.shutdown(Shutdown::Write)?;
    let mut echoed = Vec::new();
    stream
        .read_to_end(&mut echoed)
        .context("read the echo after half-closing")?;
    if echoed != data {
        bail!(
            "echo differs: sent {} bytes, got {}",
            data.len(),
            echoed.len()
        );
    }
    println!("ok {bytes}");
    Ok(())
}

fn hold(addr: &str) -> Result<()> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    let mut writer = stream.try_clone()?;
    let mut replies = BufReader::new(stream);
    println!("connected");
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        writer.write_all(format!("{line}\n").as_bytes())?;
        let mut reply = String::new();
        match replies.read_line(&mut reply) {
            Ok(0) => {
                println!("EOF");
                return Ok(());
            }
            Ok(_) => print!("{reply}"),
            Err(e) => println!("ERR {e}"),
        }
        std::io::stdout().flush()?;
    }
    // stdin closed: wait for the other side to close.
    let mut rest = String::new();
    match replies.read_line(&mut rest) {
        Ok(0) => println!("EOF"),
        Ok(_) => println!("DATA {rest}"),
        Err(e) => println!("ERR {e}"),
    }
    Ok(())
}
