//! The request pool: AdmissionReviews as kube-apiserver sends them for new replicas of one
//! Deployment, generated before the timed loop, and the cheap check of each injector answer.
//!
//! Every replica differs from the fixture in two places: a fresh `request.uid` (a UUID), and the
//! service account token volume `kube-api-access-<5 chars>`, which the ServiceAccount admission
//! plugin names randomly per pod before any webhook runs (in `spec.volumes` and in every
//! container's `volumeMounts`).

use anyhow::{Context as _, bail};
use hyper::body::Bytes;
use serde_json::Value;

/// Prefix of the service account token volume's name.
const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// Alphabet of the API server's random name suffixes (`k8s.io/apimachinery/pkg/util/rand`:
/// no vowels, no confusable characters).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of that suffix for the token volume.
const SUFFIX_LEN: usize = 5;

/// One request body and what its answer must contain.
#[derive(Debug, Clone)]
pub struct Review {
    pub body: Bytes,
    pub uid: String,
    /// `"uid":"<uid>"`, as the injector writes it in `response`.
    uid_field: Vec<u8>,
}

impl Review {
    /// Whether `response` is an injection of this review: allowed, with a JSONPatch, for this
    /// uid. Substring checks on the compact JSON the injector writes; each match sits in the
    /// first hundred bytes, before the base64 patch (which holds no quotes).
    pub fn check(&self, response: &[u8]) -> Result<(), Mismatch> {
        if !contains(response, &self.uid_field) {
            return Err(Mismatch::Uid);
        }
        if !contains(response, br#""allowed":true"#) {
            return Err(Mismatch::NotAllowed);
        }
        if !contains(response, br#""patchType":"JSONPatch""#) {
            return Err(Mismatch::NoPatch);
        }
        Ok(())
    }
}

/// Why an answer does not fit its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Uid,
    NotAllowed,
    NoPatch,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the pods of a pool have in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pods {
    /// Replicas of one Deployment: they differ only in uid and token volume name.
    Replicas,
    /// Every pod also has its own `pod-template-hash` label (as if each came from another
    /// Deployment revision): nothing an earlier answer could be reused for.
    Distinct,
    /// Distinct pods of 3-5 MiB each (a [`BALLAST_ANNOTATION`] of that size), as one tenant
    /// could send to fill the injector's memory; the review stays under the injector's 6 MiB
    /// body limit.
    Large,
}

/// The annotation that makes a [`Pods::Large`] pod large.
pub const BALLAST_ANNOTATION: &str = "bench.outrigger.io/ballast";
/// Smallest and largest pod text of a [`Pods::Large`] pool.
pub const LARGE_POD_BYTES: std::ops::Range<usize> = 3 << 20..5 << 20;

/// `count` replicas of `template` (an AdmissionReview of a pod CREATE), each with its own uid
/// and token volume suffix. `seed` makes the pool reproducible.
pub fn pool(template: &str, count: usize, seed: u64) -> anyhow::Result<Vec<Review>> {
    pool_of(Pods::Replicas, template, count, seed)
}

/// Like [`pool`], of replicas or of pods that share nothing.
pub fn pool_of(pods: Pods, template: &str, count: usize, seed: u64) -> anyhow::Result<Vec<Review>> {
    let template: Value = serde_json::from_str(template).context("the review template")?;
    let old = token_volume(&template)?;
    let mut rng = fastrand::Rng::with_seed(seed);
    // One random text that every large pod's ballast is a prefix of (cheap to generate; the
    // pods still differ in their pod-template-hash).
    let ballast = match pods {
        Pods::Large => random_suffix(&mut rng, LARGE_POD_BYTES.end),
        Pods::Replicas | Pods::Distinct => String::new(),
    };
    let template_len = template.to_string().len();
    (0..count)
        .map(|_| {
            let mut review = template.clone();
            let uid = uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes())
                .into_uuid()
                .to_string();
            review["request"]["uid"] = Value::from(uid.as_str());
            rename_volume(&mut review, &old, &token_volume_name(&mut rng));
            if pods != Pods::Replicas {
                review["request"]["object"]["metadata"]["labels"]["pod-template-hash"] =
                    Value::from(random_suffix(&mut rng, 10));
            }
            if pods == Pods::Large {
                let len = rng.usize(LARGE_POD_BYTES).saturating_sub(template_len);
                review["request"]["object"]["metadata"]["annotations"][BALLAST_ANNOTATION] =
                    Value::from(&ballast[..len]);
            }
            Ok(Review {
                body: Bytes::from(serde_json::to_vec(&review)?),
                uid_field: format!(r#""uid":"{uid}""#).into_bytes(),
                uid,
            })
        })
        .collect()
}

/// `kube-api-access-` plus a random suffix from the API server's alphabet.
fn token_volume_name(rng: &mut fastrand::Rng) -> String {
    format!("{TOKEN_VOLUME_PREFIX}{}", random_suffix(rng, SUFFIX_LEN))
}

/// `len` random characters of the API server's alphabet.
fn random_suffix(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(SUFFIX_ALPHABET[rng.usize(..SUFFIX_ALPHABET.len())]))
        .collect()
}

/// The name of the template's token volume.
fn token_volume(review: &Value) -> anyhow::Result<String> {
    let volumes = review
        .pointer("/request/object/spec/volumes")
        .and_then(Value::as_array)
        .context("the template pod has no spec.volumes")?;
    let Some(name) = volumes
        .iter()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
    else {
        bail!("the template pod has no {TOKEN_VOLUME_PREFIX}* volume");
    };
    Ok(name.to_owned())
}

/// Rename volume `old` to `new` in `spec.volumes` and in the mounts of every (init) container.
fn rename_volume(review: &mut Value, old: &str, new: &str) {
    let Some(spec) = review.pointer_mut("/request/object/spec") else {
        return;
    };
    let rename = |list: Option<&mut Value>| {
        for item in list.and_then(Value::as_array_mut).into_iter().flatten() {
            if item["name"] == old {
                item["name"] = Value::from(new);
            }
        }
    };
    rename(spec.get_mut("volumes"));
    for list in ["initContainers", "containers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for container in containers.into_iter().flatten() {
            rename(container.get_mut("volumeMounts"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn names_in(body: &[u8]) -> (String, Vec<String>) {
        let v: Value = serde_json::from_slice(body).unwrap();
        let spec = &v["request"]["object"]["spec"];
        let volume = token_volume(&v).unwrap();
        let mounts = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["volumeMounts"].as_array().unwrap())
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect();
        (volume, mounts)
    }

    #[test]
    fn distinct_pods_differ_in_their_template_hash_replicas_do_not() {
        let hashes = |pods| -> HashSet<String> {
            pool_of(pods, crate::REVIEW, 64, 5)
                .unwrap()
                .iter()
                .map(|r| {
                    let v: Value = serde_json::from_slice(&r.body).unwrap();
                    v["request"]["object"]["metadata"]["labels"]["pod-template-hash"].to_string()
                })
                .collect()
        };
        assert_eq!(hashes(Pods::Distinct).len(), 64);
        assert_eq!(hashes(Pods::Replicas).len(), 1);
    }

    #[test]
    fn large_pods_are_3_to_5_mib_and_distinct() {
        let pool = pool_of(Pods::Large, crate::REVIEW, 8, 2).unwrap();
        let mut hashes = HashSet::new();
        for review in &pool {
            let v: Value = serde_json::from_slice(&review.body).unwrap();
            let pod = v["request"]["object"].to_string();
            assert!(
                LARGE_POD_BYTES.start - 8192 <= pod.len() && pod.len() < LARGE_POD_BYTES.end,
                "{}",
                pod.len()
            );
            assert!(
                review.body.len() < 6 << 20,
                "under the injector's body limit"
            );
            hashes.insert(
                v["request"]["object"]["metadata"]["labels"]["pod-template-hash"].to_string(),
            );
        }
        assert_eq!(hashes.len(), 8);
    }

    #[test]
    fn every_replica_has_its_own_uid_and_token_volume() {
        let pool = pool(crate::REVIEW, 512, 7).unwrap();
        let uids: HashSet<_> = pool.iter().map(|r| r.uid.as_str()).collect();
        assert_eq!(uids.len(), 512);
        let mut volumes = HashSet::new();
        for review in &pool {
            let parsed: Value = serde_json::from_slice(&review.body).unwrap();
            assert_eq!(parsed["request"]["uid"], review.uid);
            let uid = uuid::Uuid::parse_str(&review.uid).unwrap();
            assert_eq!(uid.get_version_num(), 4);
            let (volume, mounts) = names_in(&review.body);
            let suffix = volume.strip_prefix(TOKEN_VOLUME_PREFIX).unwrap();
            assert_eq!(suffix.len(), SUFFIX_LEN);
            assert!(
                suffix.bytes().all(|b| SUFFIX_ALPHABET.contains(&b)),
                "{suffix}"
            );
            // Both containers mount the renamed volume, nothing else changed name.
            assert_eq!(mounts, vec![volume.clone(), volume.clone()]);
            volumes.insert(volume);
        }
        // 27^5 names: a few collisions among 512 are possible, many are not.
        assert!(volumes.len() > 500, "{}", volumes.len());
    }

    #[test]
    fn only_uid_and_volume_differ_from_the_fixture() {
        let review = &pool(crate::REVIEW, 1, 1).unwrap()[0];
        let (volume, _) = names_in(&review.body);
        let text = std::str::from_utf8(&review.body)
            .unwrap()
            .replace(&volume, "kube-api-access-x7k2p")
            .replace(&review.uid, "3f0c6d8e-5a3e-4b5e-9d0c-2b7c1e4a9f10");
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(crate::REVIEW).unwrap());
    }

    #[test]
    fn the_same_seed_gives_the_same_pool() {
        let a = pool(crate::REVIEW, 3, 42).unwrap();
        let b = pool(crate::REVIEW, 3, 42).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.body == y.body));
    }

    #[test]
    fn checks_uid_allowed_and_patch() {
        let review = &pool(crate::REVIEW, 1, 3).unwrap()[0];
        let uid = &review.uid;
        let ok = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":"{uid}","allowed":true,"patchType":"JSONPatch","patch":"W10="}}}}"#
        );
        assert_eq!(review.check(ok.as_bytes()), Ok(()));
        let other = ok.replace(uid, "00000000-0000-4000-8000-000000000000");
        assert_eq!(review.check(other.as_bytes()), Err(Mismatch::Uid));
        let denied = ok.replace(r#""allowed":true"#, r#""allowed":false"#);
        assert_eq!(review.check(denied.as_bytes()), Err(Mismatch::NotAllowed));
        let skipped = ok.replace(r#","patchType":"JSONPatch","patch":"W10=""#, "");
        assert_eq!(review.check(skipped.as_bytes()), Err(Mismatch::NoPatch));
    }

    #[test]
    fn a_template_without_token_volume_is_refused() {
        let mut v: Value = serde_json::from_str(crate::REVIEW).unwrap();
        v["request"]["object"]["spec"]["volumes"] = serde_json::json!([]);
        let err = pool(&v.to_string(), 1, 0).unwrap_err();
        assert!(err.to_string().contains("kube-api-access-"), "{err}");
    }
}
