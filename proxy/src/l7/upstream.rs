//! Upstream HTTP clients: hyper-util's pooling client (HTTP/1.1 keep-alive, or one multiplexed
//! HTTP/2 connection per endpoint for `http2`/`grpc` clusters), one per distinct connection
//! setting, shared by every cluster that has it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::l7::balance::ClusterState;

/// Bodies on both sides of the proxy.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// How long an idle pooled connection is kept when the cluster sets no `idleTimeout`.
const DEFAULT_IDLE: Duration = Duration::from_secs(90);

type Key = (bool, Duration, Duration);

/// The clients, created on first use.
#[derive(Debug)]
pub struct Upstream {
    connect_timeout: Duration,
    clients: Mutex<HashMap<Key, Client<HttpConnector, Body>>>,
}

impl Upstream {
    /// `connect_timeout` applies when a cluster sets no `connectTimeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Upstream {
            connect_timeout,
            clients: Mutex::default(),
        }
    }

    /// The client for a cluster's protocol and pool settings.
    pub fn client(&self, cluster: &ClusterState) -> Client<HttpConnector, Body> {
        let key = (
            cluster.http2,
            cluster.connect_timeout.unwrap_or(self.connect_timeout),
            cluster.idle_timeout.unwrap_or(DEFAULT_IDLE),
        );
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.entry(key).or_insert_with(|| build(key)).clone()
    }
}

fn build((http2, connect_timeout, idle): Key) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(idle)
        .pool_timer(TokioTimer::new());
    if http2 {
        builder.http2_only(true).timer(TokioTimer::new());
    }
    builder.build(connector)
}
