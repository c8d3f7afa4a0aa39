//! Memo of recent answers by a hash of the pod's JSON text, so the replicas of a workload are
//! answered without decoding, injecting or diffing again, in a bounded number of bytes.
//!
//! kube-apiserver sends the replicas of one workload byte for byte the same, except for the
//! service-account token volume that its ServiceAccount admission plugin names per pod
//! (`kube-api-access-` + 5 random characters, in `spec.volumes` and every `volumeMounts`). The
//! engine never looks inside that name, so the key is a hash of the pod's JSON text without the
//! name's random part, taken only where the name stands: a string value that is exactly such a
//! name, of a `"name"` in `spec.volumes[*]` or in `spec.<containers>[*].volumeMounts[*]`. The
//! same characters anywhere else (an annotation, a container's name) are part of the key. The
//! caller keeps an answer only when it does not mention the name itself (so it is the same for
//! every replica); a pod with more than one such name is never looked up.
//!
//! The key is SipHash-1-3 with a 128-bit output under a per-process random key: the text is
//! not kept (a pod can be 3 MiB; the manifests give the injector 128 Mi), and two pods that
//! differ outside the masked characters share a key with probability 2^-128, which a tenant
//! cannot steer without the key. What is kept is the answers, counted in bytes against a budget
//! (two generations of half the budget each: a hit in the older one moves the answer to the
//! newer one, and when the newer one is full the older one is forgotten).

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::ops::Range;
use std::sync::{Arc, LazyLock, Mutex};

use foldhash::fast::RandomState;
use memchr::memmem::Finder;
use siphasher::sip128::{Hasher128 as _, SipHasher13};

/// The name the ServiceAccount admission plugin gives the token volume, before its random part.
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// Length of the random part.
const SUFFIX_LEN: usize = 5;
/// Alphabet of the API server's random names (`k8s.io/apimachinery/pkg/util/rand`).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// The containers whose `volumeMounts` name the token volume.
const CONTAINER_LISTS: [&[u8]; 3] = [b"containers", b"initContainers", b"ephemeralContainers"];

/// Default byte budget of the answers kept (the manifests' memory limit is 128 Mi).
pub const DEFAULT_BUDGET_BYTES: usize = 16 << 20;
/// Default largest pod text looked up or remembered.
pub const DEFAULT_MAX_POD_BYTES: usize = 1 << 20;
/// What one kept answer costs besides its own bytes: its key, the pointer to it, the counter
/// and hash-table slot, the reference counts.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

static TOKEN_VOLUME: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(TOKEN_VOLUME_PREFIX.as_bytes()));

/// Whether `text` (an answer, as JSON) names a token volume: then it belongs to one replica.
pub fn names_token_volume(text: &[u8]) -> bool {
    TOKEN_VOLUME.find(text).is_some()
}

/// A request's key: a 128-bit hash of the caller's context (configuration, namespace, path
/// parameters) and the object's JSON text without the token volume name's random part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(u128);

/// How much the memo may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of answers (each counted with [`ENTRY_OVERHEAD_BYTES`]) kept at most; 0 turns the
    /// memo off. One answer of more than a sixteenth of it is not kept.
    pub budget_bytes: usize,
    /// Pods whose JSON text is longer are neither looked up nor remembered.
    pub max_pod_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            budget_bytes: DEFAULT_BUDGET_BYTES,
            max_pod_bytes: DEFAULT_MAX_POD_BYTES,
        }
    }
}

/// Answers by [`Key`], within [`Limits`].
#[derive(Debug)]
pub struct ReplicaMemo<T> {
    generations: Mutex<Generations<T>>,
    limits: Limits,
    /// The hash key, random per memo.
    secret: (u64, u64),
}

#[derive(Debug)]
struct Generations<T> {
    newer: Generation<T>,
    older: Generation<T>,
}

#[derive(Debug)]
struct Generation<T> {
    answers: HashMap<Key, Entry<T>, RandomState>,
    bytes: usize,
}

#[derive(Debug)]
struct Entry<T> {
    answer: Arc<T>,
    bytes: usize,
}

impl<T> Default for Generation<T> {
    fn default() -> Self {
        Generation {
            answers: HashMap::default(),
            bytes: 0,
        }
    }
}

impl<T> ReplicaMemo<T> {
    pub fn new(limits: Limits) -> Self {
        // std's RandomState is seeded from the OS's random source once per thread and differs
        // for every instance; two of its hashes make the 128-bit SipHash key.
        let seed = std::collections::hash_map::RandomState::new();
        ReplicaMemo {
            generations: Mutex::new(Generations {
                newer: Generation::default(),
                older: Generation::default(),
            }),
            limits,
            secret: (seed.hash_one(0_u8), seed.hash_one(1_u8)),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The key for `object` (its JSON text as received) under `context`; `None` when the memo
    /// is off, the pod is longer than [`Limits::max_pod_bytes`], or it names more than one
    /// token volume (the engine might then tell them apart).
    pub fn key(&self, context: &str, object: &[u8]) -> Option<Key> {
        if self.limits.budget_bytes == 0 || object.len() > self.limits.max_pod_bytes {
            return None;
        }
        let masked = token_volume_suffixes(object)?;
        let mut hasher = SipHasher13::new_with_keys(self.secret.0, self.secret.1);
        // Length-prefixed pieces: the hashed bytes determine the context, the text and where
        // the masked characters were.
        let mut piece = |bytes: &[u8]| {
            hasher.write_u64(bytes.len() as u64);
            hasher.write(bytes);
        };
        piece(context.as_bytes());
        let mut from = 0;
        for suffix in masked {
            piece(&object[from..suffix.start]);
            from = suffix.end;
        }
        piece(&object[from..]);
        Some(Key(hasher.finish128().as_u128()))
    }

    pub fn get(&self, key: &Key) -> Option<Arc<T>> {
        let mut generations = self.generations.lock().ok()?;
        if let Some(entry) = generations.newer.answers.get(key) {
            return Some(entry.answer.clone());
        }
        let entry = generations.older.answers.remove(key)?;
        generations.older.bytes -= entry.bytes;
        let answer = entry.answer.clone();
        self.keep(&mut generations, *key, entry);
        Some(answer)
    }

    /// Keeps `answer` for `key`, counted as `bytes` (what it holds, besides its fixed size)
    /// plus [`ENTRY_OVERHEAD_BYTES`]. The caller checks that the answer does not name the
    /// token volume ([`names_token_volume`]): then it would belong to one replica only.
    pub fn insert(&self, key: Key, answer: Arc<T>, bytes: usize) {
        let bytes = bytes
            .saturating_add(size_of::<T>())
            .saturating_add(ENTRY_OVERHEAD_BYTES);
        if bytes > self.limits.budget_bytes / 16 {
            return;
        }
        let Ok(mut generations) = self.generations.lock() else {
            return;
        };
        if let Some(old) = generations.older.answers.remove(&key) {
            generations.older.bytes -= old.bytes;
        }
        self.keep(&mut generations, key, Entry { answer, bytes });
    }

    /// Puts `entry` into the newer generation; when that would pass half the budget, the
    /// newer generation becomes the older one first and the older one is forgotten.
    fn keep(&self, generations: &mut Generations<T>, key: Key, entry: Entry<T>) {
        let half = self.limits.budget_bytes / 2;
        if generations.newer.bytes + entry.bytes > half {
            generations.older = std::mem::take(&mut generations.newer);
        }
        generations.newer.bytes += entry.bytes;
        if let Some(old) = generations.newer.answers.insert(key, entry) {
            generations.newer.bytes -= old.bytes;
        }
    }

    /// How many answers are kept.
    pub fn len(&self) -> usize {
        self.generations
            .lock()
            .map_or(0, |g| g.newer.answers.len() + g.older.answers.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes counted for the kept answers; at most [`Limits::budget_bytes`].
    pub fn bytes(&self) -> usize {
        self.generations
            .lock()
            .map_or(0, |g| g.newer.bytes + g.older.bytes)
    }
}

/// Where `object` (a pod's JSON text) names its token volume: the ranges of the names' random
/// parts, in order; `None` when it names two different ones.
fn token_volume_suffixes(object: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut found: Vec<Range<usize>> = Vec::new();
    for_each_token_volume_name(object, |path, value| {
        if is_token_volume_name_path(path) {
            found.push(value.end - SUFFIX_LEN..value.end);
        }
    });
    match found.first() {
        Some(first)
            if found
                .iter()
                .any(|r| object[r.clone()] != object[first.clone()]) =>
        {
            None
        }
        _ => Some(found),
    }
}

/// Whether `text` is exactly `kube-api-access-` and a random part the API server could make.
fn is_token_volume_name(text: &[u8]) -> bool {
    text.len() == TOKEN_VOLUME_PREFIX.len() + SUFFIX_LEN
        && text.starts_with(TOKEN_VOLUME_PREFIX.as_bytes())
        && text[TOKEN_VOLUME_PREFIX.len()..]
            .iter()
            .all(|b| SUFFIX_ALPHABET.contains(b))
}

/// Whether a string value at `path` (object keys as raw JSON text, `None` for an array index)
/// is where a pod names its token volume: `spec.volumes[*].name` or
/// `spec.<containers>[*].volumeMounts[*].name`.
fn is_token_volume_name_path(path: &[Option<&[u8]>]) -> bool {
    match path {
        [Some(b"spec"), Some(b"volumes"), None, Some(b"name")] => true,
        [
            Some(b"spec"),
            Some(list),
            None,
            Some(b"volumeMounts"),
            None,
            Some(b"name"),
        ] => CONTAINER_LISTS.contains(list),
        _ => false,
    }
}

/// One open object or array while scanning.
enum Frame {
    /// An object and the raw key of the member being read (`None` before the first key or
    /// after a comma).
    Object(Option<Range<usize>>),
    Array,
}

/// Calls `visit(path, range)` for every string value in `text` (valid JSON) that is a token
/// volume name, with the path of keys to it and the range of its raw contents (between the
/// quotes). Keys and values are
/// compared as raw text: a key written with escapes does not match a plain one (the key then
/// differs from a replica's, never the other way around).
fn for_each_token_volume_name(text: &[u8], mut visit: impl FnMut(&[Option<&[u8]>], Range<usize>)) {
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                let end = string_end(text, i + 1);
                let contents = i + 1..end;
                match stack.last_mut() {
                    Some(Frame::Object(key @ None)) => *key = Some(contents),
                    // Only a token volume name needs its path (most values are not one).
                    _ if !is_token_volume_name(&text[contents.clone()]) => {}
                    _ => {
                        let path: Vec<Option<&[u8]>> = stack
                            .iter()
                            .map(|f| match f {
                                Frame::Object(key) => key.clone().map(|k| &text[k]),
                                Frame::Array => None,
                            })
                            .collect();
                        visit(&path, contents);
                    }
                }
                i = end + 1;
                continue;
            }
            b'{' => stack.push(Frame::Object(None)),
            b'[' => stack.push(Frame::Array),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(Frame::Object(key)) = stack.last_mut() {
                    *key = None;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// The index of the quote that ends the string whose contents start at `from` (or the text's
/// length).
fn string_end(text: &[u8], mut from: usize) -> usize {
    while let Some(at) = memchr::memchr2(b'"', b'\\', &text[from..]) {
        let at = from + at;
        if text[at] == b'"' {
            return at;
        }
        from = at + 2;
        if from >= text.len() {
            break;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(token: &str, image: &str) -> String {
        format!(
            r#"{{"spec":{{"containers":[{{"image":"{image}","volumeMounts":[{{"name":"kube-api-access-{token}"}}]}}],"volumes":[{{"name":"kube-api-access-{token}","projected":{{}}}}]}}}}"#
        )
    }

    fn memo() -> ReplicaMemo<u32> {
        ReplicaMemo::new(Limits::default())
    }

    #[test]
    fn replicas_share_a_key_other_pods_do_not() {
        let memo = memo();
        let key = |ctx: &str, text: &str| memo.key(ctx, text.as_bytes()).unwrap();
        let a = key("ns", &pod("x7k2p", "app:1"));
        assert_eq!(
            a,
            key("ns", &pod("q9z4m", "app:1")),
            "replicas differ only in the token volume name"
        );
        assert_ne!(a, key("ns", &pod("x7k2p", "app:2")));
        assert_ne!(a, key("other", &pod("x7k2p", "app:1")));
        assert_ne!(
            a,
            key("ns", &pod("x7k2", "app:1")),
            "a name of another length is another pod"
        );
        assert_ne!(
            a,
            key("ns", &pod("x7k2a", "app:1")),
            "not a name the API server makes (a vowel)"
        );
        assert_ne!(
            a,
            key("ns", &pod("*****", "app:1")),
            "the masked characters are dropped, not replaced"
        );
        let plain = r#"{"spec":{"containers":[{"image":"app:1"}]}}"#;
        assert_eq!(key("ns", plain), key("ns", plain));
        assert_ne!(
            ReplicaMemo::<u32>::new(Limits::default()).key("ns", plain.as_bytes()),
            Some(key("ns", plain)),
            "every memo hashes with its own key"
        );
    }

    #[test]
    fn the_name_is_masked_only_where_it_names_the_token_volume() {
        let memo = memo();
        let with = |extra: &str| {
            let text = pod("x7k2p", "app:1").replacen(
                r#"{"spec":"#,
                &format!(r#"{{"metadata":{{"annotations":{{"a":"{extra}"}}}},"spec":"#),
                1,
            );
            memo.key("ns", text.as_bytes())
        };
        // The annotation holds the string and then differs: another pod.
        assert_ne!(
            with(r#"kube-api-access-bcdfg concurrency: 4"#),
            with(r#"kube-api-access-bcdfg concurrency: 8"#)
        );
        // Even a value that is exactly such a name counts outside spec.volumes / volumeMounts.
        assert_ne!(with("kube-api-access-bcdfg"), with("kube-api-access-bcdfh"));
        let container = |name: &str| {
            let text = format!(
                r#"{{"spec":{{"containers":[{{"name":"{name}","volumeMounts":[{{"name":"kube-api-access-x7k2p"}}]}}]}}}}"#
            );
            memo.key("ns", text.as_bytes())
        };
        assert_ne!(
            container("kube-api-access-bcdfg"),
            container("kube-api-access-bcdfh")
        );
        // An escaped quote inside a string does not end it.
        let escaped = |n: &str| {
            memo.key(
                "ns",
                format!(
                    r#"{{"a":"\"}}","spec":{{"volumes":[{{"name":"kube-api-access-{n}"}}]}}}}"#
                )
                .as_bytes(),
            )
        };
        assert_eq!(escaped("bcdfg"), escaped("x7k2p"));
    }

    #[test]
    fn two_distinct_token_names_are_never_looked_up() {
        let two = r#"{"spec":{"volumes":[{"name":"kube-api-access-bbbbb"},{"name":"kube-api-access-ccccc"}]}}"#;
        assert_eq!(memo().key("ns", two.as_bytes()), None);
        let same = r#"{"spec":{"volumes":[{"name":"kube-api-access-bbbbb"},{"name":"kube-api-access-bbbbb"}]}}"#;
        assert!(memo().key("ns", same.as_bytes()).is_some());
    }

    #[test]
    fn big_pods_and_an_empty_budget_are_not_memoized() {
        let text = pod("x7k2p", "app:1");
        let small = ReplicaMemo::<u32>::new(Limits {
            max_pod_bytes: text.len() - 1,
            ..Limits::default()
        });
        assert_eq!(small.key("ns", text.as_bytes()), None);
        let off = ReplicaMemo::<u32>::new(Limits {
            budget_bytes: 0,
            ..Limits::default()
        });
        assert_eq!(off.key("ns", text.as_bytes()), None);
    }

    #[test]
    fn memory_stays_within_the_budget_and_recent_answers_stay() {
        let memo = ReplicaMemo::<u32>::new(Limits {
            budget_bytes: 64 * 1024,
            max_pod_bytes: 1 << 20,
        });
        let key = |i: usize| memo.key("ns", pod("x7k2p", &format!("app:{i}")).as_bytes());
        // An answer of more than a sixteenth of the budget is not kept.
        let first = key(0).unwrap();
        memo.insert(first, Arc::new(0), 4096);
        assert!(memo.get(&first).is_none());
        let hot = key(1).unwrap();
        for i in 2..10_000 {
            memo.insert(key(i).unwrap(), Arc::new(1), 1000);
            assert!(memo.bytes() <= 64 * 1024, "{} after {i}", memo.bytes());
            if i == 2 {
                memo.insert(hot, Arc::new(7), 1000);
            }
            // A key asked for now and then is kept however many others come and go.
            if i % 16 == 0 {
                assert_eq!(memo.get(&hot).as_deref(), Some(&7), "after {i}");
            }
        }
        assert!(memo.len() <= 64 * 1024 / 1000);
        assert_eq!(
            memo.get(&key(9_999).unwrap()).as_deref(),
            Some(&1),
            "the newest is kept"
        );
        assert!(memo.get(&key(3).unwrap()).is_none(), "the oldest is not");
    }
}

#[cfg(test)]
mod props {
    //! Pods that differ anywhere but in the token volume name's random part, where it names
    //! the token volume, never share a key; replicas always do.

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Strings near the token volume's name, so that generated pods often differ only there.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("app".to_owned()),
            Just("kube-api-access-".to_owned()),
            Just("kube-api-access-bcdfg".to_owned()),
            Just("kube-api-access-x7k2p".to_owned()),
            Just("kube-api-access-bcdf".to_owned()),
            Just("kube-api-access-aeiou".to_owned()),
            Just("kube-api-access-bcdfg\"".to_owned()),
            Just("# kube-api-access-\nconcurrency: 4".to_owned()),
            Just("# kube-api-access-\nconcurrency: 8".to_owned()),
            "[a-z0-9\\-]{0,6}",
        ]
    }

    #[derive(Debug, Clone)]
    struct Container {
        name: String,
        image: String,
        /// Mount the token volume.
        token: bool,
        other_mount: Option<String>,
    }

    #[derive(Debug, Clone)]
    struct Shape {
        annotations: Vec<(String, String)>,
        containers: Vec<Container>,
        init_containers: Vec<Container>,
        token_volume: bool,
        other_volumes: Vec<String>,
    }

    fn container() -> impl Strategy<Value = Container> {
        (text(), text(), any::<bool>(), proptest::option::of(text())).prop_map(
            |(name, image, token, other_mount)| Container {
                name,
                image,
                token,
                other_mount,
            },
        )
    }

    fn shape() -> impl Strategy<Value = Shape> {
        (
            proptest::collection::vec((text(), text()), 0..3),
            proptest::collection::vec(container(), 1..3),
            proptest::collection::vec(container(), 0..2),
            any::<bool>(),
            proptest::collection::vec(text(), 0..2),
        )
            .prop_map(
                |(annotations, containers, init_containers, token_volume, other_volumes)| Shape {
                    annotations,
                    containers,
                    init_containers,
                    token_volume,
                    other_volumes,
                },
            )
    }

    fn suffix() -> impl Strategy<Value = String> {
        "[bcdfghjklmnpqrstvwxz2456789]{5}"
    }

    /// The pod of `shape` with token volume `kube-api-access-<suffix>`.
    fn render(shape: &Shape, suffix: &str) -> Value {
        let token = format!("{TOKEN_VOLUME_PREFIX}{suffix}");
        let containers = |list: &[Container]| -> Vec<Value> {
            list.iter()
                .map(|c| {
                    let mut mounts = Vec::new();
                    if c.token {
                        mounts.push(json!({"name": token, "mountPath": "/var/run/secrets"}));
                    }
                    if let Some(other) = &c.other_mount {
                        mounts.push(json!({"name": other, "mountPath": "/data"}));
                    }
                    json!({"name": c.name, "image": c.image, "volumeMounts": mounts})
                })
                .collect()
        };
        let mut volumes: Vec<Value> = shape
            .other_volumes
            .iter()
            .map(|n| json!({"name": n, "emptyDir": {}}))
            .collect();
        if shape.token_volume {
            volumes.push(json!({"name": token, "projected": {"sources": []}}));
        }
        let annotations: serde_json::Map<String, Value> = shape
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        json!({
            "metadata": {"annotations": annotations},
            "spec": {
                "initContainers": containers(&shape.init_containers),
                "containers": containers(&shape.containers),
                "volumes": volumes,
            }
        })
    }

    /// The pod's text as the memo should see it, found on the tree (not the text): every token
    /// volume name where it names the token volume replaced by null; `None` when those names
    /// are not all the same.
    fn masked(pod: &Value) -> Option<String> {
        let mut pod = pod.clone();
        let mut names = Vec::new();
        let mut mask = |item: &mut Value| {
            if let Some(name) = item["name"].as_str()
                && is_token_volume_name(name.as_bytes())
            {
                names.push(name.to_owned());
                item["name"] = Value::Null;
            }
        };
        let spec = &mut pod["spec"];
        for volume in spec["volumes"].as_array_mut().into_iter().flatten() {
            mask(volume);
        }
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array_mut().into_iter().flatten() {
                for mount in c["volumeMounts"].as_array_mut().into_iter().flatten() {
                    mask(mount);
                }
            }
        }
        names.sort();
        names.dedup();
        (names.len() <= 1).then(|| pod.to_string())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn keys_are_equal_exactly_when_the_masked_pods_are(
            a in shape(), b in shape(), sa in suffix(), sb in suffix(),
        ) {
            let memo = ReplicaMemo::<u32>::new(Limits::default());
            let (pa, pb) = (render(&a, &sa), render(&b, &sb));
            let key = |pod: &Value| memo.key("ctx", pod.to_string().as_bytes());
            let (ka, kb) = (key(&pa), key(&pb));
            let (ma, mb) = (masked(&pa), masked(&pb));
            prop_assert_eq!(ka.is_some(), ma.is_some(), "{}", pa);
            prop_assert_eq!(kb.is_some(), mb.is_some(), "{}", pb);
            if ka.is_some() && kb.is_some() {
                prop_assert_eq!(ka == kb, ma == mb, "\n{}\n{}", pa, pb);
            }
        }

        #[test]
        fn replicas_share_a_key(a in shape(), sa in suffix(), sb in suffix()) {
            let memo = ReplicaMemo::<u32>::new(Limits::default());
            let key = |s: &str| memo.key("ctx", render(&a, s).to_string().as_bytes());
            if masked(&render(&a, &sa)).is_some() && masked(&render(&a, &sb)).is_some() {
                prop_assert_eq!(key(&sa), key(&sb));
            }
        }
    }
}
