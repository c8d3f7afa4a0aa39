//! `explain`: what the proxy does with one request, using the same lookup tables and the same
//! matcher (`RouteTable::select_explained`) as the proxy.

use serde::Serialize;

use crate::config::{Action, ActionKind, Fault, Health, ProxyConfig, RetryPolicy, WeightedCluster};
use crate::matcher::SimpleRequest;

/// A request line or header that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("expected 'METHOD URL' (e.g. 'GET http://catalog:8080/items'), got {0:?}")]
    Line(String),
    #[error("URL {0:?}: expected http://HOST[:PORT]/PATH or https://…")]
    Url(String),
    #[error("header {0:?}: expected 'name: value'")]
    Header(String),
}

/// The request to explain and its destination port.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub request: SimpleRequest,
    pub port: u16,
}

/// Parses `'GET http://catalog:8080/items?x=1'` and `-H 'name: value'` headers.
pub fn parse_request(line: &str, headers: &[String]) -> Result<ParsedRequest, RequestError> {
    let mut words = line.split_whitespace();
    let (Some(method), Some(url), None) = (words.next(), words.next(), words.next()) else {
        return Err(RequestError::Line(line.to_owned()));
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| RequestError::Url(url.to_owned()))?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(RequestError::Url(url.to_owned())),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], rest[at..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path
    };
    if authority.is_empty() {
        return Err(RequestError::Url(url.to_owned()));
    }
    let port = match authority.rsplit_once(':') {
        Some((_, port)) if !authority.ends_with(']') => port
            .parse()
            .map_err(|_| RequestError::Url(url.to_owned()))?,
        _ => default_port,
    };
    let mut parsed_headers = Vec::new();
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| RequestError::Header(header.clone()))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(RequestError::Header(header.clone()));
        }
        parsed_headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(ParsedRequest {
        request: SimpleRequest {
            method: method.to_ascii_uppercase(),
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
            path,
            headers: parsed_headers,
        },
        port,
    })
}

/// One rule that did not match and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedRule {
    pub virtual_service: Option<String>,
    pub rule: Option<usize>,
    pub reason: String,
}

/// The answer; the keys `protocol`, `virtualService`, `rule`, `action`, `destinations`,
/// `endpoints`, `timeout`, `retries` and `fault` are stable.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// `namespace/pod` of the proxy.
    pub source: String,
    pub request: RequestSummary,
    /// `host:port` of the destination found, `null` when none (passthrough).
    pub destination: Option<String>,
    pub protocol: Option<String>,
    pub protocol_reason: String,
    pub virtual_service: Option<String>,
    pub rule: Option<usize>,
    pub rule_name: Option<String>,
    /// Earlier rules, each with why it did not match (in the order they were tried).
    pub skipped: Vec<SkippedRule>,
    pub action: serde_json::Value,
    pub destinations: Vec<WeightedCluster>,
    /// `ip:port` of the healthy endpoints of every destination cluster.
    pub endpoints: Vec<String>,
    /// `10s`, `250ms`; `null`: no timeout.
    pub timeout: Option<String>,
    pub retries: Option<RetriesSummary>,
    pub fault: Option<Fault>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSummary {
    pub method: String,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetriesSummary {
    pub attempts: u32,
    pub retry_on: String,
    pub per_try_timeout: Option<String>,
}

/// `10000` → `10s`, `1500` → `1.5s`, `250` → `250ms`.
pub fn format_ms(ms: u64) -> String {
    if ms == 0 || !ms.is_multiple_of(1000) && ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let text = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", text.trim_end_matches('0'))
    }
}

fn retries_summary(retries: &RetryPolicy) -> Option<RetriesSummary> {
    (retries.attempts > 0).then(|| RetriesSummary {
        attempts: retries.attempts,
        retry_on: retries.retry_on.clone(),
        per_try_timeout: retries.per_try_timeout_ms.map(format_ms),
    })
}

/// Explains one request from the proxy of `config`.
pub fn explain(config: &ProxyConfig, parsed: &ParsedRequest) -> Explanation {
    let request = &parsed.request;
    let mut answer = Explanation {
        source: format!("{}/{}", config.proxy.namespace, config.proxy.pod),
        request: RequestSummary {
            method: request.method.clone(),
            authority: request.authority.clone(),
            path: request.path.clone(),
            headers: request.headers.clone(),
        },
        destination: None,
        protocol: None,
        protocol_reason: String::new(),
        virtual_service: None,
        rule: None,
        rule_name: None,
        skipped: Vec::new(),
        action: serde_json::json!({"type": "passthrough"}),
        destinations: Vec::new(),
        endpoints: Vec::new(),
        timeout: None,
        retries: None,
        fault: None,
        notes: Vec::new(),
    };
    let Some((key, destination)) = config.destination(&request.authority, parsed.port) else {
        answer.protocol_reason =
            "no Service or ServiceEntry visible to this proxy has this address or host".to_owned();
        answer.notes.push(format!(
            "{} is not a known destination: the proxy relays the connection as TCP to the original address (outbound traffic policy ALLOW_ANY)",
            request.authority
        ));
        return answer;
    };
    answer.destination = Some(key.to_owned());
    answer.protocol = Some(destination.protocol.to_string());
    answer.protocol_reason = destination.protocol_reason.clone();
    answer.skipped = destination
        .excluded
        .iter()
        .map(|e| SkippedRule {
            virtual_service: Some(e.virtual_service.clone()),
            rule: Some(e.rule),
            reason: format!("never applies to this proxy: {}", e.reason),
        })
        .collect();
    if destination.protocol.uses_http_routes() {
        if destination.protocol == crate::protocol::Protocol::Auto {
            answer.notes.push("protocol auto: the HTTP routes apply when the first bytes are HTTP; other traffic takes the TCP route".to_owned());
        }
        let table = &destination.http;
        let (chosen, skipped) = table.select_explained(request);
        answer.skipped.extend(skipped.into_iter().map(|s| {
            let route = &table.routes[s.position];
            SkippedRule {
                virtual_service: route.virtual_service.clone(),
                rule: route.rule,
                reason: s.reason,
            }
        }));
        let Some(position) = chosen else {
            answer.action =
                serde_json::json!({"type": "noRoute", "status": 404, "responseFlags": "NR"});
            answer.notes.push(
                "a VirtualService owns this host and none of its rules matched: 404 NR".to_owned(),
            );
            return answer;
        };
        let route = &table.routes[position];
        answer.virtual_service = route.virtual_service.clone();
        answer.rule = route.rule;
        answer.rule_name = route.name.clone();
        if route.virtual_service.is_none() {
            answer
                .notes
                .push("no VirtualService for this host: the default route".to_owned());
        }
        answer.action = action_json(&route.action);
        answer.destinations = route.action.destinations.clone();
        if route.action.kind == ActionKind::Route {
            answer.timeout = route.timeout_ms.map(format_ms);
            answer.retries = retries_summary(&route.retries);
        }
        answer.fault = route.fault.clone();
    } else {
        let sni = request
            .authority
            .rsplit_once(':')
            .map_or(request.authority.as_str(), |(h, _)| h);
        let routes = destination.tls.iter().chain(&destination.tcp);
        let chosen = routes.clone().find(|r| {
            r.sni_hosts.is_empty()
                || r.sni_hosts
                    .iter()
                    .any(|h| crate::resolve::host_matches(h, sni))
        });
        for route in routes.take_while(|r| Some(*r) != chosen) {
            answer.skipped.push(SkippedRule {
                virtual_service: route.virtual_service.clone(),
                rule: route.rule,
                reason: format!("sniHosts {:?} do not include {sni:?}", route.sni_hosts),
            });
        }
        let Some(route) = chosen else {
            answer.action = serde_json::json!({"type": "noRoute"});
            return answer;
        };
        answer.virtual_service = route.virtual_service.clone();
        answer.rule = route.rule;
        answer.action = serde_json::json!({"type": "tcpProxy", "destinations": route.destinations});
        answer.destinations = route.destinations.clone();
        answer.notes.push(format!(
            "{} is not HTTP: TCP/TLS routes apply, no timeout, retries or fault",
            destination.protocol
        ));
    }
    for target in &answer.destinations {
        match config.clusters.get(&target.cluster) {
            None => answer.notes.push(format!(
                "cluster {} does not exist (no DestinationRule defines subset {:?} for {}): requests sent there get 503 NR",
                target.cluster,
                target.subset.as_deref().unwrap_or(""),
                target.host
            )),
            Some(cluster) => {
                let healthy: Vec<&str> = cluster.endpoints.iter().filter(|e| e.health == Health::Healthy).map(|e| e.address.as_str()).collect();
                if healthy.is_empty() {
                    answer.notes.push(format!("cluster {} has no healthy endpoint: 503 UH", target.cluster));
                }
                for address in healthy {
                    if !answer.endpoints.iter().any(|e| e == address) {
                        answer.endpoints.push(address.to_owned());
                    }
                }
            }
        }
    }
    answer
}

fn action_json(action: &Action) -> serde_json::Value {
    let mut value = serde_json::to_value(action).expect("an Action always serializes");
    if action.kind == ActionKind::Route
        && let Some(map) = value.as_object_mut()
    {
        map.remove("destinations");
    }
    value
}

/// The answer as lines for people.
pub fn render_text(answer: &Explanation) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "request:      {} {}{} from {}",
        answer.request.method, answer.request.authority, answer.request.path, answer.source
    ));
    line(format!(
        "destination:  {}",
        answer
            .destination
            .as_deref()
            .unwrap_or("(none: passthrough)")
    ));
    line(format!(
        "protocol:     {} ({})",
        answer.protocol.as_deref().unwrap_or("tcp"),
        answer.protocol_reason
    ));
    for skipped in &answer.skipped {
        line(format!(
            "skipped:      {} rule {}: {}",
            skipped
                .virtual_service
                .as_deref()
                .unwrap_or("default route"),
            skipped.rule.map_or("-".to_owned(), |r| r.to_string()),
            skipped.reason
        ));
    }
    match (&answer.virtual_service, answer.rule) {
        (Some(vs), Some(rule)) => line(format!(
            "matched:      VirtualService {vs} rule {rule}{}",
            answer
                .rule_name
                .as_ref()
                .map_or(String::new(), |n| format!(" ({n})"))
        )),
        _ => line("matched:      no VirtualService rule".to_owned()),
    }
    line(format!("action:       {}", answer.action));
    for d in &answer.destinations {
        line(format!("  -> {:>3}%  {}", d.weight, d.cluster));
    }
    line(format!(
        "endpoints:    {}",
        if answer.endpoints.is_empty() {
            "(none)".to_owned()
        } else {
            answer.endpoints.join(", ")
        }
    ));
    line(format!(
        "timeout:      {}",
        answer.timeout.as_deref().unwrap_or("none")
    ));
    line(match &answer.retries {
        Some(r) => format!(
            "retries:      {} attempts on {}{}",
            r.attempts,
            r.retry_on,
            r.per_try_timeout
                .as_ref()
                .map_or(String::new(), |t| format!(", {t} per try"))
        ),
        None => "retries:      none".to_owned(),
    });
    line(format!(
        "fault:        {}",
        answer
            .fault
            .as_ref()
            .map_or("none".to_owned(), |f| serde_json::to_string(f)
                .unwrap_or_default())
    ));
    for note in &answer.notes {
        line(format!("note:         {note}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(format_ms(10_000), "10s");
        assert_eq!(format_ms(1_500), "1.5s");
        assert_eq!(format_ms(250), "250ms");
        assert_eq!(format_ms(0), "0ms");
    }

    #[test]
    fn parses_request_lines() {
        let parsed = parse_request(
            "get http://catalog:8080/items?x=1",
            &["End-User: jason".to_owned()],
        )
        .expect("valid");
        assert_eq!(parsed.port, 8080);
        assert_eq!(parsed.request.method, "GET");
        assert_eq!(parsed.request.path, "/items?x=1");
        assert_eq!(
            parsed.request.headers,
            vec![("end-user".to_owned(), "jason".to_owned())]
        );
        assert_eq!(
            parse_request("GET http://cart", &[]).expect("valid").port,
            80
        );
        assert!(parse_request("GET", &[]).is_err());
        assert!(parse_request("GET ftp://x/", &[]).is_err());
        assert!(parse_request("GET http://x/", &["nocolon".to_owned()]).is_err());
    }
}
