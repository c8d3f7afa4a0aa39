//! The real `outrigger-injector` binary as a child process, and a TLS client that trusts only a
//! given CA.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio_rustls::TlsConnector;

/// A running injector; killed on drop.
pub struct Injector {
    child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Injector {
    /// Start the binary with `args` plus ephemeral ports and JSON logs; waits until it listens.
    pub fn start(args: &[&str]) -> Injector {
        let mut child = Command::new(env!("CARGO_BIN_EXE_outrigger-injector"))
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("outrigger-injector starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[injector] {line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "listening"
                {
                    let parse = |k: &str| v["fields"][k].as_str().and_then(|s| s.parse().ok());
                    let _ = tx.send((parse("addr"), parse("metrics_addr")));
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let (addr, metrics_addr) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok((Some(a), Some(m))) => (a, m),
            other => {
                let _ = child.kill();
                panic!("injector did not report its listening addresses: {other:?}");
            }
        };
        Injector {
            child,
            addr,
            metrics_addr,
            logs,
        }
    }

    /// The process id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM delivered");
    }

    /// Wait for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "injector did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .logs
                .lock()
                .expect("log lock")
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line containing {needle:?} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many log lines contain `needle` so far.
    pub fn count_logs(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The Prometheus text of the metrics port.
    pub async fn metrics(&self) -> String {
        let tcp = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .expect("metrics port");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("http handshake");
        tokio::spawn(conn);
        let request = hyper::Request::get("/metrics")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = sender
            .send_request(request)
            .await
            .expect("metrics response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(body.to_vec()).expect("utf-8")
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HTTPS client trusting only one CA; reports the leaf certificate the server presented.
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
}

/// One keep-alive connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    pub peer_leaf: CertificateDer<'static>,
}

impl Client {
    pub fn trusting(ca_file: &Path) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).expect("CA file readable") {
            roots.add(cert.expect("CA PEM")).expect("CA accepted");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        // Full handshakes only, so `peer_leaf` is what the server presents now.
        config.resumption = rustls::client::Resumption::disabled();
        Client {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// The same client offering only HTTP/2 in ALPN (what kube-apiserver negotiates).
    pub fn trusting_h2(ca_file: &Path) -> Client {
        let plain = Client::trusting(ca_file);
        let mut config = rustls::ClientConfig::clone(plain.connector.config());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Client {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// A TLS stream without HTTP on top, for hand-written requests.
    pub async fn connect_raw(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("valid name");
        self.connector.connect(name, tcp).await
    }

    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<Connection> {
        let tls = self.connect_raw(addr).await?;
        let peer_leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("server presented a certificate")
            .clone()
            .into_owned();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Connection { sender, peer_leaf })
    }
}

impl Connection {
    /// GET `path`; returns the status.
    pub async fn get(&mut self, path: &str) -> Result<u16, hyper::Error> {
        self.sender.ready().await?;
        let request = hyper::Request::get(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await?;
        Ok(status)
    }

    /// POST a JSON document; returns status and parsed JSON body (or the raw text as a string).
    pub async fn post(&mut self, path: &str, body: &Value) -> Result<(u16, Value), hyper::Error> {
        self.post_bytes(path, serde_json::to_vec(body).expect("json"))
            .await
    }

    /// POST JSON text as it is; returns status and parsed JSON body (or the raw text).
    pub async fn post_bytes(
        &mut self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Value), hyper::Error> {
        self.sender.ready().await?;
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, json))
    }
}
