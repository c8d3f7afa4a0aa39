//! Keeps the `caBundle` of every webhook in one MutatingWebhookConfiguration holding the serving
//! CA and every other CA a live replica serves with (self-managed certificates): patched at
//! start, when the CA changes, whenever someone else changes the object (watch), and every
//! third of the liveness period (each replica's note that it still serves with its CA).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Field manager name on our patches.
pub const FIELD_MANAGER: &str = "outrigger-injector";
/// Wait before retrying after a failed patch or a broken watch.
const RETRY: Duration = Duration::from_secs(5);
/// A CA stays in the caBundle while some replica serving with it said so this recently.
pub const DEFAULT_LIVE_FOR: Duration = Duration::from_secs(180);
/// Prefix of the annotations (on the MutatingWebhookConfiguration) in which each replica
/// records, per CA, when it last served with it: `<prefix><fingerprint>: <unix seconds>`.
pub const SEEN_ANNOTATION_PREFIX: &str = "outrigger.io/ca-seen.";

/// A short, stable name of one CA certificate (the same in every replica).
pub fn fingerprint(pem: &str) -> String {
    use std::hash::Hasher as _;
    let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    hasher.write(pem.trim().as_bytes());
    format!("{:016x}", hasher.finish())
}

/// The PEM certificates of a bundle, each trimmed.
fn certificates(bundle: &[u8]) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(bundle);
    text.split_inclusive(END)
        .map(str::trim)
        .filter(|c| c.starts_with("-----BEGIN CERTIFICATE-----") && c.ends_with(END))
        .map(str::to_owned)
        .collect()
}

/// The strategic-merge patch that makes every webhook's caBundle hold exactly the live CAs and
/// records that this replica serves with `ca_pem`, or `None` when nothing needs changing.
///
/// Live: our CA, and every CA whose `outrigger.io/ca-seen.<fingerprint>` annotation is less than
/// `live_for` old (another replica serves with it; a rollout that changes the CA runs both for a
/// while). The bundle lists them sorted by fingerprint, so every replica computes the same text
/// and they never undo each other's patches. Annotations older than `live_for` are removed, and
/// with them their CA. Webhooks merge by `name`, so nothing else is touched.
pub fn needed_patch(
    config: &MutatingWebhookConfiguration,
    ca_pem: &[u8],
    now: u64,
    live_for: Duration,
) -> Option<Value> {
    let own = certificates(ca_pem);
    let own_prints: Vec<String> = own.iter().map(|c| fingerprint(c)).collect();
    let annotations = config.metadata.annotations.clone().unwrap_or_default();
    let seen = |print: &str| {
        annotations
            .get(&format!("{SEEN_ANNOTATION_PREFIX}{print}"))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let fresh =
        |print: &str| seen(print).is_some_and(|at| now.saturating_sub(at) < live_for.as_secs());
    let mut live = BTreeMap::new();
    for cert in &own {
        live.insert(fingerprint(cert), cert.clone());
    }
    for webhook in config.webhooks.iter().flatten() {
        let bundle = webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice());
        for cert in certificates(bundle.unwrap_or_default()) {
            let print = fingerprint(&cert);
            if fresh(&print) {
                live.entry(print).or_insert(cert);
            }
        }
    }
    let desired: String = live.values().map(|c| format!("{c}\n")).collect();
    let stale: Vec<Value> = config
        .webhooks
        .iter()
        .flatten()
        .filter(|w| {
            w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(desired.as_bytes())
        })
        .map(|w| {
            json!({
                "name": w.name,
                "clientConfig": {"caBundle": k8s_openapi::ByteString(desired.clone().into_bytes())}
            })
        })
        .collect();
    let mut notes = serde_json::Map::new();
    for print in &own_prints {
        let due = seen(print).is_none_or(|at| now.saturating_sub(at) >= live_for.as_secs() / 3);
        if due {
            notes.insert(
                format!("{SEEN_ANNOTATION_PREFIX}{print}"),
                json!(now.to_string()),
            );
        }
    }
    for key in annotations.keys() {
        if let Some(print) = key.strip_prefix(SEEN_ANNOTATION_PREFIX)
            && !own_prints.iter().any(|p| p == print)
            && !fresh(print)
        {
            notes.insert(key.clone(), Value::Null);
        }
    }
    if stale.is_empty() && notes.is_empty() {
        return None;
    }
    let mut patch = json!({});
    if !notes.is_empty() {
        patch["metadata"] = json!({ "annotations": notes });
    }
    if !stale.is_empty() {
        patch["webhooks"] = Value::Array(stale);
    }
    Some(patch)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Watches one MutatingWebhookConfiguration and keeps its caBundles equal to the CA in `ca`.
#[derive(Debug)]
pub struct CaBundleKeeper {
    api: Api<MutatingWebhookConfiguration>,
    name: String,
    ca: watch::Receiver<Vec<u8>>,
    live_for: Duration,
}

impl CaBundleKeeper {
    pub fn new(
        client: kube::Client,
        name: impl Into<String>,
        ca: watch::Receiver<Vec<u8>>,
    ) -> Self {
        CaBundleKeeper {
            api: Api::all(client),
            name: name.into(),
            ca,
            live_for: DEFAULT_LIVE_FOR,
        }
    }

    /// How long a CA stays in the bundle after its last replica stopped saying it serves with
    /// it (each replica says so every third of this).
    pub fn with_live_for(mut self, live_for: Duration) -> Self {
        self.live_for = live_for;
        self
    }

    /// Patch `config` if needed; returns whether a patch was sent.
    async fn ensure(&self, config: &MutatingWebhookConfiguration) -> Result<bool, kube::Error> {
        let ca = self.ca.borrow().clone();
        let Some(patch) = needed_patch(config, &ca, unix_now(), self.live_for) else {
            return Ok(false);
        };
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.api
            .patch(&self.name, &params, &Patch::Strategic(patch))
            .await?;
        Ok(true)
    }

    async fn ensure_logged(&self, config: &MutatingWebhookConfiguration) -> bool {
        match self.ensure(config).await {
            Ok(true) => {
                tracing::info!(webhook_config = %self.name, "caBundle updated");
                true
            }
            Ok(false) => true,
            Err(error) => {
                tracing::warn!(webhook_config = %self.name, %error, "cannot update caBundle; retrying");
                false
            }
        }
    }

    /// Run until the task is dropped.
    pub async fn run(mut self) {
        let selector = format!("metadata.name={}", self.name);
        let stream = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&selector),
        )
        .default_backoff()
        .applied_objects();
        let mut stream = std::pin::pin!(stream);
        let mut retry_at: Option<tokio::time::Instant> = None;
        // Re-check a third of the liveness period: our own note must stay fresh, and CAs whose
        // replicas are gone must leave the bundle even when nothing else changes.
        let mut heartbeat = tokio::time::interval((self.live_for / 3).max(Duration::from_secs(1)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(config)) => {
                        retry_at = (!self.ensure_logged(&config).await)
                            .then(|| tokio::time::Instant::now() + RETRY);
                    }
                    Some(Err(error)) => {
                        tracing::warn!(webhook_config = %self.name, %error, "watch failed; it restarts");
                    }
                    None => return,
                },
                _ = heartbeat.tick() => {
                    if retry_at.is_none() {
                        retry_at = Some(tokio::time::Instant::now());
                    }
                }
                changed = self.ca.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tracing::info!(webhook_config = %self.name, "serving CA changed");
                    retry_at = Some(tokio::time::Instant::now());
                }
                () = retry => {
                    retry_at = match self.api.get_opt(&self.name).await {
                        Ok(Some(config)) => (!self.ensure_logged(&config).await)
                            .then(|| tokio::time::Instant::now() + RETRY),
                        Ok(None) => {
                            tracing::warn!(webhook_config = %self.name, "MutatingWebhookConfiguration not found; waiting for it");
                            None
                        }
                        Err(error) => {
                            tracing::warn!(webhook_config = %self.name, %error, "cannot read the MutatingWebhookConfiguration");
                            Some(tokio::time::Instant::now() + RETRY)
                        }
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bundles: &[Option<&[u8]>]) -> MutatingWebhookConfiguration {
        serde_json::from_value(json!({
            "metadata": {"name": "outrigger-injector"},
            "webhooks": bundles.iter().enumerate().map(|(i, b)| {
                let mut client = json!({"service": {"name": "s", "namespace": "n"}});
                if let Some(b) = b {
                    client["caBundle"] = serde_json::to_value(k8s_openapi::ByteString(b.to_vec())).unwrap();
                }
                json!({"name": format!("w{i}.example.com"), "clientConfig": client,
                       "sideEffects": "None", "admissionReviewVersions": ["v1"]})
            }).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    const LIVE: Duration = Duration::from_secs(180);
    const A: &[u8] = b"-----BEGIN CERTIFICATE-----\nCA-A\n-----END CERTIFICATE-----\n";
    const B: &[u8] = b"-----BEGIN CERTIFICATE-----\nCA-B\n-----END CERTIFICATE-----\n";

    fn seen(config: &mut MutatingWebhookConfiguration, ca: &[u8], at: u64) {
        let print = fingerprint(std::str::from_utf8(ca).unwrap());
        config
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(format!("{SEEN_ANNOTATION_PREFIX}{print}"), at.to_string());
    }

    fn apply(config: &mut MutatingWebhookConfiguration, patch: &Value) {
        let mut value = serde_json::to_value(&*config).unwrap();
        for (k, v) in patch["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if v.is_null() {
                value["metadata"]["annotations"]
                    .as_object_mut()
                    .map(|a| a.remove(k));
            } else {
                value["metadata"]["annotations"][k] = v.clone();
            }
        }
        for change in patch["webhooks"].as_array().into_iter().flatten() {
            for w in value["webhooks"].as_array_mut().unwrap() {
                if w["name"] == change["name"] {
                    w["clientConfig"]["caBundle"] = change["clientConfig"]["caBundle"].clone();
                }
            }
        }
        *config = serde_json::from_value(value).unwrap();
    }

    fn bundle_of(config: &MutatingWebhookConfiguration, i: usize) -> Vec<u8> {
        config.webhooks.as_ref().unwrap()[i]
            .client_config
            .ca_bundle
            .clone()
            .unwrap()
            .0
    }

    #[test]
    fn patches_only_stale_webhooks_by_name_and_notes_our_ca() {
        let patch = needed_patch(&config(&[Some(A), None, Some(b"old")]), A, 1000, LIVE).unwrap();
        let names: Vec<&str> = patch["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["w1.example.com", "w2.example.com"]);
        let encoded = patch["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap();
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
            A
        );
        let print = fingerprint(std::str::from_utf8(A).unwrap());
        assert_eq!(
            patch["metadata"]["annotations"][format!("{SEEN_ANNOTATION_PREFIX}{print}")],
            "1000"
        );
        let mut settled = config(&[Some(A), Some(A)]);
        seen(&mut settled, A, 1000);
        assert_eq!(needed_patch(&settled, A, 1010, LIVE), None);
        // Our note is refreshed a third of the liveness period later.
        assert!(needed_patch(&settled, A, 1060, LIVE).is_some());
    }

    #[test]
    fn two_replicas_with_different_cas_converge_on_both_and_a_gone_one_is_dropped() {
        let mut mwc = config(&[None, None]);
        // Replica A, then replica B (a rollout that changed the CA), each patching what it sees.
        for _ in 0..3 {
            for ca in [A, B] {
                if let Some(patch) = needed_patch(&mwc, ca, 1000, LIVE) {
                    apply(&mut mwc, &patch);
                }
            }
        }
        let both = bundle_of(&mwc, 0);
        assert_eq!(
            certificates(&both).len(),
            2,
            "{}",
            String::from_utf8_lossy(&both)
        );
        assert_eq!(bundle_of(&mwc, 1), both);
        assert_eq!(needed_patch(&mwc, A, 1001, LIVE), None, "A is content");
        assert_eq!(
            needed_patch(&mwc, B, 1001, LIVE),
            None,
            "B is content: no fight"
        );
        // A is gone (no refresh); once its note is older than LIVE, B drops A's CA and note.
        assert_eq!(
            needed_patch(&mwc, B, 1100, LIVE).map(|p| p.get("webhooks").is_some()),
            Some(false)
        );
        let mut later = mwc.clone();
        seen(&mut later, B, 1170);
        let patch = needed_patch(&later, B, 1000 + 180, LIVE).unwrap();
        apply(&mut later, &patch);
        assert_eq!(bundle_of(&later, 0), B);
        let a_note = format!(
            "{SEEN_ANNOTATION_PREFIX}{}",
            fingerprint(std::str::from_utf8(A).unwrap())
        );
        assert!(!later.metadata.annotations.unwrap().contains_key(&a_note));
    }
}
