//! The plugin versions a cluster runs: each version's component stored by
//! its content hash, and the version each actor type runs. A host that
//! deploys a version publishes it here; every host follows what is
//! published, so a deploy to any host reaches all of them.
//!
//! Each type's record carries a generation, raised by every change, and
//! the version last rolled back. Publishing and rolling back are each one
//! script run in Redis, so that hosts racing each other agree on the
//! outcome: a version rolled back cannot be published again by a deploy
//! that raced the rollback (only a forced deploy publishes it), and a
//! rollback does not undo a newer version another host deployed meanwhile.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::RedisUnavailable;

/// The version an actor type runs in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Raised by every change of the record.
    pub generation: u64,
    /// The content hash of the version the type runs.
    pub version: String,
    /// The version last rolled back, until another is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Published {
    /// Reads a record as stored (a bare content hash is generation 0).
    fn decode(stored: &str) -> Published {
        serde_json::from_str(stored).unwrap_or_else(|_| Published {
            generation: 0,
            version: stored.to_owned(),
            rolled_back: None,
            reason: None,
        })
    }
}

/// How publishing a version ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// The type runs it now (or ran it already).
    Published(Published),
    /// It is the version the cluster rolled back last; only a forced
    /// deploy publishes it again. The record as it stands.
    RolledBack(Published),
}

/// How publishing a rollback ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// The type runs the version before again, everywhere.
    RolledBack(Published),
    /// The cluster had moved on to another version, which stays.
    Superseded(Published),
}

/// Reads the record of type ARGV[1] into `current` (nil if there is none;
/// a bare content hash is generation 0). Both scripts start with it.
const READ_CURRENT: &str = r#"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
local current = nil
if stored then
  local ok, decoded = pcall(cjson.decode, stored)
  if ok and type(decoded) == 'table' then current = decoded
  else current = { generation = 0, version = stored } end
end
"#;

/// Publishes ARGV[2] as the version of type ARGV[1]. Refused (0) when it is
/// the version rolled back last, unless ARGV[3] is "force".
const PUBLISH: &str = r#"
if current and current.rolled_back == ARGV[2] and ARGV[3] ~= 'force' then
  return { 0, cjson.encode(current) }
end
if current and current.version == ARGV[2] then
  return { 1, cjson.encode(current) }
end
local generation = 1
if current then generation = current.generation + 1 end
local record = cjson.encode({ generation = generation, version = ARGV[2] })
redis.call('HSET', KEYS[1], ARGV[1], record)
return { 1, record }
"#;

/// Type ARGV[1] goes back from ARGV[2] to ARGV[3] for reason ARGV[4]:
/// unless the cluster runs a third version by now, or ARGV[3] is the
/// version the cluster rolled back last (0).
const ROLL_BACK: &str = r#"
if current and current.version ~= ARGV[2] and current.version ~= ARGV[3] then
  return { 0, cjson.encode(current) }
end
if current and current.rolled_back == ARGV[3] then
  return { 0, cjson.encode(current) }
end
if current and current.version == ARGV[3] and current.rolled_back == ARGV[2] then
  return { 1, cjson.encode(current) }
end
local generation = 1
if current then generation = current.generation + 1 end
local record = cjson.encode({
  generation = generation, version = ARGV[3], rolled_back = ARGV[2], reason = ARGV[4]
})
redis.call('HSET', KEYS[1], ARGV[1], record)
return { 1, record }
"#;

/// The versions of one cluster, in its Redis.
#[derive(Clone)]
pub struct Versions {
    conn: ConnectionManager,
    cluster: String,
    publish: Script,
    roll_back: Script,
}

impl Versions {
    /// The versions of `cluster` in the Redis behind `conn`.
    pub fn new(conn: ConnectionManager, cluster: &str) -> Versions {
        Versions {
            conn,
            cluster: cluster.to_owned(),
            publish: Script::new(&format!("{READ_CURRENT}{PUBLISH}")),
            roll_back: Script::new(&format!("{READ_CURRENT}{ROLL_BACK}")),
        }
    }

    fn versions_key(&self) -> String {
        format!("grove-cluster:{{{}}}:versions", self.cluster)
    }

    fn component_key(&self, version: &str) -> String {
        format!("grove-cluster:{{{}}}:component:{version}", self.cluster)
    }

    /// Stores `component`, whose content hash is `version`, unless it is
    /// stored already.
    pub async fn store(&self, version: &str, component: &[u8]) -> Result<(), RedisUnavailable> {
        let mut conn = self.conn.clone();
        let key = self.component_key(version);
        if !conn.exists::<_, bool>(&key).await? {
            let () = conn.set(&key, component).await?;
        }
        Ok(())
    }

    /// Makes `version`, stored already, the version `actor_type` runs,
    /// unless it is the version the cluster rolled back last and `force`
    /// is not set. Publishing the version that runs changes nothing (a
    /// rollback on record stays).
    pub async fn publish(
        &self,
        actor_type: &str,
        version: &str,
        force: bool,
    ) -> Result<Publish, RedisUnavailable> {
        let (published, record): (i64, String) = self
            .publish
            .key(self.versions_key())
            .arg(actor_type)
            .arg(version)
            .arg(if force { "force" } else { "" })
            .invoke_async(&mut self.conn.clone())
            .await?;
        let record = Published::decode(&record);
        Ok(if published == 1 {
            Publish::Published(record)
        } else {
            Publish::RolledBack(record)
        })
    }

    /// Records that `actor_type` went back from `failed` to `back_to`
    /// because of `reason`: the cluster runs `back_to` again, unless it
    /// runs a third version by now or rolled `back_to` itself back.
    pub async fn roll_back(
        &self,
        actor_type: &str,
        failed: &str,
        back_to: &str,
        reason: &str,
    ) -> Result<Rollback, RedisUnavailable> {
        let (rolled_back, record): (i64, String) = self
            .roll_back
            .key(self.versions_key())
            .arg(actor_type)
            .arg(failed)
            .arg(back_to)
            .arg(reason)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let record = Published::decode(&record);
        Ok(if rolled_back == 1 {
            Rollback::RolledBack(record)
        } else {
            Rollback::Superseded(record)
        })
    }

    /// The version each actor type runs, by type.
    pub async fn current(&self) -> Result<HashMap<String, Published>, RedisUnavailable> {
        let stored: HashMap<String, String> =
            self.conn.clone().hgetall(self.versions_key()).await?;
        Ok(stored
            .into_iter()
            .map(|(actor_type, record)| (actor_type, Published::decode(&record)))
            .collect())
    }

    /// The component of `version`, if it is stored.
    pub async fn component(&self, version: &str) -> Result<Option<Vec<u8>>, RedisUnavailable> {
        Ok(self.conn.clone().get(self.component_key(version)).await?)
    }
}
