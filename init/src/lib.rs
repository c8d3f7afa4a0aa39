//! Capture configuration, iptables rule planning and rendering, and the rule applier.
