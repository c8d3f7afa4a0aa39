//! The CNI plugin's invocation parser (`Command::parse`: the CNI_* environment and the stdin
//! network configuration, prevResult included) on arbitrary input. The input is the environment
//! as `KEY=VALUE` lines, an empty line, then stdin. Never a panic; every error encodes as a CNI
//! error reply.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use outrigger_cni::cni::Command;
use outrigger_cni::cni::result::reencode_result;
use outrigger_cni::config::PluginConfig;

fuzz_target!(|input: &[u8]| {
    let (env_part, stdin) = match input.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&input[..at], &input[at + 2..]),
        None => (input, &b""[..]),
    };
    let env: HashMap<String, String> = String::from_utf8_lossy(env_part)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match Command::parse(|key| env.get(key).cloned(), stdin) {
        Ok(Command::Add(inv) | Command::Del(inv) | Command::Check(inv)) => {
            let _ = inv.args.pod();
            let _ = reencode_result(inv.config.prev_result.as_ref(), inv.config.cni_version);
        }
        Ok(_) => {}
        Err(error) => {
            let reply = error.to_json(PluginConfig::sniff_version(stdin));
            serde_json::from_str::<serde_json::Value>(&reply).expect("the error reply is JSON");
        }
    }
});
