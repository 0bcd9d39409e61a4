//! Actor refs: `type/key`, valid forever, whether or not the actor is active.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The address of a virtual actor, `type/key` (e.g. `player/42`). Valid
/// forever, whether or not the actor is active. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorRef {
    /// The actor type (the name of its plugin's actor interface).
    pub actor_type: Arc<str>,
    /// The key of one actor of that type.
    pub key: Arc<str>,
}

/// A string that is not an actor ref.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("`{0}` is not an actor ref; write it as `type/key`, e.g. `counter/7`")]
pub struct BadActorRef(pub String);

impl ActorRef {
    /// The ref of actor `key` of type `actor_type`.
    pub fn new(actor_type: &str, key: &str) -> Self {
        ActorRef {
            actor_type: actor_type.into(),
            key: key.into(),
        }
    }
}

impl fmt::Display for ActorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.actor_type, self.key)
    }
}

impl FromStr for ActorRef {
    type Err = BadActorRef;

    /// Parses `type/key`; the key is everything after the first `/`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((t, k)) if !t.is_empty() && !k.is_empty() => Ok(ActorRef::new(t, k)),
            _ => Err(BadActorRef(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_refs_parse_as_type_slash_key() {
        let r: ActorRef = "room/lobby/3".parse().unwrap();
        assert_eq!((&*r.actor_type, &*r.key), ("room", "lobby/3"));
        assert_eq!(r.to_string(), "room/lobby/3");
        assert!("counter".parse::<ActorRef>().is_err());
        assert!("/7".parse::<ActorRef>().is_err());
        assert!("counter/".parse::<ActorRef>().is_err());
    }
}
