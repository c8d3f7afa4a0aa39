//! Pure edits of a network configuration: `.conf` → `.conflist`, our entry last, our entry out.

use serde_json::{Map, Value};

use crate::names;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConflistError {
    #[error("network configuration is not a JSON object")]
    NotAnObject,
    #[error("network configuration list has no \"plugins\" list")]
    NoPlugins,
    #[error("network configuration has neither \"plugins\" nor \"type\"")]
    NoType,
}

/// Whether `config` is a usable primary configuration, the way the runtime judges it: a list with
/// at least one plugin, or a single plugin with a type.
pub fn is_valid(config: &Value, is_list: bool) -> bool {
    if is_list {
        config
            .get("plugins")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty())
    } else {
        config
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    }
}

/// Turns a single-plugin `.conf` into the equivalent list; the plugin entry keeps every field.
pub fn conf_to_conflist(conf: &Value) -> Result<Value, ConflistError> {
    let object = conf.as_object().ok_or(ConflistError::NotAnObject)?;
    if !object.get("type").is_some_and(Value::is_string) {
        return Err(ConflistError::NoType);
    }
    let mut list = Map::new();
    for key in ["cniVersion", "name"] {
        if let Some(value) = object.get(key) {
            list.insert(key.into(), value.clone());
        }
    }
    list.insert("plugins".into(), Value::Array(vec![conf.clone()]));
    Ok(Value::Object(list))
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(names::PLUGIN_TYPE)
}

fn plugins_mut(list: &mut Value) -> Result<&mut Vec<Value>, ConflistError> {
    list.as_object_mut()
        .ok_or(ConflistError::NotAnObject)?
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or(ConflistError::NoPlugins)
}

/// The list with every older entry of ours removed and `entry` appended last. Every other field
/// and plugin is kept as it was.
pub fn with_entry(list: &Value, entry: &Value) -> Result<Value, ConflistError> {
    let mut list = list.clone();
    let plugins = plugins_mut(&mut list)?;
    plugins.retain(|p| !is_ours(p));
    plugins.push(entry.clone());
    Ok(list)
}

/// The list without our entries.
pub fn without_entry(list: &Value) -> Result<Value, ConflistError> {
    let mut list = list.clone();
    plugins_mut(&mut list)?.retain(|p| !is_ours(p));
    Ok(list)
}

/// True when the list ends with exactly `entry` and holds no other entry of ours.
pub fn chain_is_correct(list: &Value, entry: &Value) -> bool {
    let Some(plugins) = list.get("plugins").and_then(Value::as_array) else {
        return false;
    };
    plugins.last() == Some(entry) && plugins.iter().filter(|p| is_ours(p)).count() == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours() -> Value {
        json!({"type": "outrigger-cni", "kubeconfig": "/etc/cni/net.d/outrigger-cni-kubeconfig", "log_level": "info"})
    }

    fn bridge_conf() -> Value {
        json!({
            "cniVersion": "0.4.0",
            "name": "bridge",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}
        })
    }

    fn calico_conflist() -> Value {
        json!({
            "name": "k8s-pod-network",
            "cniVersion": "0.3.1",
            "plugins": [
                {"type": "calico", "log_level": "info", "datastore_type": "kubernetes", "nodename": "node-a",
                 "mtu": 0, "ipam": {"type": "calico-ipam"}, "policy": {"type": "k8s"},
                 "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}},
                {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}}
            ]
        })
    }

    fn flannel_conflist() -> Value {
        json!({
            "name": "cbr0",
            "cniVersion": "1.0.0",
            "disableCheck": true,
            "plugins": [
                {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
    }

    #[test]
    fn bridge_conf_becomes_a_list_with_us_last() {
        let list = conf_to_conflist(&bridge_conf()).unwrap();
        assert_eq!(list["cniVersion"], "0.4.0");
        assert_eq!(list["name"], "bridge");
        assert_eq!(list["plugins"], json!([bridge_conf()]));
        let merged = with_entry(&list, &ours()).unwrap();
        assert_eq!(merged["plugins"], json!([bridge_conf(), ours()]));
        assert!(chain_is_correct(&merged, &ours()));
    }

    #[test]
    fn calico_and_flannel_lists_keep_everything_and_gain_us_last() {
        for list in [calico_conflist(), flannel_conflist()] {
            let merged = with_entry(&list, &ours()).unwrap();
            let mut expected = list.clone();
            expected["plugins"].as_array_mut().unwrap().push(ours());
            assert_eq!(merged, expected);
            assert!(!chain_is_correct(&list, &ours()));
            assert!(chain_is_correct(&merged, &ours()));
        }
    }

    #[test]
    fn an_older_entry_of_ours_is_replaced_not_duplicated() {
        let mut list = calico_conflist();
        let old = json!({"type": "outrigger-cni", "kubeconfig": "/old", "log_level": "debug"});
        list["plugins"]
            .as_array_mut()
            .unwrap()
            .insert(1, old.clone());
        assert!(!chain_is_correct(&list, &ours()));
        let merged = with_entry(&list, &ours()).unwrap();
        let mut expected = calico_conflist();
        expected["plugins"].as_array_mut().unwrap().push(ours());
        assert_eq!(merged, expected);
        // Merging again changes nothing.
        assert_eq!(with_entry(&merged, &ours()).unwrap(), merged);
    }

    #[test]
    fn ours_last_but_stale_is_not_correct() {
        let mut list = flannel_conflist();
        list["plugins"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "outrigger-cni", "kubeconfig": "/old"}));
        assert!(!chain_is_correct(&list, &ours()));
    }

    #[test]
    fn removing_our_entry_restores_the_original() {
        let merged = with_entry(&calico_conflist(), &ours()).unwrap();
        assert_eq!(without_entry(&merged).unwrap(), calico_conflist());
    }

    #[test]
    fn validity_and_errors() {
        assert!(is_valid(&bridge_conf(), false));
        assert!(is_valid(&calico_conflist(), true));
        assert!(!is_valid(&json!({"name": "x", "plugins": []}), true));
        assert!(!is_valid(&json!({"name": "x"}), false));
        assert_eq!(
            conf_to_conflist(&json!([1])),
            Err(ConflistError::NotAnObject)
        );
        assert_eq!(
            conf_to_conflist(&json!({"name": "x"})),
            Err(ConflistError::NoType)
        );
        assert_eq!(
            with_entry(&json!({"name": "x"}), &ours()),
            Err(ConflistError::NoPlugins)
        );
    }
}
