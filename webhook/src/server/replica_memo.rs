//! Memo of recent answers by the pod's JSON text, so the replicas of a workload are answered
//! without decoding, injecting or diffing again.
//!
//! kube-apiserver sends the replicas of one workload byte for byte the same, except for the
//! service-account token volume that its ServiceAccount admission plugin names per pod
//! (`kube-api-access-` + 5 random characters, in `spec.volumes` and every `volumeMounts`). The
//! engine never looks inside that name, so the key is the pod's JSON text with those characters
//! masked. The caller keeps an answer only when it does not mention the name itself (so it is the
//! same for every replica); a pod with more than one such name is never looked up.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use foldhash::fast::RandomState;
use memchr::memmem::Finder;

/// The name the ServiceAccount admission plugin gives the token volume, before its random part.
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
const MASK: u8 = b'*';
static TOKEN_VOLUME: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(TOKEN_VOLUME_PREFIX.as_bytes()));

/// Whether `text` (an answer, as JSON) names a token volume: then it belongs to one replica.
pub fn names_token_volume(text: &[u8]) -> bool {
    TOKEN_VOLUME.find(text).is_some()
}

/// A request's key: the caller's context (configuration, namespace, path parameters) and the
/// object's JSON text with the token volume name's random part masked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(Box<[u8]>);

impl Key {
    /// The key for `object` (its JSON text as received) under `context`; `None` when the pod
    /// names more than one token volume (the engine might then tell them apart).
    pub fn new(context: &str, object: &[u8]) -> Option<Key> {
        let mut bytes = Vec::with_capacity(context.len() + 1 + object.len());
        bytes.extend_from_slice(context.as_bytes());
        bytes.push(0);
        let start = bytes.len();
        bytes.extend_from_slice(object);
        let mut name: Option<Vec<u8>> = None;
        let mut from = start;
        while let Some(at) = TOKEN_VOLUME.find(&bytes[from..]) {
            let suffix = from + at + TOKEN_VOLUME_PREFIX.len();
            let end = bytes[suffix..]
                .iter()
                .position(|b| *b == b'"')
                .map_or(bytes.len(), |n| suffix + n);
            match &name {
                Some(seen) if seen[..] != bytes[suffix..end] => return None,
                Some(_) => {}
                None => name = Some(bytes[suffix..end].to_vec()),
            }
            bytes[suffix..end].fill(MASK);
            from = end;
        }
        Some(Key(bytes.into_boxed_slice()))
    }
}

/// Answers by [`Key`], at most `capacity` of them (all forgotten at once when full).
#[derive(Debug)]
pub struct ReplicaMemo<T> {
    answers: Mutex<HashMap<Key, Arc<T>, RandomState>>,
    capacity: usize,
}

impl<T> ReplicaMemo<T> {
    pub fn new(capacity: usize) -> Self {
        ReplicaMemo {
            answers: Mutex::new(HashMap::default()),
            capacity,
        }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<T>> {
        self.answers.lock().ok()?.get(key).cloned()
    }

    /// Keeps `answer` for `key`. The caller checks that the answer does not name the token
    /// volume ([`names_token_volume`]): then it would belong to one replica only.
    pub fn insert(&self, key: Key, answer: Arc<T>) {
        let Ok(mut answers) = self.answers.lock() else {
            return;
        };
        if answers.len() >= self.capacity {
            answers.clear();
        }
        answers.insert(key, answer);
    }

    /// How many answers are kept.
    pub fn len(&self) -> usize {
        self.answers.lock().map_or(0, |a| a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(token: &str, image: &str) -> String {
        format!(
            r#"{{"spec":{{"containers":[{{"image":"{image}","volumeMounts":[{{"name":"kube-api-access-{token}"}}]}}],"volumes":[{{"name":"kube-api-access-{token}","projected":{{}}}}]}}}}"#
        )
    }

    #[test]
    fn replicas_share_a_key_other_pods_do_not() {
        let a = Key::new("ns", pod("x7k2p", "app:1").as_bytes()).unwrap();
        let b = Key::new("ns", pod("q9z4m", "app:1").as_bytes()).unwrap();
        assert_eq!(a, b, "replicas differ only in the token volume name");
        assert_ne!(a, Key::new("ns", pod("x7k2p", "app:2").as_bytes()).unwrap());
        assert_ne!(
            a,
            Key::new("other", pod("x7k2p", "app:1").as_bytes()).unwrap()
        );
        assert_ne!(
            a,
            Key::new("ns", pod("x7k2", "app:1").as_bytes()).unwrap(),
            "a name of another length is another pod"
        );
        let plain = r#"{"spec":{"containers":[{"image":"app:1"}]}}"#;
        assert_eq!(
            Key::new("ns", plain.as_bytes()).unwrap(),
            Key::new("ns", plain.as_bytes()).unwrap()
        );
    }

    #[test]
    fn two_distinct_token_names_are_never_looked_up() {
        let two =
            r#"{"volumes":[{"name":"kube-api-access-aaaaa"},{"name":"kube-api-access-bbbbb"}]}"#;
        assert_eq!(Key::new("ns", two.as_bytes()), None);
    }

    #[test]
    fn memory_is_bounded() {
        let memo = ReplicaMemo::new(2);
        let key = |t: &str, image: &str| Key::new("ns", pod(t, image).as_bytes()).unwrap();
        memo.insert(key("x7k2p", "a"), Arc::new(1));
        assert_eq!(memo.get(&key("q9z4m", "a")).as_deref(), Some(&1));
        memo.insert(key("x7k2p", "c"), Arc::new(3));
        memo.insert(key("x7k2p", "d"), Arc::new(4));
        assert!(memo.len() <= 2);
        assert_eq!(memo.get(&key("x7k2p", "d")).as_deref(), Some(&4));
    }
}
