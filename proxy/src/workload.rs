//! The pod identity the proxy reports with: labels of its metrics, destination of app probes,
//! and what the metadata exchange tells its peers.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Label value for anything the proxy cannot know without a control plane.
pub const UNKNOWN: &str = "unknown";

/// Who this proxy runs for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub pod_name: String,
    /// The pod IP (`INSTANCE_IP`); probes and app scrapes go there, as the kubelet's would.
    pub instance_ip: Option<IpAddr>,
    /// `ISTIO_META_OWNER` (the pod's controller as Istio writes it).
    pub owner: Option<String>,
    /// `ISTIO_META_CLUSTER_ID`.
    pub cluster_id: Option<String>,
    /// `ISTIO_META_MESH_ID`.
    pub mesh_id: Option<String>,
    /// `SERVICE_ACCOUNT`.
    pub service_account: Option<String>,
    /// The pod's labels from the `istio-podinfo` volume (read once at start); empty when the
    /// file is absent, and then the configuration's `proxy.labels` are used.
    pub labels: BTreeMap<String, String>,
}

/// A line of a downward-API file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DownwardApiError {
    pub line: usize,
    pub reason: &'static str,
}

/// Parses a downward-API `metadata.labels` (or `annotations`) file: one `key="value"` per line,
/// the value quoted as Go's `%q` writes it (pilot-agent's `ParseDownwardAPI`: a line without
/// `=` is skipped, a value that does not unquote is an error).
pub fn parse_downward_api(text: &str) -> Result<BTreeMap<String, String>, DownwardApiError> {
    let mut map = BTreeMap::new();
    for (index, line) in text.split('\n').enumerate() {
        let Some((key, quoted)) = line.split_once('=') else {
            continue;
        };
        let value = go_unquote(quoted).map_err(|reason| DownwardApiError {
            line: index + 1,
            reason,
        })?;
        map.insert(key.to_owned(), value);
    }
    Ok(map)
}

/// Go's `strconv.Unquote` for a double-quoted string.
fn go_unquote(quoted: &str) -> Result<String, &'static str> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .ok_or("the value is not a double-quoted string")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err("an unescaped quote inside the value"),
            '\\' => {}
            c => {
                out.push(c);
                continue;
            }
        }
        let escaped = chars.next().ok_or("a trailing backslash")?;
        let simple = match escaped {
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\x0b'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            '\'' => Some('\''),
            _ => None,
        };
        if let Some(simple) = simple {
            out.push(simple);
            continue;
        }
        let (digits, radix) = match escaped {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            _ => return Err("an unknown escape"),
        };
        let mut code = if radix == 8 {
            escaped.to_digit(8).unwrap_or_default()
        } else {
            0
        };
        for _ in 0..digits {
            let digit = chars
                .next()
                .and_then(|d| d.to_digit(radix))
                .ok_or("a short escape")?;
            code = code * radix + digit;
        }
        if escaped == 'x' || radix == 8 {
            // A byte: Go keeps it as is; only ASCII is valid UTF-8 on its own.
            if code > 0x7f {
                return Err("a non-ASCII byte escape");
            }
        }
        out.push(char::from_u32(code).ok_or("an invalid code point")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_api_labels_are_read_as_the_kubelet_writes_them() {
        let text = "app=\"reviews\"\npod-template-hash=\"5c9b8f7d6\"\nsecurity.istio.io/tlsMode=\"istio\"\nservice.istio.io/canonical-name=\"reviews\"\nversion=\"v1\"\nnote=\"a \\\"quoted\\\" tab\\tand \\u00e9\"";
        let labels = parse_downward_api(text).expect("valid");
        assert_eq!(labels["app"], "reviews");
        assert_eq!(labels["security.istio.io/tlsMode"], "istio");
        assert_eq!(labels["version"], "v1");
        assert_eq!(labels["note"], "a \"quoted\" tab\tand é");
        assert_eq!(labels.len(), 6);
        // A value with `=` keeps it; lines without `=` (the empty last one) are skipped.
        let labels = parse_downward_api("k=\"a=b\"\n\n").expect("valid");
        assert_eq!(labels["k"], "a=b");
    }

    #[test]
    fn a_value_that_is_not_quoted_is_an_error_with_its_line() {
        assert_eq!(
            parse_downward_api("app=\"a\"\nversion=v1\n"),
            Err(DownwardApiError {
                line: 2,
                reason: "the value is not a double-quoted string"
            })
        );
        assert!(parse_downward_api("k=\"a\\q\"").is_err());
        assert!(parse_downward_api("k=\"a\\").is_err());
        assert!(parse_downward_api("k=\"a\"b\"").is_err());
    }
}
