//! Outlier detection as Envoy applies Istio's `outlierDetection`: per endpoint, consecutive 5xx
//! (local-origin failures count as 503/504) and consecutive gateway errors (502, 503, 504,
//! connect failures, resets, timeouts) eject it for `baseEjectionTime` times its ejection count
//! (capped at Envoy's 300 s `max_ejection_time`, or the base when that is larger), never more
//! than `maxEjectionPercent` of the cluster (but always one), and below `minHealthPercent` of
//! endpoints left the load balancer ignores ejections (panic mode).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outrigger_mesh::config::OutlierDetection;

use crate::l7::request::Outcome;

/// Envoy's default `max_ejection_time` (Istio does not set it).
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// The cluster's policy, from the model (Istio's defaults already filled in by resolve).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `consecutive5xxErrors`; 0 turns this detector off (Istio's rule).
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors`; 0 or unset: off.
    pub consecutive_gateway: u32,
    /// `interval`: one ejection count is forgiven per interval spent back in service.
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
    /// `minHealthPercent` (Envoy's `healthy_panic_threshold`); Istio's default 0 disables
    /// panic mode.
    pub min_health_percent: u32,
}

impl Policy {
    pub fn from_model(model: &OutlierDetection) -> Self {
        Policy {
            consecutive_5xx: model.consecutive_5xx_errors,
            consecutive_gateway: model.consecutive_gateway_errors.unwrap_or(0),
            interval: Duration::from_millis(model.interval_ms.max(1)),
            base_ejection: Duration::from_millis(model.base_ejection_time_ms),
            max_ejection_percent: model.max_ejection_percent.min(100),
            min_health_percent: model.min_health_percent.unwrap_or(0).min(100),
        }
    }

    /// Whether `usable` endpoints out of `healthy` are below `minHealthPercent` (panic: balance
    /// over all healthy endpoints, ejected or not).
    pub fn panics(&self, usable: usize, healthy: usize) -> bool {
        self.min_health_percent > 0
            && healthy > 0
            && (usable as u64) * 100 < u64::from(self.min_health_percent) * healthy as u64
    }

    /// Whether one more ejection is allowed when `ejected` of `total` endpoints are out: below
    /// `maxEjectionPercent`, and always the first one (Envoy: "will eject at least one host
    /// regardless of the value").
    pub fn may_eject(&self, ejected: usize, total: usize) -> bool {
        ejected == 0 || (ejected as u64) * 100 < u64::from(self.max_ejection_percent) * total as u64
    }

    /// How long the `count`-th ejection lasts.
    pub fn ejection_time(&self, count: u32) -> Duration {
        let cap = MAX_EJECTION.max(self.base_ejection);
        self.base_ejection.saturating_mul(count.max(1)).min(cap)
    }
}

/// What one try told the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Success,
    /// A 5xx; `gateway` for 502/503/504 and the local-origin failures mapped to them.
    ServerError {
        gateway: bool,
    },
}

impl Observed {
    /// Envoy's view of a try: a response by its status (a trailers-only gRPC status by its
    /// HTTP mapping), connect failures and resets as 503, timeouts as 504.
    pub fn of(outcome: Outcome) -> Self {
        let status = match outcome {
            Outcome::ConnectFailure | Outcome::Reset => 503,
            Outcome::PerTryTimeout => 504,
            Outcome::Response(200, Some(grpc)) => grpc_to_http(grpc),
            Outcome::Response(status, _) => status,
        };
        Self::of_status(status)
    }

    /// A route timeout while the try was in flight (Envoy: a local-origin timeout).
    pub fn timeout() -> Self {
        Self::of_status(504)
    }

    fn of_status(status: u16) -> Self {
        if (500..600).contains(&status) {
            Observed::ServerError {
                gateway: matches!(status, 502..=504),
            }
        } else {
            Observed::Success
        }
    }
}

/// gRPC status to HTTP status, as Envoy maps it for outlier detection
/// (`Grpc::Utility::grpcToHttpStatus`).
fn grpc_to_http(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        2 | 13 | 15 => 500,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// Milliseconds since the process's first use of this clock, plus one (0 means "never").
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// One endpoint's detector state (shared with the previous configuration's entry for the same
/// address, so a reload does not return an ejected endpoint early).
#[derive(Debug, Default)]
pub struct Detector {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// `now_ms()` at which the current or last ejection ends; 0: never ejected.
    ejected_until: AtomicU64,
    /// The ejection count the next ejection time is multiplied by (forgiven one per interval
    /// back in service).
    multiplier: AtomicU32,
    /// Ejections since start, for `/clusters`.
    ejections: AtomicU32,
}

impl Detector {
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Milliseconds of ejection left (0 when in service).
    pub fn ejected_for_ms(&self, now: u64) -> u64 {
        self.ejected_until
            .load(Ordering::Relaxed)
            .saturating_sub(now)
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Counts one try; `true` when a threshold was reached (the caller decides whether the
    /// cluster allows the ejection). The counters restart either way, as Envoy's.
    pub fn observe(&self, policy: &Policy, observed: Observed) -> bool {
        let Observed::ServerError { gateway } = observed else {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            return false;
        };
        let errors = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let gateway_errors = if gateway {
            self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let tripped = (policy.consecutive_5xx > 0 && errors >= policy.consecutive_5xx)
            || (policy.consecutive_gateway > 0 && gateway_errors >= policy.consecutive_gateway);
        if tripped {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        tripped
    }

    /// Ejects from `now`; returns how long for.
    pub fn eject(&self, policy: &Policy, now: u64) -> Duration {
        let last_end = self.ejected_until.load(Ordering::Relaxed);
        let forgiven = if last_end == 0 {
            0
        } else {
            let back_for = now.saturating_sub(last_end);
            let interval = u64::try_from(policy.interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            u32::try_from(back_for / interval).unwrap_or(u32::MAX)
        };
        let count = self
            .multiplier
            .load(Ordering::Relaxed)
            .saturating_sub(forgiven)
            .saturating_add(1);
        self.multiplier.store(count, Ordering::Relaxed);
        let time = policy.ejection_time(count);
        let millis = u64::try_from(time.as_millis()).unwrap_or(u64::MAX);
        self.ejected_until
            .store(now.saturating_add(millis.max(1)), Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            consecutive_5xx: 3,
            consecutive_gateway: 0,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }

    #[test]
    fn consecutive_5xx_trip_only_without_a_success_between() {
        let d = Detector::default();
        let p = policy();
        let err = Observed::ServerError { gateway: false };
        assert!(!d.observe(&p, err));
        assert!(!d.observe(&p, err));
        assert!(
            !d.observe(&p, Observed::Success),
            "a success restarts the count"
        );
        assert!(!d.observe(&p, err));
        assert!(!d.observe(&p, err));
        assert!(d.observe(&p, err), "third in a row");
        assert!(!d.observe(&p, err), "the count restarted after the trip");
    }

    #[test]
    fn gateway_errors_have_their_own_threshold_and_a_500_breaks_their_run() {
        let d = Detector::default();
        let p = Policy {
            consecutive_5xx: 0, // off
            consecutive_gateway: 2,
            ..policy()
        };
        let gw = Observed::ServerError { gateway: true };
        assert!(!d.observe(&p, gw));
        assert!(!d.observe(&p, Observed::ServerError { gateway: false }));
        assert!(!d.observe(&p, gw));
        assert!(d.observe(&p, gw));
        let off = Policy {
            consecutive_5xx: 0,
            consecutive_gateway: 0,
            ..policy()
        };
        for _ in 0..100 {
            assert!(!d.observe(&off, gw), "both detectors off");
        }
    }

    #[test]
    fn outcomes_map_as_envoy_maps_them() {
        assert_eq!(
            Observed::of(Outcome::ConnectFailure),
            Observed::ServerError { gateway: true }
        );
        assert_eq!(
            Observed::of(Outcome::PerTryTimeout),
            Observed::ServerError { gateway: true }
        );
        assert_eq!(
            Observed::of(Outcome::Response(500, None)),
            Observed::ServerError { gateway: false }
        );
        assert_eq!(
            Observed::of(Outcome::Response(502, None)),
            Observed::ServerError { gateway: true }
        );
        assert_eq!(
            Observed::of(Outcome::Response(404, None)),
            Observed::Success
        );
        // Trailers-only gRPC UNAVAILABLE is a 503, INTERNAL a 500, OK a success.
        assert_eq!(
            Observed::of(Outcome::Response(200, Some(14))),
            Observed::ServerError { gateway: true }
        );
        assert_eq!(
            Observed::of(Outcome::Response(200, Some(13))),
            Observed::ServerError { gateway: false }
        );
        assert_eq!(
            Observed::of(Outcome::Response(200, Some(0))),
            Observed::Success
        );
    }

    #[test]
    fn ejection_time_grows_with_the_count_and_is_forgiven_per_interval() {
        let d = Detector::default();
        let p = policy();
        let t0 = 1_000;
        assert_eq!(d.eject(&p, t0), Duration::from_secs(30));
        assert!(d.is_ejected(t0 + 29_999));
        assert!(!d.is_ejected(t0 + 30_000), "back after the base time");
        // Ejected again 5 s after coming back (less than one interval): twice the base.
        let t1 = t0 + 35_000;
        assert_eq!(d.eject(&p, t1), Duration::from_secs(60));
        // Back at t1 + 60 s, then 25 s (two intervals) in service: count 2 - 2 + 1 = 1.
        let t2 = t1 + 60_000 + 25_000;
        assert_eq!(d.eject(&p, t2), Duration::from_secs(30));
        assert_eq!(d.ejections(), 3);
    }

    #[test]
    fn ejection_time_is_capped_at_envoys_max_ejection_time() {
        let p = policy();
        assert_eq!(p.ejection_time(100), Duration::from_secs(300));
        let long = Policy {
            base_ejection: Duration::from_secs(600),
            ..policy()
        };
        assert_eq!(long.ejection_time(3), Duration::from_secs(600));
    }

    #[test]
    fn max_ejection_percent_always_allows_one_and_min_health_panics() {
        let p = policy(); // 10 %
        assert!(p.may_eject(0, 3), "the first one always");
        assert!(!p.may_eject(1, 3), "33 % is past 10 %");
        assert!(p.may_eject(1, 20), "5 % < 10 %");
        assert!(!p.may_eject(2, 20), "10 % is the cap");
        let all = Policy {
            max_ejection_percent: 100,
            ..policy()
        };
        assert!(all.may_eject(2, 3));
        assert!(!p.panics(0, 3), "minHealthPercent 0: never panic");
        let half = Policy {
            min_health_percent: 50,
            ..policy()
        };
        assert!(half.panics(1, 3));
        assert!(!half.panics(2, 3));
    }
}
