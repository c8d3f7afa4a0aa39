//! The CNI versions we speak, what each allows, and the VERSION reply. A leaf: the error reply
//! ([`super::error`]) and the result re-encoding ([`super::result`]) build on it.

use std::fmt;

use serde_json::Value;

/// A `cniVersion` we do not speak; becomes error code 1 (`From` for [`super::CniError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cniVersion {given:?} is not supported")]
pub struct UnsupportedVersion {
    pub given: String,
}

/// A configuration version this plugin accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub const LATEST: Self = Self::V1_1_0;
    pub const ALL: [Self; 5] = [
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    pub fn parse(text: &str) -> Result<Self, UnsupportedVersion> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| UnsupportedVersion {
                given: text.to_owned(),
            })
    }

    /// CHECK exists since 0.4.0.
    pub fn supports_check(self) -> bool {
        self >= Self::V0_4_0
    }

    /// STATUS and GC exist since 1.1.0.
    pub fn supports_status_and_gc(self) -> bool {
        self >= Self::V1_1_0
    }

    /// Results before 1.0.0 carry a `"version": "4"|"6"` on each IP.
    pub(crate) fn ips_carry_version(self) -> bool {
        self < Self::V1_0_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// "0.3.0, 0.3.1, ...", for error details.
pub fn supported_list() -> String {
    CniVersion::ALL
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The VERSION reply.
pub fn version_reply(config_version: Option<CniVersion>) -> Value {
    serde_json::json!({
        "cniVersion": config_version.unwrap_or(CniVersion::LATEST).as_str(),
        "supportedVersions": CniVersion::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_supported_version_and_rejects_others() {
        for version in CniVersion::ALL {
            assert_eq!(CniVersion::parse(version.as_str()).unwrap(), version);
        }
        for bad in ["0.1.0", "0.2.0", "2.0.0", "", "1.1"] {
            let err = CniVersion::parse(bad).unwrap_err();
            assert_eq!(err.given, bad);
            assert_eq!(
                crate::cni::CniError::from(err).code,
                crate::cni::ErrorCode::IncompatibleVersion
            );
        }
    }
    #[test]
    fn command_support_by_version() {
        assert!(!CniVersion::V0_3_1.supports_check());
        assert!(CniVersion::V0_4_0.supports_check());
        assert!(!CniVersion::V1_0_0.supports_status_and_gc());
        assert!(CniVersion::V1_1_0.supports_status_and_gc());
    }
    #[test]
    fn version_reply_lists_everything() {
        assert_eq!(
            version_reply(Some(CniVersion::V0_4_0)),
            json!({"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }
}
