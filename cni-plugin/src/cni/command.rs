//! Parses a plugin invocation (CNI_* environment + stdin) into a typed command, without exiting.

use std::path::PathBuf;

use super::error::{CniError, ErrorCode};
use super::version::CniVersion;
use crate::config::PluginConfig;
use crate::names;

/// What the runtime asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Add(Invocation),
    Del(Invocation),
    Check(Invocation),
    /// VERSION; the configuration's version when stdin carried a readable one.
    Version(Option<CniVersion>),
    Status(PluginConfig),
    Gc(PluginConfig),
}

/// The container-scoped part of ADD, DEL and CHECK.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub container_id: String,
    /// Required for ADD and CHECK; DEL may come without one (the namespace is already gone).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    pub cni_path: Vec<PathBuf>,
    pub config: PluginConfig,
    /// What was wrong with the invocation but did not stop it (DEL: malformed CNI_ARGS items,
    /// which are skipped); logged when the command runs.
    pub warnings: Vec<String>,
}

/// CNI_ARGS: `KEY=VALUE` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(Vec<(String, String)>);

impl CniArgs {
    /// Strict: an item that is not `KEY=VALUE` is an invalid environment (4), as libcni's
    /// `LoadArgs` refuses it.
    pub fn parse(text: &str) -> Result<Self, CniError> {
        let (args, mut malformed) = Self::parse_lenient(text);
        match malformed.is_empty() {
            true => Ok(args),
            false => Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                malformed.swap_remove(0),
            )),
        }
    }

    /// Lenient (DEL, which must never fail a teardown): the well-formed items, and one message
    /// per item that is not `KEY=VALUE`.
    pub fn parse_lenient(text: &str) -> (Self, Vec<String>) {
        let mut pairs = Vec::new();
        let mut malformed = Vec::new();
        for item in text.split(';').filter(|item| !item.is_empty()) {
            match item.split_once('=') {
                Some((key, value)) => pairs.push((key.to_string(), value.to_string())),
                None => malformed.push(format!("CNI_ARGS item {item:?} is not KEY=VALUE")),
            }
        }
        (Self(pairs), malformed)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pod this sandbox belongs to, when the runtime is kubelet (both keys non-empty).
    pub fn pod(&self) -> Option<(&str, &str)> {
        let namespace = self
            .get(names::CNI_ARG_POD_NAMESPACE)
            .filter(|v| !v.is_empty())?;
        let name = self
            .get(names::CNI_ARG_POD_NAME)
            .filter(|v| !v.is_empty())?;
        Some((namespace, name))
    }
}

impl Command {
    /// Parses the invocation from `env` (a lookup such as `|k| std::env::var(k).ok()`) and stdin.
    pub fn parse(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Self, CniError> {
        let verb = env("CNI_COMMAND").ok_or_else(|| {
            CniError::new(ErrorCode::InvalidEnvironment, "CNI_COMMAND is not set")
        })?;
        match verb.as_str() {
            "VERSION" => Ok(Self::Version(PluginConfig::sniff_version(stdin))),
            "ADD" => Ok(Self::Add(Invocation::parse(&env, stdin, Verb::Add)?)),
            "DEL" => Ok(Self::Del(Invocation::parse(&env, stdin, Verb::Del)?)),
            "CHECK" => {
                let invocation = Invocation::parse(&env, stdin, Verb::Check)?;
                require(
                    invocation.config.cni_version.supports_check(),
                    "CHECK",
                    &invocation.config,
                )?;
                Ok(Self::Check(invocation))
            }
            "STATUS" => {
                let config = PluginConfig::parse(stdin)?;
                require(
                    config.cni_version.supports_status_and_gc(),
                    "STATUS",
                    &config,
                )?;
                Ok(Self::Status(config))
            }
            "GC" => {
                let config = PluginConfig::parse(stdin)?;
                require(config.cni_version.supports_status_and_gc(), "GC", &config)?;
                Ok(Self::Gc(config))
            }
            other => Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
            )),
        }
    }

    /// The configuration's version, for the reply encoding.
    pub fn version(&self) -> Option<CniVersion> {
        match self {
            Self::Add(inv) | Self::Del(inv) | Self::Check(inv) => Some(inv.config.cni_version),
            Self::Version(version) => *version,
            Self::Status(config) | Self::Gc(config) => Some(config.cni_version),
        }
    }
}

fn require(supported: bool, verb: &str, config: &PluginConfig) -> Result<(), CniError> {
    if supported {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "{verb} is not defined for cniVersion {}",
                config.cni_version
            ),
        ))
    }
}

/// Which container-scoped command is parsed: DEL may come without a namespace and must not
/// fail on CNI_ARGS.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Add,
    Del,
    Check,
}

impl Invocation {
    fn parse(
        env: &impl Fn(&str) -> Option<String>,
        stdin: &[u8],
        verb: Verb,
    ) -> Result<Self, CniError> {
        let netns_required = verb != Verb::Del;
        let required = |key: &str| {
            env(key).filter(|v| !v.is_empty()).ok_or_else(|| {
                CniError::new(ErrorCode::InvalidEnvironment, format!("{key} is not set"))
            })
        };
        let container_id = required("CNI_CONTAINERID")?;
        let ifname = required("CNI_IFNAME")?;
        let netns = if netns_required {
            Some(PathBuf::from(required("CNI_NETNS")?))
        } else {
            env("CNI_NETNS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let args_text = env("CNI_ARGS").unwrap_or_default();
        let (args, warnings) = match verb {
            Verb::Del => CniArgs::parse_lenient(&args_text),
            Verb::Add | Verb::Check => (CniArgs::parse(&args_text)?, Vec::new()),
        };
        let cni_path = env("CNI_PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let config = PluginConfig::parse(stdin)?;
        Ok(Self {
            container_id,
            netns,
            ifname,
            args,
            cni_path,
            config,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const CONF: &[u8] = br#"{"cniVersion":"1.1.0","name":"net","type":"outrigger-cni"}"#;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key: &str| map.get(key).cloned()
    }

    fn full_env(verb: &str) -> Vec<(&str, &str)> {
        vec![
            ("CNI_COMMAND", verb),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/pod"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123",
            ),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ]
    }

    #[test]
    fn add_is_parsed_with_every_field() {
        let Command::Add(inv) = Command::parse(env(&full_env("ADD")), CONF).unwrap() else {
            panic!("expected ADD");
        };
        assert_eq!(inv.container_id, "abc123");
        assert_eq!(inv.netns, Some(PathBuf::from("/var/run/netns/pod")));
        assert_eq!(inv.ifname, "eth0");
        assert_eq!(inv.args.pod(), Some(("shop", "web-0")));
        assert_eq!(inv.args.get("IgnoreUnknown"), Some("1"));
        assert_eq!(
            inv.cni_path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(inv.config.cni_version, CniVersion::V1_1_0);
    }

    #[test]
    fn del_and_check_and_the_rest() {
        assert!(matches!(
            Command::parse(env(&full_env("DEL")), CONF).unwrap(),
            Command::Del(_)
        ));
        assert!(matches!(
            Command::parse(env(&full_env("CHECK")), CONF).unwrap(),
            Command::Check(_)
        ));
        assert!(matches!(
            Command::parse(env(&full_env("STATUS")), CONF).unwrap(),
            Command::Status(_)
        ));
        assert!(matches!(
            Command::parse(env(&full_env("GC")), CONF).unwrap(),
            Command::Gc(_)
        ));
        assert_eq!(
            Command::parse(
                env(&[("CNI_COMMAND", "VERSION")]),
                br#"{"cniVersion":"0.4.0"}"#
            )
            .unwrap(),
            Command::Version(Some(CniVersion::V0_4_0))
        );
        assert_eq!(
            Command::parse(env(&[("CNI_COMMAND", "VERSION")]), b"").unwrap(),
            Command::Version(None)
        );
    }

    #[test]
    fn del_without_netns_is_fine_add_without_netns_is_not() {
        let mut pairs = full_env("DEL");
        pairs.retain(|(k, _)| *k != "CNI_NETNS");
        let Command::Del(inv) = Command::parse(env(&pairs), CONF).unwrap() else {
            panic!("expected DEL");
        };
        assert_eq!(inv.netns, None);
        pairs[0].1 = "ADD";
        let err = Command::parse(env(&pairs), CONF).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("CNI_NETNS"), "{err}");
    }

    #[test]
    fn environment_errors_have_code_4() {
        for missing in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME"] {
            let mut pairs = full_env("ADD");
            pairs.retain(|(k, _)| *k != missing);
            let err = Command::parse(env(&pairs), CONF).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{missing}");
            assert!(err.msg.contains(missing), "{err}");
        }
        let mut pairs = full_env("ADD");
        pairs[0].1 = "UPDATE";
        assert_eq!(
            Command::parse(env(&pairs), CONF).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
        let mut pairs = full_env("ADD");
        pairs[4].1 = "K8S_POD_NAME";
        assert_eq!(
            Command::parse(env(&pairs), CONF).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
    }

    #[test]
    fn commands_newer_than_the_config_version_are_incompatible() {
        let old = br#"{"cniVersion":"0.3.1","name":"net","type":"outrigger-cni"}"#;
        let v1 = br#"{"cniVersion":"1.0.0","name":"net","type":"outrigger-cni"}"#;
        assert_eq!(
            Command::parse(env(&full_env("CHECK")), old)
                .unwrap_err()
                .code,
            ErrorCode::IncompatibleVersion
        );
        assert_eq!(
            Command::parse(env(&full_env("STATUS")), v1)
                .unwrap_err()
                .code,
            ErrorCode::IncompatibleVersion
        );
        assert_eq!(
            Command::parse(env(&full_env("GC")), v1).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
        assert!(Command::parse(env(&full_env("ADD")), old).is_ok());
    }

    #[test]
    fn bad_stdin_codes_surface_through_command_parsing() {
        assert_eq!(
            Command::parse(env(&full_env("ADD")), b"nope")
                .unwrap_err()
                .code,
            ErrorCode::DecodeFailure
        );
        assert_eq!(
            Command::parse(env(&full_env("ADD")), br#"{"cniVersion":"9.9.9"}"#)
                .unwrap_err()
                .code,
            ErrorCode::IncompatibleVersion
        );
    }

    #[test]
    fn non_kubernetes_args_have_no_pod() {
        assert_eq!(CniArgs::parse("").unwrap().pod(), None);
        assert_eq!(
            CniArgs::parse("K8S_POD_NAMESPACE=a;K8S_POD_NAME=")
                .unwrap()
                .pod(),
            None
        );
        assert_eq!(
            CniArgs::parse("K8S_POD_NAMESPACE=a;K8S_POD_NAME=b")
                .unwrap()
                .pod(),
            Some(("a", "b"))
        );
    }

    #[test]
    fn del_never_fails_on_malformed_cni_args() {
        // Issue 14 #15: DEL failed the teardown on an item that is not KEY=VALUE.
        let mut pairs = full_env("DEL");
        pairs[4].1 = "K8S_POD_NAMESPACE=shop;garbage;K8S_POD_NAME=web-0;=;also bad";
        let Command::Del(inv) = Command::parse(env(&pairs), CONF).unwrap() else {
            panic!("expected DEL");
        };
        assert_eq!(inv.args.pod(), Some(("shop", "web-0")));
        assert_eq!(
            inv.warnings,
            [
                r#"CNI_ARGS item "garbage" is not KEY=VALUE"#,
                r#"CNI_ARGS item "also bad" is not KEY=VALUE"#
            ]
        );
        for verb in ["ADD", "CHECK"] {
            pairs[0].1 = verb;
            let err = Command::parse(env(&pairs), CONF).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{verb}");
            assert_eq!(err.msg, r#"CNI_ARGS item "garbage" is not KEY=VALUE"#);
        }
    }
}
