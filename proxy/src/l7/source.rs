//! The configuration store, whichever its source. The `--config-file` source loads the
//! `ProxyConfig` that `outrigger-routes build` writes (the mesh crate's types, JSON or YAML),
//! polls the file's identity and reloads it when it changes; a bad file is refused with its path
//! and the reason, counted, and the last good configuration stays in force. The discovery source
//! ([`crate::discovery`]) builds the same `ProxyConfig` from pilot's resources and
//! [`ConfigStore::replace`]s it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use outrigger_mesh::ProxyConfig as MeshConfig;
use outrigger_mesh::config::{DestinationConfig, sharing_labels};
use outrigger_mesh::names::{PROXY_CONFIG_API_VERSION, PROXY_CONFIG_KIND};
use tokio_util::sync::CancellationToken;

use crate::l7::balance::{BuildError, Clusters};
use crate::l7::request::RetryOn;
use crate::l7::telemetry::{L7Metrics, ServiceLabels};
use outrigger_runtime::error_chain;

/// How often the file's identity is checked (a ConfigMap volume swaps a symlink: the inode of
/// the target changes, so polling `stat` sees every update without inotify's symlink pitfalls).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A configuration file that cannot be used. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read the file")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {field}: {message}")]
    Parse {
        path: PathBuf,
        /// Where in the document (`destinations.x.http.routes[0].action`), `.` for the top.
        field: String,
        message: String,
    },
    #[error("{path}: apiVersion {found:?} is not {PROXY_CONFIG_API_VERSION:?}")]
    ApiVersion { path: PathBuf, found: String },
    #[error("{path}: kind {found:?} is not {PROXY_CONFIG_KIND:?}")]
    Kind { path: PathBuf, found: String },
    #[error("{path}: destinations: {message}")]
    Routes { path: PathBuf, message: String },
    /// A cluster the proxy cannot run (a bad endpoint address or `consistentHash`).
    #[error("{path}: {message}")]
    Cluster { path: PathBuf, message: String },
}

/// A configuration in force: the model plus the run-time state built from it.
#[derive(Debug)]
pub struct Loaded {
    /// The model, except the clusters' `endpoints`: those moved into `clusters` (one copy of
    /// 10,000 endpoints, not two). [`Loaded::config_json`] is the whole model.
    pub config: MeshConfig,
    pub clusters: Clusters,
    /// Every route's `retryOn` list, parsed once here (by its text; routes share a few lists).
    retry_on: HashMap<String, RetryOn>,
    /// Each destination's service labels, by the destination's key, made once here (a
    /// request would otherwise allocate three label strings).
    service_labels: HashMap<String, ServiceLabels, foldhash::fast::RandomState>,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
}

impl Loaded {
    /// A configuration with no destination and no cluster (discovery before pilot answers).
    pub fn empty(mut config: MeshConfig) -> Self {
        config.destinations.clear();
        config.clusters.clear();
        Loaded {
            retry_on: HashMap::new(),
            service_labels: HashMap::default(),
            config,
            clusters: Clusters::default(),
            loaded_at: SystemTime::now(),
        }
    }

    /// The run-time state of a checked configuration; fails on a cluster the proxy cannot run
    /// (an endpoint address that is not `ip:port`, a bad `consistentHash`).
    pub fn new(mut config: MeshConfig) -> Result<Self, BuildError> {
        let clusters = Clusters::build(&mut config)?;
        Ok(Loaded {
            retry_on: parse_retry_lists(&config),
            service_labels: config
                .destinations
                .iter()
                .map(|(key, d)| (key.clone(), ServiceLabels::of(&d.host, &d.service)))
                .collect(),
            config,
            clusters,
            loaded_at: SystemTime::now(),
        })
    }

    /// The configuration in force as it was loaded (`/config_dump`): the model with each
    /// cluster's endpoints put back from the run-time state.
    pub fn config_json(&self) -> serde_json::Value {
        let mut value =
            serde_json::to_value(&self.config).expect("a ProxyConfig always serializes");
        if let Some(clusters) = value.get_mut("clusters").and_then(|c| c.as_object_mut()) {
            for (name, cluster) in clusters {
                let endpoints = self.clusters.endpoints_of(name);
                cluster["endpoints"] =
                    serde_json::to_value(endpoints).expect("endpoints always serialize");
            }
        }
        value
    }

    /// The service labels of the destination under `key` (made now if the key is not one of
    /// this configuration's).
    pub fn service_labels(&self, key: &str, destination: &DestinationConfig) -> ServiceLabels {
        match self.service_labels.get(key) {
            Some(labels) => labels.clone(),
            None => ServiceLabels::of(&destination.host, &destination.service),
        }
    }

    /// The parsed `retryOn` of a route of this configuration.
    pub fn retry_on(&self, text: &str) -> Cow<'_, RetryOn> {
        match self.retry_on.get(text) {
            Some(parsed) => Cow::Borrowed(parsed),
            None => Cow::Owned(RetryOn::parse(text)),
        }
    }
}

fn parse_retry_lists(config: &MeshConfig) -> HashMap<String, RetryOn> {
    let mut lists = HashMap::new();
    for destination in config.destinations.values() {
        for route in &destination.http.routes {
            let text = &route.retries.retry_on;
            if !lists.contains_key(text) {
                lists.insert(text.clone(), RetryOn::parse(text));
            }
        }
    }
    lists
}

/// Reads and checks a `ProxyConfig` file (JSON when it starts with `{`, else YAML).
///
/// JSON is parsed as it is read (a buffered reader, never the whole text in memory): the
/// text of a large configuration (5.6 MiB for 10,000 endpoints) would otherwise sit beside
/// the model built from it and raise the peak RSS by as much.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut reader = io::BufReader::with_capacity(64 * 1024, file);
    let config = if starts_with_brace(&mut reader).map_err(read_error)? {
        let mut de = serde_json::Deserializer::from_reader(reader);
        // What follows the document is not read (as `parse`, which does not look either).
        let config = sharing_labels(|| serde_path_to_error::deserialize(&mut de))
            .map_err(|e| parse_error(path, e.path().to_string(), e.inner().to_string()))?;
        check(config, path)?
    } else {
        let mut text = String::new();
        io::Read::read_to_string(&mut reader, &mut text).map_err(read_error)?;
        parse(&text, path)?
    };
    Loaded::new(config).map_err(|error| LoadError::Cluster {
        path: path.to_owned(),
        message: error.to_string(),
    })
}

/// Whether the first byte after leading whitespace is `{` (JSON); consumes only whitespace.
fn starts_with_brace(reader: &mut impl io::BufRead) -> io::Result<bool> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(false);
        }
        let blanks = buffer
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        if blanks < buffer.len() {
            let first = buffer[blanks];
            reader.consume(blanks);
            return Ok(first == b'{');
        }
        reader.consume(blanks);
    }
}

fn parse_error(path: &Path, field: String, message: String) -> LoadError {
    LoadError::Parse {
        path: path.to_owned(),
        field: if field.is_empty() || field == "?" {
            ".".into()
        } else {
            field
        },
        message,
    }
}

/// Parses and checks the text of a `ProxyConfig` (`path` only names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<MeshConfig, LoadError> {
    let config: MeshConfig = if text.trim_start().starts_with('{') {
        let mut de = serde_json::Deserializer::from_str(text);
        sharing_labels(|| serde_path_to_error::deserialize(&mut de))
            .map_err(|e| parse_error(path, e.path().to_string(), e.inner().to_string()))?
    } else {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        sharing_labels(|| serde_path_to_error::deserialize(de))
            .map_err(|e| parse_error(path, e.path().to_string(), e.inner().to_string()))?
    };
    check(config, path)
}

/// The checks after parsing: `apiVersion`, `kind`, and every route table compiles.
fn check(config: MeshConfig, path: &Path) -> Result<MeshConfig, LoadError> {
    if config.api_version != PROXY_CONFIG_API_VERSION {
        return Err(LoadError::ApiVersion {
            path: path.to_owned(),
            found: config.api_version,
        });
    }
    if config.kind != PROXY_CONFIG_KIND {
        return Err(LoadError::Kind {
            path: path.to_owned(),
            found: config.kind,
        });
    }
    config.compile().map_err(|e| LoadError::Routes {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(config)
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn identity(path: &Path) -> Option<FileIdentity> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

/// What one check of the file did.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    /// A new version is in force.
    Reloaded {
        version: String,
    },
    /// The file changed but was refused; the previous version stays in force.
    Refused(LoadError),
}

/// Where the configuration in force comes from.
#[derive(Debug)]
enum Origin {
    /// `--config-file`, polled.
    File {
        path: PathBuf,
        seen: Mutex<Option<FileIdentity>>,
    },
    /// Pilot's stream; the status is shown in `/config_dump`.
    Discovery(Arc<crate::discovery::Status>),
}

/// The configuration in force and where it comes from.
#[derive(Debug)]
pub struct ConfigStore {
    origin: Origin,
    current: ArcSwap<Loaded>,
    metrics: L7Metrics,
}

impl ConfigStore {
    /// Loads the file once; at start a bad file is an error (the proxy does not start without
    /// the configuration it was told to use).
    pub fn open(path: &Path, metrics: L7Metrics) -> Result<Arc<Self>, LoadError> {
        let seen = identity(path);
        let loaded = load(path)?;
        metrics.config_loaded(&loaded.config.version);
        tracing::info!(path = %path.display(), version = %loaded.config.version,
            destinations = loaded.config.destinations.len(), "configuration loaded");
        Ok(Arc::new(ConfigStore {
            origin: Origin::File {
                path: path.to_owned(),
                seen: Mutex::new(seen),
            },
            current: ArcSwap::from_pointee(loaded),
            metrics,
        }))
    }

    /// A store fed by the discovery client, starting from `initial` (no destination: every
    /// connection is relayed as TCP until pilot answers).
    pub fn discovery(
        initial: Loaded,
        status: Arc<crate::discovery::Status>,
        metrics: L7Metrics,
    ) -> Arc<Self> {
        Arc::new(ConfigStore {
            origin: Origin::Discovery(status),
            current: ArcSwap::from_pointee(initial),
            metrics,
        })
    }

    /// The file, for the `--config-file` source.
    pub fn path(&self) -> Option<&Path> {
        match &self.origin {
            Origin::File { path, .. } => Some(path),
            Origin::Discovery(_) => None,
        }
    }

    /// What `/config_dump` shows as `source`: the file's path, or `discovery`.
    pub fn source_name(&self) -> String {
        match &self.origin {
            Origin::File { path, .. } => path.display().to_string(),
            Origin::Discovery(_) => "discovery".to_owned(),
        }
    }

    /// The discovery client's state (address, connected, last update) for `/config_dump`;
    /// `null` for a file.
    pub fn source_status(&self) -> serde_json::Value {
        match &self.origin {
            Origin::File { .. } => serde_json::Value::Null,
            Origin::Discovery(status) => status.to_json(),
        }
    }

    /// Puts a new configuration in force (the discovery source); the clusters it shares with
    /// the one in force keep their run-time state (requests in flight, outlier ejections).
    pub fn replace(&self, mut loaded: Loaded) {
        loaded.clusters.inherit(&self.current().clusters);
        let version = loaded.config.version.clone();
        self.current.store(Arc::new(loaded));
        self.metrics.config_loaded(&version);
    }

    /// Counts a configuration refused by the discovery source (NACKed).
    pub fn refused(&self) {
        self.metrics.config_refused();
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Reloads when the file's identity (device, inode, size, mtime) changed since the last
    /// check. A refused file is reported once per identity, not on every poll.
    pub fn check(&self) -> Reload {
        let Origin::File { path, seen } = &self.origin else {
            return Reload::Unchanged;
        };
        let now = identity(path);
        {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return Reload::Unchanged;
            }
            *seen = now;
        }
        match load(path) {
            Ok(mut loaded) => {
                let version = loaded.config.version.clone();
                if version == self.current().config.version {
                    return Reload::Unchanged;
                }
                loaded.clusters.inherit(&self.current().clusters);
                self.current.store(Arc::new(loaded));
                self.metrics.config_loaded(&version);
                tracing::info!(path = %path.display(), %version, "configuration reloaded");
                Reload::Reloaded { version }
            }
            Err(error) => {
                self.metrics.config_refused();
                tracing::warn!(error = %error_chain(&error),
                    version = %self.current().config.version,
                    "configuration refused: keeping the one in force");
                Reload::Refused(error)
            }
        }
    }

    /// Checks the file every `interval` until `stop` fires.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let store = self.clone();
            // Reading and compiling a large file must not hold a worker thread.
            if let Err(error) = tokio::task::spawn_blocking(move || store.check()).await {
                tracing::warn!(%error, "configuration check failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clusters whose endpoints repeat labels, namespace, workload and service account, as
    /// the pods of one Deployment do; one endpoint has none of the optional fields.
    fn config_text() -> String {
        let endpoint = |address: &str, pod: &str| {
            serde_json::json!({
                "address": address, "health": "healthy",
                "labels": {"app": "web", "version": "v1"},
                "workload": "web", "pod": pod, "namespace": "shop", "serviceAccount": "web",
            })
        };
        let cluster = |name: &str, endpoints: serde_json::Value| {
            serde_json::json!({
                "name": name, "host": "web.shop.svc.cluster.local", "port": 8080,
                "subset": null, "protocol": "http", "loadBalancer": "LEAST_REQUEST",
                "connectionPool": {}, "endpoints": endpoints,
            })
        };
        serde_json::json!({
            "apiVersion": PROXY_CONFIG_API_VERSION, "kind": PROXY_CONFIG_KIND,
            "version": "0123456789abcdef",
            "proxy": {"namespace": "shop", "pod": "client", "labels": {}, "serviceAccount": "default"},
            "destinations": {}, "addresses": {}, "hostAliases": {},
            "clusters": {
                "outbound|8080||web.shop.svc.cluster.local": cluster(
                    "outbound|8080||web.shop.svc.cluster.local",
                    serde_json::json!([endpoint("10.0.0.1:8080", "web-1"), endpoint("10.0.0.2:8080", "web-2")]),
                ),
                "outbound|8080|v1|web.shop.svc.cluster.local": cluster(
                    "outbound|8080|v1|web.shop.svc.cluster.local",
                    serde_json::json!([
                        endpoint("10.0.0.1:8080", "web-1"),
                        {"address": "10.0.0.9:8080", "health": "draining", "namespace": "shop"},
                    ]),
                ),
            },
        })
        .to_string()
    }

    #[test]
    fn config_json_is_the_model_as_loaded_with_the_endpoints_put_back() {
        let text = config_text();
        let model = parse(&text, Path::new("test.json")).unwrap();
        let loaded = Loaded::new(model.clone()).unwrap();
        // The run-time state holds the endpoints; the model in `Loaded` keeps none.
        assert!(
            loaded
                .config
                .clusters
                .values()
                .all(|c| c.endpoints.is_empty())
        );
        assert_eq!(loaded.config_json(), serde_json::to_value(&model).unwrap());
    }

    #[test]
    fn endpoints_with_equal_labels_share_one_map_as_they_are_parsed() {
        let model = parse(&config_text(), Path::new("test.json")).unwrap();
        let labels: Vec<_> = model
            .clusters
            .values()
            .flat_map(|c| &c.endpoints)
            .filter(|e| !e.labels.is_empty())
            .map(|e| e.labels.clone())
            .collect();
        assert_eq!(labels.len(), 3);
        assert!(labels.iter().all(|l| std::sync::Arc::ptr_eq(l, &labels[0])));
    }

    #[test]
    fn a_json_file_is_read_as_the_text_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.json");
        std::fs::write(&path, format!("\n  {}", config_text())).unwrap();
        let loaded = load(&path).unwrap();
        let model = parse(&config_text(), &path).unwrap();
        assert_eq!(loaded.config_json(), serde_json::to_value(&model).unwrap());

        std::fs::write(&path, "{\"apiVersion\": 1}").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("apiVersion"), "{error}");
    }
}
