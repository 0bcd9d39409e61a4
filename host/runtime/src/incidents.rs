//! Counts, per actor type, what the sandbox stopped or refused: turns that
//! trapped, ran out of memory or time, or went past a limit, and log lines
//! dropped. Each is also logged where it happens; the counts are what
//! `GET /v1/plugins` shows an operator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

/// What the sandbox counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incident {
    /// A turn trapped (a panic, an unreachable, a bad memory access...).
    Trapped,
    /// A turn wanted more linear memory than its limit.
    OutOfMemory,
    /// A turn ran past its deadline, of guest time or of wall-clock time.
    DeadlineExceeded,
    /// A turn went past another limit (timers, proxies, a copy too large).
    LimitExceeded,
    /// A request for more than an actor's quota (reminders, stored state)
    /// was refused and the turn went on.
    QuotaRefused,
    /// A log line was dropped: over the actor's rate.
    LogLineDropped,
}

impl Incident {
    const ALL: [Incident; 6] = [
        Incident::Trapped,
        Incident::OutOfMemory,
        Incident::DeadlineExceeded,
        Incident::LimitExceeded,
        Incident::QuotaRefused,
        Incident::LogLineDropped,
    ];

    /// The incident's name as `GET /v1/plugins` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Incident::Trapped => "trapped",
            Incident::OutOfMemory => "out-of-memory",
            Incident::DeadlineExceeded => "deadline-exceeded",
            Incident::LimitExceeded => "limit-exceeded",
            Incident::QuotaRefused => "quota-refused",
            Incident::LogLineDropped => "log-lines-dropped",
        }
    }
}

/// The counts of one actor type.
#[derive(Debug, Default)]
pub(crate) struct Counts([AtomicU64; Incident::ALL.len()]);

impl Counts {
    /// Counts one incident of `kind`.
    pub(crate) fn add(&self, kind: Incident) {
        if let Some(count) = self.0.get(kind as usize) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The counts of every actor type on a host, since it started.
#[derive(Debug, Default)]
pub(crate) struct Incidents {
    by_type: DashMap<Arc<str>, Arc<Counts>>,
}

impl Incidents {
    /// The counts of `actor_type`.
    pub(crate) fn of(&self, actor_type: &Arc<str>) -> Arc<Counts> {
        if let Some(counts) = self.by_type.get(actor_type) {
            return counts.clone();
        }
        self.by_type.entry(actor_type.clone()).or_default().clone()
    }

    /// What `actor_type` has counted, by incident name; every incident is
    /// listed, counted or not.
    pub(crate) fn read(&self, actor_type: &str) -> BTreeMap<&'static str, u64> {
        let counts = self.by_type.get(actor_type).map(|c| c.clone());
        Incident::ALL
            .iter()
            .map(|kind| {
                let n = counts
                    .as_ref()
                    .and_then(|c| c.0.get(*kind as usize))
                    .map_or(0, |n| n.load(Ordering::Relaxed));
                (kind.name(), n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_type_and_every_kind_is_listed() {
        let incidents = Incidents::default();
        let player: Arc<str> = Arc::from("player");
        incidents.of(&player).add(Incident::Trapped);
        for _ in 0..7 {
            incidents.of(&player).add(Incident::LogLineDropped);
        }
        let read = incidents.read("player");
        assert_eq!(read.len(), Incident::ALL.len());
        assert_eq!(read.get("trapped"), Some(&1));
        assert_eq!(read.get("log-lines-dropped"), Some(&7));
        assert_eq!(incidents.read("room").values().sum::<u64>(), 0);
    }
}
