//! Executes a parsed CNI command: the skip decision, the pod lookup, the rules, the reply.

use std::future::Future;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use outrigger_api::capture::CaptureConfig;
use serde_json::Value;

use crate::cni::result::{reencode_result, validate_prev_result};
use crate::cni::version::version_reply;
use crate::cni::{CniError, Command, ErrorCode, Invocation};
use crate::config::PluginConfig;
use crate::pod::capture_config;
use crate::pod::decision::{self, Decision};

/// What the plugin needs from the node; tests replace it.
pub trait Node {
    /// Fetches the pod from the API server (with the configuration's kubeconfig and retry budget).
    fn fetch_pod(
        &self,
        config: &PluginConfig,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Pod, CniError>> + Send;

    /// Installs the capture rules inside the network namespace at `netns`.
    fn install_rules(&self, netns: &Path, config: &CaptureConfig) -> Result<(), CniError>;

    /// STATUS: whether ADD could work now (the kubeconfig is readable).
    fn check_ready(&self, config: &PluginConfig) -> Result<(), CniError>;
}

/// What happened to an ADD, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    Skipped(decision::SkipReason),
    Captured,
}

/// Runs `command`; `Ok(Some(json))` is written to stdout, `Ok(None)` means success with no output.
pub async fn run(command: Command, node: &impl Node) -> Result<Option<Value>, CniError> {
    match command {
        Command::Version(version) => Ok(Some(version_reply(version))),
        Command::Add(invocation) => {
            let (result, outcome) = add(&invocation, node).await?;
            tracing::info!(container_id = %invocation.container_id, ?outcome, "ADD done");
            Ok(Some(result))
        }
        // Rules live in the pod's namespace and disappear with it: nothing of ours to tear down
        // or to check, and our state must never fail a teardown.
        Command::Del(invocation) => {
            for warning in &invocation.warnings {
                tracing::warn!(container_id = %invocation.container_id, %warning, "DEL: ignored");
            }
            tracing::info!(container_id = %invocation.container_id, "DEL: nothing to remove");
            Ok(None)
        }
        // The previous result is checked as ADD checks it before passing it on.
        Command::Check(invocation) => {
            tracing::debug!(container_id = %invocation.container_id, "CHECK");
            if let Some(prev) = &invocation.config.prev_result {
                validate_prev_result(prev)?;
            }
            Ok(None)
        }
        Command::Status(config) => node.check_ready(&config).map(|()| None),
        // We keep no per-attachment state, so there is nothing to collect.
        Command::Gc(_) => Ok(None),
    }
}

/// ADD: pass the previous result through, installing rules when the pod asks for them.
pub async fn add(
    invocation: &Invocation,
    node: &impl Node,
) -> Result<(Value, AddOutcome), CniError> {
    let config = &invocation.config;
    let result = reencode_result(config.prev_result.as_ref(), config.cni_version)?;
    let (namespace, name) = match decision::before_lookup(&invocation.args, config) {
        Decision::Skip(reason) => return Ok((result, AddOutcome::Skipped(reason))),
        Decision::Lookup(namespace, name) => (namespace, name),
    };
    let pod = node.fetch_pod(config, namespace, name).await?;
    if let Some(reason) = decision::skip_reason(&pod) {
        tracing::info!(%namespace, pod = %name, %reason, "passing through");
        return Ok((result, AddOutcome::Skipped(reason)));
    }
    let capture = capture_config(&pod).map_err(|err| {
        CniError::new(
            ErrorCode::InvalidPodSettings,
            format!("pod {namespace}/{name}: {err}"),
        )
    })?;
    let netns = invocation
        .netns
        .as_deref()
        .ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, "CNI_NETNS is not set"))?;
    node.install_rules(netns, &capture)?;
    tracing::info!(%namespace, pod = %name, netns = %netns.display(), "capture rules installed");
    Ok((result, AddOutcome::Captured))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::SkipReason;
    use crate::pod::capture::tests::injected_pod;
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeNode {
        pod: Option<Pod>,
        fetches: Mutex<Vec<(String, String)>>,
        installs: Mutex<Vec<(PathBuf, CaptureConfig)>>,
        install_error: Option<CniError>,
    }

    impl Node for FakeNode {
        async fn fetch_pod(
            &self,
            _: &PluginConfig,
            namespace: &str,
            name: &str,
        ) -> Result<Pod, CniError> {
            self.fetches
                .lock()
                .unwrap()
                .push((namespace.into(), name.into()));
            self.pod
                .clone()
                .ok_or_else(|| CniError::new(ErrorCode::TryAgainLater, "no API server"))
        }
        fn install_rules(&self, netns: &Path, config: &CaptureConfig) -> Result<(), CniError> {
            if let Some(err) = &self.install_error {
                return Err(err.clone());
            }
            self.installs
                .lock()
                .unwrap()
                .push((netns.into(), config.clone()));
            Ok(())
        }
        fn check_ready(&self, _: &PluginConfig) -> Result<(), CniError> {
            Err(CniError::new(ErrorCode::PluginNotAvailable, "not ready"))
        }
    }

    const PREV: &str = r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p"}],"ips":[{"version":"4","interface":0,"address":"10.1.0.7/24"}]}"#;

    fn command(verb: &str, args: &str, conf: &str) -> Command {
        let env: HashMap<&str, String> = HashMap::from([
            ("CNI_COMMAND", verb.to_string()),
            ("CNI_CONTAINERID", "c1".to_string()),
            ("CNI_NETNS", "/var/run/netns/p".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_ARGS", args.to_string()),
        ]);
        Command::parse(|k| env.get(k).cloned(), conf.as_bytes()).unwrap()
    }

    fn conf_with_prev() -> String {
        format!(
            r#"{{"cniVersion":"0.4.0","name":"net","type":"outrigger-cni","exclude_namespaces":["kube-system"],"prevResult":{PREV}}}"#
        )
    }

    const POD_ARGS: &str = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-7d9c5b6f4-x2kqp";

    #[tokio::test]
    async fn add_installs_rules_and_passes_the_result_through() {
        let node = FakeNode {
            pod: Some(injected_pod()),
            ..Default::default()
        };
        let reply = run(command("ADD", POD_ARGS, &conf_with_prev()), &node)
            .await
            .unwrap();
        assert_eq!(reply, Some(serde_json::from_str::<Value>(PREV).unwrap()));
        let installs = node.installs.lock().unwrap();
        assert_eq!(installs.len(), 1);
        assert_eq!(installs[0].0, PathBuf::from("/var/run/netns/p"));
        assert_eq!(installs[0].1, capture_config(&injected_pod()).unwrap());
        assert_eq!(
            *node.fetches.lock().unwrap(),
            vec![("shop".into(), "web-7d9c5b6f4-x2kqp".into())]
        );
    }

    #[tokio::test]
    async fn skips_before_lookup_make_no_api_call() {
        for args in [
            "",
            "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns",
            "K8S_POD_NAMESPACE=outrigger-system;K8S_POD_NAME=outrigger-cni-node-abcde",
        ] {
            let node = FakeNode::default();
            let cmd = command("ADD", args, &conf_with_prev());
            let Command::Add(inv) = cmd else {
                panic!("ADD")
            };
            let (result, outcome) = add(&inv, &node).await.unwrap();
            assert!(matches!(outcome, AddOutcome::Skipped(_)), "{args}");
            assert_eq!(result, serde_json::from_str::<Value>(PREV).unwrap());
            assert!(node.fetches.lock().unwrap().is_empty(), "{args}");
        }
    }

    #[tokio::test]
    async fn skipped_pod_gets_no_rules() {
        let mut pod = injected_pod();
        pod.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove("sidecar.istio.io/status");
        let node = FakeNode {
            pod: Some(pod),
            ..Default::default()
        };
        let Command::Add(inv) = command("ADD", POD_ARGS, &conf_with_prev()) else {
            panic!("ADD")
        };
        let (_, outcome) = add(&inv, &node).await.unwrap();
        assert_eq!(outcome, AddOutcome::Skipped(SkipReason::NotInjected));
        assert!(node.installs.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn invalid_annotation_fails_add_naming_it() {
        let mut pod = injected_pod();
        pod.metadata.annotations.as_mut().unwrap().insert(
            "traffic.sidecar.istio.io/excludeOutboundPorts".into(),
            "http".into(),
        );
        let node = FakeNode {
            pod: Some(pod),
            ..Default::default()
        };
        let err = run(command("ADD", POD_ARGS, &conf_with_prev()), &node)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPodSettings);
        assert!(
            err.msg
                .contains("traffic.sidecar.istio.io/excludeOutboundPorts"),
            "{err}"
        );
        assert!(node.installs.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn api_and_install_errors_propagate_with_their_codes() {
        let node = FakeNode::default();
        let err = run(command("ADD", POD_ARGS, &conf_with_prev()), &node)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TryAgainLater);
        let node = FakeNode {
            pod: Some(injected_pod()),
            install_error: Some(CniError::new(
                ErrorCode::RuleApplication,
                "iptables-restore failed",
            )),
            ..Default::default()
        };
        let err = run(command("ADD", POD_ARGS, &conf_with_prev()), &node)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::RuleApplication);
    }

    #[tokio::test]
    async fn add_without_prev_result_returns_an_empty_result() {
        let node = FakeNode::default();
        let reply = run(
            command("ADD", "", r#"{"cniVersion":"1.0.0","name":"n"}"#),
            &node,
        )
        .await
        .unwrap();
        assert_eq!(
            reply,
            Some(serde_json::json!({"cniVersion": "1.0.0", "dns": {}}))
        );
    }

    #[tokio::test]
    async fn del_check_gc_succeed_without_output_and_touch_nothing() {
        let node = FakeNode::default();
        for verb in ["DEL", "CHECK"] {
            assert_eq!(
                run(command(verb, POD_ARGS, &conf_with_prev()), &node)
                    .await
                    .unwrap(),
                None
            );
        }
        let v11 = r#"{"cniVersion":"1.1.0","name":"n"}"#;
        assert_eq!(run(command("GC", "", v11), &node).await.unwrap(), None);
        assert_eq!(
            run(command("STATUS", "", v11), &node)
                .await
                .unwrap_err()
                .code,
            ErrorCode::PluginNotAvailable
        );
        assert!(node.fetches.lock().unwrap().is_empty());
        assert!(node.installs.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_prev_result_with_an_invalid_ip_is_refused_on_add_and_check_not_del() {
        let bad = r#"{"cniVersion":"1.0.0","name":"net","type":"outrigger-cni","prevResult":{"cniVersion":"1.0.0","ips":[{"interface":0,"address":"10.1.0.300/24"}]}}"#;
        let node = FakeNode {
            pod: Some(injected_pod()),
            ..Default::default()
        };
        for verb in ["ADD", "CHECK"] {
            let err = run(command(verb, POD_ARGS, bad), &node).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidNetworkConfig, "{verb}");
            assert_eq!(
                err.msg,
                r#"prevResult.ips[0].address "10.1.0.300/24" is not an IP address in CIDR notation (10.1.0.7/24, fd00::7/64)"#
            );
        }
        assert_eq!(
            run(command("DEL", POD_ARGS, bad), &node).await.unwrap(),
            None
        );
        assert!(node.installs.lock().unwrap().is_empty());
    }
}
