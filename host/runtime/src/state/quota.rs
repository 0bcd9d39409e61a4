//! State quotas: how many rows, and how many bytes of values, one actor may
//! keep stored.
//!
//! An actor's usage is what its own writes added, in any table and under
//! any key of its type: a put of a new row adds a row and its bytes, a put
//! over a row replaces that row's bytes, a delete takes the row and its
//! bytes off (whoever wrote it). A write that would take the usage past the
//! quota is refused and stores nothing; one that shrinks it always goes
//! through, so an actor over a lowered quota can clean up.
//!
//! Each backend keeps the usage beside the rows and updates both in one
//! atomic step: a row of its own in the memory and embedded stores
//! ([`Quota::usage_key`]), a hash in Redis (`grove-usage:{type/key}`, see
//! [`super::redis`]).

use super::{RowKey, StateError, GROVE_NAMESPACE};
use crate::ActorRef;

/// The table in Grove's own namespace where the embedded and memory stores
/// keep usage rows: `key1` = the actor type, `key2` = the actor key.
pub const USAGE_TABLE: &str = "usage";

/// A cap on what one actor keeps stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The actor whose usage the write counts against.
    pub holder: ActorRef,
    /// Most rows.
    pub max_rows: u64,
    /// Most bytes of row values.
    pub max_bytes: u64,
}

/// What an actor keeps stored, as its quota counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Rows.
    pub rows: u64,
    /// Bytes of their values.
    pub bytes: u64,
}

impl Quota {
    /// Where the memory and embedded stores keep the holder's usage.
    pub fn usage_key(&self) -> Vec<u8> {
        RowKey {
            namespace: GROVE_NAMESPACE,
            table: USAGE_TABLE,
            key1: &self.holder.actor_type,
            key2: Some(&self.holder.key),
        }
        .encode()
    }

    pub(crate) fn exceeded(&self) -> StateError {
        StateError::QuotaExceeded(format!(
            "{} may keep at most {} rows and {} bytes stored",
            self.holder, self.max_rows, self.max_bytes
        ))
    }
}

impl Usage {
    /// Reads a usage row; anything unreadable counts as nothing stored.
    pub(crate) fn decode(bytes: Option<&[u8]>) -> Usage {
        let word = |at: usize| {
            bytes
                .and_then(|b| b.get(at..at + 8))
                .and_then(|w| <[u8; 8]>::try_from(w).ok())
                .map_or(0, u64::from_le_bytes)
        };
        Usage {
            rows: word(0),
            bytes: word(8),
        }
    }

    pub(crate) fn encode(self) -> Vec<u8> {
        let mut out = self.rows.to_le_bytes().to_vec();
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out
    }

    /// The usage once a row of `old` bytes (`None`: no row) becomes one of
    /// `new` bytes (`None`: deleted); refused if that grows it past `quota`.
    pub(crate) fn after(
        self,
        old: Option<usize>,
        new: Option<usize>,
        quota: &Quota,
    ) -> Result<Usage, StateError> {
        let size = |n: Option<usize>| n.map_or(0, |n| n as u64);
        let next = Usage {
            rows: (self.rows.saturating_add(u64::from(new.is_some())))
                .saturating_sub(u64::from(old.is_some())),
            bytes: (self.bytes.saturating_add(size(new))).saturating_sub(size(old)),
        };
        let grows_past = |now: u64, then: u64, max: u64| then > max && then > now;
        if grows_past(self.rows, next.rows, quota.max_rows)
            || grows_past(self.bytes, next.bytes, quota.max_bytes)
        {
            return Err(quota.exceeded());
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> Quota {
        Quota {
            holder: ActorRef::new("player", "1"),
            max_rows: 2,
            max_bytes: 100,
        }
    }

    #[test]
    fn growth_past_the_quota_is_refused_and_shrinking_never_is() {
        let q = quota();
        let u = Usage::default().after(None, Some(60), &q).unwrap();
        assert_eq!(u, Usage { rows: 1, bytes: 60 });
        // A second row would take the bytes past 100.
        assert!(u.after(None, Some(50), &q).is_err());
        // Replacing the row with a larger one within the quota is fine.
        let u = u.after(Some(60), Some(100), &q).unwrap();
        assert_eq!(
            u,
            Usage {
                rows: 1,
                bytes: 100
            }
        );
        let u = u.after(Some(100), Some(10), &q).unwrap();
        let u = u.after(None, Some(10), &q).unwrap();
        // A third row is past the row count.
        assert!(u.after(None, Some(1), &q).is_err());
        // Over a quota lowered since, a write that shrinks goes through.
        let over = Usage {
            rows: 5,
            bytes: 500,
        };
        assert_eq!(
            over.after(Some(200), Some(100), &q).unwrap(),
            Usage {
                rows: 5,
                bytes: 400
            }
        );
        assert_eq!(
            over.after(Some(100), None, &q).unwrap(),
            Usage {
                rows: 4,
                bytes: 400
            }
        );
        // A delete of what another actor wrote cannot take it below zero.
        assert_eq!(
            Usage::default().after(Some(7), None, &q).unwrap(),
            Usage::default()
        );
    }

    #[test]
    fn usage_rows_round_trip_and_unreadable_ones_count_as_empty() {
        let u = Usage {
            rows: 3,
            bytes: 1 << 40,
        };
        assert_eq!(Usage::decode(Some(&u.encode())), u);
        assert_eq!(Usage::decode(Some(b"junk")), Usage::default());
        assert_eq!(Usage::decode(None), Usage::default());
    }
}
