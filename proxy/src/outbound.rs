//! Outbound capture (15001): the local app's redirected connections go to their original
//! destination from the proxy's own address; UID 1337 keeps them out of the capture rules.

use std::net::IpAddr;

use crate::addr::OrigDstAddr;

/// Outbound upstream connections use the kernel's choice of source address.
pub fn upstream_source(_orig_dst: &OrigDstAddr) -> Option<IpAddr> {
    None
}
