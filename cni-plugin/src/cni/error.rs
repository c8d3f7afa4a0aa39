//! The spec's error reply: a numeric code, a message and details, serialised as the CNI error JSON.

use serde::Serialize;

use super::version::{CniVersion, UnsupportedVersion, supported_list};

/// Error codes: 1–99 are the spec's, 100 and above are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the configuration's cniVersion is not one we speak (or too old for the command).
    IncompatibleVersion,
    /// 4: a required CNI_* environment variable is missing or malformed.
    InvalidEnvironment,
    /// 5: reading stdin or a file failed.
    Io,
    /// 6: stdin is not valid JSON.
    DecodeFailure,
    /// 7: the network configuration is JSON but not a valid configuration for us.
    InvalidNetworkConfig,
    /// 11: a transient failure (the API server did not answer in time); the runtime may retry.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot serve ADD right now.
    PluginNotAvailable,
    /// 100: the Kubernetes API refused the request (not transient).
    KubernetesApi,
    /// 101: a pod annotation or proxy setting is invalid.
    InvalidPodSettings,
    /// 102: entering the pod's network namespace failed.
    NetworkNamespace,
    /// 103: installing the capture rules failed.
    RuleApplication,
}

impl ErrorCode {
    pub fn as_u32(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::InvalidEnvironment => 4,
            Self::Io => 5,
            Self::DecodeFailure => 6,
            Self::InvalidNetworkConfig => 7,
            Self::TryAgainLater => 11,
            Self::PluginNotAvailable => 50,
            Self::KubernetesApi => 100,
            Self::InvalidPodSettings => 101,
            Self::NetworkNamespace => 102,
            Self::RuleApplication => 103,
        }
    }
}

/// A failed command, ready to be written to stdout by `main`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {}: {msg}{}", code.as_u32(), details_suffix(details))]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Builds an error whose details are the full chain of `err`'s sources.
    pub fn from_error(
        code: ErrorCode,
        msg: impl Into<String>,
        err: &dyn std::error::Error,
    ) -> Self {
        Self::new(code, msg).with_details(outrigger_runtime::error_chain(err))
    }

    /// The error JSON the spec asks for, in the configuration's version (the newest we speak
    /// when the configuration could not be read).
    pub fn to_json(&self, version: Option<CniVersion>) -> String {
        let reply = ErrorReply {
            cni_version: version.unwrap_or(CniVersion::LATEST).as_str(),
            code: self.code.as_u32(),
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&reply).unwrap_or_else(|_| {
            format!(
                r#"{{"code":{},"msg":"error reply could not be encoded"}}"#,
                self.code.as_u32()
            )
        })
    }
}

impl From<UnsupportedVersion> for CniError {
    fn from(err: UnsupportedVersion) -> Self {
        Self::new(ErrorCode::IncompatibleVersion, err.to_string())
            .with_details(format!("supported versions: {}", supported_list()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        let table = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::Io, 5),
            (ErrorCode::DecodeFailure, 6),
            (ErrorCode::InvalidNetworkConfig, 7),
            (ErrorCode::TryAgainLater, 11),
            (ErrorCode::PluginNotAvailable, 50),
        ];
        for (code, number) in table {
            assert_eq!(code.as_u32(), number, "{code:?}");
        }
        for own in [
            ErrorCode::KubernetesApi,
            ErrorCode::InvalidPodSettings,
            ErrorCode::NetworkNamespace,
            ErrorCode::RuleApplication,
        ] {
            assert!(own.as_u32() >= 100, "{own:?} must be in our own range");
        }
    }

    #[test]
    fn error_json_has_code_msg_and_details() {
        let err =
            CniError::new(ErrorCode::InvalidNetworkConfig, "bad config").with_details("line 1");
        let json: serde_json::Value =
            serde_json::from_str(&err.to_json(Some(CniVersion::V0_4_0))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cniVersion": "0.4.0", "code": 7, "msg": "bad config", "details": "line 1"})
        );
        let bare: serde_json::Value =
            serde_json::from_str(&CniError::new(ErrorCode::TryAgainLater, "later").to_json(None))
                .unwrap();
        assert_eq!(
            bare,
            serde_json::json!({"cniVersion": "1.1.0", "code": 11, "msg": "later"})
        );
    }

    #[test]
    fn display_names_code_and_details() {
        let err = CniError::new(ErrorCode::Io, "read failed").with_details("disk");
        assert_eq!(err.to_string(), "CNI error 5: read failed (disk)");
    }
}
