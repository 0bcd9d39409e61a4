//! Grove's cluster coordination, with Redis as the engine.
//!
//! * [`membership`]: each host holds a **lease** — a Redis key with a TTL
//!   that it refreshes well inside the TTL. A host whose lease lapsed is
//!   dead for everyone, and a host that could not renew its lease in time
//!   fences itself (stops serving) before the lease can lapse.
//! * [`placement`]: the **placement directory**, `actor ref → (host,
//!   epoch)`, claimed atomically by a Lua script so that an actor has at most
//!   one activation in the cluster. The epoch grows with every claim; state
//!   writes carry it so that a superseded activation cannot overwrite its
//!   successor's state.
//!
//! Every key carries a Redis Cluster hash tag, and every script touches one
//! key, so the layout works on a Redis Cluster as on one server. The layout
//! is documented in `docs/cluster.md`.

pub mod membership;
pub mod placement;

/// Redis could not be reached or refused a command.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisUnavailable(#[from] pub redis::RedisError);
