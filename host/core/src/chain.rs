//! Call chains: which actors wait, each inside a turn, for a call to be
//! answered.
//!
//! An actor waits for the answer to its call inside its turn, and runs one
//! turn at a time; so a call back into any actor already on the chain
//! (A → B → A) could never be answered. [`extend`] refuses it at once with
//! [`ChainError::Reentrancy`] instead of letting it hang until a timeout.

use std::sync::Arc;

use crate::ActorRef;

/// Deepest call chain allowed (A → B → C → ... ); deeper calls fail.
pub const MAX_CHAIN_DEPTH: usize = 64;

/// One link of a call chain: the actor that made a call, and the chain that
/// actor was itself called in.
#[derive(Debug)]
pub struct ChainLink {
    actor: ActorRef,
    parent: CallChain,
    depth: usize,
}

/// The actors waiting, each in a turn, for the call at hand to be answered;
/// `None` for a call from outside any actor (HTTP, CLI, the Rust API, a timer).
/// Cheap to clone.
pub type CallChain = Option<Arc<ChainLink>>;

/// Why a call may not be made in its chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ChainError {
    /// The call would enter an actor already waiting further up its chain.
    #[error("call to {target} would re-enter it: call chain {chain}")]
    Reentrancy {
        /// The actor called.
        target: String,
        /// The chain, outermost caller first, e.g. `a/1 -> b/2 -> a/1`.
        chain: String,
    },
    /// The chain would be deeper than [`MAX_CHAIN_DEPTH`].
    #[error("call chain is {depth} calls deep; the limit is {limit}")]
    TooDeep {
        /// The depth the call would reach.
        depth: usize,
        /// The limit.
        limit: usize,
    },
}

/// The actors on `chain`, innermost first.
fn actors(chain: &CallChain) -> impl Iterator<Item = &ActorRef> {
    std::iter::successors(chain.as_deref(), |link| link.parent.as_deref()).map(|l| &l.actor)
}

/// The actors on `chain`, outermost caller first: how a chain crosses to
/// another host.
pub fn to_list(chain: &CallChain) -> Vec<ActorRef> {
    let mut list: Vec<ActorRef> = actors(chain).cloned().collect();
    list.reverse();
    list
}

/// The chain [`to_list`] gave, rebuilt; an error if it is deeper than
/// [`MAX_CHAIN_DEPTH`].
pub fn from_list(list: Vec<ActorRef>) -> Result<CallChain, ChainError> {
    if list.len() > MAX_CHAIN_DEPTH {
        return Err(ChainError::TooDeep {
            depth: list.len(),
            limit: MAX_CHAIN_DEPTH,
        });
    }
    let mut chain = None;
    for (i, actor) in list.into_iter().enumerate() {
        chain = Some(Arc::new(ChainLink {
            actor,
            parent: chain,
            depth: i + 1,
        }));
    }
    Ok(chain)
}

/// Whether `actor` is waiting, inside a turn, somewhere on `chain`.
pub fn contains(chain: &CallChain, actor: &ActorRef) -> bool {
    actors(chain).any(|a| a == actor)
}

/// The chain of a call that `caller`, itself called in `chain`, makes to
/// `target`; an error if `target` is waiting on the chain already or the
/// chain would be too deep.
pub fn extend(
    chain: &CallChain,
    caller: &ActorRef,
    target: &ActorRef,
) -> Result<CallChain, ChainError> {
    if caller == target || contains(chain, target) {
        let mut names: Vec<String> = actors(chain).map(ToString::to_string).collect();
        names.reverse();
        names.push(caller.to_string());
        names.push(target.to_string());
        return Err(ChainError::Reentrancy {
            target: target.to_string(),
            chain: names.join(" -> "),
        });
    }
    let depth = chain.as_ref().map_or(0, |link| link.depth) + 1;
    if depth > MAX_CHAIN_DEPTH {
        return Err(ChainError::TooDeep {
            depth,
            limit: MAX_CHAIN_DEPTH,
        });
    }
    Ok(Some(Arc::new(ChainLink {
        actor: caller.clone(),
        parent: chain.clone(),
        depth,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ActorRef {
        s.parse().unwrap()
    }

    #[test]
    fn a_call_back_into_the_chain_is_reentrancy() {
        let a_to_b = extend(&None, &r("a/1"), &r("b/1")).unwrap();
        let b_to_c = extend(&a_to_b, &r("b/1"), &r("c/1")).unwrap();
        let err = extend(&b_to_c, &r("c/1"), &r("a/1")).unwrap_err();
        assert!(
            err.to_string().contains("a/1 -> b/1 -> c/1 -> a/1"),
            "{err}"
        );
        assert!(matches!(
            extend(&None, &r("a/1"), &r("a/1")),
            Err(ChainError::Reentrancy { .. })
        ));
        // Another key of the same type is another actor.
        assert!(extend(&b_to_c, &r("c/1"), &r("a/2")).is_ok());
    }

    #[test]
    fn a_chain_rebuilt_from_its_list_refuses_the_same_calls() {
        let a_to_b = extend(&None, &r("a/1"), &r("b/1")).unwrap();
        let b_to_c = extend(&a_to_b, &r("b/1"), &r("c/1")).unwrap();
        let list = to_list(&b_to_c);
        assert_eq!(list, vec![r("a/1"), r("b/1")]);
        let rebuilt = from_list(list).unwrap();
        assert_eq!(to_list(&rebuilt), to_list(&b_to_c));
        let err = extend(&rebuilt, &r("c/1"), &r("a/1")).unwrap_err();
        assert!(
            err.to_string().contains("a/1 -> b/1 -> c/1 -> a/1"),
            "{err}"
        );
        let deep = (0..=MAX_CHAIN_DEPTH)
            .map(|i| r(&format!("a/{i}")))
            .collect();
        assert!(matches!(from_list(deep), Err(ChainError::TooDeep { .. })));
        assert!(from_list(Vec::new()).unwrap().is_none());
    }

    #[test]
    fn chains_have_a_depth_limit() {
        let mut chain = None;
        for i in 0..MAX_CHAIN_DEPTH {
            chain = extend(&chain, &r(&format!("a/{i}")), &r(&format!("a/{}", i + 1))).unwrap();
        }
        let err = extend(&chain, &r("a/x"), &r("a/y")).unwrap_err();
        assert!(matches!(err, ChainError::TooDeep { depth: 65, .. }));
    }
}
