//! Istio's webhook path parameters: `/inject/cluster/c1/net/n1/foo/bar` becomes proxy env.
//!
//! `cluster` → `ISTIO_META_CLUSTER_ID`, `net` → `ISTIO_META_NETWORK`, any other key upper-cased;
//! `--slash--` in a value decodes to `/`. A trailing key without a value is ignored (as Istio does).

/// Proxy env for the `cluster` path key.
pub const ENV_CLUSTER_ID: &str = "ISTIO_META_CLUSTER_ID";
/// Proxy env for the `net` path key.
pub const ENV_NETWORK: &str = "ISTIO_META_NETWORK";
/// Escaped form of `/` inside a path value.
const SLASH_ESCAPE: &str = "--slash--";

/// Parsed path parameters; `ignored_key` is a dangling key without value, for logging.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PathEnv {
    pub env: Vec<(String, String)>,
    pub ignored_key: Option<String>,
}

/// Parse the part of the path after `/inject/` (e.g. `cluster/c1/net/n1`).
pub fn parse(rest: &str) -> PathEnv {
    let segments: Vec<&str> = rest
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut out = PathEnv::default();
    for pair in segments.chunks(2) {
        match pair {
            [key, value] => {
                let name = match *key {
                    "cluster" => ENV_CLUSTER_ID.to_owned(),
                    "net" => ENV_NETWORK.to_owned(),
                    other => other.to_uppercase(),
                };
                let value = value.replace(SLASH_ESCAPE, "/");
                match out.env.iter_mut().find(|(k, _)| *k == name) {
                    Some(slot) => slot.1 = value,
                    None => out.env.push((name, value)),
                }
            }
            [key] => out.ignored_key = Some((*key).to_owned()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn maps_known_keys_and_uppercases_others() {
        let p = parse("cluster/c1/net/n1/my_var/a--slash--b/");
        assert_eq!(
            p.env,
            env(&[
                (ENV_CLUSTER_ID, "c1"),
                (ENV_NETWORK, "n1"),
                ("MY_VAR", "a/b")
            ])
        );
        assert_eq!(p.ignored_key, None);
    }

    #[test]
    fn empty_and_dangling() {
        assert_eq!(parse(""), PathEnv::default());
        let p = parse("cluster/c1/net");
        assert_eq!(p.env, env(&[(ENV_CLUSTER_ID, "c1")]));
        assert_eq!(p.ignored_key.as_deref(), Some("net"));
    }

    #[test]
    fn later_value_wins() {
        assert_eq!(parse("net/a/net/b").env, env(&[(ENV_NETWORK, "b")]));
    }
}
