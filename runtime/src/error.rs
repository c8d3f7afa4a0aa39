//! An error and its sources on one line, as binaries print them (`outer: middle: root cause`).

/// Joins `error` and each of its sources with `: `. Each layer's message describes only its own
/// layer (no `{0}` next to `#[source]`), so nothing is repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading config.yaml")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("line 3: bad indentation")]
    struct Inner;

    #[test]
    fn joins_every_layer_once() {
        assert_eq!(
            error_chain(&Outer(Inner)),
            "reading config.yaml: line 3: bad indentation"
        );
        assert_eq!(error_chain(&Inner), "line 3: bad indentation");
    }
}
