//! One shared copy of each resource name the proxies subscribe to. 2,000 proxies subscribed
//! to ~20 destinations and their clusters each name the same few thousand resources; each
//! stream's subscription map holds the pooled `Arc<str>`, not a `String` of its own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Least number of names before the pool first forgets the ones no stream holds.
const FIRST_PRUNE: usize = 4096;

/// Resource names, pooled. Names no stream holds any more are forgotten whenever the pool has
/// doubled since it last did, so its size stays within twice the live names (amortised O(1)).
#[derive(Debug)]
pub struct NamePool {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    names: HashSet<Arc<str>>,
    prune_at: usize,
}

impl Default for NamePool {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                names: HashSet::new(),
                prune_at: FIRST_PRUNE,
            }),
        }
    }
}

impl NamePool {
    /// The pooled copy of `name`.
    pub fn intern(&self, name: &str) -> Arc<str> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pooled) = inner.names.get(name) {
            return pooled.clone();
        }
        if inner.names.len() >= inner.prune_at {
            inner.names.retain(|n| Arc::strong_count(n) > 1);
            inner.prune_at = (inner.names.len() * 2).max(FIRST_PRUNE);
        }
        let pooled: Arc<str> = Arc::from(name);
        inner.names.insert(pooled.clone());
        pooled
    }

    /// Names pooled now (held or not yet forgotten).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .names
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_are_one_allocation() {
        let pool = NamePool::default();
        let a = pool.intern("reviews.shop.svc.cluster.local:9080");
        let b = pool.intern(&String::from("reviews.shop.svc.cluster.local:9080"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = pool.intern("ratings.shop.svc.cluster.local:9080");
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn names_nobody_holds_are_forgotten_as_the_pool_grows() {
        let pool = NamePool::default();
        let kept: Vec<Arc<str>> = (0..10).map(|i| pool.intern(&format!("kept-{i}"))).collect();
        for i in 0..10 * FIRST_PRUNE {
            drop(pool.intern(&format!("dropped-{i}")));
            assert!(
                pool.len() <= 2 * FIRST_PRUNE + 1,
                "{} names pooled",
                pool.len()
            );
        }
        for (i, name) in kept.iter().enumerate() {
            assert!(
                Arc::ptr_eq(name, &pool.intern(&format!("kept-{i}"))),
                "held names stay pooled"
            );
        }
    }
}
