//! The plugin versions a cluster runs: each version's component stored by
//! its content hash, and the version each actor type runs. A host that
//! deploys a version publishes it here; every host follows what is
//! published, so a deploy to any host reaches all of them.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::RedisUnavailable;

/// The versions of one cluster, in its Redis.
#[derive(Clone)]
pub struct Versions {
    conn: ConnectionManager,
    cluster: String,
}

impl Versions {
    /// The versions of `cluster` in the Redis behind `conn`.
    pub fn new(conn: ConnectionManager, cluster: &str) -> Versions {
        Versions {
            conn,
            cluster: cluster.to_owned(),
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

    /// Makes `version`, stored already, the version `actor_type` runs.
    pub async fn set(&self, actor_type: &str, version: &str) -> Result<(), RedisUnavailable> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.hset(self.versions_key(), actor_type, version).await?;
        Ok(())
    }

    /// The version each actor type runs, by type.
    pub async fn current(&self) -> Result<HashMap<String, String>, RedisUnavailable> {
        Ok(self.conn.clone().hgetall(self.versions_key()).await?)
    }

    /// The component of `version`, if it is stored.
    pub async fn component(&self, version: &str) -> Result<Option<Vec<u8>>, RedisUnavailable> {
        Ok(self.conn.clone().get(self.component_key(version)).await?)
    }
}
