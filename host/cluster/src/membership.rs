//! Membership: every host holds a lease in Redis.
//!
//! ```text
//! grove-cluster:{<name>}:members        (set)    ids of hosts that joined
//! grove-cluster:{<name>}:host:<id>      (string) the host's Member as JSON, with a TTL
//! ```
//!
//! Both keys share the cluster's hash tag, so one `MGET` reads every lease. A host's lease is its `host:<id>` key: it
//! is written with a TTL and renewed well inside it, and only **renewed**
//! (`SET ... XX`), never recreated: once it has lapsed the host is dead for
//! everyone, and it must leave and join again under a new id.
//!
//! **Self-fencing.** A renewal sent at `t` and acknowledged keeps the lease
//! alive until `t + ttl` at the earliest (Redis starts the TTL on receipt,
//! after `t`). The host therefore counts its lease valid until
//! `t + ttl - margin` and, when that moment passes without a newer
//! acknowledged renewal, fences itself: [`Lease::fenced`] fires, and the host
//! stops serving its activations before any other host can see the lease
//! lapse and take them over.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::RedisUnavailable;

/// What a host publishes about itself in its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Unique per process start: a restarted host joins under a new id.
    pub id: String,
    /// Where other hosts reach it (host-to-host QUIC).
    pub address: String,
    /// SHA-256 of its host-to-host TLS certificate, pinned by its peers.
    pub fingerprint: String,
    /// Live activations.
    pub activations: u64,
    /// Loaded plugins, as `name@sha256-prefix`.
    pub plugins: Vec<String>,
    /// When it joined, in Unix ms.
    pub started_ms: u64,
    /// When it last renewed its lease, in Unix ms.
    pub renewed_ms: u64,
    /// It is leaving: it takes no new activations, and hands its actors to
    /// the others as they deactivate.
    #[serde(default)]
    pub draining: bool,
    /// Its number among the live hosts (1 to 65,535): the top 16 bits of
    /// the ids of the game client sessions its gateway holds.
    #[serde(default)]
    pub number: u16,
}

/// Lease timing.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How long a lease lives without renewal: the longest a dead host's
    /// actors stay unreachable.
    pub ttl: Duration,
    /// How often the lease is renewed.
    pub renew_every: Duration,
    /// How long before the lease could lapse a host that has not renewed it
    /// fences itself: covers clock drift and a paused process.
    pub margin: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            ttl: Duration::from_secs(3),
            renew_every: Duration::from_millis(500),
            margin: Duration::from_millis(750),
        }
    }
}

/// Membership of one cluster in one Redis. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    conn: ConnectionManager,
    cluster: String,
}

/// Why a host could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Redis could not be reached.
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
    /// The id is taken by a live lease.
    #[error("host id {0} is already a live member")]
    Taken(String),
    /// The lease could lapse before its first renewal: `renew_every` must
    /// be shorter than `ttl - margin`.
    #[error("lease timing {0:?} renews too late: renew_every must be below ttl - margin")]
    Timing(LeaseTiming),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn to_json(member: &Member) -> String {
    // A `Member` is plain strings and numbers: it always serializes.
    serde_json::to_string(member).unwrap_or_default()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Membership {
    /// The membership of `cluster` in the Redis behind `conn`.
    pub fn new(conn: ConnectionManager, cluster: &str) -> Membership {
        Membership {
            conn,
            cluster: cluster.to_owned(),
        }
    }

    fn members_key(&self) -> String {
        format!("grove-cluster:{{{}}}:members", self.cluster)
    }

    fn lease_key(&self, id: &str) -> String {
        format!("grove-cluster:{{{}}}:host:{id}", self.cluster)
    }

    /// Joins as `member`, holding a lease renewed in the background with
    /// `timing` until [`Lease::leave`] or until it could not be renewed in
    /// time.
    pub async fn join(&self, member: Member, timing: LeaseTiming) -> Result<Lease, JoinError> {
        if timing.margin >= timing.ttl || timing.renew_every >= timing.ttl - timing.margin {
            return Err(JoinError::Timing(timing));
        }
        let mut conn = self.conn.clone();
        let key = self.lease_key(&member.id);
        let sent = Instant::now();
        let created: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(to_json(&member))
            .arg("NX")
            .arg("PX")
            .arg(ms(timing.ttl))
            .query_async(&mut conn)
            .await
            .map_err(RedisUnavailable)?;
        if created.is_none() {
            return Err(JoinError::Taken(member.id));
        }
        let _: i64 = conn
            .sadd(self.members_key(), &member.id)
            .await
            .map_err(RedisUnavailable)?;
        let (valid_tx, valid) = watch::channel(true);
        let (info_tx, info) = watch::channel(member.clone());
        let valid_until = Arc::new(Mutex::new(sent + timing.ttl - timing.margin));
        let renewer = tokio::spawn(renew(
            self.clone(),
            key,
            timing,
            Arc::clone(&valid_until),
            info,
            valid_tx,
        ));
        Ok(Lease {
            membership: self.clone(),
            id: member.id,
            valid,
            valid_until,
            info: info_tx,
            renewer,
        })
    }

    /// A host number no live member has: the cluster's counter, counted on
    /// past numbers still in use.
    pub async fn free_number(&self) -> Result<u16, RedisUnavailable> {
        let taken: Vec<u16> = self.members().await?.iter().map(|m| m.number).collect();
        let mut conn = self.conn.clone();
        let key = format!("grove-cluster:{{{}}}:numbers", self.cluster);
        loop {
            let n: u64 = conn.incr(&key, 1).await?;
            let number = u16::try_from((n - 1) % 65_535 + 1).unwrap_or(1);
            if !taken.contains(&number) {
                return Ok(number);
            }
        }
    }

    /// The live members: every host whose lease has not lapsed. Ids of
    /// lapsed leases are removed from the member set on the way.
    pub async fn members(&self) -> Result<Vec<Member>, RedisUnavailable> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(self.members_key()).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.lease_key(id)).collect();
        let leases: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut live = Vec::new();
        let mut lapsed = Vec::new();
        for (id, lease) in ids.into_iter().zip(leases) {
            match lease {
                Some(json) => match serde_json::from_str::<Member>(&json) {
                    Ok(member) => live.push(member),
                    // Perhaps a newer version's lease: alive, but unreadable
                    // here. It stays listed.
                    Err(error) => tracing::warn!(host = %id, %error, "unreadable lease"),
                },
                None => lapsed.push(id),
            }
        }
        if !lapsed.is_empty() {
            let _: i64 = conn.srem(self.members_key(), &lapsed).await?;
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }
}

/// A host's lease, renewed in the background while it is held.
pub struct Lease {
    membership: Membership,
    id: String,
    valid: watch::Receiver<bool>,
    valid_until: Arc<Mutex<Instant>>,
    info: watch::Sender<Member>,
    renewer: JoinHandle<()>,
}

impl Lease {
    /// This host's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the lease is still known to be held, judged by the clock
    /// (so a stalled renewal task cannot keep it looking valid). Once false
    /// it stays false: the host is fenced.
    pub fn is_valid(&self) -> bool {
        *self.valid.borrow() && Instant::now() < self.valid_until()
    }

    /// Until when the lease is known to be held: the last acknowledged
    /// renewal's send time plus the TTL, less the margin.
    pub fn valid_until(&self) -> Instant {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the host is fenced: it could not renew its lease in
    /// time, so it must stop serving now, before the lease lapses.
    pub async fn fenced(&self) {
        let mut valid = self.valid.clone();
        let _ = valid.wait_for(|valid| !*valid).await;
    }

    /// Updates what the lease publishes (load, plugins); sent with the next
    /// renewal.
    pub fn publish(&self, update: impl FnOnce(&mut Member)) {
        self.info.send_modify(update);
    }

    /// Leaves the cluster: stops renewing and deletes the lease, so the
    /// others see this host gone at once rather than after the TTL.
    pub async fn leave(&self) -> Result<(), RedisUnavailable> {
        self.renewer.abort();
        let mut conn = self.membership.conn.clone();
        let _: i64 = conn.del(self.membership.lease_key(&self.id)).await?;
        let _: i64 = conn.srem(self.membership.members_key(), &self.id).await?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Renews the lease at `key` until it cannot be renewed before
/// `valid_until`; then marks it invalid and ends.
async fn renew(
    membership: Membership,
    key: String,
    timing: LeaseTiming,
    valid_until: Arc<Mutex<Instant>>,
    info: watch::Receiver<Member>,
    valid: watch::Sender<bool>,
) {
    let mut conn = membership.conn.clone();
    let until = || *valid_until.lock().unwrap_or_else(PoisonError::into_inner);
    let mut next = Instant::now() + timing.renew_every;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = tokio::time::sleep_until(until()) => break,
        }
        // After a stall, renew once and go on from now: no burst.
        next = Instant::now() + timing.renew_every;
        let mut member = info.borrow().clone();
        member.renewed_ms = unix_ms();
        let sent = Instant::now();
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(to_json(&member))
            .arg("XX")
            .arg("PX")
            .arg(ms(timing.ttl));
        let renewal = set.query_async::<Option<String>>(&mut conn);
        match tokio::time::timeout_at(until(), renewal).await {
            Ok(Ok(Some(_))) => {
                *valid_until.lock().unwrap_or_else(PoisonError::into_inner) =
                    sent + timing.ttl - timing.margin;
            }
            // The lease lapsed already: the others may have taken over.
            Ok(Ok(None)) => break,
            Ok(Err(error)) => tracing::warn!(%error, "lease renewal failed"),
            Err(_) => break,
        }
    }
    tracing::error!(host = %info.borrow().id, "lease not renewed in time: this host is fenced");
    let _ = valid.send(false);
}
