//! Subscription requests cut to a size: a client's resubscription after a reconnect (every
//! name it holds, with its version) and the clusters a large response names are sent as
//! several requests of at most [`MAX_REQUEST_BYTES`] of names each, not one large request.
//!
//! Why: tonic keeps each stream's decode buffer for the stream's life at the size of the
//! largest request it read (it starts at `codec::BUFFER_BYTES`), so one 6 KiB resubscription
//! costs pilot 8 KiB per connected proxy until the proxy disconnects (16 MiB of pilot's heap
//! with 2,000 proxies in bench/pilot-load). Pilot reads a name's `initial_resource_versions`
//! entry in the request that subscribes it, so each name's version goes with it.

use crate::envoy::service::discovery::v3::DeltaDiscoveryRequest;

/// At most this many bytes of resource names (and their versions) per request; a name larger
/// than this goes alone.
pub const MAX_REQUEST_BYTES: usize = 768;

/// `request` as requests of at most [`MAX_REQUEST_BYTES`] of names each, in order: the first
/// keeps the node, the nonce and the error detail; every one keeps the type URL. A request
/// within the bound comes back as it is; nothing is dropped or repeated.
pub fn split_request(request: DeltaDiscoveryRequest) -> Vec<DeltaDiscoveryRequest> {
    split_at(request, MAX_REQUEST_BYTES)
}

fn split_at(mut request: DeltaDiscoveryRequest, max_bytes: usize) -> Vec<DeltaDiscoveryRequest> {
    let names_bytes = |r: &DeltaDiscoveryRequest| -> usize {
        let subscribe: usize = r.resource_names_subscribe.iter().map(String::len).sum();
        let unsubscribe: usize = r.resource_names_unsubscribe.iter().map(String::len).sum();
        let versions: usize = r
            .initial_resource_versions
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum();
        subscribe + unsubscribe + versions
    };
    if names_bytes(&request) <= max_bytes {
        return vec![request];
    }
    let subscribe = std::mem::take(&mut request.resource_names_subscribe);
    let unsubscribe = std::mem::take(&mut request.resource_names_unsubscribe);
    let mut versions = std::mem::take(&mut request.initial_resource_versions);
    let type_url = request.type_url.clone();
    let empty = || DeltaDiscoveryRequest {
        type_url: type_url.clone(),
        ..Default::default()
    };
    let mut out = Vec::new();
    // The first keeps the rest of the request (node, nonce, error detail).
    let mut current = request;
    let mut size = 0;
    let mut room = |current: &mut DeltaDiscoveryRequest, size: &mut usize, bytes: usize| {
        if *size > 0 && *size + bytes > max_bytes {
            out.push(std::mem::replace(current, empty()));
            *size = 0;
        }
        *size += bytes;
    };
    for name in unsubscribe {
        room(&mut current, &mut size, name.len());
        current.resource_names_unsubscribe.push(name);
    }
    for name in subscribe {
        let version = versions.remove(&name);
        let bytes = name.len() + version.as_ref().map_or(0, |v| name.len() + v.len());
        room(&mut current, &mut size, bytes);
        if let Some(version) = version {
            current
                .initial_resource_versions
                .insert(name.clone(), version);
        }
        current.resource_names_subscribe.push(name);
    }
    // Versions of names the client holds but did not list (pilot keeps those too).
    let mut rest: Vec<(String, String)> = versions.into_iter().collect();
    rest.sort();
    for (name, version) in rest {
        room(&mut current, &mut size, name.len() + version.len());
        current.initial_resource_versions.insert(name, version);
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::config::core::v3::Node;
    use std::collections::HashMap;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("outbound|9080|v1|{prefix}-{i}.shop.svc.cluster.local"))
            .collect()
    }

    #[test]
    fn a_small_request_is_sent_as_it_is() {
        let request = DeltaDiscoveryRequest {
            type_url: "t".into(),
            resource_names_subscribe: names("a", 3),
            response_nonce: "7".into(),
            ..Default::default()
        };
        assert_eq!(split_request(request.clone()), vec![request]);
    }

    #[test]
    fn a_resubscription_is_cut_to_the_bound_and_loses_nothing() {
        let subscribe = names("svc", 60);
        let versions: HashMap<String, String> = subscribe
            .iter()
            .take(40)
            .map(|n| (n.clone(), format!("{:016x}", n.len())))
            .chain([("held-only".to_owned(), "v9".to_owned())])
            .collect();
        let request = DeltaDiscoveryRequest {
            node: Some(Node {
                id: "sidecar~10.0.0.1~p.shop~shop.svc.cluster.local".into(),
                cluster: String::new(),
            }),
            type_url: "type.outrigger.dev/outrigger.v1alpha1.Endpoints".into(),
            resource_names_subscribe: subscribe.clone(),
            resource_names_unsubscribe: vec!["gone".into()],
            initial_resource_versions: versions.clone(),
            ..Default::default()
        };
        let parts = split_request(request.clone());
        assert!(parts.len() > 3, "{} requests", parts.len());
        assert_eq!(parts[0].node, request.node, "the node goes first");
        assert!(parts[1..].iter().all(|p| p.node.is_none()));
        for part in &parts {
            assert_eq!(part.type_url, request.type_url);
            let bytes: usize = part
                .resource_names_subscribe
                .iter()
                .map(String::len)
                .sum::<usize>()
                + part
                    .initial_resource_versions
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>();
            assert!(bytes <= MAX_REQUEST_BYTES, "{bytes} bytes in one request");
            // Each subscribed name's version travels with it.
            for name in &part.resource_names_subscribe {
                assert_eq!(
                    part.initial_resource_versions.get(name),
                    versions.get(name),
                    "{name}"
                );
            }
        }
        let all: Vec<String> = parts
            .iter()
            .flat_map(|p| p.resource_names_subscribe.clone())
            .collect();
        assert_eq!(all, subscribe, "every name once, in order");
        let all_versions: HashMap<String, String> = parts
            .iter()
            .flat_map(|p| p.initial_resource_versions.clone())
            .collect();
        assert_eq!(all_versions, versions);
        let unsubscribed: Vec<String> = parts
            .iter()
            .flat_map(|p| p.resource_names_unsubscribe.clone())
            .collect();
        assert_eq!(unsubscribed, vec!["gone".to_owned()]);
    }

    #[test]
    fn a_name_larger_than_the_bound_goes_alone() {
        let big = "x".repeat(2 * MAX_REQUEST_BYTES);
        let request = DeltaDiscoveryRequest {
            type_url: "t".into(),
            resource_names_subscribe: vec!["a".into(), big.clone(), "b".into()],
            ..Default::default()
        };
        let parts = split_at(request, MAX_REQUEST_BYTES);
        let lists: Vec<Vec<String>> = parts
            .into_iter()
            .map(|p| p.resource_names_subscribe)
            .collect();
        assert_eq!(
            lists,
            vec![vec!["a".to_owned()], vec![big], vec!["b".to_owned()]]
        );
    }
}
