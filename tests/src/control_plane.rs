//! The control plane of the e2e topology, in the node's namespace: outrigger-testkit's fake
//! kube-apiserver (on its own thread and runtime, serving YAML fixtures and the test's
//! mutations, answering TokenReviews) and the real `outrigger-pilot` binary reading it, its
//! xDS port reachable from every pod at the node IP.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outrigger_testkit::FakeApiServer;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::bins::workspace_bin;
use crate::process::Guarded;
use crate::topology::{NODE_IP, POD_NAMESPACE, Topology};

/// Pilot's plaintext xDS port, as the proxies dial it.
pub fn pilot_address() -> String {
    format!("{NODE_IP}:{}", outrigger_api::names::port::PILOT_XDS)
}

/// The fake API server, running until dropped.
pub struct ApiServer {
    pub api: FakeApiServer,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.api.addr())
            .finish()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// TokenReviews as the API server answers them here: the token `token-<sa>` is
/// `system:serviceaccount:<POD_NAMESPACE>:<sa>` with the audience asked; any other token is
/// not authenticated.
fn token_reviews(api: &FakeApiServer) {
    api.on_create(
        "authentication.k8s.io/v1",
        "tokenreviews",
        Arc::new(|review: &Value| {
            let token = review["spec"]["token"].as_str().unwrap_or("");
            let audiences = review["spec"]["audiences"].clone();
            let status = match token.strip_prefix("token-") {
                Some(sa) => json!({"authenticated": true, "audiences": audiences,
                    "user": {"username": format!("system:serviceaccount:{POD_NAMESPACE}:{sa}")}}),
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            Ok(
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                      "metadata": {}, "spec": review["spec"], "status": status}),
            )
        }),
    );
}

/// A running pilot and its log.
#[derive(Debug)]
pub struct Pilot {
    pub process: Guarded,
    pub log: PathBuf,
}

impl Pilot {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Topology {
    /// Starts the fake API server in the node's namespace, loaded with `yaml`.
    pub fn start_api_server(&self, yaml: &str) -> Result<ApiServer> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let yaml = yaml.to_owned();
        let thread = self.node.thread(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready_tx.send(Err(anyhow::Error::from(error)));
                    return;
                }
            };
            runtime.block_on(async move {
                let started = async {
                    let api = FakeApiServer::start().await?;
                    api.load_yaml(&yaml)?;
                    token_reviews(&api);
                    anyhow::Ok(api)
                }
                .await;
                let ok = started.is_ok();
                let _ = ready_tx.send(started);
                if ok {
                    let _ = stopped.await;
                }
            });
        })?;
        let api = ready_rx
            .recv()
            .context("the API server thread ended")?
            .context("start the fake API server")?;
        Ok(ApiServer {
            api,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Starts `outrigger-pilot` in the node's namespace against `api` and waits for its
    /// `/ready` (every reflector synced). `log` names its log file in the scratch directory.
    pub fn start_pilot(&self, api: &ApiServer, log: &str) -> Result<Pilot> {
        let kubeconfig = self.dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, api.api.kubeconfig())?;
        let log = self.dir.path().join(log);
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(workspace_bin("outrigger-pilot"));
        command
            .args([
                "--xds-address",
                &format!("0.0.0.0:{}", outrigger_api::names::port::PILOT_XDS),
                "--monitoring-address",
                &format!("0.0.0.0:{}", outrigger_api::names::port::PILOT_MONITORING),
                "--log-format",
                "text",
            ])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("RUST_LOG", "info")
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let mut pilot = Pilot {
            process: Guarded::new(self.node.spawn(command)?, "outrigger-pilot"),
            log,
        };
        let ready = format!("{NODE_IP}:{}", outrigger_api::names::port::PILOT_MONITORING);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.from_node(&ready, "GET", "/ready") {
                return Ok(pilot);
            }
            if pilot.process.has_exited() || Instant::now() > deadline {
                bail!(
                    "outrigger-pilot never became ready; log:\n{}",
                    pilot.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes a token file the proxy (UID 1337) can read; returns its path.
    pub fn token_file(&self, name: &str, token: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, token)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }
}
