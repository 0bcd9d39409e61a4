//! Deploying a new version of a plugin while its actors run: no call fails,
//! every activation moves to the new version with its state, and a version
//! that would refuse the running one's calls is refused unless forced.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grove_host::error::{CallError, RejectedCall};
use grove_host::state::StateStore;
use grove_host::{ActorRef, DeployError, DeployOptions, Host};
use wasmtime::component::Val;

fn counter(key: usize) -> ActorRef {
    ActorRef::new("counter", &key.to_string())
}

fn counter_host() -> Host {
    let host = Host::new(common::config(), StateStore::memory()).unwrap();
    host.load_plugin(&common::plugin("counter")).unwrap();
    host
}

fn deploy(host: &Host, name: &str, force: bool) -> Result<grove_host::Deployed, DeployError> {
    let file = common::plugin(name);
    let bytes = std::fs::read(&file).unwrap();
    let options = DeployOptions {
        force,
        ..DeployOptions::default()
    };
    host.deploy(&file, &bytes, &options)
}

/// Callers that add 1 to each of `actors` actors of `actor_type` in turn
/// until `stop` is set, failing the test on any failed call; each answers
/// how many adds were acknowledged per actor.
fn adders(
    host: &Host,
    actor_type: &str,
    actors: usize,
    callers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<HashMap<usize, u64>>> {
    (0..callers)
        .map(|c| {
            let (host, stop, actor_type) = (host.clone(), stop.clone(), actor_type.to_owned());
            tokio::spawn(async move {
                let mut acked: HashMap<usize, u64> = HashMap::new();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let key = i % actors;
                    let target = ActorRef::new(&actor_type, &key.to_string());
                    let value = host.call(&target, "add", vec![Val::U64(1)]).await;
                    assert!(value.is_ok(), "a call failed: {value:?}");
                    *acked.entry(key).or_default() += 1;
                    i += callers;
                }
                acked
            })
        })
        .collect()
}

/// Stops the `callers` and adds up what they saw acknowledged.
async fn acknowledged(
    stop: &AtomicBool,
    callers: Vec<tokio::task::JoinHandle<HashMap<usize, u64>>>,
) -> HashMap<usize, u64> {
    stop.store(true, Ordering::Relaxed);
    let mut acked: HashMap<usize, u64> = HashMap::new();
    for caller in callers {
        for (key, n) in caller.await.unwrap() {
            *acked.entry(key).or_default() += n;
        }
    }
    acked
}

/// Deploys `next` over `plugin` while callers add 1 to each of `actors`
/// actors in turn; checks that no call failed, every activation moved, and
/// each actor's count is what was acknowledged.
async fn deploy_under_load(plugin: &str, next: &str, actors: usize) {
    const CALLERS: usize = 16;
    let host = Host::new(common::config(), StateStore::memory()).unwrap();
    host.load_plugin(&common::plugin(plugin)).unwrap();
    let actor_type = host.plugins()[0].actor_type.clone();
    let actor = |key: usize| ActorRef::new(&actor_type, &key.to_string());
    for key in 0..actors {
        host.call(&actor(key), "add", vec![Val::U64(1)])
            .await
            .unwrap();
    }
    assert_eq!(host.active_count(), actors);

    // Callers add 1 to every actor in turn, counting what was acknowledged,
    // before, during and after the deploy.
    let stop = Arc::new(AtomicBool::new(false));
    let callers = adders(&host, &actor_type, actors, CALLERS, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = host.plugin(&actor_type).unwrap();
    let deployed = deploy(&host, next, false).unwrap();
    assert_eq!(deployed.actor_type, actor_type);
    assert_eq!(deployed.moving, actors);
    assert!(deployed.breaking_changes.is_empty());
    assert_ne!(deployed.previous.as_deref(), Some(&*deployed.content_hash));
    assert_eq!(
        host.settle(&deployed, Duration::from_secs(10)).await,
        grove_host::Settled::Moved
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = acknowledged(&stop, callers).await;

    // Every activation moved, and each count is exactly what was
    // acknowledged.
    assert_eq!(old.activations(), 0);
    assert!(host.retired_versions().is_empty());
    assert_eq!(host.active_count(), actors);
    assert_eq!(
        host.plugin(&actor_type).unwrap().content_hash,
        deployed.content_hash
    );
    for key in 0..actors {
        let version = host.call(&actor(key), "version", vec![]).await.unwrap();
        assert_eq!(version, Some(Val::String("next".into())));
        let value = host.call(&actor(key), "get", vec![]).await.unwrap();
        let expected = 1 + acked.get(&key).copied().unwrap_or(0);
        assert_eq!(value, Some(Val::U64(expected)), "{actor_type}/{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_under_load_fails_no_call_and_moves_every_activation_with_its_state() {
    deploy_under_load("counter", "counter_next", 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_state_crosses_a_deploy_through_snapshot_and_restore() {
    deploy_under_load("tally", "tally_next", 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_version_is_refused_with_what_breaks_unless_forced() {
    let host = counter_host();
    let one = counter(1);
    host.call(&one, "add", vec![Val::U64(5)]).await.unwrap();

    let refused = deploy(&host, "counter_retyped", false).unwrap_err();
    let DeployError::Incompatible {
        actor_type,
        changes,
    } = &refused
    else {
        panic!("refused for another reason: {refused}");
    };
    assert_eq!(actor_type, "counter");
    assert_eq!(
        changes,
        &[
            "function `add`: parameter `amount`: was u64, now string \
             (was `add: func(amount: u64) -> u64`, now `add: func(amount: string) -> u64`)"
                .to_owned(),
            "function `reset` was removed (was `reset: func()`)".to_owned(),
        ]
    );
    assert!(refused.to_string().contains("--force"), "{refused}");
    // Refused, it changed nothing: the running version still answers.
    assert_eq!(
        host.call(&one, "add", vec![Val::U64(1)]).await.unwrap(),
        Some(Val::U64(6))
    );

    let forced = deploy(&host, "counter_retyped", true).unwrap();
    assert_eq!(forced.breaking_changes, *changes);
    assert_eq!(forced.moving, 1);
    // Once moved, the actor takes the new types. (A call made while it
    // still moves can reach the old version, which refuses new-shaped
    // arguments: the HTTP API answers a deploy only once it has moved.)
    let settled = host.settle(&forced, Duration::from_secs(10)).await;
    assert!(matches!(settled, grove_host::Settled::Moved), "{settled:?}");
    assert_eq!(
        host.call(&one, "add", vec![Val::String("4".into())])
            .await
            .unwrap(),
        Some(Val::U64(10))
    );
    // A call the new version cannot take is refused before it runs.
    let error = host.call(&one, "reset", vec![]).await.unwrap_err();
    assert!(
        matches!(
            error,
            CallError::Rejected(RejectedCall::UnknownFunction { .. })
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_the_running_version_or_a_corrupt_file_changes_nothing() {
    let host = counter_host();
    let one = counter(1);
    host.call(&one, "add", vec![Val::U64(2)]).await.unwrap();

    let same = deploy(&host, "counter", false).unwrap();
    assert_eq!(same.previous.as_deref(), Some(&*same.content_hash));
    assert_eq!(same.moving, 0);

    // A component of another type than the one named is refused.
    let file = common::plugin("echo");
    let options = DeployOptions {
        actor_type: Some("counter".into()),
        ..DeployOptions::default()
    };
    let error = host
        .deploy(&file, &std::fs::read(&file).unwrap(), &options)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the component provides actor type `echo`, not `counter`"
    );
    assert!(host.plugin("echo").is_err());

    let file = common::plugin("counter");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    let error = host
        .deploy(&file, &bytes, &DeployOptions::default())
        .unwrap_err();
    assert!(matches!(error, DeployError::Plugin(_)), "{error}");
    assert_eq!(
        host.call(&one, "add", vec![Val::U64(1)]).await.unwrap(),
        Some(Val::U64(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_activations_move_at_once_without_waiting_for_a_call() {
    const ACTORS: usize = 50;
    let host = counter_host();
    for key in 0..ACTORS {
        host.call(&counter(key), "add", vec![Val::U64(1)])
            .await
            .unwrap();
    }
    let old = host.plugin("counter").unwrap();
    assert_eq!(old.activations(), ACTORS);

    let deployed = deploy(&host, "counter_next", false).unwrap();
    assert_eq!(deployed.moving, ACTORS);
    let new = host.plugin("counter").unwrap();
    let start = std::time::Instant::now();
    while old.activations() > 0 || new.activations() < ACTORS {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} activations on the old version, {} on the new",
            old.activations(),
            new.activations()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(host.active_count(), ACTORS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_on_activate_traps_is_rolled_back_and_no_call_fails() {
    const ACTORS: usize = 200;
    const CALLERS: usize = 8;
    let host = counter_host();
    let running = host.plugin("counter").unwrap().content_hash.clone();
    for key in 0..ACTORS {
        host.call(&counter(key), "add", vec![Val::U64(1)])
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let callers = adders(&host, "counter", ACTORS, CALLERS, &stop);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let deployed = deploy(&host, "counter_unstartable", false).unwrap();
    assert_eq!(deployed.moving, ACTORS);
    let settled = host.settle(&deployed, Duration::from_secs(10)).await;
    let grove_host::Settled::RolledBack { reason } = settled else {
        panic!("not rolled back: {settled:?}");
    };
    assert!(
        reason.contains("on-activate") && reason.contains("cannot start"),
        "{reason}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = acknowledged(&stop, callers).await;

    // Back on the version before, every counter with what was acknowledged.
    assert_eq!(host.plugin("counter").unwrap().content_hash, running);
    for key in 0..ACTORS {
        let value = host.call(&counter(key), "get", vec![]).await.unwrap();
        let expected = 1 + acked.get(&key).copied().unwrap_or(0);
        assert_eq!(value, Some(Val::U64(expected)), "counter/{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_cannot_restore_is_rolled_back_and_the_state_goes_back_with_it() {
    const ACTORS: usize = 100;
    const CALLERS: usize = 4;
    let host = Host::new(common::config(), StateStore::memory()).unwrap();
    host.load_plugin(&common::plugin("tally")).unwrap();
    let running = host.plugin("tally").unwrap().content_hash.clone();
    let tally = |key: usize| ActorRef::new("tally", &key.to_string());
    // Tallies keep their count in memory only.
    for key in 0..ACTORS {
        host.call(&tally(key), "add", vec![Val::U64(key as u64)])
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let callers = adders(&host, "tally", ACTORS, CALLERS, &stop);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The new version's `restore` traps on the old version's snapshot.
    let deployed = deploy(&host, "tally_unreadable", false).unwrap();
    let settled = host.settle(&deployed, Duration::from_secs(10)).await;
    let grove_host::Settled::RolledBack { reason } = settled else {
        panic!("not rolled back: {settled:?}");
    };
    assert!(reason.contains("restore"), "{reason}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = acknowledged(&stop, callers).await;

    // Back on the version before, every tally with its count: the snapshot
    // the failed start could not read went back to the old code.
    assert_eq!(host.plugin("tally").unwrap().content_hash, running);
    for key in 0..ACTORS {
        let value = host.call(&tally(key), "get", vec![]).await.unwrap();
        let expected = key as u64 + acked.get(&key).copied().unwrap_or(0);
        assert_eq!(value, Some(Val::U64(expected)), "tally/{key}");
    }
}
