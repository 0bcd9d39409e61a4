//! Actor state: rows `(table, key1, optional key2) => bytes`, Koala's storage
//! model.
//!
//! Every backend keeps the same contract: a write (`put`, `delete`) resolves
//! only once the backend has it, so an acknowledged write survives whatever a
//! backend is meant to survive; `list` returns the rows of one `(table, key1)`
//! group ordered by `key2`, the row without a `key2` first. Tables are
//! namespaced per actor type by the caller (see [`RowKey`]).
//!
//! Backends, one module each: [`memory`] for tests and throwaway hosts,
//! [`embedded`] (redb on disk) as the default for a single host, [`redis`]
//! for production and hosts that share state.

pub mod embedded;
pub mod memory;
pub mod quota;
pub mod redis;

use std::path::{Path, PathBuf};

use crate::state::{embedded::EmbeddedStore, memory::MemoryStore, quota::Quota, redis::RedisStore};

/// The namespace Grove keeps its own rows in (reminders, state usage).
/// Actor types are WIT identifiers, so no plugin can own it.
pub const GROVE_NAMESPACE: &str = "$grove";

/// Largest value a row may hold.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Largest table name, `key1` or `key2`.
pub const MAX_KEY_BYTES: usize = 1 << 10;

/// Why a state operation failed. After [`StateError::TooLarge`] nothing was
/// stored; after [`StateError::Unavailable`] a write may or may not have been
/// stored (the backend may have applied it before its answer was lost).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// The backend could not be reached or failed; the operation may succeed later.
    #[error("state backend unavailable: {0}")]
    Unavailable(String),
    /// A name, key or value exceeds the host's limits.
    #[error("{0}")]
    TooLarge(String),
    /// The actor holds as much as its quota allows; nothing was stored.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// In a cluster, the write came from an activation that another claim
    /// of the actor has superseded: it was refused, and nothing was stored.
    #[error("superseded: {0}")]
    Superseded(String),
}

/// What an actor's write carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Guards<'a> {
    /// The actor's claim, for a write of its own rows in a cluster whose
    /// state is in Redis: refused with [`StateError::Superseded`] if it is no
    /// longer the claim (the other backends serve one host and ignore it).
    pub fence: Option<&'a Fence>,
    /// The quota the write counts against: refused with
    /// [`StateError::QuotaExceeded`] if it would grow the holder's usage
    /// past it (see [`quota`]).
    pub quota: Option<&'a Quota>,
}

/// What a write of an actor's own rows carries in a cluster whose state is
/// in Redis: the activation's claim in the placement directory. The write is
/// applied only if the entry still names this claim, so an activation that
/// another host took over cannot overwrite its successor's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The Redis key of the actor's placement entry (it shares the slot of
    /// the actor's rows).
    pub owner_key: String,
    /// The claiming host's id.
    pub host: String,
    /// The claim's epoch.
    pub epoch: u64,
}

/// Why a state backend could not be opened. Once open, a backend reports
/// failures per operation, as [`StateError`].
#[derive(Debug, thiserror::Error)]
pub enum OpenStateError {
    /// The directory for the embedded state file could not be created.
    #[error("cannot create the directory {} for the state file: {source}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The embedded state file could not be opened or prepared (it may be
    /// open in another process, or not a state file).
    #[error("cannot open state file {}: {source}", path.display())]
    Embedded {
        /// The state file.
        path: PathBuf,
        /// redb's error (boxed: it is large).
        source: Box<redb::Error>,
    },
    /// The embedded store's writer thread could not be started.
    #[error("cannot start the state writer thread: {0}")]
    Writer(#[source] std::io::Error),
    /// The Redis URL is malformed.
    #[error("bad Redis URL `{url}`: {source}")]
    RedisUrl {
        /// The URL given.
        url: String,
        /// Why the Redis client refused it.
        source: ::redis::RedisError,
    },
    /// Redis could not be reached (it is checked once at start; later
    /// outages are survived).
    #[error("cannot connect to Redis at {url}: {source}")]
    RedisConnect {
        /// The URL given.
        url: String,
        /// The connection error.
        source: ::redis::RedisError,
    },
}

/// The address of one row. `namespace` is the actor type that owns the table,
/// so actor types never see each other's rows.
#[derive(Debug, Clone, Copy)]
pub struct RowKey<'a> {
    /// The actor type owning the table.
    pub namespace: &'a str,
    /// The table name chosen by the actor.
    pub table: &'a str,
    /// The primary key.
    pub key1: &'a str,
    /// The optional secondary key.
    pub key2: Option<&'a str>,
}

/// One row of a `(table, key1)` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The row's secondary key.
    pub key2: Option<String>,
    /// The stored bytes.
    pub value: Vec<u8>,
}

impl RowKey<'_> {
    /// Checks the size limits every backend enforces.
    pub fn check(&self) -> Result<(), StateError> {
        for (what, s) in [
            ("table name", self.table),
            ("key1", self.key1),
            ("key2", self.key2.unwrap_or("")),
        ] {
            if s.len() > MAX_KEY_BYTES {
                return Err(StateError::TooLarge(format!(
                    "{what} is {} bytes; the limit is {MAX_KEY_BYTES}",
                    s.len()
                )));
            }
        }
        Ok(())
    }

    /// The sortable byte encoding shared by the ordered backends: the group
    /// prefix (see [`group_prefix`]) followed by `0` for no `key2`, or `1` and
    /// the `key2` bytes. Every row of a group shares the prefix, and rows sort
    /// by `key2` with the keyless row first.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = group_prefix(self.namespace, self.table, self.key1);
        match self.key2 {
            None => out.push(0),
            Some(k) => {
                out.push(1);
                out.extend_from_slice(k.as_bytes());
            }
        }
        out
    }
}

/// The key prefix shared by every row of `(namespace, table, key1)`: each part
/// length-prefixed, so no group's prefix is a prefix of another's.
pub fn group_prefix(namespace: &str, table: &str, key1: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + namespace.len() + table.len() + key1.len());
    for part in [namespace, table, key1] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Decodes the `key2` part of an encoded row key, given its group prefix length.
fn decode_key2(encoded: &[u8], prefix_len: usize) -> Option<String> {
    match encoded.get(prefix_len..)?.split_first() {
        Some((1, key2)) => Some(String::from_utf8_lossy(key2).into_owned()),
        _ => None,
    }
}

/// Checks a value against [`MAX_VALUE_BYTES`].
pub fn check_value(value: &[u8]) -> Result<(), StateError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StateError::TooLarge(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// Encoded row keys with their values, in key order.
pub(crate) type EncodedRows = Vec<(Vec<u8>, Vec<u8>)>;

/// The state backend a host uses. Cheap to clone: every variant is a handle.
#[derive(Clone)]
pub enum StateStore {
    /// Rows in memory, lost when the host stops.
    Memory(MemoryStore),
    /// Rows in a redb file, kept across restarts.
    Embedded(EmbeddedStore),
    /// Rows in Redis hashes.
    Redis(RedisStore),
}

impl StateStore {
    /// An empty in-memory store.
    pub fn memory() -> Self {
        StateStore::Memory(MemoryStore::default())
    }

    /// Opens (or creates) the embedded store at `path`.
    pub fn open_embedded(path: &Path) -> Result<Self, OpenStateError> {
        Ok(StateStore::Embedded(EmbeddedStore::open(path)?))
    }

    /// Connects to Redis at `url` (see [`redis`] for the layout).
    pub async fn connect_redis(url: &str) -> Result<Self, OpenStateError> {
        Ok(StateStore::Redis(RedisStore::connect(url).await?))
    }

    /// The backend's name: `memory`, `embedded` or `redis`.
    pub fn backend(&self) -> &'static str {
        match self {
            StateStore::Memory(_) => "memory",
            StateStore::Embedded(_) => "embedded",
            StateStore::Redis(_) => "redis",
        }
    }

    /// Reads one row.
    pub async fn get(&self, key: RowKey<'_>) -> Result<Option<Vec<u8>>, StateError> {
        key.check()?;
        match self {
            StateStore::Memory(s) => Ok(s.get(&key.encode())),
            StateStore::Embedded(s) => s.get(key.encode()).await,
            StateStore::Redis(s) => s.get(&key).await,
        }
    }

    /// Inserts or replaces one row; resolves once the backend has it.
    pub async fn put(&self, key: RowKey<'_>, value: Vec<u8>) -> Result<(), StateError> {
        self.put_guarded(key, value, Guards::default()).await
    }

    /// [`StateStore::put`] under `guards`.
    pub async fn put_guarded(
        &self,
        key: RowKey<'_>,
        value: Vec<u8>,
        guards: Guards<'_>,
    ) -> Result<(), StateError> {
        check_value(&value)?;
        self.write(key, Some(value), guards).await.map(drop)
    }

    /// Deletes one row; returns whether it existed.
    pub async fn delete(&self, key: RowKey<'_>) -> Result<bool, StateError> {
        self.delete_guarded(key, Guards::default()).await
    }

    /// [`StateStore::delete`] under `guards`.
    pub async fn delete_guarded(
        &self,
        key: RowKey<'_>,
        guards: Guards<'_>,
    ) -> Result<bool, StateError> {
        self.write(key, None, guards).await
    }

    async fn write(
        &self,
        key: RowKey<'_>,
        value: Option<Vec<u8>>,
        Guards { fence, quota }: Guards<'_>,
    ) -> Result<bool, StateError> {
        key.check()?;
        // The futures of the backends that wait on a thread or the network
        // are boxed, each on its own: inline, the largest (Redis's, 824
        // bytes) made every write's future larger than glibc's per-thread
        // cache takes (1,032 bytes), and wasmtime boxes a host call's
        // future at every state write an actor makes.
        match self {
            StateStore::Memory(s) => s.write(key.encode(), value, quota),
            StateStore::Embedded(s) => Box::pin(s.write(key.encode(), value, quota)).await,
            StateStore::Redis(s) => Box::pin(s.write(&key, value, fence, quota)).await,
        }
    }

    /// Resolves once every write queued before it is applied (or has
    /// failed). A successor activation calls it after its predecessor's turn
    /// was cut off, so that a write that turn had queued cannot land after
    /// the successor has read its state.
    pub async fn settle(&self) -> Result<(), StateError> {
        match self {
            StateStore::Memory(_) => Ok(()),
            StateStore::Embedded(s) => s.settle().await,
            StateStore::Redis(s) => s.settle().await,
        }
    }

    /// Lists the rows of `(namespace, table, key1)` ordered by `key2`.
    pub async fn list(
        &self,
        namespace: &str,
        table: &str,
        key1: &str,
    ) -> Result<Vec<Row>, StateError> {
        RowKey {
            namespace,
            table,
            key1,
            key2: None,
        }
        .check()?;
        let prefix = group_prefix(namespace, table, key1);
        let rows = match self {
            StateStore::Memory(s) => s.scan(&prefix),
            StateStore::Embedded(s) => s.scan(prefix.clone()).await?,
            StateStore::Redis(s) => return s.list(namespace, table, key1).await,
        };
        Ok(rows
            .into_iter()
            .map(|(k, value)| Row {
                key2: decode_key2(&k, prefix.len()),
                value,
            })
            .collect())
    }
}
