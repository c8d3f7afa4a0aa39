//! The env formats the injector writes and the proxy reads (`outrigger_api::proxy_env`:
//! `ISTIO_KUBE_APP_PROBERS`, `ISTIO_PROMETHEUS_ANNOTATIONS`) on arbitrary text: never a panic,
//! and what is accepted round-trips through the injector's encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outrigger_api::proxy_env::{AppProbers, PrometheusScrape};

fuzz_target!(|text: &str| {
    if let Ok(probers) = AppProbers::from_json(text) {
        let again = AppProbers::from_json(&probers.to_json()).expect("written probers read back");
        assert_eq!(again, probers);
    }
    if let Ok(scrape) = PrometheusScrape::from_json(text) {
        let again =
            PrometheusScrape::from_json(&scrape.to_json()).expect("written scrape reads back");
        assert_eq!(again, scrape);
        let _ = scrape.is_on();
    }
});
