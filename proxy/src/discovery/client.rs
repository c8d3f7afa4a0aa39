//! The stream task: connect (plaintext or TLS), authenticate with the projected token (re-read
//! at each connection), resubscribe everything held with `initial_resource_versions`, apply each
//! response (ACK) or refuse it (NACK, previous version kept), and reconnect with a jittered,
//! capped exponential backoff whenever the stream ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use outrigger_xds_api::envoy::config::core::v3::Node;
use outrigger_xds_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use outrigger_xds_api::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use outrigger_xds_api::google::rpc::Status as RpcStatus;
use outrigger_xds_api::subscribe::split_request;
use outrigger_xds_api::{DESTINATION_TYPE, ENDPOINTS_TYPE};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use super::Discovery;
use crate::l7::source::Loaded;

/// First reconnect delay (Envoy's base interval for xDS retries).
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest delay between two attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(15);
/// A stream that stayed open this long resets the backoff even without a response.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// TCP and TLS connect timeout of one attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `INVALID_ARGUMENT`, the code of a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// Exponential backoff with jitter: each delay is drawn in [d/2, d], d doubling to the cap.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            next: base,
            base,
            cap,
        }
    }

    /// The delay before the next attempt.
    pub fn delay(&mut self) -> Duration {
        let full = self.next;
        self.next = (self.next * 2).min(self.cap);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

/// Why one stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the CA file {path}: {source}")]
    Ca {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// Pilot said no: a bad token, another namespace's node, a bad node id.
    #[error("refused by pilot: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    /// The stream broke (pilot gone, connection reset, replica shutting down).
    #[error("stream lost: {code:?}: {message}")]
    Lost { code: tonic::Code, message: String },
    #[error("pilot closed the stream")]
    Closed,
}

/// Runs the stream until the process ends.
pub async fn run(
    discovery: Arc<Discovery>,
    mut subscribe: mpsc::UnboundedReceiver<DeltaDiscoveryRequest>,
) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    loop {
        let started = Instant::now();
        let mut answered = false;
        let error = session(&discovery, &mut subscribe, &mut answered).await;
        let was_connected = discovery.status.connected();
        discovery.status.set_disconnected(error.to_string());
        discovery.metrics.connected.set(0);
        discovery.metrics.disconnects.inc();
        if answered || (was_connected && started.elapsed() >= STABLE_AFTER) {
            backoff.reset();
        }
        let delay = backoff.delay();
        match &error {
            StreamError::Refused { code, message } => tracing::warn!(
                address = %discovery.settings.address, code = ?code, error = %message, retry_in = ?delay,
                "discovery refused by pilot: keeping the last good configuration"),
            _ => tracing::warn!(
                address = %discovery.settings.address, error = %error, retry_in = ?delay,
                "discovery stream to pilot lost: keeping the last good configuration"),
        }
        tokio::time::sleep(delay).await;
    }
}

fn endpoint(discovery: &Discovery) -> Result<Endpoint, StreamError> {
    let settings = &discovery.settings;
    let connect_error = |reason: String| StreamError::Connect {
        address: settings.address.clone(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(settings.uri.clone())
        .map_err(|e| connect_error(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if settings.tls {
        let pem = std::fs::read(&settings.ca_file).map_err(|source| StreamError::Ca {
            path: settings.ca_file.display().to_string(),
            source,
        })?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem))
            .domain_name(settings.host.clone());
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| connect_error(outrigger_runtime::error_chain(&e)))?;
    }
    Ok(endpoint)
}

/// The codes pilot refuses a proxy with (pilot/README.md, "Errors"); any other status is a
/// broken stream.
fn status_error(status: &tonic::Status) -> StreamError {
    let (code, message) = (status.code(), status.message().to_owned());
    match code {
        tonic::Code::Unauthenticated
        | tonic::Code::PermissionDenied
        | tonic::Code::InvalidArgument => StreamError::Refused { code, message },
        _ => StreamError::Lost { code, message },
    }
}

/// One stream, from connect to its end (always an error: the stream is meant to stay open).
async fn session(
    discovery: &Arc<Discovery>,
    subscribe: &mut mpsc::UnboundedReceiver<DeltaDiscoveryRequest>,
    answered: &mut bool,
) -> StreamError {
    match open_and_serve(discovery, subscribe, answered).await {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

async fn open_and_serve(
    discovery: &Arc<Discovery>,
    subscribe: &mut mpsc::UnboundedReceiver<DeltaDiscoveryRequest>,
    answered: &mut bool,
) -> Result<std::convert::Infallible, StreamError> {
    let settings = &discovery.settings;
    let token =
        std::fs::read_to_string(&settings.token_file).map_err(|source| StreamError::Token {
            path: settings.token_file.display().to_string(),
            source,
        })?;
    let channel = endpoint(discovery)?
        .connect()
        .await
        .map_err(|e| StreamError::Connect {
            address: settings.address.clone(),
            reason: outrigger_runtime::error_chain(&e),
        })?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(64);
    // What was asked or dropped while pilot was away is in what the new stream sends.
    while subscribe.try_recv().is_ok() {}
    let (destinations, endpoints) = {
        let resources = discovery.resources();
        (
            DeltaDiscoveryRequest {
                node: Some(Node {
                    id: settings.node_id.clone(),
                    cluster: String::new(),
                }),
                type_url: DESTINATION_TYPE.to_owned(),
                resource_names_subscribe: resources.wanted.iter().cloned().collect(),
                initial_resource_versions: resources
                    .versions(DESTINATION_TYPE)
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
            DeltaDiscoveryRequest {
                type_url: ENDPOINTS_TYPE.to_owned(),
                resource_names_subscribe: resources.clusters.iter().cloned().collect(),
                initial_resource_versions: resources.versions(ENDPOINTS_TYPE).into_iter().collect(),
                ..Default::default()
            },
        )
    };
    let resubscribed = destinations.resource_names_subscribe.len();
    // Cut to pilot's request size (`split_request`): a resubscription is every name held.
    let first: Vec<DeltaDiscoveryRequest> = [destinations, endpoints]
        .into_iter()
        .flat_map(split_request)
        .collect();
    let mut request = tonic::Request::new(tokio_stream::iter(first).chain(ReceiverStream::new(rx)));
    let bearer = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| StreamError::Token {
            path: settings.token_file.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a valid header value",
            ),
        })?;
    request.metadata_mut().insert("authorization", bearer);
    let mut responses = client
        .delta_aggregated_resources(request)
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    discovery.status.set_connected();
    discovery.metrics.connected.set(1);
    discovery.metrics.connects.inc();
    discovery.updates.send_modify(|n| *n += 1);
    tracing::info!(address = %settings.address, node = %settings.node_id, resubscribed,
        "connected to pilot");
    loop {
        tokio::select! {
            message = responses.message() => {
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return Err(StreamError::Closed),
                    Err(status) => return Err(status_error(&status)),
                };
                *answered = true;
                for request in on_response(discovery, &response).into_iter().flat_map(split_request) {
                    tx.send(request).await.map_err(|_| StreamError::Closed)?;
                }
            }
            Some(request) = subscribe.recv() => {
                tracing::debug!(r#type = type_label(&request.type_url),
                    subscribe = ?request.resource_names_subscribe,
                    unsubscribe = ?request.resource_names_unsubscribe, "subscriptions");
                for request in split_request(request) {
                    tx.send(request).await.map_err(|_| StreamError::Closed)?;
                }
            }
        }
    }
}

fn type_label(type_url: &str) -> &'static str {
    if type_url == DESTINATION_TYPE {
        "destination"
    } else {
        "endpoints"
    }
}

/// Applies one response to a copy of what is held; commits it and ACKs when the whole response
/// parses, compiles and builds, else NACKs it with the reason and keeps the previous version.
/// Returns the requests to send (the ACK or NACK, then any change of cluster subscriptions).
fn on_response(
    discovery: &Discovery,
    response: &DeltaDiscoveryResponse,
) -> Vec<DeltaDiscoveryRequest> {
    let kind = type_label(&response.type_url);
    let mut resources = discovery.resources();
    let mut next = resources.clone();
    let outcome = next.apply(response).and_then(|()| {
        let changes = next.sync_clusters();
        let config = next.build(&discovery.proxy);
        let loaded = Loaded::new(config).map_err(|error| error.to_string())?;
        Ok((changes, loaded))
    });
    let mut requests = Vec::new();
    match outcome {
        Ok((changes, loaded)) => {
            let version = loaded.config.version.clone();
            let counts = (
                loaded.config.destinations.len(),
                loaded.config.clusters.len(),
            );
            *resources = next;
            discovery.store.replace(loaded);
            drop(resources);
            discovery.status.updated(counts.0, counts.1);
            discovery
                .metrics
                .updates
                .get_or_create(&super::metrics::TypeLabels { r#type: kind })
                .inc();
            tracing::info!(r#type = kind, nonce = %response.nonce,
                resources = response.resources.len(), removed = response.removed_resources.len(),
                %version, "configuration updated from pilot");
            requests.push(DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                ..Default::default()
            });
            if !changes.subscribe.is_empty() || !changes.unsubscribe.is_empty() {
                requests.push(DeltaDiscoveryRequest {
                    type_url: ENDPOINTS_TYPE.to_owned(),
                    resource_names_subscribe: changes.subscribe,
                    resource_names_unsubscribe: changes.unsubscribe,
                    ..Default::default()
                });
            }
            discovery.updates.send_modify(|n| *n += 1);
        }
        Err(reason) => {
            drop(resources);
            discovery.store.refused();
            discovery
                .metrics
                .rejects
                .get_or_create(&super::metrics::TypeLabels { r#type: kind })
                .inc();
            tracing::warn!(r#type = kind, nonce = %response.nonce, error = %reason,
                "response from pilot refused (NACK): keeping the previous version");
            requests.push(DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                error_detail: Some(RpcStatus {
                    code: INVALID_ARGUMENT,
                    message: reason,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            let delay = backoff.delay();
            ceilings.push(delay);
        }
        let expected = [500u64, 1000, 2000, 4000, 4000, 4000];
        for (delay, full) in ceilings.iter().zip(expected) {
            let full = Duration::from_millis(full);
            assert!(
                *delay >= full / 2 && *delay <= full,
                "{delay:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        backoff.reset();
        assert!(backoff.delay() <= Duration::from_millis(500));
    }

    #[test]
    fn pilots_refusals_are_told_apart_from_a_broken_stream() {
        for code in [
            tonic::Code::Unauthenticated,
            tonic::Code::PermissionDenied,
            tonic::Code::InvalidArgument,
        ] {
            let error = status_error(&tonic::Status::new(code, "outrigger-pilot: no"));
            assert!(matches!(error, StreamError::Refused { .. }), "{error}");
        }
        let error = status_error(&tonic::Status::unknown(
            "h2 protocol error: error reading a body from connection",
        ));
        assert!(matches!(error, StreamError::Lost { .. }), "{error}");
        assert!(matches!(
            status_error(&tonic::Status::unavailable(
                "outrigger-pilot is shutting down"
            )),
            StreamError::Lost { .. }
        ));
    }
}
