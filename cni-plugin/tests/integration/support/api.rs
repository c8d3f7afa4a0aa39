//! A stand-in for kube-apiserver: HTTPS with a self-signed CA (written into a kubeconfig),
//! answering `GET /api/v1/namespaces/<ns>/pods/<name>` from a pod table, with scripted failures.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Default)]
struct State {
    pods: Mutex<HashMap<String, Value>>,
    /// Statuses to answer before serving normally, one per request.
    failures: Mutex<VecDeque<u16>>,
    /// Bodies to answer with 200 before serving normally, one per request.
    raw: Mutex<VecDeque<Vec<u8>>>,
    requests: Mutex<Vec<Recorded>>,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    ca_pem: String,
    state: Arc<State>,
}

impl FakeApiServer {
    /// Starts the server on 127.0.0.1 on a background runtime that lives as long as the process.
    pub fn start() -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "outrigger test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let server_key = rcgen::KeyPair::generate().expect("server key");
        let server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .expect("server certificate");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .expect("server TLS config");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind API server");
        std_listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = std_listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let served = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("API server runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, state) = (acceptor.clone(), served.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let state = state.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes().to_vec())
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(answer(&state, &parts, body))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        Self {
            addr,
            ca_pem: ca.pem(),
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn add_pod(&self, pod: Value) {
        let key = format!(
            "{}/{}",
            pod["metadata"]["namespace"]
                .as_str()
                .expect("pod namespace"),
            pod["metadata"]["name"].as_str().expect("pod name")
        );
        self.state.pods.lock().expect("pods lock").insert(key, pod);
    }

    /// The next requests get these statuses, in order, before normal service resumes.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.state
            .failures
            .lock()
            .expect("failures lock")
            .extend(statuses);
    }

    /// The next requests get `200 OK` with these bodies (whatever they are), in order.
    pub fn answer_next_raw(&self, bodies: Vec<Vec<u8>>) {
        self.state.raw.lock().expect("raw lock").extend(bodies);
    }

    /// "METHOD path" of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.recorded()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Every request so far, with query and body.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// Writes a kubeconfig trusting this server's CA, as the installer would.
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = outrigger_cni::installer::kubeconfig::render(
            "test-token",
            self.ca_pem.as_bytes(),
            &self.url(),
        )
        .expect("kubeconfig renders");
        std::fs::write(path, text).expect("kubeconfig written");
    }
}

fn status(code: u16, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": if code == 404 { "NotFound" } else { "InternalError" }, "code": code});
    respond(code, &body)
}

fn respond(code: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("valid status"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response builds")
}

fn answer(
    state: &State,
    req: &hyper::http::request::Parts,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let path = req.uri.path().to_string();
    let query = req.uri.query().unwrap_or_default().to_string();
    state
        .requests
        .lock()
        .expect("requests lock")
        .push(Recorded {
            method: req.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
    if let Some(code) = state.failures.lock().expect("failures lock").pop_front() {
        return status(code, "scripted failure");
    }
    if let Some(body) = state.raw.lock().expect("raw lock").pop_front() {
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("response builds");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut pods = state.pods.lock().expect("pods lock");
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["api", "v1", "namespaces", namespace, "pods", name]) => {
            match pods.get(&format!("{namespace}/{name}")) {
                Some(pod) => respond(200, pod),
                None => status(404, &format!("pods \"{name}\" not found")),
            }
        }
        // The repair loop's list and watch of all pods (the field selector is recorded, not applied).
        // Watches are refused as expired; the watcher backs off and lists again.
        ("GET", ["api", "v1", "pods"]) if query.contains("watch=true") => {
            status(410, "too old resource version")
        }
        ("GET", ["api", "v1", "pods"]) => {
            let items: Vec<Value> = pods.values().cloned().collect();
            respond(
                200,
                &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "100"}, "items": items}),
            )
        }
        ("DELETE", ["api", "v1", "namespaces", namespace, "pods", name]) => {
            match pods.remove(&format!("{namespace}/{name}")) {
                Some(pod) => respond(200, &pod),
                None => status(404, &format!("pods \"{name}\" not found")),
            }
        }
        ("PATCH", ["api", "v1", "namespaces", namespace, "pods", name]) => {
            match pods.get_mut(&format!("{namespace}/{name}")) {
                Some(pod) => {
                    if let Ok(patch) = serde_json::from_slice::<Value>(&body) {
                        merge_patch(pod, &patch);
                    }
                    respond(200, pod)
                }
                None => status(404, &format!("pods \"{name}\" not found")),
            }
        }
        ("POST", ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
            let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            respond(201, &event)
        }
        _ => status(404, "not served by the fake API server"),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(object) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}
