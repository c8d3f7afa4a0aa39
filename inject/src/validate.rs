//! Validation of the pod's traffic, probe and resource annotations, before anything else runs.
//! Every problem is reported, each as `invalid value '<v>' for annotation '<name>': <reason>`.

use std::sync::LazyLock;

use outrigger_api::names::annotation::{
    EXCLUDE_INBOUND_PORTS, EXCLUDE_INTERFACES, EXCLUDE_OUTBOUND_IP_RANGES, EXCLUDE_OUTBOUND_PORTS,
    INCLUDE_INBOUND_PORTS, INCLUDE_OUTBOUND_IP_RANGES, INCLUDE_OUTBOUND_PORTS, INTERCEPTION_MODE,
    KUBEVIRT_INTERFACES, NATIVE_SIDECAR, PROMETHEUS_MERGE, PROMETHEUS_SCRAPE_TARGETS, PROXY_CONFIG,
    PROXY_CPU, PROXY_CPU_LIMIT, PROXY_MEMORY, PROXY_MEMORY_LIMIT, READINESS_FAILURE_THRESHOLD,
    READINESS_INITIAL_DELAY, READINESS_PERIOD, REROUTE_VIRTUAL_INTERFACES, REWRITE_PROBES,
    STATUS_PORT, USER_VOLUME, USER_VOLUME_MOUNT,
};
use outrigger_api::values::{self, ValueError};
use regex::Regex;
use serde_json::{Map, Value};

static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[mkMGTPE])?$")
        .expect("quantity pattern is a valid regex")
});

type Check = fn(&str) -> Result<(), String>;

/// Annotation → its check, in the order errors are reported.
const CHECKS: &[(&str, Check)] = &[
    (INCLUDE_OUTBOUND_IP_RANGES, |v| cidr_list(v, true)),
    (EXCLUDE_OUTBOUND_IP_RANGES, |v| cidr_list(v, false)),
    (INCLUDE_INBOUND_PORTS, |v| port_list(v, true)),
    (EXCLUDE_INBOUND_PORTS, |v| port_list(v, false)),
    (INCLUDE_OUTBOUND_PORTS, |v| port_list(v, false)),
    (EXCLUDE_OUTBOUND_PORTS, |v| port_list(v, false)),
    (KUBEVIRT_INTERFACES, interface_list),
    (REROUTE_VIRTUAL_INTERFACES, interface_list),
    (EXCLUDE_INTERFACES, interface_list),
    (INTERCEPTION_MODE, interception_mode),
    // 0 is "no status port", as Istio's validateStatusPort (ParseUint) accepts it.
    (STATUS_PORT, |v| match v.trim() {
        "0" => Ok(()),
        _ => status_port(v),
    }),
    (READINESS_INITIAL_DELAY, |v| integer(v, 0)),
    (READINESS_PERIOD, |v| integer(v, 1)),
    (READINESS_FAILURE_THRESHOLD, |v| integer(v, 1)),
    (PROXY_CPU, quantity),
    (PROXY_MEMORY, quantity),
    (PROXY_CPU_LIMIT, quantity),
    (PROXY_MEMORY_LIMIT, quantity),
    (USER_VOLUME, json_map),
    (USER_VOLUME_MOUNT, json_map),
    (REWRITE_PROBES, go_bool),
    (NATIVE_SIDECAR, exact_bool),
    (PROMETHEUS_MERGE, go_bool),
    (PROMETHEUS_SCRAPE_TARGETS, scrape_targets),
    (PROXY_CONFIG, yaml_map),
];

/// Checks every known annotation; returns all problems found, in a stable order.
pub(crate) fn annotations(anns: Option<&Map<String, Value>>) -> Vec<String> {
    let Some(anns) = anns else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for (name, check) in CHECKS {
        let Some(raw) = anns.get(*name) else {
            continue;
        };
        let Some(v) = raw.as_str() else {
            errors.push(format!(
                "invalid value '{raw}' for annotation '{name}': annotation values must be strings"
            ));
            continue;
        };
        if let Err(reason) = check(v) {
            errors.push(format!(
                "invalid value '{v}' for annotation '{name}': {reason}"
            ));
        }
    }
    errors
}

/// The api's reason text, framed by [`annotations`].
fn reason(error: ValueError) -> String {
    error.0
}

/// `*` alone, or a CIDR list (Istio's `ValidateIncludeIPRanges`); a list without `*` otherwise.
fn cidr_list(v: &str, star_allowed: bool) -> Result<(), String> {
    if star_allowed {
        values::parse_cidr_selection(v).map(drop).map_err(reason)
    } else {
        values::parse_cidr_list(v).map(drop).map_err(reason)
    }
}

/// A port number 1-65535.
pub(crate) fn port(item: &str) -> Result<u16, String> {
    values::parse_port(item).map_err(reason)
}

/// A status port the proxy can listen on: it is passed to the proxy (`--status-port`), so one of
/// the proxy's other ports would make it fail to start (Istio does not check; its agent and
/// Envoy fail the same way).
fn status_port(v: &str) -> Result<(), String> {
    use outrigger_api::names::port as p;
    let n = port(v)?;
    let owner = match n {
        p::OUTBOUND_CAPTURE => "outbound capture",
        p::INBOUND_CAPTURE => "inbound capture",
        p::INBOUND_TUNNEL => "tunnel",
        p::HEALTH => "health (/healthz/ready)",
        p::DNS_CAPTURE => "DNS",
        p::PROXY_METRICS => "metrics",
        p::ADMIN => "admin",
        _ => return Ok(()),
    };
    Err(format!("{n} is the proxy's {owner} port"))
}

/// `*` alone, or a port list (Istio's `ValidateIncludeInboundPorts`); a list without `*` otherwise.
fn port_list(v: &str, star_allowed: bool) -> Result<(), String> {
    if star_allowed {
        values::parse_port_selection(v).map(drop).map_err(reason)
    } else {
        values::parse_port_list(v).map(drop).map_err(reason)
    }
}

/// Interface names as the kernel accepts them (and iptables' trailing `+`).
fn interface_list(v: &str) -> Result<(), String> {
    values::parse_interface_list(v).map(drop).map_err(reason)
}

fn interception_mode(v: &str) -> Result<(), String> {
    match v {
        "REDIRECT" | "TPROXY" | "NONE" => Ok(()),
        _ => Err("expected REDIRECT, TPROXY or NONE".to_owned()),
    }
}

fn integer(v: &str, min: i64) -> Result<(), String> {
    match v.parse::<i32>() {
        Ok(n) if i64::from(n) >= min => Ok(()),
        _ => Err(format!("expected an integer >= {min}")),
    }
}

fn quantity(v: &str) -> Result<(), String> {
    if QUANTITY.is_match(v) {
        Ok(())
    } else {
        Err("not a Kubernetes resource quantity (e.g. 100m, 128Mi, 1.5)".to_owned())
    }
}

/// Go's `strconv.ParseBool`, as Istio reads `rewriteAppHTTPProbers` and `merge-metrics`.
fn go_bool(v: &str) -> Result<(), String> {
    values::parse_bool(v).map(drop).map_err(reason)
}

/// Exactly `true` or `false`: Istio compares `sidecar.istio.io/nativeSidecar` with `"true"`.
fn exact_bool(v: &str) -> Result<(), String> {
    match v {
        "true" | "false" => Ok(()),
        _ => Err("expected \"true\" or \"false\"".to_owned()),
    }
}

fn json_map(v: &str) -> Result<(), String> {
    match serde_json::from_str::<Value>(v) {
        Ok(Value::Object(m)) if m.values().all(Value::is_object) => Ok(()),
        Ok(_) => Err("expected a JSON object mapping names to objects".to_owned()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

fn yaml_map(v: &str) -> Result<(), String> {
    match serde_yaml_ng::from_str::<Value>(v) {
        Ok(Value::Object(_)) | Ok(Value::Null) => Ok(()),
        Ok(_) => Err("expected a YAML or JSON mapping".to_owned()),
        Err(e) => Err(format!("not valid YAML: {e}")),
    }
}

/// `port:path` pairs, comma separated (`8080:/metrics,9100:/custom`).
pub(crate) fn scrape_targets(v: &str) -> Result<(), String> {
    for item in values::split_list(v) {
        let (p, path) = item.split_once(':').unwrap_or((item, ""));
        port(p)?;
        if !path.is_empty() && !path.starts_with('/') {
            return Err(format!("path '{path}' must start with '/'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(name: &str, v: &str) -> Vec<String> {
        annotations(json!({ name: v }).as_object())
    }

    #[test]
    fn every_annotation_accepts_good_and_refuses_bad() {
        type Row<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
        let table: &[Row] = &[
            (
                INCLUDE_OUTBOUND_IP_RANGES,
                &["*", "10.0.0.0/8, 192.168.1.0/24", "fd00::/8", ""],
                &[
                    ("10.0.0.0/33", "is not a CIDR"),
                    ("abc", "is not a CIDR"),
                    ("fd00::1", "is not a CIDR"),
                    ("10.0.0.0/8,*", "'*' is not allowed"),
                ],
            ),
            (
                EXCLUDE_OUTBOUND_IP_RANGES,
                &["10.96.0.1/32"],
                &[("*", "'*' is not allowed")],
            ),
            (
                INCLUDE_INBOUND_PORTS,
                &["*", " * ", "80,8080"],
                &[
                    ("0", "not a port"),
                    ("70000", "not a port"),
                    ("80,*", "'*' is not allowed"),
                ],
            ),
            (
                EXCLUDE_INBOUND_PORTS,
                &["9090"],
                &[("*", "'*' is not allowed"), ("x", "not a port")],
            ),
            (INCLUDE_OUTBOUND_PORTS, &["443"], &[("-1", "not a port")]),
            (
                EXCLUDE_OUTBOUND_PORTS,
                &["3306,5432"],
                &[("65536", "not a port")],
            ),
            (
                KUBEVIRT_INTERFACES,
                &["net1,eth0.1", "k-v_1", "1eth", "veth+"],
                &[
                    ("abcdefghijklmnop", "longer than 15"),
                    ("..", "not an interface name"),
                    ("e+th", "only allowed as the last"),
                ],
            ),
            (
                REROUTE_VIRTUAL_INTERFACES,
                &["net1"],
                &[("ne t", "cannot contain")],
            ),
            (
                EXCLUDE_INTERFACES,
                &["eth1"],
                &[("eth/1", "cannot contain"), ("a:b", "cannot contain")],
            ),
            (
                INTERCEPTION_MODE,
                &["REDIRECT", "TPROXY", "NONE"],
                &[("redirect", "expected REDIRECT")],
            ),
            (
                STATUS_PORT,
                &["15020", "0", "15030"],
                &[
                    ("70000", "not a port"),
                    ("http", "not a port"),
                    ("15021", "15021 is the proxy's health (/healthz/ready) port"),
                    ("15001", "15001 is the proxy's outbound capture port"),
                ],
            ),
            (
                READINESS_INITIAL_DELAY,
                &["0", "5"],
                &[("-1", ">= 0"), ("1.5", "integer")],
            ),
            (READINESS_PERIOD, &["1"], &[("0", ">= 1")]),
            (READINESS_FAILURE_THRESHOLD, &["30"], &[("x", "integer")]),
            (
                PROXY_CPU,
                &["100m", "1", "0.5"],
                &[("100 m", "quantity"), ("lots", "quantity")],
            ),
            (
                PROXY_MEMORY,
                &["128Mi", "1G", "1e3"],
                &[("128MB", "quantity")],
            ),
            (PROXY_CPU_LIMIT, &["2"], &[("-2", "quantity")]),
            (PROXY_MEMORY_LIMIT, &["1Gi"], &[("1gi", "quantity")]),
            (
                USER_VOLUME,
                &[r#"{"v":{"emptyDir":{}}}"#],
                &[("[1]", "JSON object"), ("{", "not valid JSON")],
            ),
            (
                USER_VOLUME_MOUNT,
                &[r#"{"v":{"mountPath":"/v"}}"#],
                &[(r#"{"v":1}"#, "JSON object")],
            ),
            (
                REWRITE_PROBES,
                &["true", "false", "1", "True", "f"],
                &[("yes", "must be true or false")],
            ),
            (NATIVE_SIDECAR, &["false"], &[("1", "expected \"true\"")]),
            (
                PROMETHEUS_MERGE,
                &["false", "0", "FALSE"],
                &[("no", "must be true or false")],
            ),
            (
                PROMETHEUS_SCRAPE_TARGETS,
                &["8080:/metrics,9100:/custom"],
                &[
                    ("x:/m", "not a port"),
                    ("80:metrics", "must start with '/'"),
                ],
            ),
            (
                PROXY_CONFIG,
                &["concurrency: 2", "{\"concurrency\": 2}"],
                &[("- a", "mapping"), ("a: [", "not valid YAML")],
            ),
        ];
        for (name, good, bad) in table {
            for g in *good {
                assert_eq!(errs(name, g), Vec::<String>::new(), "{name}={g}");
            }
            for (b, why) in *bad {
                let e = errs(name, b);
                assert_eq!(e.len(), 1, "{name}={b}: {e:?}");
                let prefix = format!("invalid value '{b}' for annotation '{name}': ");
                assert!(
                    e[0].starts_with(&prefix) && e[0].contains(why),
                    "{name}={b}: {}",
                    e[0]
                );
            }
        }
    }

    #[test]
    fn all_errors_are_reported_together_and_unknown_annotations_ignored() {
        let anns = json!({
            INTERCEPTION_MODE: "BOGUS",
            STATUS_PORT: "99999",
            "example.com/whatever": "not checked",
            PROXY_CPU: 5,
        });
        let e = annotations(anns.as_object());
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains(INTERCEPTION_MODE));
        assert!(e[1].contains(STATUS_PORT));
        assert!(e[2].contains("must be strings"));
    }
}
