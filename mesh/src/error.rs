//! Typed errors of the library: reading inputs, and choosing the proxy to resolve for.

/// A document that cannot be read. Names the file, the document, the resource and the field.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name} document {document}: not valid YAML: {message}")]
    Yaml {
        source_name: String,
        document: usize,
        message: String,
    },
    #[error("{source_name} document {document} ({resource}): {field}: {message}")]
    Field {
        source_name: String,
        document: usize,
        resource: String,
        field: String,
        message: String,
    },
    #[error("{source_name} document {document}: {resource} is defined twice (first in {first})")]
    Duplicate {
        source_name: String,
        document: usize,
        resource: String,
        first: String,
    },
}

/// The proxy asked for is not in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("expected NAMESPACE/POD, got {0:?}")]
    BadName(String),
    #[error("no Pod {0} in the inputs")]
    NoSuchPod(String),
}

/// The error and every cause below it, joined with `: ` (what binaries print).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}
