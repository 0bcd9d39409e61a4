//! Host-to-host transport against a real redis-server: members call each
//! other over mutual TLS, and a process that is not a member is refused.

#[path = "../../runtime/tests/common/redis.rs"]
mod redis_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use grove_cluster::membership::{Lease, LeaseTiming, Member, Membership};
use grove_cluster::transport::{
    Answer, BoxFuture, Inbound, Responder, Transport, TransportConfig, Unanswered,
};
use grove_cluster::wire::{Event, Outcome, Push, Request};
use redis::aio::ConnectionManager;
use redis_server::RedisServer;

/// Answers every call with its arguments reversed, except calls to `hold`,
/// which it keeps unanswered; counts what it served.
#[derive(Default)]
struct Reverse {
    served: AtomicUsize,
    held: Mutex<Vec<Responder<String>>>,
}

impl Inbound<String> for Reverse {
    fn request(
        &self,
        _from: &Member,
        request: Request,
        responder: Responder<String>,
    ) -> BoxFuture<'_, ()> {
        self.served.fetch_add(1, Ordering::SeqCst);
        if request.function == "hold" {
            self.held.lock().unwrap().push(responder);
            return Box::pin(async {});
        }
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
        trace: None,
    }
}

/// Sends `request` from `from` to `to`, with `timeout` for its deadline.
async fn call(
    from: &Transport<String>,
    to: &Member,
    request: Request,
    timeout: Duration,
) -> tokio::sync::oneshot::Receiver<Answer<String>> {
    let (waiter, answer) = tokio::sync::oneshot::channel();
    from.request(to, request, Instant::now() + timeout, waiter)
        .await;
    answer
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
        let answer = call(&a.transport, &b.member, request(vec![i, 0, 255]), SECOND).await;
        answers.push((i, answer));
    }
    for (i, answer) in answers {
        assert_eq!(
            answer.await.unwrap(),
            Ok(Outcome::Returned(Some(vec![255, 0, i])))
        );
    }
    // A frame larger than any one read arrives whole.
    let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut reversed = large.clone();
    reversed.reverse();
    let answer = call(&a.transport, &b.member, request(large), SECOND).await;
    assert_eq!(answer.await.unwrap(), Ok(Outcome::Returned(Some(reversed))));
    // The connection B accepted carries B's calls to A too.
    let back = call(&b.transport, &a.member, request(vec![1, 2]), SECOND).await;
    assert_eq!(back.await.unwrap(), Ok(Outcome::Returned(Some(vec![2, 1]))));
    assert_eq!(a.inbound.served.load(Ordering::SeqCst), 1);
    assert_eq!(b.inbound.served.load(Ordering::SeqCst), 201);

    // A process with no lease has a certificate no member published: the
    // connection is closed before any request is served.
    let stranger = node(&membership, "stranger", false).await;
    let answer = call(&stranger.transport, &a.member, request(vec![9]), SECOND).await;
    let answer = tokio::time::timeout(5 * SECOND, answer).await.unwrap();
    assert!(
        matches!(answer, Ok(Err(Unanswered::Lost | Unanswered::Unsent(_)))),
        "a stranger's call was answered: {answer:?}"
    );
    assert_eq!(a.inbound.served.load(Ordering::SeqCst), 1);

    // A member whose published fingerprint does not match the certificate
    // it presents is not who it claims: the caller refuses it.
    let mut impostor = b.member.clone();
    impostor.id = "impostor".into();
    impostor.fingerprint = a.member.fingerprint.clone();
    let answer = call(&a.transport, &impostor, request(vec![1]), SECOND).await;
    assert!(
        matches!(answer.await.unwrap(), Err(Unanswered::Unsent(_))),
        "a host whose certificate does not match its lease was trusted"
    );
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_left_unanswered_times_out_at_its_deadline_and_others_go_on() {
    let redis = RedisServer::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let membership = Membership::new(ConnectionManager::new(client).await.unwrap(), "tls");
    let a = node(&membership, "a", true).await;
    let b = node(&membership, "b", true).await;
    let mut hold = request(vec![]);
    hold.function = "hold".into();

    // A long deadline first: the short one sent after it is due earlier
    // and must wake the connection's deadline task.
    let sent = Instant::now();
    let long = call(&a.transport, &b.member, hold.clone(), 30 * SECOND).await;
    // Let the deadline task go to sleep until the long deadline.
    tokio::time::sleep(50 * MILLI).await;
    let short = call(&a.transport, &b.member, hold, 300 * MILLI).await;
    let answered = call(&a.transport, &b.member, request(vec![1, 2]), SECOND).await;
    assert_eq!(
        answered.await.unwrap(),
        Ok(Outcome::Returned(Some(vec![2, 1])))
    );
    assert_eq!(short.await.unwrap(), Err(Unanswered::Timeout));
    let waited = sent.elapsed();
    assert!(
        (300 * MILLI..3 * SECOND).contains(&waited),
        "timed out after {waited:?}"
    );

    // The connection goes on, and the held request with the long deadline
    // is answered whenever its host answers it.
    let again = call(&a.transport, &b.member, request(vec![3, 4]), SECOND).await;
    assert_eq!(
        again.await.unwrap(),
        Ok(Outcome::Returned(Some(vec![4, 3])))
    );
    let held: Vec<_> = b.inbound.held.lock().unwrap().drain(..).collect();
    assert_eq!(held.len(), 2);
    for responder in held {
        responder.respond(Outcome::Queued);
    }
    assert_eq!(long.await.unwrap(), Ok(Outcome::Queued));
}

const MILLI: Duration = Duration::from_millis(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_host_refuses_new_requests_and_fails_a_link_it_owes_answers_on_and_a_dropped_connection_loses_them(
) {
    let redis = RedisServer::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let membership = Membership::new(ConnectionManager::new(client).await.unwrap(), "tls");
    let a = node(&membership, "a", true).await;
    let b = node(&membership, "b", true).await;
    let c = node(&membership, "c", true).await;
    let d = node(&membership, "d", true).await;
    let mut hold = request(vec![]);
    hold.function = "hold".into();

    // B leaves while A's request is held unanswered there, and while D has
    // a link to B that it owes nothing on.
    let left = call(&a.transport, &b.member, hold.clone(), 10 * SECOND).await;
    let served = call(&a.transport, &b.member, request(vec![7]), SECOND).await;
    assert_eq!(served.await.unwrap(), Ok(Outcome::Returned(Some(vec![7]))));
    let served = call(&d.transport, &b.member, request(vec![6]), SECOND).await;
    assert_eq!(served.await.unwrap(), Ok(Outcome::Returned(Some(vec![6]))));
    let leaving = b.transport.clone();
    let leaving = tokio::spawn(async move { leaving.close(SECOND).await });
    tokio::time::sleep(100 * MILLI).await;
    // A request that reaches B while it waits for its answers is refused
    // unrun: D may send it elsewhere.
    let refused = call(&d.transport, &b.member, request(vec![5]), SECOND).await;
    assert_eq!(refused.await.unwrap(), Ok(Outcome::NotHere));
    assert_eq!(b.inbound.served.load(Ordering::SeqCst), 3);
    leaving.await.unwrap();
    // B ended D's stream cleanly: D knows B left and does not dial it again.
    assert!(d.transport.has_departed("b"));
    let after = call(&d.transport, &b.member, request(vec![8]), SECOND).await;
    assert!(
        matches!(after.await.unwrap(), Err(Unanswered::Unsent(_))),
        "a request was sent to a host that left"
    );
    // B took A's request and never answered it: it may yet run there, so A
    // hears it lost, not free to go to another host; nor does A dial B again.
    assert_eq!(left.await.unwrap(), Err(Unanswered::Lost));
    assert!(a.transport.has_departed("b"));

    // C drops the connection with A's request in flight: it may have run.
    let lost = call(&a.transport, &c.member, hold, 10 * SECOND).await;
    let served = call(&a.transport, &c.member, request(vec![9]), SECOND).await;
    assert_eq!(served.await.unwrap(), Ok(Outcome::Returned(Some(vec![9]))));
    c.transport.disconnect("a");
    assert_eq!(lost.await.unwrap(), Err(Unanswered::Lost));
    // The next request dials again.
    let again = call(&a.transport, &c.member, request(vec![1, 2]), SECOND).await;
    assert_eq!(
        again.await.unwrap(),
        Ok(Outcome::Returned(Some(vec![2, 1])))
    );
}
