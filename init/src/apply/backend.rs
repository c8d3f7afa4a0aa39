//! Which iptables binaries to run: legacy, nft, or the plain `iptables` alternative.

use crate::rule::Family;
use outrigger_api::capture::ConfigError;
use outrigger_api::iptables::flag;

/// Legacy (x_tables) IPv4 tables in use in the current network namespace.
const LEGACY_TABLES: &str = "/proc/thread-self/net/ip_tables_names";

/// `--force-iptables-binary`: pick the backend, or detect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    #[default]
    Auto,
    Legacy,
    Nft,
}

impl BackendChoice {
    /// Parses `legacy`, `nft`, or an empty string (detect).
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value.trim() {
            "" => Ok(Self::Auto),
            "legacy" => Ok(Self::Legacy),
            "nft" => Ok(Self::Nft),
            _ => Err(ConfigError::new(
                flag::FORCE_IPTABLES_BINARY,
                value,
                "must be legacy or nft",
            )),
        }
    }
}

/// The iptables variant the rules are written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-legacy*` (x_tables; needs `--wait` for the xtables lock).
    Legacy,
    /// `iptables-nft*` (nf_tables).
    Nft,
    /// `iptables*` as installed (whatever the alternatives system points to).
    Default,
}

/// The tools of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Iptables,
    Save,
    Restore,
}

impl Backend {
    /// Resolves the choice: forced, or legacy when `iptables-legacy` exists and already holds
    /// rules, else nft when installed, else the default `iptables`.
    pub fn detect(choice: BackendChoice) -> Backend {
        match choice {
            BackendChoice::Legacy => Backend::Legacy,
            BackendChoice::Nft => Backend::Nft,
            BackendChoice::Auto => {
                if on_path("iptables-legacy-save") && legacy_has_rules() {
                    Backend::Legacy
                } else if on_path("iptables-nft-restore") {
                    Backend::Nft
                } else {
                    Backend::Default
                }
            }
        }
    }

    /// The program name of `tool` for `family`, e.g. `ip6tables-nft-restore`.
    pub fn program(self, family: Family, tool: Tool) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let variant = match self {
            Backend::Legacy => "-legacy",
            Backend::Nft => "-nft",
            Backend::Default => "",
        };
        let suffix = match tool {
            Tool::Iptables => "",
            Tool::Save => "-save",
            Tool::Restore => "-restore",
        };
        format!("{base}{variant}{suffix}")
    }

    /// Extra arguments for commands that change rules (legacy waits for the xtables lock).
    pub fn lock_args(self) -> &'static [&'static str] {
        match self {
            Backend::Legacy => &["--wait"],
            Backend::Nft | Backend::Default => &[],
        }
    }
}

fn on_path(program: &str) -> bool {
    super::exec::find_program(program).is_some()
}

/// Whether legacy iptables holds rules in this network namespace. The kernel lists the legacy
/// tables instantiated here in /proc/thread-self/net/ip_tables_names (the calling thread's
/// namespace); when there are none (the common case) no process has to run.
fn legacy_has_rules() -> bool {
    match std::fs::read_to_string(LEGACY_TABLES) {
        Ok(names) if names.trim().is_empty() => return false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        _ => {}
    }
    super::exec::command("iptables-legacy-save")
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.starts_with("-A "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names() {
        assert_eq!(
            Backend::Nft.program(Family::V6, Tool::Restore),
            "ip6tables-nft-restore"
        );
        assert_eq!(
            Backend::Legacy.program(Family::V4, Tool::Save),
            "iptables-legacy-save"
        );
        assert_eq!(
            Backend::Default.program(Family::V4, Tool::Iptables),
            "iptables"
        );
        assert_eq!(Backend::Legacy.lock_args(), ["--wait"]);
        assert!(Backend::Nft.lock_args().is_empty());
    }

    #[test]
    fn forced_choice_wins() {
        assert_eq!(Backend::detect(BackendChoice::Legacy), Backend::Legacy);
        assert_eq!(Backend::detect(BackendChoice::Nft), Backend::Nft);
        assert_eq!(BackendChoice::parse("nft").unwrap(), BackendChoice::Nft);
        let err = BackendChoice::parse("xtables").unwrap_err();
        assert_eq!(err.flag, flag::FORCE_IPTABLES_BINARY);
    }
}
