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
//! * [`transport`]: host-to-host QUIC with mutual TLS, each host pinning the
//!   certificate fingerprint its peer published in its lease; one connection
//!   per pair of hosts carries many calls at once.
//! * [`wire`]: the frames on those connections — postcard around values in
//!   the component model's value encoding.
//! * [`versions`]: the plugin version each actor type runs in the cluster,
//!   and the components by content hash, so that a deploy to one host
//!   reaches every host.
//!
//! Every key carries a Redis Cluster hash tag, and every script touches
//! keys of one slot, so the layout works on a Redis Cluster as on one
//! server. The layout is documented in `docs/cluster.md`.

pub mod membership;
pub mod placement;
pub mod transport;
pub mod versions;
pub mod wire;

/// Redis could not be reached or refused a command.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisUnavailable(#[from] pub redis::RedisError);
