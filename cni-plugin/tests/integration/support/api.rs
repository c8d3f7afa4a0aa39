//! The CNI tests' handle on the workspace's fake API server (`outrigger-testkit`, over HTTPS on
//! a thread of its own, since the plugin runs as a child process and some tests are
//! synchronous): pods by value, scripted failures and raw bodies, the installer's kubeconfig.

use std::path::Path;

pub use outrigger_testkit::Recorded;

pub struct FakeApiServer {
    server: outrigger_testkit::FakeApiServer,
}

impl FakeApiServer {
    /// Starts the server on 127.0.0.1 on a background runtime that lives as long as the process.
    pub fn start() -> Self {
        Self {
            server: outrigger_testkit::FakeApiServer::start_in_background(true)
                .expect("fake API server"),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Stores the pod (replacing one of the same name).
    pub fn add_pod(&self, pod: serde_json::Value) {
        self.server.apply(pod).expect("pod stored");
    }

    /// The next requests get these statuses, in order, before normal service resumes.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.server.fail_next(statuses);
    }

    /// The next requests get `200 OK` with these bodies (whatever they are), in order.
    pub fn answer_next_raw(&self, bodies: Vec<Vec<u8>>) {
        self.server.answer_next_raw(bodies);
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
        self.server.requests()
    }

    /// Writes a kubeconfig trusting this server's CA, as the installer would.
    pub fn write_kubeconfig(&self, path: &Path) {
        let ca = self.server.ca_pem().expect("served over HTTPS");
        let text =
            outrigger_cni::installer::kubeconfig::render("test-token", ca.as_bytes(), &self.url())
                .expect("kubeconfig renders");
        std::fs::write(path, text).expect("kubeconfig written");
    }
}
