//! One parser per Istio value type, with one set of rules and one wording of each refusal, used
//! for annotations (webhook, kube-inject, CNI plugin) and flags (outrigger-iptables) alike. The
//! caller frames the reason with the name of what it read (`invalid value 'x' for annotation
//! '...'` or `invalid value "x" for -b/...`); the reason is the same everywhere.

use std::fmt;

use ipnet::IpNet;

/// Why a value was refused: one sentence, naming the offending item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

fn refuse<T>(reason: impl Into<String>) -> Result<T, ValueError> {
    Err(ValueError(reason.into()))
}

/// A list that may be the wildcard `*` ("everything").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    /// `*`.
    All,
    /// These items only; empty means none.
    Only(Vec<T>),
}

/// Splits Istio's comma lists: items trimmed, empty items dropped (Istio's `splitN` + `TrimSpace`).
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// One port number, 1-65535 (Istio: `parsePort` in pkg/kube/inject/validate.go).
pub fn parse_port(item: &str) -> Result<u16, ValueError> {
    match item.trim().parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(u16::try_from(p).expect("checked to be at most 65535")),
        _ => refuse(format!("'{}' is not a port number (1-65535)", item.trim())),
    }
}

/// A comma list of ports; `*` is refused (see [`parse_port_selection`] where it is allowed).
pub fn parse_port_list(value: &str) -> Result<Vec<u16>, ValueError> {
    split_list(value)
        .map(|item| {
            if item == "*" {
                refuse("'*' is not allowed here")
            } else {
                parse_port(item)
            }
        })
        .collect()
}

/// `*` or a port list (Istio: `ValidateIncludeInboundPorts`). `*` must stand alone.
pub fn parse_port_selection(value: &str) -> Result<Selection<u16>, ValueError> {
    if value.trim() == "*" {
        return Ok(Selection::All);
    }
    parse_port_list(value).map(Selection::Only)
}

/// A comma list of CIDRs (`address/prefix-length`). A bare address is refused, as Istio's
/// `validateCIDRList` (pkg/kube/inject/validate.go, `netip.ParsePrefix`) refuses it; `*` too.
pub fn parse_cidr_list(value: &str) -> Result<Vec<IpNet>, ValueError> {
    split_list(value)
        .map(|item| {
            if item == "*" {
                return refuse("'*' is not allowed here");
            }
            item.parse::<IpNet>()
                .map_err(|_| ValueError(format!("'{item}' is not a CIDR (e.g. 10.0.0.0/8)")))
        })
        .collect()
}

/// `*` or a CIDR list (Istio: `ValidateIncludeIPRanges`). `*` must stand alone.
pub fn parse_cidr_selection(value: &str) -> Result<Selection<IpNet>, ValueError> {
    if value.trim() == "*" {
        return Ok(Selection::All);
    }
    parse_cidr_list(value).map(Selection::Only)
}

/// A Linux interface name as the kernel accepts it (`dev_valid_name` in net/core/dev.c: 1-15
/// bytes, not `.` or `..`, no `/`, `:` or whitespace), plus iptables' trailing `+` wildcard.
pub fn check_interface_name(name: &str) -> Result<(), ValueError> {
    if name.is_empty() {
        refuse("an interface name cannot be empty")
    } else if name.len() > 15 {
        refuse(format!(
            "interface name '{name}' is longer than 15 characters"
        ))
    } else if name == "." || name == ".." {
        refuse(format!("'{name}' is not an interface name"))
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        refuse(format!(
            "interface name '{name}' cannot contain '/', ':', whitespace or control characters"
        ))
    } else if name.strip_suffix('+').unwrap_or(name).contains('+') {
        refuse(format!(
            "interface name '{name}': '+' is only allowed as the last character (iptables wildcard)"
        ))
    } else {
        Ok(())
    }
}

/// A comma list of interface names.
pub fn parse_interface_list(value: &str) -> Result<Vec<String>, ValueError> {
    split_list(value)
        .map(|name| check_interface_name(name).map(|()| name.to_owned()))
        .collect()
}

/// Go's `strconv.ParseBool`, which Istio uses for its boolean env variables and flags.
pub fn parse_bool(value: &str) -> Result<bool, ValueError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => refuse("must be true or false (also 1/0, t/f, TRUE/FALSE)"),
    }
}

/// `sidecar.istio.io/inject` as Istio's injector reads it (`injectRequired` in
/// pkg/kube/inject/webhook.go): `y`, `yes`, `true`, `on` in any case mean inject; any other
/// value means do not inject. Empty is "not set" (`None`): the namespace decides.
pub fn parse_inject_switch(value: &str) -> Option<bool> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    Some(matches!(
        value.to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "on"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port_list(" 80 , ,443").unwrap(), vec![80, 443]);
        for bad in ["0", "70000", "http", "-1"] {
            assert_eq!(
                parse_port_list(&format!("80,{bad}")).unwrap_err().0,
                format!("'{bad}' is not a port number (1-65535)")
            );
        }
        assert_eq!(parse_port_selection(" * ").unwrap(), Selection::All);
        assert_eq!(parse_port_selection("").unwrap(), Selection::Only(vec![]));
        assert_eq!(
            parse_port_selection("80,*").unwrap_err().0,
            "'*' is not allowed here"
        );
    }

    #[test]
    fn cidrs_need_a_prefix_length() {
        assert_eq!(parse_cidr_list("10.0.0.0/8, fd00::/8").unwrap().len(), 2);
        for bad in ["fd00::1", "10.0.0.1", "10.0.0.0/33", "x"] {
            assert_eq!(
                parse_cidr_list(bad).unwrap_err().0,
                format!("'{bad}' is not a CIDR (e.g. 10.0.0.0/8)")
            );
        }
        assert_eq!(parse_cidr_selection("*").unwrap(), Selection::All);
        assert!(parse_cidr_list("*").is_err());
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        assert_eq!(
            parse_interface_list("eth0,veth+,net1.100,é").unwrap(),
            vec!["eth0", "veth+", "net1.100", "é"]
        );
        for bad in [
            "eth/0",
            "a:b",
            "this-name-is-too-long",
            "..",
            "e+th",
            "a\tb",
        ] {
            assert!(check_interface_name(bad).is_err(), "{bad}");
        }
        assert_eq!(split_list(" , ").count(), 0);
    }

    #[test]
    fn booleans_as_go_and_the_inject_switch_as_istio() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("yes").is_err());
        for yes in ["y", "YES", "True", "on", "On"] {
            assert_eq!(parse_inject_switch(yes), Some(true), "{yes}");
        }
        for no in ["false", "no", "off", "enabled", "1"] {
            assert_eq!(parse_inject_switch(no), Some(false), "{no}");
        }
        assert_eq!(parse_inject_switch(""), None);
    }
}
