//! Redis state backend, for hosts that share state (and, later, a cluster).
//!
//! Layout: one hash per `(namespace, table, key1)` group, field = `key2`:
//!
//! ```text
//! grove:{player/42}:inventory      (hash)
//!     ""        -> the row stored without a key2
//!     "sword"   -> the row with key2 "sword"
//! ```
//!
//! * The key is `grove:{<actor type>/<key1>}:<table>`. The braces are a
//!   Redis Cluster hash tag: every table of one `key1` (by convention, one
//!   actor's rows) lives in one slot. `%`, `{` and `}` in `key1` are written
//!   `%25`, `%7B` and `%7D`.
//! * A field is the `key2` itself; the row without a `key2` is the empty
//!   field `""`. A `key2` that is empty or starts with `\` is written with one
//!   more `\` in front.
//!
//! Reads go straight to Redis over a multiplexed connection. Writes are queued
//! to a writer task that sends whatever has gathered as one pipeline, and each
//! write is acknowledged only when Redis has answered for it. When Redis is
//! unreachable, operations fail at once with `unavailable`; the connection is
//! re-established in the background and operations succeed again when Redis
//! is back.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use super::quota::Quota;
use super::{Fence, OpenStateError, Row, RowKey, StateError};
use crate::ActorRef;

/// Most writes sent in one pipeline.
const MAX_BATCH: usize = 1024;

/// A write fenced by the actor's claim, or counted against a quota, or both.
/// KEYS = the row group, the placement entry, the usage hash (the row group
/// again for what the write does not use); ARGV = the field, the claiming
/// host and its epoch (empty: no fence), the quota's most rows and bytes
/// (empty: no quota) and, for a put, the value. Answers whether the row
/// existed (1 or 0), [`SUPERSEDED`] or [`OVER_QUOTA`]; the last two change
/// nothing. The quota's arithmetic is `quota::Usage::after`'s.
const GUARDED_WRITE: &str = r"
if ARGV[2] ~= '' then
  local owner = redis.call('HMGET', KEYS[2], 'host', 'epoch')
  if owner[1] ~= ARGV[2] or owner[2] ~= ARGV[3] then
    return -1
  end
end
local existed = redis.call('HEXISTS', KEYS[1], ARGV[1])
if ARGV[4] ~= '' then
  local old_bytes = 0
  if existed == 1 then
    old_bytes = redis.call('HSTRLEN', KEYS[1], ARGV[1])
  end
  local new_rows, new_bytes = 0, 0
  if ARGV[6] then
    new_rows, new_bytes = 1, string.len(ARGV[6])
  end
  local usage = redis.call('HMGET', KEYS[3], 'rows', 'bytes')
  local rows, bytes = tonumber(usage[1]) or 0, tonumber(usage[2]) or 0
  local next_rows = math.max(rows + new_rows - existed, 0)
  local next_bytes = math.max(bytes + new_bytes - old_bytes, 0)
  if (next_rows > tonumber(ARGV[4]) and next_rows > rows)
    or (next_bytes > tonumber(ARGV[5]) and next_bytes > bytes) then
    return -3
  end
  redis.call('HSET', KEYS[3], 'rows', string.format('%d', next_rows),
    'bytes', string.format('%d', next_bytes))
end
if ARGV[6] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[6])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return existed
";

/// What [`GUARDED_WRITE`] answers for a superseded claim.
const SUPERSEDED: i64 = -1;

/// What [`GUARDED_WRITE`] answers for a write past its quota.
const OVER_QUOTA: i64 = -3;

/// The Redis key of the hash holding `actor`'s usage (`rows`, `bytes`), in
/// the slot of the actor's own rows.
pub fn usage_key(actor: &ActorRef) -> String {
    let tag = grove_core::keys::hash_tag(&actor.actor_type, &actor.key);
    format!("grove-usage:{tag}")
}

/// A state store in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    writes: mpsc::Sender<Write>,
}

struct Write {
    key: String,
    field: String,
    /// `None` deletes the field.
    value: Option<Vec<u8>>,
    /// Writes nothing: its answer says every earlier write was applied.
    barrier: bool,
    /// Applied only while the actor's placement entry names this claim.
    fence: Option<Fence>,
    /// Counted against this quota.
    quota: Option<Quota>,
    done: oneshot::Sender<Result<bool, StateError>>,
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(format!("redis: {e}"))
}

/// The Redis key of the group `(namespace, table, key1)`.
pub fn group_key(namespace: &str, table: &str, key1: &str) -> String {
    let tag = grove_core::keys::hash_tag(namespace, key1);
    format!("grove:{tag}:{table}")
}

/// The hash field of `key2`.
pub fn field(key2: Option<&str>) -> String {
    match key2 {
        None => String::new(),
        Some(k) if k.is_empty() || k.starts_with('\\') => format!("\\{k}"),
        Some(k) => k.to_owned(),
    }
}

fn key2_of(field: String) -> Option<String> {
    if field.is_empty() {
        None
    } else if let Some(rest) = field.strip_prefix('\\') {
        Some(rest.to_owned())
    } else {
        Some(field)
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://host:port[/db]`). Fails if it
    /// cannot be reached now; once connected, outages are survived.
    pub async fn connect(url: &str) -> Result<Self, OpenStateError> {
        let client = redis::Client::open(url).map_err(|source| OpenStateError::RedisUrl {
            url: url.to_owned(),
            source,
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2)
            .set_factor(100)
            .set_max_delay(1_000);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|source| OpenStateError::RedisConnect {
                url: url.to_owned(),
                source,
            })?;
        let (writes, queue) = mpsc::channel(64 * 1024);
        tokio::spawn(writer(conn.clone(), queue));
        Ok(RedisStore { conn, writes })
    }

    pub(crate) async fn get(&self, key: &RowKey<'_>) -> Result<Option<Vec<u8>>, StateError> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(group_key(key.namespace, key.table, key.key1))
            .arg(field(key.key2))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Writes (`Some`) or deletes (`None`) a row; returns whether a row
    /// existed before.
    pub(crate) async fn write(
        &self,
        key: &RowKey<'_>,
        value: Option<Vec<u8>>,
        fence: Option<&Fence>,
        quota: Option<&Quota>,
    ) -> Result<bool, StateError> {
        let (done, answer) = oneshot::channel();
        let write = Write {
            key: group_key(key.namespace, key.table, key.key1),
            field: field(key.key2),
            value,
            barrier: false,
            fence: fence.cloned(),
            quota: quota.cloned(),
            done,
        };
        self.queue(write, answer).await
    }

    /// Waits until every write queued before it was applied.
    pub(crate) async fn settle(&self) -> Result<(), StateError> {
        let (done, answer) = oneshot::channel();
        let write = Write {
            key: String::new(),
            field: String::new(),
            value: None,
            barrier: true,
            fence: None,
            quota: None,
            done,
        };
        self.queue(write, answer).await.map(drop)
    }

    async fn queue(
        &self,
        write: Write,
        answer: oneshot::Receiver<Result<bool, StateError>>,
    ) -> Result<bool, StateError> {
        self.writes
            .send(write)
            .await
            .map_err(|_| StateError::Unavailable("the Redis writer has stopped".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(StateError::Unavailable(
                "the Redis writer has stopped".into(),
            ))
        })
    }

    pub(crate) async fn list(
        &self,
        namespace: &str,
        table: &str,
        key1: &str,
    ) -> Result<Vec<Row>, StateError> {
        let mut conn = self.conn.clone();
        let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(group_key(namespace, table, key1))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut rows: Vec<Row> = fields
            .into_iter()
            .map(|(f, value)| Row {
                key2: key2_of(f),
                value,
            })
            .collect();
        rows.sort_by(|a, b| a.key2.cmp(&b.key2));
        Ok(rows)
    }
}

/// Sends queued writes to Redis, as many per pipeline as have gathered.
async fn writer(mut conn: ConnectionManager, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.iter().all(|w| w.barrier) {
            for w in batch.drain(..) {
                let _ = w.done.send(Ok(false));
            }
            continue;
        }
        let mut pipe = redis::pipe();
        for w in batch.iter().filter(|w| !w.barrier) {
            match (&w.fence, &w.quota, &w.value) {
                (None, None, Some(v)) => {
                    pipe.cmd("HSET").arg(&w.key).arg(&w.field).arg(v.as_slice());
                }
                (None, None, None) => {
                    pipe.cmd("HDEL").arg(&w.key).arg(&w.field);
                }
                (fence, quota, value) => {
                    let cmd = pipe
                        .cmd("EVAL")
                        .arg(GUARDED_WRITE)
                        .arg(3)
                        .arg(&w.key)
                        .arg(fence.as_ref().map_or(&w.key, |f| &f.owner_key))
                        .arg(
                            quota
                                .as_ref()
                                .map_or_else(|| w.key.clone(), |q| usage_key(&q.holder)),
                        )
                        .arg(&w.field)
                        .arg(fence.as_ref().map_or("", |f| f.host.as_str()))
                        .arg(
                            fence
                                .as_ref()
                                .map_or(String::new(), |f| f.epoch.to_string()),
                        )
                        .arg(
                            quota
                                .as_ref()
                                .map_or(String::new(), |q| q.max_rows.to_string()),
                        )
                        .arg(
                            quota
                                .as_ref()
                                .map_or(String::new(), |q| q.max_bytes.to_string()),
                        );
                    if let Some(v) = value {
                        cmd.arg(v.as_slice());
                    }
                }
            }
        }
        match pipe.query_async::<Vec<i64>>(&mut conn).await {
            Ok(replies) => {
                let mut replies = replies.into_iter();
                for w in batch.drain(..) {
                    if w.barrier {
                        let _ = w.done.send(Ok(false));
                        continue;
                    }
                    let Some(reply) = replies.next() else {
                        let missing = StateError::Unavailable(
                            "Redis answered fewer replies than writes".into(),
                        );
                        let _ = w.done.send(Err(missing));
                        continue;
                    };
                    if reply == SUPERSEDED {
                        let _ = w.done.send(Err(StateError::Superseded(format!(
                            "the actor's claim of epoch {} was taken over; the write was refused",
                            w.fence.as_ref().map_or(0, |f| f.epoch)
                        ))));
                        continue;
                    }
                    if let (OVER_QUOTA, Some(quota)) = (reply, &w.quota) {
                        let _ = w.done.send(Err(quota.exceeded()));
                        continue;
                    }
                    // The script answers whether the row existed; HSET 1
                    // for a new field, HDEL 1 for a deleted one.
                    let existed = if w.fence.is_some() || w.quota.is_some() {
                        reply == 1
                    } else if w.value.is_some() {
                        reply == 0
                    } else {
                        reply == 1
                    };
                    let _ = w.done.send(Ok(existed));
                }
            }
            Err(e) => {
                let error = unavailable(e);
                for w in batch.drain(..) {
                    let _ = w.done.send(Err(error.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_each_actors_rows_in_one_slot_and_fields_round_trip() {
        assert_eq!(group_key("player", "inv", "42"), "grove:{player/42}:inv");
        assert_eq!(
            group_key("player", "inv", "a{b}%"),
            "grove:{player/a%7Bb%7D%25}:inv"
        );
        for key2 in [None, Some(""), Some("sword"), Some("\\x"), Some("\\")] {
            assert_eq!(key2_of(field(key2)).as_deref(), key2);
        }
        assert_eq!(field(Some("sword")), "sword");
        assert_eq!(field(None), "");
    }
}
