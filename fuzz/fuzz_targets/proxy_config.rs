//! The proxy's configuration file (`--config-file`, the `ProxyConfig` of `outrigger-routes
//! build`; pilot's stream carries the same types) on arbitrary text: `parse` then the run-time
//! state `Loaded::new` (routes compiled, endpoints, `consistentHash`, outlier policy). Never a
//! panic; a text refused names the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use outrigger_proxy::l7::source::{Loaded, parse};

fuzz_target!(|text: &str| {
    let path = Path::new("/etc/outrigger/proxy.json");
    match parse(text, path) {
        Ok(config) => {
            let _ = Loaded::new(config);
        }
        Err(error) => assert!(
            error.to_string().starts_with("/etc/outrigger/proxy.json"),
            "{error}"
        ),
    }
});
