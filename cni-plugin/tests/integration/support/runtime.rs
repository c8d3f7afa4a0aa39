//! Calls a plugin chain exactly as a container runtime does (libcni semantics): each plugin gets
//! the list's cniVersion and name, the previous result, and the CNI_* environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// A plugin that failed: its exit status and the error JSON it printed.
#[derive(Debug)]
pub struct PluginFailure {
    pub plugin: String,
    pub stdout: String,
    pub stderr: String,
}

impl PluginFailure {
    pub fn code(&self) -> u64 {
        serde_json::from_str::<Value>(&self.stdout)
            .ok()
            .and_then(|v| v["code"].as_u64())
            .unwrap_or_else(|| {
                panic!(
                    "{} failed without error JSON; stderr: {}",
                    self.plugin, self.stderr
                )
            })
    }
}

/// The environment of one sandbox.
pub struct Sandbox<'a> {
    pub container_id: String,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub cni_args: String,
    pub cni_path: Vec<PathBuf>,
}

/// The directory of our plugin binary plus Debian's plugins.
pub fn cni_path() -> Vec<PathBuf> {
    let ours = Path::new(env!("CARGO_BIN_EXE_outrigger-cni"))
        .parent()
        .expect("binary has a directory")
        .to_owned();
    vec![PathBuf::from("/usr/lib/cni"), ours]
}

/// Runs one plugin binary with `command` and `config` on stdin.
pub fn invoke(
    sandbox: &Sandbox<'_>,
    command: &str,
    plugin: &str,
    config: &Value,
) -> Result<Option<Value>, PluginFailure> {
    let binary = sandbox
        .cni_path
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("plugin {plugin} not found in {:?}", sandbox.cni_path));
    let path = std::env::join_paths(&sandbox.cni_path).expect("CNI_PATH joins");
    let mut child = Command::new(binary)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &sandbox.container_id)
        .env("CNI_NETNS", sandbox.netns)
        .env("CNI_IFNAME", sandbox.ifname)
        .env("CNI_ARGS", &sandbox.cni_args)
        .env("CNI_PATH", path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plugin starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(config.to_string().as_bytes())
            .expect("config written to stdin");
    }
    let output = child.wait_with_output().expect("plugin finishes");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(PluginFailure {
            plugin: plugin.into(),
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    let value = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("{plugin} printed non-JSON {stdout:?}: {err}"));
    Ok(Some(value))
}

fn plugin_config(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut config = plugin.clone();
    config["cniVersion"] = list["cniVersion"].clone();
    config["name"] = list["name"].clone();
    if let Some(prev) = prev {
        config["prevResult"] = prev.clone();
    }
    config
}

fn plugins(list: &Value) -> Vec<Value> {
    list["plugins"]
        .as_array()
        .expect("conflist has plugins")
        .clone()
}

/// ADD through the whole list; every plugin's result in order (the last is the final one).
pub fn add(list: &Value, sandbox: &Sandbox<'_>) -> Result<Vec<Value>, PluginFailure> {
    let mut results: Vec<Value> = Vec::new();
    for plugin in plugins(list) {
        let kind = plugin["type"]
            .as_str()
            .expect("plugin has a type")
            .to_string();
        let result = invoke(
            sandbox,
            "ADD",
            &kind,
            &plugin_config(list, &plugin, results.last()),
        )?;
        results.push(result.unwrap_or_else(|| panic!("{kind} ADD printed no result")));
    }
    Ok(results)
}

/// DEL through the list in reverse order, each with the cached ADD result.
pub fn del(
    list: &Value,
    sandbox: &Sandbox<'_>,
    cached: Option<&Value>,
) -> Result<(), PluginFailure> {
    for plugin in plugins(list).iter().rev() {
        let kind = plugin["type"].as_str().expect("plugin has a type");
        invoke(sandbox, "DEL", kind, &plugin_config(list, plugin, cached))?;
    }
    Ok(())
}
