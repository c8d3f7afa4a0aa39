//! `ProxyConfig` survives JSON and YAML unchanged (until the proxy's loader exists, this is the
//! contract test of the file format).

use outrigger_mesh::{ProxyConfig, ProxyId, resolve};

use crate::support::{CART, STOREFRONT, shop};

#[test]
fn proxy_config_round_trips_through_json_and_yaml() {
    let snapshot = shop();
    for pod in [STOREFRONT, CART] {
        let config = resolve(
            &snapshot,
            &ProxyId::from_pod(&snapshot, pod).expect("pod exists"),
        );
        let json = serde_json::to_string(&config).expect("to JSON");
        let back: ProxyConfig = serde_json::from_str(&json).expect("from JSON");
        assert_eq!(back, config);
        let yaml = serde_yaml_ng::to_string(&config).expect("to YAML");
        let back: ProxyConfig = serde_yaml_ng::from_str(&yaml).expect("from YAML");
        assert_eq!(back, config);
        assert_eq!(config.version.len(), 16);
    }
}
