//! The placement directory: which host runs each actor, and since which
//! epoch.
//!
//! One Redis hash per actor that has ever been placed:
//!
//! ```text
//! grove-cluster:{player/42}:owner@<cluster>   (hash)
//!     host   -> the id of the host that runs it (absent when released)
//!     epoch  -> grows by one with every claim, never reset
//! ```
//!
//! The hash tag is the actor's own (see `grove_core::keys`), so the entry
//! lives in the slot of the actor's state rows; the `grove-cluster:` prefix
//! keeps it apart from every state key (`grove:...`), whatever table names
//! plugins choose. Every change is one Lua script over that one key (and
//! each reminder's last claimed firing has a key of its own beside it, see
//! [`Placement::claim_firing`]):
//!
//! * **claim**: take the entry if nobody owns it, or if it is still owned by
//!   the host the caller found dead (`replacing`); otherwise answer who owns
//!   it. Two hosts claiming at once both get the same single winner.
//! * **release**: on deactivation, give the entry up — only if it is still
//!   this host's claim of that epoch. The entry and its epoch stay (a few
//!   bytes per actor ever placed), so every later claim gets a larger epoch
//!   than any earlier one.

use grove_core::keys::hash_tag;
use grove_core::ActorRef;
use redis::aio::ConnectionManager;
use redis::Script;

use crate::RedisUnavailable;

/// Who runs an actor, and since which claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The host's id (its membership lease).
    pub host: String,
    /// The claim's epoch: larger for every later claim of the same actor.
    pub epoch: u64,
}

/// The placement directory of one cluster. Cheap to clone.
#[derive(Clone)]
pub struct Placement {
    conn: ConnectionManager,
    cluster: String,
    claim: Script,
    release: Script,
    claim_firing: Script,
}

const CLAIM: &str = r"
local owner = redis.call('HGET', KEYS[1], 'host')
if owner and owner ~= ARGV[2] then
  return {owner, tonumber(redis.call('HGET', KEYS[1], 'epoch'))}
end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'host', ARGV[1])
return {ARGV[1], epoch}
";

/// Claims a reminder's firing at slot ARGV[1] for host ARGV[2]; ARGV[3..]
/// are the live hosts. The key holds `<slot>:<host>` of the last claim.
const CLAIM_FIRING: &str = r"
local last = redis.call('GET', KEYS[1])
if last then
  local slot, host = string.match(last, '^(%d+):(.*)$')
  if host and host ~= ARGV[2] then
    local alive = false
    for i = 3, #ARGV do
      if ARGV[i] == host then alive = true end
    end
    if alive and tonumber(slot) >= tonumber(ARGV[1]) then
      return 0
    end
  elseif host and tonumber(slot) > tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', 604800000)
return 1
";

const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'host') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'host')
  return 1
end
return 0
";

impl Placement {
    /// The placement directory of `cluster` in the Redis behind `conn`.
    pub fn new(conn: ConnectionManager, cluster: &str) -> Placement {
        Placement {
            conn,
            cluster: cluster.to_owned(),
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            claim_firing: Script::new(CLAIM_FIRING),
        }
    }

    /// The Redis key of `actor`'s entry.
    pub fn key(&self, actor: &ActorRef) -> String {
        format!(
            "grove-cluster:{}:owner@{}",
            hash_tag(&actor.actor_type, &actor.key),
            self.cluster
        )
    }

    /// Who owns `actor` now, if anyone.
    pub async fn lookup(&self, actor: &ActorRef) -> Result<Option<Owner>, RedisUnavailable> {
        let (host, epoch): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.key(actor))
            .arg("host")
            .arg("epoch")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(host.zip(epoch).map(|(host, epoch)| Owner { host, epoch }))
    }

    /// Claims `actor` for host `me`, unless someone else owns it. With
    /// `replacing`, the entry is also taken from that owner (the caller
    /// found it dead), but only if it still holds it. Returns the owner
    /// after the attempt: `me` with a new epoch, or whoever won.
    pub async fn claim(
        &self,
        actor: &ActorRef,
        me: &str,
        replacing: Option<&Owner>,
    ) -> Result<Owner, RedisUnavailable> {
        let (host, epoch): (String, u64) = self
            .claim
            .key(self.key(actor))
            .arg(me)
            .arg(replacing.map_or("", |owner| owner.host.as_str()))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Owner { host, epoch })
    }

    /// Claims the firing at `at_ms` of `actor`'s reminder `name` for host
    /// `me`: every host schedules every reminder, and the one whose claim
    /// succeeds runs the firing. A claim by a host not in `live` (it died,
    /// perhaps before running it) is taken over; otherwise the firing runs
    /// once. The key (one per reminder, in the actor's slot) keeps the
    /// last claimed slot for a week after its last firing.
    pub async fn claim_firing(
        &self,
        actor: &ActorRef,
        name: &str,
        at_ms: u64,
        me: &str,
        live: &[String],
    ) -> Result<bool, RedisUnavailable> {
        let key = format!(
            "grove-cluster:{}:reminder:{name}@{}",
            hash_tag(&actor.actor_type, &actor.key),
            self.cluster
        );
        let mut invocation = self.claim_firing.key(key);
        invocation.arg(at_ms).arg(me);
        for host in live {
            invocation.arg(host);
        }
        let claimed: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(claimed == 1)
    }

    /// Gives up `owner`'s claim of `actor`; returns whether it still held
    /// it (a claim taken over meanwhile is left alone).
    pub async fn release(&self, actor: &ActorRef, owner: &Owner) -> Result<bool, RedisUnavailable> {
        let released: i64 = self
            .release
            .key(self.key(actor))
            .arg(&owner.host)
            .arg(owner.epoch)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(released == 1)
    }
}
