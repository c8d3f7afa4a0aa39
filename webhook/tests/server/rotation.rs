//! Certificate rotation the way Kubernetes updates a mounted Secret (a `..data` symlink swap),
//! while a client keeps sending: no request fails and new handshakes get the new certificate.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::common::pod_review;
use crate::process::{Client, Injector};

/// A test CA that issues serving certificates for localhost.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&key).expect("CA cert").pem();
        Pki {
            issuer: Issuer::new(params, key),
            ca_pem,
        }
    }

    fn issue(&self) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// Publish a version the way the kubelet does: new dir, `..data_tmp` symlink, rename over `..data`.
fn publish(dir: &Path, version: &str, cert: &str, key: &str) {
    let versioned = dir.join(version);
    std::fs::create_dir(&versioned).expect("version dir");
    std::fs::write(versioned.join("tls.crt"), cert).expect("write cert");
    std::fs::write(versioned.join("tls.key"), key).expect("write key");
    let tmp = dir.join("..data_tmp");
    symlink(version, &tmp).expect("..data_tmp symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if link.symlink_metadata().is_err() {
            symlink(format!("..data/{f}"), link).expect("file symlink");
        }
    }
}

/// An injector serving from a Kubernetes-style Secret directory, and a client trusting its CA.
struct Served {
    _dir: tempfile::TempDir,
    pki: Pki,
    secret: std::path::PathBuf,
    injector: Injector,
    client: Client,
    /// The key of the first serving certificate.
    first_key: String,
}

fn serve_from_secret() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &pki.ca_pem).expect("write CA");
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).expect("secret dir");
    let (cert, key) = pki.issue();
    publish(&secret, "..v1", &cert, &key);
    let (cert_arg, key_arg) = (secret.join("tls.crt"), secret.join("tls.key"));
    let injector = Injector::start(&[
        "--tls-cert",
        cert_arg.to_str().expect("utf-8 path"),
        "--tls-key",
        key_arg.to_str().expect("utf-8 path"),
    ]);
    Served {
        client: Client::trusting(&ca_file),
        _dir: dir,
        pki,
        secret,
        injector,
        first_key: key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_loses_nothing() {
    let Served {
        _dir,
        pki,
        secret,
        injector,
        client,
        first_key: _,
    } = serve_from_secret();
    let first_leaf = client
        .connect(injector.addr)
        .await
        .expect("connect")
        .peer_leaf;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    // Two workers reconnect for every request (a handshake each time), one keeps its connection.
    for reconnect in [true, true, false] {
        let (client, stop, ok, addr) = (client.clone(), stop.clone(), ok.clone(), injector.addr);
        workers.push(tokio::spawn(async move {
            let review = pod_review();
            let mut failures = Vec::new();
            let mut conn = client.connect(addr).await.expect("first connect");
            while !stop.load(Ordering::Relaxed) && failures.len() < 20 {
                if reconnect {
                    match client.connect(addr).await {
                        Ok(c) => conn = c,
                        Err(e) => {
                            failures.push(format!("connect: {e}"));
                            continue;
                        }
                    }
                }
                match conn.post("/inject", &review).await {
                    Ok((200, v)) if v["kind"] == "AdmissionReview" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, v)) => failures.push(format!("{status}: {v}")),
                    Err(e) => failures.push(format!("request: {e}")),
                }
            }
            failures
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_rotation = ok.load(Ordering::Relaxed);
    let (cert2, key2) = pki.issue();
    publish(&secret, "..v2", &cert2, &key2);
    let second_leaf = rustls::pki_types::CertificateDer::from(
        rustls::pki_types::pem::PemObject::from_pem_slice(cert2.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'_>| c.to_vec())
            .expect("cert2 PEM"),
    );

    // New handshakes must present the new certificate soon.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leaf = client
            .connect(injector.addr)
            .await
            .expect("connect")
            .peer_leaf;
        if leaf == second_leaf {
            break;
        }
        assert_eq!(
            leaf, first_leaf,
            "served neither the old nor the new certificate"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let failures = worker.await.expect("worker");
        assert!(failures.is_empty(), "failed requests: {failures:?}");
    }
    let total = ok.load(Ordering::Relaxed);
    assert!(
        total > before_rotation,
        "requests kept flowing across the rotation"
    );
    let metrics = injector.metrics().await;
    assert!(
        metrics.contains("outrigger_injector_cert_reload_total{result=\"success\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rotation_keeps_the_old_certificate() {
    let Served {
        _dir,
        pki,
        secret,
        injector,
        client,
        first_key: key1,
    } = serve_from_secret();
    let before = client
        .connect(injector.addr)
        .await
        .expect("connect")
        .peer_leaf;

    let (cert2, _) = pki.issue();
    publish(&secret, "..v2", &cert2, &key1); // key does not match the certificate
    let line = injector.wait_log("certificate reload refused", Duration::from_secs(10));
    assert!(line.contains("does not match"), "{line}");
    let mut conn = client.connect(injector.addr).await.expect("connect");
    assert_eq!(conn.peer_leaf, before);
    let (status, _) = conn.post("/inject", &pod_review()).await.expect("request");
    assert_eq!(status, 200);
    let metrics = injector.metrics().await;
    assert!(
        metrics.contains("outrigger_injector_cert_reload_total{result=\"failure\"} 1"),
        "{metrics}"
    );
}
