//! The roles started inside the pods:
//! - `serve ADDR`: an HTTP/1.1 (and HTTP/2 prior knowledge) server answering `200 ok`.
//! - `load ADDR HOST CONNECTIONS SECONDS [h2]`: keep-alive clients, one request at a time per
//!   connection (or that many concurrent streams on one HTTP/2 connection); prints
//!   `requests=N errors=E rps=R p50_us=A p99_us=B`.

use std::convert::Infallible;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

pub fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing argument {i}"))
    };
    match arg(0)? {
        "serve" => serve(arg(1)?),
        "load" => load(
            arg(1)?,
            arg(2)?,
            arg(3)?.parse().context("CONNECTIONS")?,
            arg(4)?.parse().context("SECONDS")?,
            args.get(5).is_some_and(|a| a == "h2"),
        ),
        other => bail!("unknown role {other:?}"),
    }
}

fn serve(addr: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        println!("listening {addr}");
        std::io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"ok\n",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn load(addr: &str, host: &str, connections: usize, seconds: u64, h2: bool) -> Result<()> {
    // The client gets one core, as an app container would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (latencies, errors) = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        if h2 {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            for _ in 0..connections {
                let mut send = send.clone();
                let uri = format!("http://{host}/");
                tasks.spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0u64;
                    while Instant::now() < deadline {
                        let req = hyper::Request::get(uri.as_str())
                            .body(Empty::<Bytes>::new())
                            .expect("valid request");
                        let started = Instant::now();
                        match send.send_request(req).await {
                            Ok(resp) if resp.status() == 200 => {
                                let _ = resp.into_body().collect().await;
                                lat.push(started.elapsed().as_micros() as u32);
                            }
                            _ => errors += 1,
                        }
                    }
                    (lat, errors)
                });
            }
        } else {
            for _ in 0..connections {
                let (addr, host) = (addr.to_owned(), host.to_owned());
                tasks.spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0u64;
                    let Ok(stream) = TcpStream::connect(&addr).await else {
                        return (lat, 1);
                    };
                    let _ = stream.set_nodelay(true);
                    let Ok((mut send, conn)) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                    else {
                        return (lat, 1);
                    };
                    tokio::spawn(conn);
                    while Instant::now() < deadline {
                        let req = hyper::Request::get("/")
                            .header("host", host.as_str())
                            .body(Empty::<Bytes>::new())
                            .expect("valid request");
                        let started = Instant::now();
                        match send.send_request(req).await {
                            Ok(resp) if resp.status() == 200 => {
                                let _ = resp.into_body().collect().await;
                                lat.push(started.elapsed().as_micros() as u32);
                            }
                            _ => {
                                errors += 1;
                                break;
                            }
                        }
                    }
                    (lat, errors)
                });
            }
        }
        let mut all = Vec::new();
        let mut errors = 0;
        while let Some(done) = tasks.join_next().await {
            let (lat, e) = done?;
            all.extend(lat);
            errors += e;
        }
        anyhow::Ok((all, errors))
    })?;
    let mut latencies = latencies;
    latencies.sort_unstable();
    let pct = |p: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]
    };
    println!(
        "requests={} errors={errors} rps={:.0} p50_us={} p99_us={}",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
