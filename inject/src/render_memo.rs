//! Memo of template renders, keyed on exactly what each render read from the pod.
//!
//! A template is a pure function of its context, but a pod carries much that the template never
//! looks at: the API server names every replica's token volume `kube-api-access-<random>`, for
//! one, so a key over the whole pod would never hit. Instead the pod is handed to minijinja as a
//! [`TrackedPod`], which records every question the render asks of it (a field's value, a map's
//! keys, a list's length) with the answer it got. One render's questions and answers form a path
//! in a trie whose leaf is the parsed overlay. A later pod that gives the same answers to the same
//! questions gets that overlay without rendering or parsing. The walk is exact because a template
//! is deterministic: which question comes next depends only on the answers so far.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use minijinja::Value as JValue;
use minijinja::value::{Enumerator, Object, ObjectRepr, Serde};
use serde_json::Value;

/// How many overlays one configuration remembers before it starts afresh.
const LEAVES_MAX: usize = 256;

/// One step of a path into the pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Index(usize),
}

/// A question a render asked of the pod: the value at `path`, or (`enumerate`) its keys or length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Question {
    path: Vec<Step>,
    enumerate: bool,
}

/// What the pod answered. Maps and lists answer only their kind: what the render then reads
/// inside them is asked separately.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Missing,
    Scalar(Value),
    Map,
    List,
    Keys(Vec<String>),
    Len(usize),
}

impl Question {
    fn ask(&self, pod: &Value) -> Answer {
        Answer::of(walk(pod, &self.path), self.enumerate)
    }
}

impl Answer {
    /// The answer of the value `found` at a question's path.
    fn of(found: Option<&Value>, enumerate: bool) -> Answer {
        let Some(v) = found else {
            return Answer::Missing;
        };
        match (v, enumerate) {
            (Value::Object(m), true) => Answer::Keys(m.keys().cloned().collect()),
            (Value::Array(l), true) => Answer::Len(l.len()),
            (Value::Object(_), false) => Answer::Map,
            (Value::Array(_), false) => Answer::List,
            (scalar, _) => Answer::Scalar(scalar.clone()),
        }
    }
}

fn walk<'a>(pod: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(pod, |v, step| match (step, v) {
        (Step::Key(k), Value::Object(m)) => m.get(k),
        (Step::Index(i), Value::Array(l)) => l.get(*i),
        _ => None,
    })
}

/// The questions one render asked, in order, each once.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    asked: HashSet<Question>,
    log: Vec<(Question, Answer)>,
}

/// The pod (or a map or list inside it) as a minijinja object that records every read.
#[derive(Debug)]
pub(crate) struct TrackedPod {
    pod: Arc<Value>,
    path: Vec<Step>,
    reads: Arc<Mutex<Reads>>,
}

impl TrackedPod {
    /// The whole pod, recording into `reads`.
    pub fn root(pod: Arc<Value>, reads: Arc<Mutex<Reads>>) -> JValue {
        JValue::from_object(TrackedPod {
            pod,
            path: Vec::new(),
            reads,
        })
    }

    fn node(&self) -> Option<&Value> {
        walk(&self.pod, &self.path)
    }

    /// Logs the question (`path`, `enumerate`) the first time it is asked, with the answer
    /// given by `found`, the value at `path`.
    fn record(&self, path: Vec<Step>, enumerate: bool, found: Option<&Value>) {
        let q = Question { path, enumerate };
        // A poisoned log only means another render panicked; this one's reads are still its own.
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        if reads.asked.insert(q.clone()) {
            reads.log.push((q, Answer::of(found, enumerate)));
        }
    }

    fn child(&self, step: Step) -> Option<JValue> {
        let mut path = self.path.clone();
        path.push(step);
        let found = walk(&self.pod, &path);
        self.record(path.clone(), false, found);
        match found? {
            Value::Object(_) | Value::Array(_) => Some(JValue::from_object(TrackedPod {
                pod: self.pod.clone(),
                path,
                reads: self.reads.clone(),
            })),
            scalar => Some(JValue::from(Serde(scalar))),
        }
    }
}

impl Object for TrackedPod {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.node() {
            Some(Value::Array(_)) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        match self.node()? {
            Value::Object(_) => self.child(Step::Key(key.as_str()?.to_owned())),
            Value::Array(_) => self.child(Step::Index(key.as_usize()?)),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let node = self.node();
        self.record(self.path.clone(), true, node);
        match node {
            Some(Value::Object(m)) => {
                Enumerator::Values(m.keys().map(|k| JValue::from(k.as_str())).collect())
            }
            Some(Value::Array(l)) => Enumerator::Seq(l.len()),
            _ => Enumerator::Empty,
        }
    }
}

/// A trie node: the next question and one branch per answer seen, or the overlay.
#[derive(Debug)]
enum Node {
    Ask {
        question: Question,
        branches: Vec<(Answer, Node)>,
    },
    Leaf(Arc<Value>),
}

impl Node {
    fn chain(mut log: std::vec::IntoIter<(Question, Answer)>, overlay: Arc<Value>) -> Node {
        match log.next() {
            None => Node::Leaf(overlay),
            Some((question, answer)) => Node::Ask {
                question,
                branches: vec![(answer, Node::chain(log, overlay))],
            },
        }
    }
}

/// Overlays by template + the rest of the context (`key`), then by the pod's answers.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    inner: RwLock<Tries>,
}

#[derive(Debug, Default)]
struct Tries {
    roots: HashMap<String, Node>,
    leaves: usize,
}

impl Memo {
    /// The overlay an earlier render produced for a pod that answers as `pod` does.
    pub fn get(&self, key: &str, pod: &Value) -> Option<Arc<Value>> {
        let tries = self.inner.read().ok()?;
        let mut node = tries.roots.get(key)?;
        loop {
            match node {
                Node::Leaf(overlay) => return Some(overlay.clone()),
                Node::Ask { question, branches } => {
                    let answer = question.ask(pod);
                    node = &branches.iter().find(|(a, _)| *a == answer)?.1;
                }
            }
        }
    }

    /// Remembers one render. A log that disagrees with the trie (only possible for a template
    /// that is not deterministic) is not remembered.
    pub fn insert(&self, key: &str, reads: Reads, overlay: Arc<Value>) {
        let Ok(mut tries) = self.inner.write() else {
            return;
        };
        if tries.leaves >= LEAVES_MAX {
            *tries = Tries::default();
        }
        let mut log = reads.log.into_iter();
        let Some(mut node) = tries.roots.get_mut(key) else {
            tries
                .roots
                .insert(key.to_owned(), Node::chain(log, overlay));
            tries.leaves += 1;
            return;
        };
        loop {
            let Node::Ask { question, branches } = node else {
                return; // the same answers led to an overlay already
            };
            let Some((q, answer)) = log.next() else {
                return;
            };
            if q != *question {
                return;
            }
            match branches.iter().position(|(a, _)| *a == answer) {
                Some(i) => node = &mut branches[i].1,
                None => {
                    branches.push((answer, Node::chain(log, overlay)));
                    tries.leaves += 1;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::{Environment, context};
    use serde_json::json;

    /// Renders `src` over the tracked pod, checking the text against a plain (untracked) render.
    fn render(src: &str, pod: &Value) -> (String, Reads) {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        env.add_template("t", src).unwrap();
        let t = env.get_template("t").unwrap();
        let reads = Arc::new(Mutex::new(Reads::default()));
        let out = t
            .render(context! { pod => TrackedPod::root(Arc::new(pod.clone()), reads.clone()) })
            .unwrap();
        let plain = t.render(context! { pod => Serde(pod) }).unwrap();
        assert_eq!(out, plain, "tracking changes nothing in the output");
        let reads = Arc::try_unwrap(reads).unwrap().into_inner().unwrap();
        (out, reads)
    }

    fn questions(reads: &Reads) -> Vec<String> {
        reads
            .log
            .iter()
            .map(|(q, a)| format!("{:?} {} = {a:?}", q.path, q.enumerate))
            .collect()
    }

    #[test]
    fn renders_like_plain_values_and_records_each_question_once() {
        let pod = json!({"metadata": {"labels": {"app": "web", "n": 3}},
                         "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let src = "{{ pod.metadata.labels.app }} {{ pod.metadata.labels.app }} {{ pod.metadata.labels.n + 1 }} \
                   {% for c in pod.spec.containers %}{{ c.name }},{% endfor %} \
                   {{ pod.metadata.labels | tojson }} {{ pod.missing.deep is defined }}";
        let (out, reads) = render(src, &pod);
        assert_eq!(out, r#"web web 4 a,b, {"app": "web", "n": 3} False"#);
        let log = questions(&reads);
        let unique: HashSet<_> = reads.log.iter().map(|(q, _)| q.clone()).collect();
        assert_eq!(unique.len(), log.len(), "each question once: {log:#?}");
        assert!(
            log.contains(
                &r#"[Key("metadata"), Key("labels"), Key("app")] false = Scalar(String("web"))"#
                    .to_owned()
            ),
            "{log:#?}"
        );
        assert!(
            log.contains(&r#"[Key("spec"), Key("containers")] true = Len(2)"#.to_owned()),
            "{log:#?}"
        );
        assert!(
            log.contains(&r#"[Key("missing")] false = Missing"#.to_owned()),
            "{log:#?}"
        );
        assert!(
            !log.iter().any(|q| q.contains("volumes")),
            "what is not read is not recorded: {log:#?}"
        );
    }

    #[test]
    fn memo_hits_only_when_every_answer_matches() {
        let src =
            "{% if pod.metadata.labels.app == 'web' %}{{ pod.spec.x }}{% else %}other{% endif %}";
        let memo = Memo::default();
        let pod =
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"x": 1, "volumes": ["a"]}});
        let (_, reads) = render(src, &pod);
        memo.insert("k", reads, Arc::new(json!({"rendered": 1})));

        let mut replica = pod.clone();
        replica["spec"]["volumes"] = json!(["kube-api-access-x7k2q"]);
        assert_eq!(
            memo.get("k", &replica).as_deref(),
            Some(&json!({"rendered": 1}))
        );
        assert_eq!(memo.get("other key", &replica), None);
        let mut changed = pod.clone();
        changed["spec"]["x"] = json!(2);
        assert_eq!(
            memo.get("k", &changed),
            None,
            "a value the render read differs"
        );

        // A pod taking the other branch asks fewer questions; both are remembered side by side.
        let other = json!({"metadata": {"labels": {"app": "db"}}});
        let (_, reads) = render(src, &other);
        memo.insert("k", reads, Arc::new(json!({"rendered": 2})));
        assert_eq!(
            memo.get("k", &other).as_deref(),
            Some(&json!({"rendered": 2}))
        );
        assert_eq!(
            memo.get("k", &replica).as_deref(),
            Some(&json!({"rendered": 1}))
        );
    }

    #[test]
    fn enumerated_maps_are_keyed_on_their_keys() {
        let src = "{% for k in pod.metadata.annotations %}{{ k }}{% endfor %}";
        let memo = Memo::default();
        let pod = json!({"metadata": {"annotations": {"a": "1"}}});
        let (_, reads) = render(src, &pod);
        memo.insert("k", reads, Arc::new(json!({})));
        assert!(
            memo.get("k", &json!({"metadata": {"annotations": {"a": "2"}}}))
                .is_some()
        );
        assert!(
            memo.get(
                "k",
                &json!({"metadata": {"annotations": {"a": "1", "b": "1"}}})
            )
            .is_none()
        );
    }

    #[test]
    fn memo_is_bounded() {
        let memo = Memo::default();
        for i in 0..LEAVES_MAX + 10 {
            let pod = json!({"n": i});
            let (_, reads) = render("{{ pod.n }}", &pod);
            memo.insert("k", reads, Arc::new(json!(i)));
        }
        let tries = memo.inner.read().unwrap();
        assert!(tries.leaves <= LEAVES_MAX, "{}", tries.leaves);
    }
}
