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
    let Value::Object(prev) = prev else {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "prevResult is not a JSON object",
        ));
    };
    let mut result = prev.clone();
    result.insert("cniVersion".into(), Value::String(version.as_str().into()));
    if let Some(ips) = result.get_mut("ips") {
        let Value::Array(ips) = ips else {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "prevResult.ips is not a list",
            ));
        };
        for (index, ip) in ips.iter_mut().enumerate() {
            let Value::Object(ip) = ip else {
                return Err(CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!("prevResult.ips[{index}] is not an object"),
                ));
            };
            encode_ip(ip, index, version)?;
        }
    }
    Ok(Value::Object(result))
}

fn encode_ip(
    ip: &mut Map<String, Value>,
    index: usize,
    version: CniVersion,
) -> Result<(), CniError> {
    if !version.ips_carry_version() {
        ip.remove("version");
        return Ok(());
    }
    if ip.contains_key("version") {
        return Ok(());
    }
    let address = ip.get("address").and_then(Value::as_str).ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("prevResult.ips[{index}].address is missing"),
        )
    })?;
    let family = match address
        .parse::<IpNet>()
        .map(|net| net.addr())
        .or_else(|_| address.parse::<IpAddr>())
    {
        Ok(IpAddr::V4(_)) => "4",
        Ok(IpAddr::V6(_)) => "6",
        Err(_) => {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("prevResult.ips[{index}].address {address:?} is not an IP address"),
            ));
        }
    };
    ip.insert("version".into(), Value::String(family.into()));
    Ok(())
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
}
