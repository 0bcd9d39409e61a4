//! Host-to-host transport against a real redis-server: members call each
//! other over mutual TLS, and a process that is not a member is refused.

#[path = "../../runtime/tests/common/redis.rs"]
mod redis_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use grove_cluster::membership::{Lease, LeaseTiming, Member, Membership};
use grove_cluster::transport::{BoxFuture, Inbound, Responder, Transport, TransportConfig};
use grove_cluster::wire::{Event, Outcome, Push, Request};
use redis::aio::ConnectionManager;
use redis_server::RedisServer;

/// Answers every call with its arguments reversed; counts what it served.
#[derive(Default)]
struct Reverse {
    served: AtomicUsize,
}

impl Inbound<String> for Reverse {
    fn request(
        &self,
        _from: &Member,
        request: Request,
        responder: Responder<String>,
    ) -> BoxFuture<'_, ()> {
        self.served.fetch_add(1, Ordering::SeqCst);
        let mut args = request.args;
        args.reverse();
        responder.respond(Outcome::Returned(Some(args)));
        Box::pin(async {})
    }

    fn event(
        &self,
        _from: &Member,
        _event: Event,
        responder: Responder<String>,
    ) -> BoxFuture<'_, ()> {
        responder.respond(Outcome::NotHere);
        Box::pin(async {})
    }

    fn push(&self, _from: &Member, _push: Push, responder: Responder<String>) -> BoxFuture<'_, ()> {
        responder.respond(Outcome::NotHere);
        Box::pin(async {})
    }
}

struct Node {
    transport: Transport<String>,
    inbound: Arc<Reverse>,
    member: Member,
    _lease: Option<Lease>,
}

async fn node(membership: &Membership, id: &str, join: bool) -> Node {
    let inbound = Arc::new(Reverse::default());
    let weak: Weak<dyn Inbound<String>> =
        Arc::downgrade(&(inbound.clone() as Arc<dyn Inbound<String>>));
    let config = TransportConfig::new("127.0.0.1:0".parse().unwrap()).unwrap();
    let transport = Transport::start(config, membership.clone(), weak).unwrap();
    let member = Member {
        id: id.into(),
        address: transport.local_addr().unwrap().to_string(),
        fingerprint: transport.fingerprint().to_string(),
        activations: 0,
        plugins: vec![],
        started_ms: 1,
        renewed_ms: 1,
        draining: false,
        number: 0,
    };
    let timing = LeaseTiming {
        ttl: Duration::from_secs(3),
        renew_every: Duration::from_millis(500),
        margin: Duration::from_millis(750),
    };
    let lease = if join {
        Some(membership.join(member.clone(), timing).await.unwrap())
    } else {
        None
    };
    Node {
        transport,
        inbound,
        member,
        _lease: lease,
    }
}

fn request(args: Vec<u8>) -> Request {
    Request {
        id: 0,
        actor_type: "echo".into(),
        key: "1".into(),
        function: "reverse".into(),
        args,
        timeout_us: 1_000_000,
        chain: vec![],
        one_way: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_call_each_other_and_a_stranger_is_refused() {
    let redis = RedisServer::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let membership = Membership::new(ConnectionManager::new(client).await.unwrap(), "tls");
    let a = node(&membership, "a", true).await;
    let b = node(&membership, "b", true).await;

    // Many calls in flight at once on one connection, each answered by id.
    let mut answers = Vec::new();
    for i in 0..200u8 {
        answers.push((
            i,
            a.transport
                .request(&b.member, request(vec![i, 0, 255]))
                .await
                .unwrap(),
        ));
    }
    for (i, answer) in answers {
        assert_eq!(
            answer.await.unwrap(),
            Outcome::Returned(Some(vec![255, 0, i]))
        );
    }
    // The connection B accepted carries B's calls to A too.
    let back = b
        .transport
        .request(&a.member, request(vec![1, 2]))
        .await
        .unwrap();
    assert_eq!(back.await.unwrap(), Outcome::Returned(Some(vec![2, 1])));
    assert_eq!(a.inbound.served.load(Ordering::SeqCst), 1);
    assert_eq!(b.inbound.served.load(Ordering::SeqCst), 200);

    // A process with no lease has a certificate no member published: the
    // connection is closed before any request is served.
    let stranger = node(&membership, "stranger", false).await;
    let refused = match stranger
        .transport
        .request(&a.member, request(vec![9]))
        .await
    {
        Ok(answer) => tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .unwrap()
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "a stranger's call was answered");
    assert_eq!(a.inbound.served.load(Ordering::SeqCst), 1);

    // A member whose published fingerprint does not match the certificate
    // it presents is not who it claims: the caller refuses it.
    let mut impostor = b.member.clone();
    impostor.id = "impostor".into();
    impostor.fingerprint = a.member.fingerprint.clone();
    let outcome = a.transport.request(&impostor, request(vec![1])).await;
    assert!(
        outcome.is_err(),
        "a host whose certificate does not match its lease was trusted"
    );
}
