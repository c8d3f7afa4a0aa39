//! The Istio value grammar (`outrigger_api::values`, `capture`, `duration`) on arbitrary text:
//! never a panic, and what is accepted round-trips (a parsed list parses again from its parts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use outrigger_api::{capture, duration, values};

fuzz_target!(|text: &str| {
    if let Ok(ports) = values::parse_port_list(text) {
        let again = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(values::parse_port_list(&again), Ok(ports));
    }
    let _ = values::parse_port_selection(text);
    if let Ok(nets) = values::parse_cidr_list(text) {
        let again = nets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(values::parse_cidr_list(&again), Ok(nets));
    }
    let _ = values::parse_cidr_selection(text);
    if let Ok(names) = values::parse_interface_list(text) {
        for name in &names {
            assert!(!name.is_empty() && name.len() <= 15, "{name:?}");
        }
    }
    let _ = values::parse_bool(text);
    let _ = values::parse_inject_switch(text);
    let _ = duration::parse_duration(text);
    let _ = capture::parse_loopback_cidr(text);
    let _ = capture::parse_owner_groups(text, text);
    let _ = capture::parse_mode(text);
});
