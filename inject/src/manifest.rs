//! Offline injection of Kubernetes manifests (kube-inject): a multi-document YAML stream in,
//! the same stream out with the pod templates of workloads injected. Documents that are not
//! injected are copied byte for byte; only injected documents are re-serialised.

use serde::Serialize;
use serde_json::{Value, json};

use super::{Config, InjectError, InjectRequest, Outcome, decide, inject, yaml};

/// A failure naming the document or object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("document {index}: not valid YAML: {reason}")]
    Parse { index: usize, reason: String },
    #[error("{object}")]
    Inject {
        object: String,
        #[source]
        source: InjectError,
    },
    #[error("{object}: cannot write the injected object back as YAML: {reason}")]
    Serialize { object: String, reason: String },
}

/// Options shared by every object of one run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub revision: Option<String>,
    pub native_sidecars: Option<bool>,
}

/// The injected stream and one note per object left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub output: String,
    pub skipped: Vec<String>,
}

/// One workload's verdict for `kube-inject check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// `inject`, `skip` or `error`.
    pub verdict: &'static str,
    pub templates: Vec<String>,
    pub reason: String,
}

/// Splits a YAML stream into documents, each with its leading `---` line, so that joining the
/// pieces gives back the input exactly.
pub fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let bare = line
            .trim_start_matches('\u{feff}')
            .trim_end_matches(['\n', '\r']);
        let is_sep = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if is_sep && pos > start {
            docs.push(&text[start..pos]);
            start = pos;
        }
        pos += line.len();
    }
    if pos > start {
        docs.push(&text[start..pos]);
    }
    docs
}

/// The `---` line a document starts with, if any, and its body.
fn separator(doc: &str) -> (&str, &str) {
    if doc.trim_start_matches('\u{feff}').starts_with("---") {
        let end = doc.find('\n').map_or(doc.len(), |i| i + 1);
        (&doc[..end], &doc[end..])
    } else {
        ("", doc)
    }
}

/// Where a workload kind keeps its pod: `None` for the object itself (a Pod).
fn pod_template_path(api_version: &str, kind: &str) -> Option<Option<&'static str>> {
    match (api_version, kind) {
        ("v1", "Pod") => Some(None),
        ("v1", "ReplicationController")
        | ("apps/v1", "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet")
        | ("batch/v1", "Job") => Some(Some("/spec/template")),
        ("batch/v1", "CronJob") => Some(Some("/spec/jobTemplate/spec/template")),
        _ => None,
    }
}

/// A workload found in a document, by its path inside the document.
struct Workload {
    path: String,
    template: Option<&'static str>,
    kind: String,
    name: String,
    namespace: String,
}

fn workloads(doc: &Value, base: &str, out: &mut Vec<Workload>) {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    if (api, kind) == ("v1", "List") {
        for (i, item) in doc["items"].as_array().into_iter().flatten().enumerate() {
            workloads(item, &format!("{base}/items/{i}"), out);
        }
        return;
    }
    if let Some(template) = pod_template_path(api, kind) {
        let meta = &doc["metadata"];
        out.push(Workload {
            path: base.to_owned(),
            template,
            kind: kind.to_owned(),
            name: meta["name"]
                .as_str()
                .or(meta["generateName"].as_str())
                .unwrap_or_default()
                .to_owned(),
            namespace: meta["namespace"].as_str().unwrap_or("default").to_owned(),
        });
    }
}

impl Workload {
    fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// The pod as the engine sees it: a v1 Pod with the template's metadata and spec.
    fn pod(&self, doc: &Value) -> Value {
        let obj = doc.pointer(&self.path).unwrap_or(&Value::Null);
        match self.template {
            None => obj.clone(),
            Some(t) => {
                let tpl = obj.pointer(t).unwrap_or(&Value::Null);
                let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
                for key in ["metadata", "spec"] {
                    if let Some(v) = tpl.get(key) {
                        pod[key] = v.clone();
                    }
                }
                pod
            }
        }
    }

    fn request(&self, opts: &Options) -> InjectRequest {
        InjectRequest {
            namespace: self.namespace.clone(),
            workload_name: self.template.map(|_| self.name.clone()),
            proxy_env: Vec::new(),
            revision: opts.revision.clone(),
            native_sidecars: opts.native_sidecars,
        }
    }

    fn write_back(&self, doc: &mut Value, pod: Value) {
        let Some(obj) = doc.pointer_mut(&self.path) else {
            return;
        };
        match self.template {
            None => *obj = pod,
            Some(t) => {
                if let Some(tpl) = obj.pointer_mut(t).and_then(Value::as_object_mut)
                    && let Value::Object(mut p) = pod
                {
                    for key in ["metadata", "spec"] {
                        if let Some(v) = p.remove(key) {
                            tpl.insert(key.to_owned(), v);
                        }
                    }
                }
            }
        }
    }
}

/// One document's body as kubectl reads it ([`crate::yaml`]); `first_line` is where the body
/// starts in the stream, for the lines in messages.
fn parse(index: usize, body: &str, first_line: usize) -> Result<Value, ManifestError> {
    yaml::parse_document(body, first_line).map_err(|e| ManifestError::Parse { index, reason: e.0 })
}

/// The documents of a stream with their separator, body and the line the body starts on.
/// A byte order mark before the stream is dropped (kubectl accepts one; serde_yaml_ng refuses
/// one before `---`).
fn documents(text: &str) -> impl Iterator<Item = (&str, &str, &str, usize)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut line = 1;
    split_documents(text).into_iter().map(move |doc| {
        let (sep, body) = separator(doc);
        let first_line = line + usize::from(!sep.is_empty());
        line += doc.matches('\n').count();
        (doc, sep, body, first_line)
    })
}

/// Injects every workload of the stream. Nothing is written when any object fails.
pub fn inject_stream(
    text: &str,
    opts: &Options,
    config: &Config,
) -> Result<Injected, ManifestError> {
    let mut output = String::with_capacity(text.len() * 2);
    let mut skipped = Vec::new();
    for (index, (doc, sep, body, first_line)) in documents(text).enumerate() {
        let mut value = parse(index + 1, body, first_line)?;
        let mut found = Vec::new();
        workloads(&value, "", &mut found);
        let mut changed = false;
        for w in &found {
            let pod = w.pod(&value);
            match inject(&pod, &w.request(opts), config) {
                Ok(Outcome::Injected { pod, .. }) => {
                    w.write_back(&mut value, pod);
                    changed = true;
                }
                Ok(Outcome::Skipped(r)) => {
                    skipped.push(format!("{}: not injected: {}", w.describe(), r.message));
                }
                Err(source) => {
                    return Err(ManifestError::Inject {
                        object: w.describe(),
                        source,
                    });
                }
            }
        }
        if changed {
            let yaml = serde_yaml_ng::to_string(&value).map_err(|e| ManifestError::Serialize {
                object: found.first().map(Workload::describe).unwrap_or_default(),
                reason: e.to_string(),
            })?;
            output.push_str(sep);
            output.push_str(&yaml);
        } else {
            output.push_str(doc);
        }
    }
    Ok(Injected { output, skipped })
}

/// The verdict for every workload of the stream, without changing anything.
pub fn check_stream(
    text: &str,
    opts: &Options,
    config: &Config,
) -> Result<Vec<Report>, ManifestError> {
    let mut reports = Vec::new();
    for (index, (_, _, body, first_line)) in documents(text).enumerate() {
        let value = parse(index + 1, body, first_line)?;
        let mut found = Vec::new();
        workloads(&value, "", &mut found);
        for w in found {
            let pod = w.pod(&value);
            let req = w.request(opts);
            let report = |verdict, templates, reason| Report {
                kind: w.kind.clone(),
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                verdict,
                templates,
                reason,
            };
            reports.push(match inject(&pod, &req, config) {
                Err(e) => report("error", Vec::new(), e.to_string()),
                Ok(Outcome::Skipped(r)) => report("skip", Vec::new(), r.message),
                Ok(Outcome::Injected { templates, .. }) => {
                    report("inject", templates, decide(&pod, &req, config).reason)
                }
            });
        }
    }
    Ok(reports)
}

/// The reports as an aligned text table.
pub fn render_table(reports: &[Report]) -> String {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            [
                format!("{}/{}", r.kind, r.name),
                r.namespace.clone(),
                r.verdict.to_uppercase(),
                if r.templates.is_empty() {
                    "-".to_owned()
                } else {
                    r.templates.join(",")
                },
                r.reason.clone(),
            ]
        })
        .collect();
    let header = ["WORKLOAD", "NAMESPACE", "VERDICT", "TEMPLATES", "REASON"].map(str::to_owned);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (i, cell) in row.iter().enumerate() {
            if i < 4 {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

/// The reports as JSON (an array of objects).
pub fn render_json(reports: &[Report]) -> String {
    serde_json::to_string_pretty(reports).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_byte() {
        let text = "# leading comment\na: 1\n---\nb: 2\n--- # note\nc: 3\n---\n";
        let docs = split_documents(text);
        assert_eq!(
            docs,
            [
                "# leading comment\na: 1\n",
                "---\nb: 2\n",
                "--- # note\nc: 3\n",
                "---\n"
            ]
        );
        assert_eq!(docs.concat(), text);
        assert_eq!(split_documents("---\nx: 1"), ["---\nx: 1"]);
        assert!(split_documents("").is_empty());
        // a --- inside a block scalar is indented and does not split
        assert_eq!(split_documents("a: |\n  ---\n  x\n").len(), 1);
    }

    const MERGED_PROBE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: ghcr.io/example/web:1
        ports:
        - containerPort: 8080
        readinessProbe:
          <<: &probe
            httpGet: {path: /ready, port: 8080}
            periodSeconds: 5
        livenessProbe:
          <<: *probe
          periodSeconds: 20
";

    fn injected(text: &str) -> Value {
        let config = Config::embedded().expect("embedded config");
        let out = inject_stream(text, &Options::default(), &config).expect("injects");
        serde_yaml_ng::from_str(&out.output).expect("output is YAML")
    }

    #[test]
    fn a_probe_inherited_through_a_merge_key_is_rewritten() {
        let doc = injected(MERGED_PROBE);
        let containers = doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        let web = containers
            .iter()
            .find(|c| c["name"] == "web")
            .expect("web container");
        for (probe, path, period) in [
            ("readinessProbe", "/app-health/web/readyz", 5),
            ("livenessProbe", "/app-health/web/livez", 20),
        ] {
            assert_eq!(web[probe]["httpGet"]["path"], path, "{probe}: {web}");
            assert_eq!(web[probe]["httpGet"]["port"], 15020, "{probe}");
            assert_eq!(web[probe]["periodSeconds"], period, "{probe}");
            assert!(web[probe].get("<<").is_none(), "{probe} kept the merge key");
        }
    }

    #[test]
    fn a_duplicate_key_is_refused_with_its_document_and_line() {
        let config = Config::embedded().expect("embedded config");
        let text = format!(
            "{MERGED_PROBE}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  name: b\n"
        );
        let err = inject_stream(&text, &Options::default(), &config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 2: not valid YAML: line 30: in metadata: duplicate key \"name\" (kubectl refuses it); first set at line 29"
        );
        assert!(check_stream(&text, &Options::default(), &config).is_err());
    }

    #[test]
    fn a_byte_order_mark_before_a_valid_file_is_accepted() {
        for text in [
            format!("\u{feff}{MERGED_PROBE}"),
            format!("\u{feff}---\n{MERGED_PROBE}"),
            format!("\u{feff}# comment\n---\n{MERGED_PROBE}"),
        ] {
            let doc = injected(&text);
            assert_eq!(doc["kind"], "Deployment", "{text:?}");
        }
    }
}
