//! The outrigger-cni chained plugin and node installer.
