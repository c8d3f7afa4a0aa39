//! The pure parts of handling one request: the view the mesh matcher reads, Istio's rewrite and
//! redirect, `x-request-id`, the weighted choice, the retry conditions and Envoy's response
//! flags. No I/O here.

use std::fmt;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use outrigger_mesh::RequestView;

use crate::l7::telemetry::Label;
use outrigger_mesh::config::{MatchKind, Redirect, Route, WeightedCluster};

/// Envoy's response flags, as Istio's `response_flags` label and access log carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// No route matched, or the route's cluster does not exist.
    NoRoute,
    /// No healthy upstream endpoint.
    NoHealthyUpstream,
    /// Upstream connection failure.
    UpstreamConnectFailure,
    /// Upstream overflow (connection-pool limits).
    UpstreamOverflow,
    /// Upstream retry limit exceeded.
    RetryLimitExceeded,
    /// Upstream request timeout.
    UpstreamTimeout,
    /// Upstream connection reset or closed before a response.
    UpstreamReset,
    /// The request was delayed by fault injection.
    DelayInjected,
    /// The request was aborted by fault injection.
    FaultInjected,
    /// The downstream (client) closed before the response was complete.
    DownstreamDisconnect,
}

impl Flag {
    /// The code as a label value, allocated once per flag.
    fn label(self) -> Label {
        const FLAGS: usize = 10;
        static LABELS: [OnceLock<Label>; FLAGS] = [const { OnceLock::new() }; FLAGS];
        LABELS[self as usize % FLAGS]
            .get_or_init(|| Label::from(self.code()))
            .clone()
    }

    pub fn code(self) -> &'static str {
        match self {
            Flag::NoRoute => "NR",
            Flag::NoHealthyUpstream => "UH",
            Flag::UpstreamConnectFailure => "UF",
            Flag::UpstreamOverflow => "UO",
            Flag::RetryLimitExceeded => "URX",
            Flag::UpstreamTimeout => "UT",
            Flag::UpstreamReset => "UC",
            Flag::DelayInjected => "DI",
            Flag::FaultInjected => "FI",
            Flag::DownstreamDisconnect => "DC",
        }
    }
}

/// The flags of one request; `-` when none (Envoy's spelling).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(Vec<Flag>);

impl Flags {
    pub fn add(&mut self, flag: Flag) {
        if !self.0.contains(&flag) {
            self.0.push(flag);
        }
    }

    pub fn contains(&self, flag: Flag) -> bool {
        self.0.contains(&flag)
    }

    /// As the `response_flags` label: no flag (`-`) and each single flag allocated once.
    pub fn label(&self) -> Label {
        static NONE: OnceLock<Label> = OnceLock::new();
        match self.0.as_slice() {
            [] => NONE.get_or_init(|| Label::from("-")).clone(),
            [flag] => flag.label(),
            _ => Label::from(self.to_string()),
        }
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, flag) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(flag.code())?;
        }
        Ok(())
    }
}

/// What the matcher reads of a request head.
#[derive(Debug)]
pub struct View<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

impl RequestView for View<'_> {
    fn method(&self) -> &str {
        self.method
    }
    fn scheme(&self) -> &str {
        self.scheme
    }
    fn authority(&self) -> &str {
        self.authority
    }
    fn path(&self) -> &str {
        self.path
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The authority of a request: `:authority` (HTTP/2, absolute URIs), else `Host`.
pub fn authority<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> &'a str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or_default()
}

/// Adds `x-request-id` (a random UUID v4) when the request has none; returns its value.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    // A name, not text: inserting text would copy the name for every request.
    const NAME: HeaderName = HeaderName::from_static("x-request-id");
    if let Some(id) = headers.get(&NAME) {
        return id.clone();
    }
    let bits = fastrand::u128(..);
    // Version 4, RFC 4122 variant.
    let bits = (bits & !(0xf << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [b'-'; 36];
    let mut nibble = 32;
    for (at, byte) in id.iter_mut().enumerate() {
        if matches!(at, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *byte = HEX[((bits >> (4 * nibble)) & 0xf) as usize];
    }
    let value = HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"));
    headers.insert(NAME, value.clone());
    value
}

/// Chooses one of a route's weighted clusters; `roll` is uniform in 0..100.
pub fn choose(destinations: &[WeightedCluster], roll: u32) -> Option<&WeightedCluster> {
    let mut upto = 0;
    for destination in destinations {
        upto += destination.weight;
        if roll < upto {
            return Some(destination);
        }
    }
    destinations.iter().rev().find(|d| d.weight > 0)
}

/// Istio's `rewrite.uri`: replaces the prefix that a `prefix` uri match matched, else the
/// whole path; the query string is kept.
pub fn rewrite_path(route: &Route, path_and_query: &str, new: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let matched_prefix = route.matches.iter().find_map(|m| {
        let uri = m.uri.as_ref()?;
        let hit = if m.ignore_uri_case {
            path.len() >= uri.value.len()
                && path.as_bytes()[..uri.value.len()].eq_ignore_ascii_case(uri.value.as_bytes())
        } else {
            path.starts_with(&uri.value)
        };
        (uri.kind == MatchKind::Prefix && hit).then_some(uri.value.len())
    });
    let rewritten = match matched_prefix {
        Some(len) => format!("{new}{}", &path[len..]),
        None => new.to_owned(),
    };
    match query {
        Some(query) => format!("{rewritten}?{query}"),
        None => rewritten,
    }
}

/// The `Location` of an Istio redirect: each part replaced when the rule sets it.
pub fn redirect_location(
    redirect: &Redirect,
    scheme: &str,
    authority: &str,
    path_and_query: &str,
) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(scheme);
    let authority = redirect.authority.as_deref().unwrap_or(authority);
    let authority = match redirect.port {
        Some(port) => {
            let host = match authority.rsplit_once(':') {
                Some((host, p)) if p.parse::<u16>().is_ok() => host,
                _ => authority,
            };
            format!("{host}:{port}")
        }
        None => authority.to_owned(),
    };
    let path = redirect.uri.as_deref().unwrap_or(path_and_query);
    format!("{scheme}://{authority}{path}")
}

/// Why an attempt may be retried, as Envoy's `retryOn` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    ConnectFailure,
    /// Reset or closed before the response headers.
    Reset,
    /// The per-try timeout fired.
    PerTryTimeout,
    /// A response with this status and `grpc-status` (trailers-only responses).
    Response(u16, Option<u32>),
}

/// The `retryOn` list of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    conditions: Vec<String>,
    codes: Vec<u16>,
}

impl RetryOn {
    pub fn parse(text: &str) -> Self {
        let mut retry_on = RetryOn::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.parse::<u16>() {
                Ok(code) => retry_on.codes.push(code),
                Err(_) => retry_on.conditions.push(item.to_ascii_lowercase()),
            }
        }
        retry_on
    }

    fn has(&self, name: &str) -> bool {
        self.conditions.iter().any(|c| c == name)
    }

    /// Whether an attempt that ended so may be retried.
    pub fn retries(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::ConnectFailure => self.has("connect-failure") || self.has("5xx"),
            Outcome::Reset => self.has("reset") || self.has("refused-stream") || self.has("5xx"),
            Outcome::PerTryTimeout => {
                self.has("5xx") || self.has("gateway-error") || self.has("reset")
            }
            Outcome::Response(status, grpc) => {
                let grpc_hit = grpc.is_some_and(|code| {
                    let name = match code {
                        1 => "cancelled",
                        4 => "deadline-exceeded",
                        8 => "resource-exhausted",
                        13 => "internal",
                        14 => "unavailable",
                        _ => return false,
                    };
                    self.has(name)
                });
                grpc_hit
                    || (status >= 500 && self.has("5xx"))
                    || (matches!(status, 502..=504) && self.has("gateway-error"))
                    || (status == 409 && self.has("retriable-4xx"))
                    || self.codes.contains(&status)
            }
        }
    }
}

/// Envoy's local reply bodies, which users search for.
pub fn local_reply(flag: Flag) -> (StatusCode, &'static str) {
    match flag {
        Flag::NoRoute => (StatusCode::NOT_FOUND, ""),
        Flag::NoHealthyUpstream => (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
        Flag::UpstreamConnectFailure => (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        ),
        Flag::UpstreamOverflow => (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        ),
        Flag::UpstreamReset => (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        ),
        Flag::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
        Flag::FaultInjected => (StatusCode::SERVICE_UNAVAILABLE, "fault filter abort"),
        Flag::RetryLimitExceeded | Flag::DelayInjected | Flag::DownstreamDisconnect => {
            (StatusCode::SERVICE_UNAVAILABLE, "")
        }
    }
}

/// gRPC's numeric status for the names Istio's `abort.grpcStatus` accepts (or a number).
pub fn grpc_status_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    name.parse().ok().or_else(|| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .and_then(|i| u32::try_from(i).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_mesh::config::{Action, ActionKind, RequestMatch, RetryPolicy, StringMatcher};

    fn route_with_prefix(prefix: &str) -> Route {
        Route {
            virtual_service: None,
            rule: None,
            name: None,
            matches: vec![RequestMatch {
                uri: Some(StringMatcher {
                    kind: MatchKind::Prefix,
                    value: prefix.into(),
                }),
                ..Default::default()
            }],
            action: Action {
                kind: ActionKind::Route,
                destinations: vec![],
                redirect: None,
                direct_response: None,
                rewrite: None,
            },
            timeout_ms: None,
            retries: RetryPolicy {
                attempts: 0,
                retry_on: String::new(),
                per_try_timeout_ms: None,
            },
            fault: None,
            headers: None,
            mirrors: Vec::new(),
        }
    }

    #[test]
    fn rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
        let route = route_with_prefix("/api/v1");
        assert_eq!(
            rewrite_path(&route, "/api/v1/items?x=1", "/v2"),
            "/v2/items?x=1"
        );
        let exact = route_with_prefix("/other");
        assert_eq!(rewrite_path(&exact, "/api/v1/items", "/"), "/");
    }

    #[test]
    fn redirect_replaces_only_what_the_rule_sets() {
        let redirect = Redirect {
            uri: Some("/new".into()),
            authority: None,
            port: Some(8443),
            scheme: Some("https".into()),
            code: 301,
        };
        assert_eq!(
            redirect_location(&redirect, "http", "shop:80", "/old?q=1"),
            "https://shop:8443/new"
        );
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let cluster = |name: &str, weight| WeightedCluster {
            cluster: name.into(),
            host: "h".into(),
            subset: None,
            port: 80,
            weight,
            headers: None,
        };
        let split = [cluster("v1", 90), cluster("v3", 10)];
        assert_eq!(choose(&split, 0).unwrap().cluster, "v1");
        assert_eq!(choose(&split, 89).unwrap().cluster, "v1");
        assert_eq!(choose(&split, 90).unwrap().cluster, "v3");
        assert_eq!(choose(&split, 99).unwrap().cluster, "v3");
    }

    #[test]
    fn istio_default_retry_on_and_numeric_codes() {
        let default = RetryOn::parse("connect-failure,refused-stream,unavailable,cancelled");
        assert!(default.retries(Outcome::ConnectFailure));
        assert!(default.retries(Outcome::Reset));
        assert!(default.retries(Outcome::Response(200, Some(14))));
        assert!(
            !default.retries(Outcome::Response(503, None)),
            "5xx is not in the default"
        );
        let codes = RetryOn::parse("503, gateway-error");
        assert!(codes.retries(Outcome::Response(503, None)));
        assert!(codes.retries(Outcome::Response(504, None)));
        assert!(!codes.retries(Outcome::Response(500, None)));
    }

    #[test]
    fn request_ids_are_uuid_v4_and_kept_when_present() {
        let mut headers = HeaderMap::new();
        let id = ensure_request_id(&mut headers);
        let text = id.to_str().expect("ASCII");
        assert_eq!(text.len(), 36);
        let groups: Vec<usize> = text.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(text.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&text[14..15], "4");
        assert!(
            matches!(&text[19..20], "8" | "9" | "a" | "b"),
            "RFC 4122 variant"
        );
        assert_eq!(headers.get("x-request-id"), Some(&id));
        assert_eq!(ensure_request_id(&mut headers), id);
        assert_ne!(ensure_request_id(&mut HeaderMap::new()), id, "random");
    }

    #[test]
    fn flags_print_as_envoy_does() {
        let mut flags = Flags::default();
        assert_eq!(flags.to_string(), "-");
        flags.add(Flag::UpstreamConnectFailure);
        flags.add(Flag::RetryLimitExceeded);
        flags.add(Flag::UpstreamConnectFailure);
        assert_eq!(flags.to_string(), "UF,URX");
        assert_eq!(grpc_status_code("unavailable"), Some(14));
        assert_eq!(grpc_status_code("7"), Some(7));
    }
}
