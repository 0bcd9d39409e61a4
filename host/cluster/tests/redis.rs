//! Membership and placement against a real redis-server.

#[path = "../../runtime/tests/common/redis.rs"]
mod redis_server;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use grove_cluster::membership::{JoinError, LeaseTiming, Member, Membership};
use grove_cluster::placement::{Owner, Placement};
use grove_cluster::versions::{Publish, Rollback, Versions};
use grove_core::ActorRef;
use redis::aio::ConnectionManager;
use redis_server::RedisServer;
use tokio::time::Instant;

async fn connect(redis: &RedisServer) -> ConnectionManager {
    let client = redis::Client::open(redis.url()).unwrap();
    ConnectionManager::new(client).await.unwrap()
}

fn member(id: &str) -> Member {
    Member {
        id: id.into(),
        address: format!("127.0.0.1:{}", 7000 + id.len()),
        fingerprint: "ab".repeat(32),
        activations: 0,
        plugins: vec!["counter@1a2b3c".into()],
        started_ms: 1,
        renewed_ms: 1,
        draining: false,
        number: 0,
    }
}

fn timing() -> LeaseTiming {
    LeaseTiming {
        ttl: Duration::from_millis(1500),
        renew_every: Duration::from_millis(250),
        margin: Duration::from_millis(400),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_first_claims_gives_each_actor_exactly_one_owner() {
    let redis = RedisServer::start();
    let placement = Placement::new(connect(&redis).await, "storm");
    let actors: Vec<ActorRef> = (0..500)
        .map(|i| ActorRef::new("counter", &i.to_string()))
        .collect();
    // Four hosts claim every actor at once, each from two tasks.
    let mut tasks = Vec::new();
    // Each task starts at a different place in the list, so that the
    // races are real and different hosts win.
    for (n, host) in ["a", "b", "c", "d", "a", "b", "c", "d"]
        .into_iter()
        .enumerate()
    {
        let (placement, actors) = (placement.clone(), actors.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for k in 0..actors.len() {
                let i = (k + n * 63) % actors.len();
                answers.push((i, placement.claim(&actors[i], host, None).await.unwrap()));
            }
            answers
        }));
    }
    let mut seen: HashMap<usize, Owner> = HashMap::new();
    for task in tasks {
        for (i, owner) in task.await.unwrap() {
            let first = seen.entry(i).or_insert_with(|| owner.clone());
            assert_eq!(*first, owner, "every claimer of actor {i} sees one owner");
        }
    }
    for (i, actor) in actors.iter().enumerate() {
        let stored = placement.lookup(actor).await.unwrap().unwrap();
        assert_eq!(stored, seen[&i]);
        assert_eq!(stored.epoch, 1, "one claim won, once");
    }
    // The work spread: more than one host won something.
    let winners: std::collections::HashSet<_> = seen.values().map(|o| o.host.clone()).collect();
    assert!(winners.len() > 1, "{winners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owner_is_replaced_with_a_larger_epoch_and_cannot_release() {
    let redis = RedisServer::start();
    let placement = Placement::new(connect(&redis).await, "takeover");
    let actor = ActorRef::new("player", "a}b{c");
    let a = placement.claim(&actor, "host-a", None).await.unwrap();
    assert_eq!(
        a,
        Owner {
            host: "host-a".into(),
            epoch: 1
        }
    );
    // Claiming without naming the dead owner changes nothing.
    assert_eq!(placement.claim(&actor, "host-b", None).await.unwrap(), a);
    // Naming the wrong owner changes nothing either.
    let wrong = Owner {
        host: "host-c".into(),
        epoch: 1,
    };
    assert_eq!(
        placement
            .claim(&actor, "host-b", Some(&wrong))
            .await
            .unwrap(),
        a
    );
    let b = placement.claim(&actor, "host-b", Some(&a)).await.unwrap();
    assert_eq!(
        b,
        Owner {
            host: "host-b".into(),
            epoch: 2
        }
    );
    // The superseded owner's release is refused; the owner's succeeds.
    assert!(!placement.release(&actor, &a).await.unwrap());
    assert_eq!(placement.lookup(&actor).await.unwrap(), Some(b.clone()));
    assert!(placement.release(&actor, &b).await.unwrap());
    assert_eq!(placement.lookup(&actor).await.unwrap(), None);
    // The epoch survives the release: the next claim is later still.
    let c = placement.claim(&actor, "host-c", None).await.unwrap();
    assert_eq!(c.epoch, 3);
    // The entry shares the actor's hash tag (its state rows' slot).
    assert_eq!(
        placement.key(&actor),
        "grove-cluster:{player/a%7Db%7Bc}:owner@takeover"
    );
    let ttl = redis.cli(&["TTL", &placement.key(&actor)]);
    assert_eq!(ttl.trim(), "-1", "an entry, and its epoch, never expire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_each_other_and_a_silent_host_lapses() {
    let redis = RedisServer::start();
    let membership = Membership::new(connect(&redis).await, "members");
    let one = membership.join(member("one"), timing()).await.unwrap();
    let two = membership.join(member("two"), timing()).await.unwrap();
    let ids = |members: Vec<Member>| members.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids(membership.members().await.unwrap()), ["one", "two"]);
    // An id held by a live lease cannot join twice.
    match membership.join(member("one"), timing()).await {
        Err(JoinError::Taken(id)) => assert_eq!(id, "one"),
        other => panic!("{:?}", other.map(|lease| lease.id().to_owned())),
    }
    // Renewals keep a lease alive past its TTL, with what it publishes.
    one.publish(|m| m.activations = 42);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(one.is_valid() && two.is_valid());
    let members = membership.members().await.unwrap();
    assert_eq!(members[0].activations, 42);
    assert!(members[0].renewed_ms > 1);
    // Leaving is seen at once; a host that stops renewing lapses after TTL.
    one.leave().await.unwrap();
    assert_eq!(ids(membership.members().await.unwrap()), ["two"]);
    drop(two);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(membership.members().await.unwrap().is_empty());
    assert_eq!(
        redis
            .cli(&["SCARD", "grove-cluster:{members}:members"])
            .trim(),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_from_redis_fences_itself_before_its_lease_can_lapse() {
    let redis = RedisServer::start();
    let membership = Membership::new(connect(&redis).await, "fence");
    let lease = membership.join(member("cut"), timing()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(lease.is_valid());
    // Redis stops answering anyone for 4 s.
    redis.cli(&["CLIENT", "PAUSE", "4000", "ALL"]);
    tokio::time::timeout(Duration::from_secs(3), lease.fenced())
        .await
        .expect("fenced while Redis is away");
    let fenced_at = Instant::now();
    // The lease lives at least until its last acknowledged renewal's send
    // time plus the TTL, which is `valid_until() + margin`: the host must
    // be fenced before then.
    let t = timing();
    let lapses_no_earlier = lease.valid_until() + t.margin;
    assert!(
        fenced_at < lapses_no_earlier,
        "fenced {:?} after the lease may have lapsed",
        fenced_at - lapses_no_earlier
    );
    assert!(fenced_at >= lease.valid_until(), "not fenced early");
    assert!(!lease.is_valid(), "fencing is for good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_could_lapse_before_its_first_renewal_is_refused() {
    let redis = RedisServer::start();
    let membership = Membership::new(connect(&redis).await, "timing");
    let late = LeaseTiming {
        ttl: Duration::from_secs(1),
        renew_every: Duration::from_millis(800),
        margin: Duration::from_millis(300),
    };
    assert!(matches!(
        membership.join(member("late"), late).await,
        Err(JoinError::Timing(_))
    ));
    assert!(membership.members().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_version_is_published_again_only_when_forced() {
    let redis = RedisServer::start();
    let versions = Versions::new(connect(&redis).await, "versions");
    let published = |p: Publish| match p {
        Publish::Published(record) => record,
        Publish::RolledBack(record) => panic!("refused: {record:?}"),
    };
    let v1 = published(versions.publish("counter", "v1", false).await.unwrap());
    assert_eq!((v1.generation, v1.version.as_str()), (1, "v1"));
    // Publishing the version that runs changes nothing.
    assert_eq!(
        published(versions.publish("counter", "v1", false).await.unwrap()),
        v1
    );
    let v2 = published(versions.publish("counter", "v2", false).await.unwrap());
    assert_eq!(v2.generation, 2);

    let Rollback::RolledBack(back) = versions
        .roll_back("counter", "v2", "v1", "on-activate trapped")
        .await
        .unwrap()
    else {
        panic!("not rolled back")
    };
    assert_eq!(back.generation, 3);
    assert_eq!(back.version, "v1");
    assert_eq!(back.rolled_back.as_deref(), Some("v2"));
    assert_eq!(back.reason.as_deref(), Some("on-activate trapped"));
    // Every host sees it.
    assert_eq!(versions.current().await.unwrap()["counter"], back);

    // Publishing the version that runs keeps the rollback on record.
    assert_eq!(
        versions.publish("counter", "v1", false).await.unwrap(),
        Publish::Published(back.clone())
    );
    // A deploy of v2 racing the rollback is refused; a forced one is not.
    assert_eq!(
        versions.publish("counter", "v2", false).await.unwrap(),
        Publish::RolledBack(back.clone())
    );
    let forced = published(versions.publish("counter", "v2", true).await.unwrap());
    assert_eq!((forced.generation, forced.rolled_back), (4, None));

    // A rollback of v2 does not undo v3, deployed meanwhile on another host.
    let v3 = published(versions.publish("counter", "v3", false).await.unwrap());
    assert_eq!(
        versions
            .roll_back("counter", "v2", "v1", "trapped")
            .await
            .unwrap(),
        Rollback::Superseded(v3.clone())
    );
    assert_eq!(versions.current().await.unwrap()["counter"], v3);

    // A rollback published before its deploy (both from one host, in the
    // wrong order) still keeps the failed version out.
    let Rollback::RolledBack(early) = versions
        .roll_back("counter", "v4", "v3", "trapped")
        .await
        .unwrap()
    else {
        panic!("not rolled back")
    };
    assert_eq!((early.version.as_str(), early.generation), ("v3", 6));
    assert!(matches!(
        versions.publish("counter", "v4", false).await.unwrap(),
        Publish::RolledBack(_)
    ));
    // Another version clears the rollback.
    let v5 = published(versions.publish("counter", "v5", false).await.unwrap());
    assert_eq!((v5.generation, v5.rolled_back), (7, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_racing_a_rollback_never_leave_the_failed_version_running() {
    let redis = RedisServer::start();
    let versions = Versions::new(connect(&redis).await, "race");
    for round in 0..20 {
        let actor_type = format!("room{round}");
        versions.publish(&actor_type, "good", false).await.unwrap();
        // Eight hosts that deployed `bad` publish it while one on which it
        // failed rolls it back: all released at once, the rollback spawned
        // at a different place each round.
        let start = Arc::new(tokio::sync::Barrier::new(9));
        let mut tasks = Vec::new();
        for i in 0..9 {
            let (versions, actor_type, start) =
                (versions.clone(), actor_type.clone(), start.clone());
            let rolls_back = i == round % 9;
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                if rolls_back {
                    let outcome = versions
                        .roll_back(&actor_type, "bad", "good", "trapped")
                        .await
                        .unwrap();
                    assert!(matches!(outcome, Rollback::RolledBack(_)));
                } else {
                    versions.publish(&actor_type, "bad", false).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let record = versions.current().await.unwrap()[&actor_type].clone();
        assert_eq!(record.version, "good", "round {round}: {record:?}");
        assert_eq!(record.rolled_back.as_deref(), Some("bad"));
    }
}
