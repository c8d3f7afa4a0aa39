//! Contract tests: the injector's real output fed to the parts that consume it. The default
//! template is rendered (classic, native sidecar, CNI mode, TPROXY, with the traffic annotations
//! set); the `istio-init` / `istio-validation` arguments go to outrigger-iptables' own parser, the
//! injected pod goes to the CNI plugin's pod-to-capture mapping, and the `istio-proxy` env goes to
//! the proxy's formats. Each must accept what the injector wrote, and the two capture paths must
//! agree on every port, range and interface. No root needed.

mod capture;
mod messages;
mod proxy_env;
mod support;
