//! Istio's validation rules for the resources we read, as findings that name the resource, the
//! field path and the rule. Errors are what Istio's webhook would refuse; warnings what it accepts.

use outrigger_api::duration::parse_duration;
use serde::Serialize;

use crate::istio::{
    DestinationRule, HttpRoute, ServiceEntry, StringMatch, TrafficPolicy, VirtualService,
};
use crate::matcher::compile_full_match;
use crate::protocol::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    Error,
    Warning,
    Info,
}

/// One message of validation or analysis.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub severity: Severity,
    /// `IST0101`-style code (Istio's when Istio has one, `OR…` for ours).
    pub code: &'static str,
    /// `ReferencedResourceNotFound`-style name of the code.
    pub name: &'static str,
    /// `VirtualService shop/catalog`.
    pub resource: String,
    /// `spec.http[1].match[0].uri.regex` (empty when the whole resource is meant).
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Info => "Info",
        };
        write!(
            f,
            "{severity} [{} {}] {}",
            self.code, self.name, self.resource
        )?;
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

const SCHEMA: (&str, &str) = ("IST0106", "SchemaValidationError");
const DEPRECATED: (&str, &str) = ("OR0103", "DeprecatedField");
const NO_PERCENTAGE: (&str, &str) = ("OR0104", "FaultWithoutPercentage");

struct Collector<'a> {
    resource: &'a str,
    findings: Vec<Finding>,
}

impl Collector<'_> {
    fn push(
        &mut self,
        severity: Severity,
        code: (&'static str, &'static str),
        path: String,
        message: String,
    ) {
        self.findings.push(Finding {
            severity,
            code: code.0,
            name: code.1,
            resource: self.resource.to_owned(),
            path,
            message,
        });
    }
    fn error(&mut self, path: String, message: impl Into<String>) {
        self.push(Severity::Error, SCHEMA, path, message.into());
    }
    fn duration(&mut self, path: String, value: Option<&String>) {
        if let Some(value) = value
            && let Err(err) = parse_duration(value)
        {
            self.error(path, format!("invalid duration {value:?}: {err}"));
        }
    }
}

/// A host as Istio accepts it: a DNS name, optionally `*.`-prefixed, or `*`.
fn check_host(out: &mut Collector<'_>, path: String, host: &str) {
    if host.is_empty() {
        out.error(path, "host must not be empty");
        return;
    }
    if host == "*" {
        return;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if !ok {
        out.error(
            path,
            format!("invalid host {host:?}: expected a DNS name, optionally prefixed with \"*.\""),
        );
    }
}

fn check_string_match(
    out: &mut Collector<'_>,
    path: &str,
    matcher: &StringMatch,
    allow_empty: bool,
) {
    let set = [&matcher.exact, &matcher.prefix, &matcher.regex]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if set > 1 {
        out.error(path.to_owned(), "set only one of exact, prefix and regex");
    }
    if set == 0 && !allow_empty {
        out.error(path.to_owned(), "one of exact, prefix or regex is required");
    }
    if let Some(regex) = &matcher.regex
        && compile_full_match(regex).is_err()
        // the message from the pattern as written, not our anchored copy
        && let Err(err) = regex::Regex::new(regex)
    {
        // regex-syntax draws the pattern over several lines; the last one says what is wrong.
        let text = err.to_string();
        let message = text
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .trim_start_matches("error: ")
            .to_owned();
        out.error(
            format!("{path}.regex"),
            format!("invalid RE2 regex {regex:?}: {message}"),
        );
    }
}

fn check_port(out: &mut Collector<'_>, path: String, port: u32) {
    if port == 0 || port > 65535 {
        out.error(
            path,
            format!("port number {port} must be between 1 and 65535"),
        );
    }
}

/// Validates one VirtualService.
pub fn virtual_service(vs: &VirtualService) -> Vec<Finding> {
    let resource = vs.display_name();
    let mut out = Collector {
        resource: &resource,
        findings: Vec::new(),
    };
    if vs.name().is_empty() {
        out.error("metadata.name".to_owned(), "name is required");
    }
    let spec = &vs.spec;
    if spec.hosts.is_empty() {
        out.error("spec.hosts".to_owned(), "at least one host is required");
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        check_host(&mut out, format!("spec.hosts[{i}]"), host);
    }
    if spec.http.is_empty() && spec.tls.is_empty() && spec.tcp.is_empty() {
        out.error(
            "spec".to_owned(),
            "http, tls or tcp must have at least one rule",
        );
    }
    for (i, rule) in spec.http.iter().enumerate() {
        http_route(&mut out, &format!("spec.http[{i}]"), rule);
    }
    for (i, rule) in spec.tls.iter().enumerate() {
        let path = format!("spec.tls[{i}]");
        if rule.matches.is_empty() {
            out.error(
                format!("{path}.match"),
                "a TLS route needs at least one match",
            );
        }
        for (j, m) in rule.matches.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                out.error(
                    format!("{path}.match[{j}].sniHosts"),
                    "a TLS match needs at least one SNI host",
                );
            }
        }
        l4_destinations(
            &mut out,
            &path,
            rule.route.iter().map(|r| (&r.destination, r.weight)),
        );
    }
    for (i, rule) in spec.tcp.iter().enumerate() {
        let path = format!("spec.tcp[{i}]");
        l4_destinations(
            &mut out,
            &path,
            rule.route.iter().map(|r| (&r.destination, r.weight)),
        );
    }
    out.findings
}

fn l4_destinations<'a>(
    out: &mut Collector<'_>,
    path: &str,
    route: impl ExactSizeIterator<Item = (&'a crate::istio::Destination, Option<i64>)>,
) {
    let count = route.len();
    if count == 0 {
        out.error(
            format!("{path}.route"),
            "at least one destination is required",
        );
    }
    let mut total = 0i64;
    for (k, (destination, weight)) in route.enumerate() {
        let dpath = format!("{path}.route[{k}]");
        check_host(out, format!("{dpath}.destination.host"), &destination.host);
        if let Some(port) = &destination.port {
            check_port(out, format!("{dpath}.destination.port.number"), port.number);
        }
        let weight = weight.unwrap_or(0);
        if weight < 0 {
            out.error(
                format!("{dpath}.weight"),
                format!("weight {weight} must not be negative"),
            );
        }
        total = total.saturating_add(weight.max(0));
    }
    if count > 1 && total == 0 {
        out.error(
            format!("{path}.route"),
            "total destination weight is 0 (set the weights of the destinations)",
        );
    }
}

fn http_route(out: &mut Collector<'_>, path: &str, rule: &HttpRoute) {
    for (j, m) in rule.matches.iter().enumerate() {
        let mpath = format!("{path}.match[{j}]");
        for (field, matcher) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(matcher) = matcher {
                check_string_match(out, &format!("{mpath}.{field}"), matcher, false);
            }
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("withoutHeaders", &m.without_headers),
            ("queryParams", &m.query_params),
        ] {
            for (name, matcher) in map {
                let hpath = format!("{mpath}.{field}.{name}");
                if name.is_empty() {
                    out.error(hpath.clone(), "header name must not be empty");
                }
                if field != "queryParams" && name.chars().any(|c| c.is_ascii_uppercase()) {
                    out.push(
                        Severity::Warning,
                        SCHEMA,
                        hpath.clone(),
                        "header names must be lowercase (compared case-insensitively)".to_owned(),
                    );
                }
                if let Some(matcher) = matcher {
                    check_string_match(out, &hpath, matcher, true);
                }
            }
        }
        if let Some(port) = m.port {
            check_port(out, format!("{mpath}.port"), port);
        }
    }
    let actions = [
        !rule.route.is_empty(),
        rule.redirect.is_some(),
        rule.direct_response.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if actions == 0 {
        out.error(
            path.to_owned(),
            "one of route, redirect or directResponse is required",
        );
    }
    if actions > 1 {
        out.error(
            path.to_owned(),
            "route, redirect and directResponse are mutually exclusive",
        );
    }
    if !rule.route.is_empty() {
        l4_destinations(
            out,
            path,
            rule.route.iter().map(|r| (&r.destination, r.weight)),
        );
    }
    if rule.mirror.is_some() && !rule.mirrors.is_empty() {
        out.error(
            path.to_owned(),
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
    for (index, policy) in rule.mirrors.iter().enumerate() {
        let mpath = format!("{path}.mirrors[{index}]");
        if policy.destination.host.is_empty() {
            out.error(
                format!("{mpath}.destination.host"),
                "host is required: the destination of the copies",
            );
        }
        if let Some(value) = policy.percentage.as_ref().map(|p| p.value)
            && !(0.0..=100.0).contains(&value)
        {
            out.error(
                format!("{mpath}.percentage.value"),
                format!("percentage {value} must be between 0 and 100"),
            );
        }
    }
    if let Some(redirect) = &rule.redirect
        && let Some(code) = redirect.redirect_code
        && !(300..=399).contains(&code)
    {
        out.error(
            format!("{path}.redirect.redirectCode"),
            format!("redirect code {code} must be 3xx"),
        );
    }
    if let Some(direct) = &rule.direct_response
        && !(200..=599).contains(&direct.status)
    {
        out.error(
            format!("{path}.directResponse.status"),
            format!("status {} must be between 200 and 599", direct.status),
        );
    }
    out.duration(format!("{path}.timeout"), rule.timeout.as_ref());
    if let Some(retries) = &rule.retries {
        if retries.attempts < 0 {
            out.error(
                format!("{path}.retries.attempts"),
                "attempts must not be negative",
            );
        }
        out.duration(
            format!("{path}.retries.perTryTimeout"),
            retries.per_try_timeout.as_ref(),
        );
    }
    if let Some(fault) = &rule.fault {
        if fault.delay.is_none() && fault.abort.is_none() {
            out.error(format!("{path}.fault"), "a fault needs delay or abort");
        }
        if let Some(delay) = &fault.delay {
            let dpath = format!("{path}.fault.delay");
            match &delay.fixed_delay {
                None => out.error(format!("{dpath}.fixedDelay"), "fixedDelay is required"),
                Some(_) => out.duration(format!("{dpath}.fixedDelay"), delay.fixed_delay.as_ref()),
            }
            percentage(
                out,
                &dpath,
                delay.percentage.as_ref().map(|p| p.value),
                delay.percent,
                "delayed",
            );
        }
        if let Some(abort) = &fault.abort {
            let apath = format!("{path}.fault.abort");
            match (abort.http_status, &abort.grpc_status) {
                (None, None) => out.error(apath.clone(), "httpStatus or grpcStatus is required"),
                (Some(status), _) if !(200..=599).contains(&status) => {
                    out.error(
                        format!("{apath}.httpStatus"),
                        format!("status {status} must be between 200 and 599"),
                    );
                }
                _ => {}
            }
            percentage(
                out,
                &apath,
                abort.percentage.as_ref().map(|p| p.value),
                None,
                "aborted",
            );
        }
    }
}

fn percentage(
    out: &mut Collector<'_>,
    path: &str,
    value: Option<f64>,
    legacy: Option<i64>,
    verb: &str,
) {
    match (value, legacy) {
        (Some(value), _) if !(0.0..=100.0).contains(&value) => {
            out.error(
                format!("{path}.percentage.value"),
                format!("percentage {value} must be between 0 and 100"),
            );
        }
        (None, Some(legacy)) if !(0..=100).contains(&legacy) => {
            out.error(
                format!("{path}.percent"),
                format!("percent {legacy} must be between 0 and 100"),
            );
        }
        (None, None) => out.push(
            Severity::Warning,
            NO_PERCENTAGE,
            format!("{path}.percentage"),
            format!("no percentage: no request will be {verb} (set percentage.value: 100 for all)"),
        ),
        _ => {}
    }
}

/// Validates one DestinationRule.
pub fn destination_rule(dr: &DestinationRule) -> Vec<Finding> {
    let resource = dr.display_name();
    let mut out = Collector {
        resource: &resource,
        findings: Vec::new(),
    };
    check_host(&mut out, "spec.host".to_owned(), &dr.spec.host);
    if let Some(policy) = &dr.spec.traffic_policy {
        traffic_policy(&mut out, "spec.trafficPolicy", policy);
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, subset) in dr.spec.subsets.iter().enumerate() {
        let path = format!("spec.subsets[{i}]");
        if subset.name.is_empty() {
            out.error(format!("{path}.name"), "subset name is required");
        } else if !names.insert(subset.name.as_str()) {
            out.error(
                format!("{path}.name"),
                format!("duplicate subset name {:?}", subset.name),
            );
        }
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(&mut out, &format!("{path}.trafficPolicy"), policy);
        }
    }
    out.findings
}

fn traffic_policy(out: &mut Collector<'_>, path: &str, policy: &TrafficPolicy) {
    let levels = std::iter::once((
        path.to_owned(),
        &policy.load_balancer,
        &policy.connection_pool,
        &policy.outlier_detection,
    ))
    .chain(policy.port_level_settings.iter().enumerate().map(|(i, p)| {
        (
            format!("{path}.portLevelSettings[{i}]"),
            &p.load_balancer,
            &p.connection_pool,
            &p.outlier_detection,
        )
    }));
    for (i, level) in policy.port_level_settings.iter().enumerate() {
        match &level.port {
            None => out.error(
                format!("{path}.portLevelSettings[{i}].port"),
                "port is required",
            ),
            Some(port) => check_port(
                out,
                format!("{path}.portLevelSettings[{i}].port.number"),
                port.number,
            ),
        }
    }
    let mut findings = Vec::new();
    for (lpath, lb, pool, outlier) in levels {
        findings.push((lpath, lb, pool, outlier));
    }
    for (lpath, lb, pool, outlier) in findings {
        if let Some(simple) = lb.as_ref().and_then(|lb| lb.simple.as_deref())
            && !matches!(
                simple,
                "UNSPECIFIED"
                    | "LEAST_CONN"
                    | "LEAST_REQUEST"
                    | "RANDOM"
                    | "PASSTHROUGH"
                    | "ROUND_ROBIN"
            )
        {
            out.error(format!("{lpath}.loadBalancer.simple"), format!("unknown load balancer {simple:?} (use LEAST_REQUEST, ROUND_ROBIN, RANDOM or PASSTHROUGH)"));
        }
        if let Some(pool) = pool {
            if let Some(tcp) = &pool.tcp {
                out.duration(
                    format!("{lpath}.connectionPool.tcp.connectTimeout"),
                    tcp.connect_timeout.as_ref(),
                );
                non_negative(
                    out,
                    format!("{lpath}.connectionPool.tcp.maxConnections"),
                    tcp.max_connections,
                );
            }
            if let Some(http) = &pool.http {
                out.duration(
                    format!("{lpath}.connectionPool.http.idleTimeout"),
                    http.idle_timeout.as_ref(),
                );
                non_negative(
                    out,
                    format!("{lpath}.connectionPool.http.http1MaxPendingRequests"),
                    http.http1_max_pending_requests,
                );
                non_negative(
                    out,
                    format!("{lpath}.connectionPool.http.http2MaxRequests"),
                    http.http2_max_requests,
                );
                non_negative(
                    out,
                    format!("{lpath}.connectionPool.http.maxRequestsPerConnection"),
                    http.max_requests_per_connection,
                );
                non_negative(
                    out,
                    format!("{lpath}.connectionPool.http.maxRetries"),
                    http.max_retries,
                );
            }
        }
        if let Some(outlier) = outlier {
            let opath = format!("{lpath}.outlierDetection");
            if outlier.consecutive_errors.is_some() {
                let message = if outlier.consecutive_5xx_errors.is_some() {
                    "consecutiveErrors is deprecated and ignored: consecutive5xxErrors is also set"
                } else {
                    "consecutiveErrors is deprecated: read as consecutive5xxErrors"
                };
                out.push(
                    Severity::Warning,
                    DEPRECATED,
                    format!("{opath}.consecutiveErrors"),
                    message.to_owned(),
                );
            }
            non_negative(
                out,
                format!("{opath}.consecutiveErrors"),
                outlier.consecutive_errors,
            );
            non_negative(
                out,
                format!("{opath}.consecutive5xxErrors"),
                outlier.consecutive_5xx_errors,
            );
            non_negative(
                out,
                format!("{opath}.consecutiveGatewayErrors"),
                outlier.consecutive_gateway_errors,
            );
            out.duration(format!("{opath}.interval"), outlier.interval.as_ref());
            out.duration(
                format!("{opath}.baseEjectionTime"),
                outlier.base_ejection_time.as_ref(),
            );
            for (field, value) in [
                ("maxEjectionPercent", outlier.max_ejection_percent),
                ("minHealthPercent", outlier.min_health_percent),
            ] {
                if let Some(value) = value
                    && !(0..=100).contains(&value)
                {
                    out.error(
                        format!("{opath}.{field}"),
                        format!("{value} must be between 0 and 100"),
                    );
                }
            }
        }
    }
}

fn non_negative(out: &mut Collector<'_>, path: String, value: Option<i64>) {
    if let Some(value) = value
        && !(0..=i64::from(u32::MAX)).contains(&value)
    {
        out.error(path, format!("{value} must be between 0 and {}", u32::MAX));
    }
}

/// Validates one ServiceEntry.
pub fn service_entry(se: &ServiceEntry) -> Vec<Finding> {
    let resource = se.display_name();
    let mut out = Collector {
        resource: &resource,
        findings: Vec::new(),
    };
    if se.spec.hosts.is_empty() {
        out.error("spec.hosts".to_owned(), "at least one host is required");
    }
    for (i, host) in se.spec.hosts.iter().enumerate() {
        check_host(&mut out, format!("spec.hosts[{i}]"), host);
    }
    for (i, port) in se.spec.ports.iter().enumerate() {
        check_port(&mut out, format!("spec.ports[{i}].number"), port.number);
        if let Some(protocol) = &port.protocol
            && Protocol::parse(protocol).is_none()
        {
            out.error(
                format!("spec.ports[{i}].protocol"),
                format!("unknown protocol {protocol:?}"),
            );
        }
    }
    if let Some(resolution) = &se.spec.resolution
        && !matches!(
            resolution.as_str(),
            "NONE" | "STATIC" | "DNS" | "DNS_ROUND_ROBIN"
        )
    {
        out.error(
            "spec.resolution".to_owned(),
            format!("unknown resolution {resolution:?} (use NONE, STATIC, DNS or DNS_ROUND_ROBIN)"),
        );
    }
    if let Some(location) = &se.spec.location
        && !matches!(location.as_str(), "MESH_EXTERNAL" | "MESH_INTERNAL")
    {
        out.error(
            "spec.location".to_owned(),
            format!("unknown location {location:?} (use MESH_EXTERNAL or MESH_INTERNAL)"),
        );
    }
    if se.spec.resolution.as_deref() == Some("STATIC") && se.spec.endpoints.is_empty() {
        out.push(
            Severity::Warning,
            SCHEMA,
            "spec.endpoints".to_owned(),
            "STATIC resolution without endpoints: nothing to send to".to_owned(),
        );
    }
    out.findings
}

/// `true` when no finding is an error.
pub fn is_valid(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.severity != Severity::Error)
}
