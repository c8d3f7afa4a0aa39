//! The result of ADD: the previous plugin's result passed through, re-encoded in the
//! configuration's version (IPs carry `"version"` before 1.0.0 and not after).

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::error::{CniError, ErrorCode};
use super::version::CniVersion;

/// The result of ADD: the previous result unchanged except for its encoding, which follows the
/// configuration's version. Without a previous result, an empty result of that version.
pub fn reencode_result(prev: Option<&Value>, version: CniVersion) -> Result<Value, CniError> {
    let Some(prev) = prev else {
        return Ok(serde_json::json!({ "cniVersion": version.as_str(), "dns": {} }));
    };
    validate_prev_result(prev)?;
    let mut result = prev.as_object().cloned().unwrap_or_default();
    result.insert("cniVersion".into(), Value::String(version.as_str().into()));
    if let Some(Value::Array(ips)) = result.get_mut("ips") {
        for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
            encode_ip(ip, version);
        }
    }
    Ok(Value::Object(result))
}

/// Checks the previous plugin's result before it is passed on (ADD) or compared (CHECK): an
/// object whose `ips` (when present) are objects with an `address` in CIDR notation (as libcni
/// reads it, Go's `net.ParseCIDR`), a `gateway` that is an IP address and a `version` ("4" or
/// "6", pre-1.0.0 results) that matches the address. Errors name the field and the value.
pub fn validate_prev_result(prev: &Value) -> Result<(), CniError> {
    let invalid = |msg: String| CniError::new(ErrorCode::InvalidNetworkConfig, msg);
    let Value::Object(prev) = prev else {
        return Err(invalid("prevResult is not a JSON object".into()));
    };
    let Some(ips) = prev.get("ips") else {
        return Ok(());
    };
    let Value::Array(ips) = ips else {
        return Err(invalid("prevResult.ips is not a list".into()));
    };
    for (index, ip) in ips.iter().enumerate() {
        let Value::Object(ip) = ip else {
            return Err(invalid(format!("prevResult.ips[{index}] is not an object")));
        };
        let address = match ip.get("address") {
            None => {
                return Err(invalid(format!(
                    "prevResult.ips[{index}].address is missing"
                )));
            }
            Some(Value::String(address)) => address,
            Some(other) => {
                return Err(invalid(format!(
                    "prevResult.ips[{index}].address {other} is not a string"
                )));
            }
        };
        let net = address.parse::<IpNet>().map_err(|_| {
            invalid(format!(
                "prevResult.ips[{index}].address {address:?} is not an IP address in CIDR notation (10.1.0.7/24, fd00::7/64)"
            ))
        })?;
        if let Some(gateway) = ip.get("gateway") {
            let valid = gateway
                .as_str()
                .is_some_and(|g| g.parse::<IpAddr>().is_ok());
            if !valid {
                return Err(invalid(format!(
                    "prevResult.ips[{index}].gateway {gateway} is not an IP address"
                )));
            }
        }
        if let Some(family) = ip.get("version") {
            let expected = family_of(net.addr());
            if family.as_str() != Some(expected) {
                return Err(invalid(format!(
                    "prevResult.ips[{index}].version {family} does not match address {address:?} (IPv{expected})"
                )));
            }
        }
    }
    Ok(())
}

fn family_of(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "4",
        IpAddr::V6(_) => "6",
    }
}

/// Adds or removes the per-IP `version` as the configuration's version wants it; the address
/// was validated by [`validate_prev_result`].
fn encode_ip(ip: &mut Map<String, Value>, version: CniVersion) {
    if !version.ips_carry_version() {
        ip.remove("version");
        return;
    }
    if ip.contains_key("version") {
        return;
    }
    let family = ip
        .get("address")
        .and_then(Value::as_str)
        .and_then(|address| address.parse::<IpNet>().ok())
        .map(|net| family_of(net.addr()));
    if let Some(family) = family {
        ip.insert("version".into(), Value::String(family.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result_1_0() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "8e:1b:7c:00:00:01"},
                {"name": "veth1234", "mac": "8e:1b:7c:00:00:02"},
                {"name": "eth0", "mac": "8e:1b:7c:00:00:03", "sandbox": "/var/run/netns/pod"}
            ],
            "ips": [
                {"interface": 2, "address": "10.22.0.5/16", "gateway": "10.22.0.1"},
                {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.96.0.10"]},
            "x-vendor": {"kept": true}
        })
    }
    #[test]
    fn new_versions_pass_the_result_through_without_ip_versions() {
        for version in [CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let out = reencode_result(Some(&bridge_result_1_0()), version).unwrap();
            let mut expected = bridge_result_1_0();
            expected["cniVersion"] = json!(version.as_str());
            assert_eq!(out, expected);
        }
    }
    #[test]
    fn old_versions_get_ip_versions_added_and_new_ones_get_them_removed() {
        let out = reencode_result(Some(&bridge_result_1_0()), CniVersion::V0_3_1).unwrap();
        assert_eq!(out["cniVersion"], "0.3.1");
        assert_eq!(out["ips"][0]["version"], "4");
        assert_eq!(out["ips"][1]["version"], "6");
        assert_eq!(out["x-vendor"], json!({"kept": true}));
        assert_eq!(out["routes"], bridge_result_1_0()["routes"]);

        let back = reencode_result(Some(&out), CniVersion::V1_1_0).unwrap();
        let mut expected = bridge_result_1_0();
        expected["cniVersion"] = json!("1.1.0");
        assert_eq!(back, expected);
    }
    #[test]
    fn existing_ip_version_is_kept_for_old_versions() {
        let prev =
            json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]});
        assert_eq!(
            reencode_result(Some(&prev), CniVersion::V0_4_0).unwrap(),
            prev
        );
    }
    #[test]
    fn missing_prev_result_gives_an_empty_result_of_the_version() {
        for version in CniVersion::ALL {
            let out = reencode_result(None, version).unwrap();
            assert_eq!(out, json!({"cniVersion": version.as_str(), "dns": {}}));
        }
    }
    #[test]
    fn malformed_prev_results_are_invalid_network_config() {
        for prev in [
            json!("text"),
            json!({"ips": "10.0.0.1"}),
            json!({"ips": [5]}),
            json!({"ips": [{"interface": 0}]}),
            json!({"ips": [{"address": "not-an-ip"}]}),
        ] {
            let err = reencode_result(Some(&prev), CniVersion::V0_3_0).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidNetworkConfig, "{prev}");
        }
    }
    #[test]
    fn an_invalid_ip_in_prev_result_is_refused_in_every_version() {
        // Issue 14 #15: a 1.0.0 result was passed on without looking at its addresses.
        let cases = [
            (
                json!({"ips": [{"address": "10.1.0.999/24"}]}),
                r#"prevResult.ips[0].address "10.1.0.999/24" is not an IP address in CIDR notation (10.1.0.7/24, fd00::7/64)"#,
            ),
            (
                json!({"ips": [{"address": "10.1.0.7/24"}, {"address": "10.1.0.8"}]}),
                r#"prevResult.ips[1].address "10.1.0.8" is not an IP address in CIDR notation (10.1.0.7/24, fd00::7/64)"#,
            ),
            (
                json!({"ips": [{"address": 7}]}),
                "prevResult.ips[0].address 7 is not a string",
            ),
            (
                json!({"ips": [{"address": "10.1.0.7/24", "gateway": "10.1.0"}]}),
                r#"prevResult.ips[0].gateway "10.1.0" is not an IP address"#,
            ),
            (
                json!({"ips": [{"version": "6", "address": "10.1.0.7/24"}]}),
                r#"prevResult.ips[0].version "6" does not match address "10.1.0.7/24" (IPv4)"#,
            ),
        ];
        for (prev, message) in cases {
            for version in CniVersion::ALL {
                let err = reencode_result(Some(&prev), version).unwrap_err();
                assert_eq!(err.code, ErrorCode::InvalidNetworkConfig, "{prev}");
                assert_eq!(err.msg, message, "{prev} {version}");
            }
        }
        assert!(validate_prev_result(&bridge_result_1_0()).is_ok());
    }
}
