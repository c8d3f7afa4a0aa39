//! `consistentHash` (Istio's DestinationRule `loadBalancer.consistentHash`): the request's hash
//! key (a header, a cookie — generated with its TTL when absent, as Envoy does —, the source IP
//! or a query parameter) and a hash ring over the cluster's endpoints (Istio's default ring
//! hash, `minimumRingSize` 1024). The ring holds every endpoint; a lookup walks from the key's
//! point to the first endpoint the balancer may use, so an ejected or tried endpoint hands only
//! its own keys to its neighbours.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::Value;

/// Istio's default `minimumRingSize`.
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// Envoy's `maximum_ring_size` default: a larger minimum is refused.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// The downstream connection of a request (inserted into the request's extensions by the
/// server), for `useSourceIp` and generated cookies.
#[derive(Debug, Clone, Copy)]
pub struct Downstream {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Where the hash key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(HeaderName),
    Cookie {
        name: String,
        path: Option<String>,
        /// `None`: never generated; zero: a session cookie.
        ttl: Option<Duration>,
        /// `attributes` added to a generated cookie, each `; name` or `; name=value`.
        attributes: String,
    },
    SourceIp,
    QueryParameter(String),
}

/// A bad `consistentHash`: the field (under `consistentHash`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HashError {
    pub field: String,
    pub message: String,
}

fn error(field: &str, message: impl Into<String>) -> HashError {
    HashError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A cluster's consistent-hash policy: the key and the ring.
#[derive(Debug, Clone)]
pub struct HashPolicy {
    pub on: HashOn,
    /// `MAGLEV` when the rule asked for Maglev (served by the same ring), else `RING_HASH`.
    pub lb_policy: &'static str,
    ring: Ring,
}

impl HashPolicy {
    /// Reads Istio's `consistentHash` object for endpoints at `addresses`.
    pub fn parse(value: &Value, addresses: &[&str]) -> Result<Self, HashError> {
        let object = value
            .as_object()
            .ok_or_else(|| error(".", "expected an object"))?;
        let string = |key: &str| -> Result<Option<String>, HashError> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
                Some(_) => Err(error(key, "expected a non-empty string")),
            }
        };
        let mut keys = Vec::new();
        if let Some(name) = string("httpHeaderName")? {
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| error("httpHeaderName", format!("{name:?} is not a header name")))?;
            keys.push(HashOn::Header(name));
        }
        if let Some(cookie) = object.get("httpCookie").filter(|v| !v.is_null()) {
            keys.push(parse_cookie(cookie)?);
        }
        match object.get("useSourceIp") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => keys.push(HashOn::SourceIp),
            Some(_) => return Err(error("useSourceIp", "expected true or false")),
        }
        if let Some(name) = string("httpQueryParameterName")? {
            keys.push(HashOn::QueryParameter(name));
        }
        let on = match keys.len() {
            1 => keys.remove(0),
            0 => {
                return Err(error(
                    ".",
                    "needs one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
                ));
            }
            _ => return Err(error(".", "sets more than one hash key (Istio allows one)")),
        };
        let (lb_policy, size) = ring_size(object)?;
        Ok(HashPolicy {
            on,
            lb_policy,
            ring: Ring::new(addresses, size),
        })
    }

    /// The ring position of a request, and the `Set-Cookie` to add to its response when the
    /// cookie was generated. `None`: the request has no key (the ring is entered at random, as
    /// Envoy's).
    pub fn request_key(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        downstream: Option<&Downstream>,
    ) -> (Option<u64>, Option<HeaderValue>) {
        match &self.on {
            HashOn::Header(name) => {
                let value = headers.get(name).map(|v| hash(v.as_bytes()));
                (value, None)
            }
            HashOn::SourceIp => (
                downstream.map(|d| hash(d.peer.ip().to_string().as_bytes())),
                None,
            ),
            HashOn::QueryParameter(name) => {
                let value = query.and_then(|q| {
                    q.split('&').find_map(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        (key == name).then(|| hash(value.as_bytes()))
                    })
                });
                (value, None)
            }
            HashOn::Cookie {
                name,
                path,
                ttl,
                attributes,
            } => {
                if let Some(value) = cookie(headers, name) {
                    return (Some(hash(value.as_bytes())), None);
                }
                let (Some(ttl), Some(downstream)) = (ttl, downstream) else {
                    return (None, None);
                };
                // Envoy's generated value: a hash of the connection's two addresses, so
                // racing requests of one connection get the same cookie.
                let value = format!(
                    "{:016x}",
                    hash(format!("{}{}", downstream.peer, downstream.local).as_bytes())
                );
                let mut set = format!("{name}=\"{value}\"");
                if !ttl.is_zero() {
                    set += &format!("; Max-Age={}", ttl.as_secs().max(1));
                }
                if let Some(path) = path {
                    set += &format!("; Path={path}");
                }
                set += attributes;
                set += "; HttpOnly";
                (
                    Some(hash(value.as_bytes())),
                    HeaderValue::from_str(&set).ok(),
                )
            }
        }
    }

    /// The endpoint for ring position `key` (random when `None`): the first from that point
    /// that `usable` accepts.
    pub fn pick(&self, key: Option<u64>, usable: impl Fn(usize) -> bool) -> Option<usize> {
        self.ring
            .walk(key.unwrap_or_else(|| fastrand::u64(..)), usable)
    }
}

fn parse_cookie(value: &Value) -> Result<HashOn, HashError> {
    let object = value
        .as_object()
        .ok_or_else(|| error("httpCookie", "expected an object"))?;
    let name = match object.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err(error("httpCookie.name", "required: the cookie's name")),
    };
    if !is_token(&name) {
        return Err(error(
            "httpCookie.name",
            format!("{name:?} is not a cookie name"),
        ));
    }
    let path = match object.get("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) if path.bytes().all(|b| b.is_ascii_graphic() && b != b';') => {
            Some(path.clone())
        }
        Some(_) => return Err(error("httpCookie.path", "expected a path without ';'")),
    };
    let ttl = match object.get("ttl") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(
            outrigger_api::duration::parse_duration(text)
                .map_err(|e| error("httpCookie.ttl", format!("{text:?}: {e}")))?,
        ),
        Some(_) => {
            return Err(error(
                "httpCookie.ttl",
                "expected a duration such as \"10s\"",
            ));
        }
    };
    let mut attributes = String::new();
    match object.get("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (index, attribute) in list.iter().enumerate() {
                let field = format!("httpCookie.attributes[{index}]");
                let Some(attribute_name) = attribute
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| is_token(n))
                else {
                    return Err(error(&format!("{field}.name"), "required: a token"));
                };
                attributes += "; ";
                attributes += attribute_name;
                match attribute.get("value") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(value))
                        if value
                            .bytes()
                            .all(|b| (b' '..=b'~').contains(&b) && b != b';') =>
                    {
                        attributes += "=";
                        attributes += value;
                    }
                    Some(_) => {
                        return Err(error(
                            &format!("{field}.value"),
                            "expected printable text without ';'",
                        ));
                    }
                }
            }
        }
        Some(_) => return Err(error("httpCookie.attributes", "expected a list")),
    }
    Ok(HashOn::Cookie {
        name,
        path,
        ttl,
        attributes,
    })
}

/// An HTTP token (RFC 9110): a cookie or attribute name.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn ring_size(object: &serde_json::Map<String, Value>) -> Result<(&'static str, u64), HashError> {
    let size = |field: &str, value: Option<&Value>| -> Result<Option<u64>, HashError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(value) => match value.as_u64().or_else(|| value.as_str()?.parse().ok()) {
                Some(0) => Ok(None),
                Some(n) if n <= MAX_RING_SIZE => Ok(Some(n)),
                Some(n) => Err(error(field, format!("{n} is more than {MAX_RING_SIZE}"))),
                None => Err(error(field, "expected a positive integer")),
            },
        }
    };
    if let Some(maglev) = object.get("maglev").filter(|v| !v.is_null()) {
        let table = size("maglev.tableSize", maglev.get("tableSize"))?;
        return Ok(("MAGLEV", table.unwrap_or(DEFAULT_RING_SIZE)));
    }
    let ring = object
        .get("ringHash")
        .and_then(|r| r.get("minimumRingSize"));
    let ring = size("ringHash.minimumRingSize", ring)?;
    let deprecated = size("minimumRingSize", object.get("minimumRingSize"))?;
    Ok((
        "RING_HASH",
        ring.or(deprecated).unwrap_or(DEFAULT_RING_SIZE),
    ))
}

/// The value of cookie `name` in the request's `Cookie` headers (quotes removed).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"'))
        })
}

/// A stable 64-bit hash (FNV-1a, then murmur3's finaliser to spread it): every Outrigger proxy
/// maps a key to the same ring point, whatever its build.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Points on a circle, each owned by an endpoint index; sorted by point.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// `ceil(size / n)` points per endpoint (at least one), placed by hashing `address_i`
    /// (Envoy's scheme), so the ring depends on the addresses, not their order.
    pub fn new(addresses: &[&str], size: u64) -> Self {
        let n = addresses.len() as u64;
        if n == 0 {
            return Ring::default();
        }
        let per_endpoint = size.div_ceil(n).max(1);
        let mut points = Vec::with_capacity(usize::try_from(per_endpoint * n).unwrap_or(0));
        for (index, address) in addresses.iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            for i in 0..per_endpoint {
                points.push((hash(format!("{address}_{i}").as_bytes()), index));
            }
        }
        // Ties (vanishingly rare) are broken by address so the order stays independent of
        // the input order.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| addresses[a.1 as usize].cmp(addresses[b.1 as usize]))
        });
        Ring { points }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The first endpoint at or after `key` (wrapping) that `usable` accepts.
    pub fn walk(&self, key: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self.points.partition_point(|(point, _)| *point < key);
        let n = self.points.len();
        (0..n)
            .map(|step| self.points[(start + step) % n].1 as usize)
            .find(|index| usable(*index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ADDRESSES: [&str; 3] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];

    fn policy(value: Value) -> Result<HashPolicy, HashError> {
        HashPolicy::parse(&value, &ADDRESSES)
    }

    fn downstream() -> Downstream {
        Downstream {
            peer: "10.1.0.7:40000".parse().expect("addr"),
            local: "10.96.0.1:80".parse().expect("addr"),
        }
    }

    #[test]
    fn istio_fields_parse_and_bad_ones_name_the_field() {
        let p = policy(json!({"httpHeaderName": "X-User"})).expect("header");
        assert_eq!(p.on, HashOn::Header(HeaderName::from_static("x-user")));
        assert_eq!(p.lb_policy, "RING_HASH");
        assert_eq!(p.ring.len(), 1026, "ceil(1024 / 3) points each");
        let p = policy(json!({"httpCookie": {"name": "user", "path": "/", "ttl": "10s"}}))
            .expect("cookie");
        assert_eq!(
            p.on,
            HashOn::Cookie {
                name: "user".into(),
                path: Some("/".into()),
                ttl: Some(Duration::from_secs(10)),
                attributes: String::new(),
            }
        );
        assert_eq!(
            policy(json!({"useSourceIp": true})).expect("ip").on,
            HashOn::SourceIp
        );
        let p = policy(json!({"httpQueryParameterName": "u", "maglev": {"tableSize": 65537}}))
            .expect("query");
        assert_eq!(p.lb_policy, "MAGLEV");
        let p = policy(json!({"useSourceIp": true, "ringHash": {"minimumRingSize": 30}}))
            .expect("ring");
        assert_eq!(p.ring.len(), 30);

        let bad = |value: Value| policy(value).expect_err("refused").to_string();
        assert_eq!(
            bad(json!({"httpCookie": {"path": "/"}})),
            "httpCookie.name: required: the cookie's name"
        );
        assert_eq!(
            bad(json!({"httpCookie": {"name": "u", "ttl": "ten"}})),
            "httpCookie.ttl: \"ten\": expected a number at \"ten\""
        );
        assert!(bad(json!({})).starts_with(".: needs one of"));
        assert!(bad(json!({"useSourceIp": true, "httpHeaderName": "x"})).contains("more than one"));
        assert_eq!(
            bad(json!({"useSourceIp": true, "ringHash": {"minimumRingSize": 9_000_000}})),
            "ringHash.minimumRingSize: 9000000 is more than 8388608"
        );
        assert!(bad(json!({"httpHeaderName": "bad header"})).starts_with("httpHeaderName: "));
    }

    #[test]
    fn keys_come_from_header_query_source_ip_and_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("jason"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; user=\"abc\""),
        );
        let on_header = policy(json!({"httpHeaderName": "x-user"})).expect("ok");
        assert_eq!(
            on_header.request_key(&headers, None, None),
            (Some(hash(b"jason")), None)
        );
        assert_eq!(
            on_header.request_key(&HeaderMap::new(), None, None),
            (None, None)
        );
        let on_query = policy(json!({"httpQueryParameterName": "u"})).expect("ok");
        assert_eq!(
            on_query.request_key(&headers, Some("a=b&u=7"), None).0,
            Some(hash(b"7"))
        );
        let on_ip = policy(json!({"useSourceIp": true})).expect("ok");
        assert_eq!(
            on_ip.request_key(&headers, None, Some(&downstream())).0,
            Some(hash(b"10.1.0.7"))
        );
        let on_cookie = policy(json!({"httpCookie": {"name": "user", "ttl": "60s"}})).expect("ok");
        assert_eq!(
            on_cookie.request_key(&headers, None, Some(&downstream())),
            (Some(hash(b"abc")), None),
            "a cookie present is used, never replaced"
        );
    }

    #[test]
    fn an_absent_cookie_is_generated_only_with_a_ttl() {
        let with_ttl =
            policy(json!({"httpCookie": {"name": "user", "path": "/shop", "ttl": "1h"}}))
                .expect("ok");
        let (key, set) = with_ttl.request_key(&HeaderMap::new(), None, Some(&downstream()));
        let set = set.expect("generated");
        let text = set.to_str().expect("ascii");
        let value = text
            .strip_prefix("user=\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(value, _)| value)
            .expect("quoted value");
        assert_eq!(value.len(), 16);
        assert!(
            text.ends_with("\"; Max-Age=3600; Path=/shop; HttpOnly"),
            "{text}"
        );
        assert_eq!(
            key,
            Some(hash(value.as_bytes())),
            "the next request hashes the same"
        );
        let mut back = HeaderMap::new();
        back.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("user=\"{value}\"")).expect("valid"),
        );
        assert_eq!(with_ttl.request_key(&back, None, None).0, key);

        let with_attributes = policy(json!({"httpCookie": {"name": "s", "ttl": "10s",
            "attributes": [{"name": "SameSite", "value": "Strict"}, {"name": "Secure"}]}}))
        .expect("ok");
        let (_, set) = with_attributes.request_key(&HeaderMap::new(), None, Some(&downstream()));
        let set = set.expect("generated");
        assert!(
            set.to_str()
                .expect("ascii")
                .ends_with("; Max-Age=10; SameSite=Strict; Secure; HttpOnly"),
            "{set:?}"
        );
        assert_eq!(
            policy(json!({"httpCookie": {"name": "s", "attributes": [{"value": "x"}]}}))
                .expect_err("refused")
                .to_string(),
            "httpCookie.attributes[0].name: required: a token"
        );

        let session = policy(json!({"httpCookie": {"name": "s", "ttl": "0s"}})).expect("ok");
        let (_, set) = session.request_key(&HeaderMap::new(), None, Some(&downstream()));
        let set = set.expect("generated");
        assert!(
            !set.to_str().expect("ascii").contains("Max-Age"),
            "a session cookie"
        );

        let no_ttl = policy(json!({"httpCookie": {"name": "user"}})).expect("ok");
        assert_eq!(
            no_ttl.request_key(&HeaderMap::new(), None, Some(&downstream())),
            (None, None),
            "without a TTL nothing is generated"
        );
    }

    fn addresses(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
            .collect()
    }

    #[test]
    fn keys_spread_over_the_endpoints() {
        let owned = addresses(4);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let ring = Ring::new(&refs, DEFAULT_RING_SIZE);
        let mut counts = [0u32; 4];
        for key in 0..4000u32 {
            let index = ring.walk(hash(&key.to_le_bytes()), |_| true).expect("some");
            counts[index] += 1;
        }
        for count in counts {
            assert!((700..=1300).contains(&count), "{counts:?}");
        }
    }

    proptest! {
        #[test]
        fn same_key_same_endpoint_whatever_the_endpoint_order(
            n in 1usize..12, keys in prop::collection::vec(any::<u64>(), 1..50), rotate in 0usize..12,
        ) {
            let owned = addresses(n);
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            let mut rotated = refs.clone();
            rotated.rotate_left(rotate % n);
            let a = Ring::new(&refs, DEFAULT_RING_SIZE);
            let b = Ring::new(&rotated, DEFAULT_RING_SIZE);
            for key in keys {
                let first = a.walk(key, |_| true).map(|i| refs[i]);
                prop_assert_eq!(first, a.walk(key, |_| true).map(|i| refs[i]));
                prop_assert_eq!(first, b.walk(key, |_| true).map(|i| rotated[i]));
            }
        }

        #[test]
        fn an_unusable_endpoint_remaps_only_its_own_keys(
            n in 2usize..12, out in 0usize..12, keys in prop::collection::vec(any::<u64>(), 1..100),
        ) {
            let out = out % n;
            let owned = addresses(n);
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            let ring = Ring::new(&refs, DEFAULT_RING_SIZE);
            for key in keys {
                let before = ring.walk(key, |_| true).expect("some");
                let after = ring.walk(key, |i| i != out).expect("others remain");
                prop_assert_ne!(after, out);
                if before != out {
                    prop_assert_eq!(before, after, "a key of a usable endpoint moved");
                }
            }
        }
    }
}
