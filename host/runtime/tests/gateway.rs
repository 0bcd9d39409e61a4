//! The QUIC gateway end to end, over real QUIC on loopback: authentication,
//! frames and datagrams both ways, pushes from actor timers, disconnects, and
//! clients that break the rules.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grove_gateway_quic::client::{Client, ClientConfig, Closed, ConnectError, Received, Session};
use grove_gateway_quic::protocol::frame_header;
use grove_gateway_quic::{CloseCode, Fingerprint, Gateway, GatewayConfig, Identity};
use grove_host::gateway::{self, Authenticator};
use grove_host::Host;
use tokio::net::UdpSocket;

use common::{eventually, ok};

const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    host: Host,
    gateway: Gateway,
    client: Client,
}

async fn start_with(adjust: impl FnOnce(&mut GatewayConfig)) -> Setup {
    let host = common::host_of(&["echo"]);
    let identity = Identity::self_signed(&["localhost".into()]).unwrap();
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), identity);
    adjust(&mut config);
    let auth: Authenticator = "echo.login".parse().unwrap();
    let gateway = gateway::start(&host, config, auth).await.unwrap();
    let client = Client::new(ClientConfig::pinned(gateway.fingerprint())).unwrap();
    Setup {
        host,
        gateway,
        client,
    }
}

async fn start() -> Setup {
    start_with(|_| {}).await
}

impl Setup {
    async fn connect(&self, name: &str) -> Session {
        self.client
            .connect(self.gateway.local_addr(), name.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{name} could not connect: {e}"))
    }

    async fn events(&self, owner: &str) -> String {
        ok(&self.host, owner, "events", &[]).await
    }

    async fn wait_for_event(&self, owner: &str, event: &str) {
        eventually(&format!("{owner} saw `{event}`"), WAIT, || async {
            self.events(owner).await.contains(event)
        })
        .await;
    }
}

async fn recv_frame(session: &Session) -> String {
    loop {
        match tokio::time::timeout(WAIT, session.recv()).await {
            Ok(Ok(Received::Frame(bytes))) => return String::from_utf8_lossy(&bytes).into_owned(),
            Ok(Ok(Received::Datagram(_))) => continue,
            Ok(Err(closed)) => panic!("session closed while waiting for a frame: {closed}"),
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }
}

async fn closed_within(session: &Session) -> Closed {
    tokio::time::timeout(WAIT, session.closed())
        .await
        .expect("the gateway did not close the session")
}

fn refusal(result: Result<Session, ConnectError>) -> Closed {
    match result {
        Err(ConnectError::Refused(closed)) => closed,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(session) => panic!("expected a refusal, got session {}", session.id()),
    }
}

#[tokio::test]
async fn an_accepted_client_is_welcomed_and_its_owner_hears_of_it() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    assert_eq!(session.owner(), "echo/ayla");
    assert_eq!(session.max_frame(), 64 * 1024);
    setup
        .wait_for_event("echo/ayla", &format!("connect {}", session.id()))
        .await;
    assert_eq!(
        ok(&setup.host, "echo/ayla", "sessions", &[]).await,
        format!("[{}]", session.id())
    );
}

#[tokio::test]
async fn rejected_credentials_close_the_connection_with_the_authenticators_reason() {
    let setup = start().await;
    let addr = setup.gateway.local_addr();
    let closed = refusal(setup.client.connect(addr, b"banned-bob").await);
    assert_eq!(closed.code, Some(CloseCode::AuthRejected));
    assert_eq!(closed.reason, "banned-bob is banned");
    let closed = refusal(setup.client.connect(addr, b"").await);
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(CloseCode::AuthRejected), "empty name")
    );
    // The gateway goes on serving others.
    setup.connect("ayla").await;
}

#[tokio::test]
async fn reliable_frames_flow_both_ways_in_order() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    for i in 0..200 {
        session.send(format!("frame {i}").as_bytes()).await.unwrap();
    }
    for i in 0..200 {
        assert_eq!(recv_frame(&session).await, format!("frame {i}"));
    }
    // A frame can be sent before the welcome is read: it queues behind the
    // credentials.
    let big = vec![b'z'; 60 * 1024];
    session.send(&big).await.unwrap();
    assert_eq!(recv_frame(&session).await.len(), big.len());
}

#[tokio::test]
async fn datagrams_flow_both_ways() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    assert!(session.max_datagram().unwrap() >= 1000);
    // Datagrams may be lost, even on loopback: retry until one comes back.
    let mut echoed = None;
    for attempt in 0..50 {
        let payload = Bytes::from(format!("position {attempt}"));
        session.send_datagram(payload.clone()).unwrap();
        if let Ok(Ok(Received::Datagram(bytes))) =
            tokio::time::timeout(Duration::from_millis(200), session.recv()).await
        {
            echoed = Some(bytes);
            break;
        }
    }
    let echoed = echoed.expect("no datagram came back in 50 attempts");
    assert!(echoed.starts_with(b"position "), "{echoed:?}");
    // An actor can push a datagram to a session it does not own.
    let other = setup.connect("bren").await;
    let id = other.id().to_string();
    ok(
        &setup.host,
        "echo/ayla",
        "push",
        &[&id, "[104, 105]", "false"],
    )
    .await;
    let got = tokio::time::timeout(WAIT, other.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Received::Datagram(Bytes::from_static(b"hi")));
}

#[tokio::test]
async fn a_timer_in_the_actor_pushes_frames_to_the_client() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    session.send(b"tick 3 20").await.unwrap();
    for i in 1..=3 {
        assert_eq!(recv_frame(&session).await, format!("tick {i}"));
    }
}

#[tokio::test]
async fn one_payload_reaches_every_session_of_an_owner() {
    let setup = start().await;
    let first = setup.connect("ayla").await;
    let second = setup.connect("ayla").await;
    assert_ne!(first.id(), second.id());
    setup
        .wait_for_event("echo/ayla", &format!("connect {}", second.id()))
        .await;
    let reached = ok(
        &setup.host,
        "echo/ayla",
        "broadcast",
        &["[111, 107]", "true"],
    )
    .await;
    assert_eq!(reached, "2");
    assert_eq!(recv_frame(&first).await, "ok");
    assert_eq!(recv_frame(&second).await, "ok");
}

#[tokio::test]
async fn sending_to_an_unknown_session_is_an_error_the_actor_sees() {
    let setup = start().await;
    let answer = ok(&setup.host, "echo/ayla", "push", &["987654", "[1]", "true"]).await;
    assert_eq!(answer, "err(unknown-session)");
}

#[tokio::test]
async fn a_client_that_closes_produces_on_disconnect_with_its_reason() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    setup
        .wait_for_event("echo/ayla", &format!("connect {}", session.id()))
        .await;
    session.close("bye for now");
    setup
        .wait_for_event(
            "echo/ayla",
            &format!("disconnect {} client-closed: bye for now", session.id()),
        )
        .await;
    assert_eq!(ok(&setup.host, "echo/ayla", "sessions", &[]).await, "[]");
}

#[tokio::test]
async fn an_actor_closing_the_session_tells_the_client_why() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    session.send(b"close see you tomorrow").await.unwrap();
    let closed = closed_within(&session).await;
    assert_eq!(closed.code, Some(CloseCode::ClosedByActor));
    assert_eq!(closed.reason, "see you tomorrow");
    setup
        .wait_for_event(
            "echo/ayla",
            &format!(
                "disconnect {} closed-by-actor: see you tomorrow",
                session.id()
            ),
        )
        .await;
}

/// Forwards UDP between one client and the gateway until cut, as a network
/// that can disappear.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

async fn relay(target: SocketAddr) -> Relay {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let (f, b, c, x) = (front.clone(), back.clone(), client.clone(), cut.clone());
    tokio::spawn(async move {
        let mut buf = vec![0; 65536];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            if !x.load(Ordering::Relaxed) {
                let _ = b.send_to(&buf[..n], target).await;
            }
        }
    });
    let x = cut.clone();
    tokio::spawn(async move {
        let mut buf = vec![0; 65536];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let to = *client.lock().unwrap();
            if let (Some(to), false) = (to, x.load(Ordering::Relaxed)) {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    Relay { addr, cut }
}

#[tokio::test]
async fn a_client_that_vanishes_is_disconnected_at_the_idle_timeout() {
    let setup = start_with(|c| c.idle_timeout = Duration::from_millis(600)).await;
    let relay = relay(setup.gateway.local_addr()).await;
    let session = setup.client.connect(relay.addr, b"ayla").await.unwrap();
    session.send(b"still here").await.unwrap();
    assert_eq!(recv_frame(&session).await, "still here");
    relay.cut.store(true, Ordering::Relaxed);
    setup
        .wait_for_event(
            "echo/ayla",
            &format!("disconnect {} timed-out", session.id()),
        )
        .await;
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_session_with_a_reason() {
    let setup = start_with(|c| c.max_frame = 1024).await;
    let bystander = setup.connect("bren").await;
    let session = setup.connect("ayla").await;
    assert_eq!(session.max_frame(), 1024);
    session.send(&[b'x'; 1024]).await.unwrap();
    assert_eq!(recv_frame(&session).await.len(), 1024);
    let _ = session.send(&vec![b'x'; 5000]).await;
    let closed = closed_within(&session).await;
    assert_eq!(closed.code, Some(CloseCode::FrameTooLarge));
    assert!(
        closed.reason.contains("5000") && closed.reason.contains("1024"),
        "{closed}"
    );
    setup
        .wait_for_event(
            "echo/ayla",
            &format!("disconnect {} kicked: frame-too-large", session.id()),
        )
        .await;
    bystander.send(b"unaffected").await.unwrap();
    assert_eq!(recv_frame(&bystander).await, "unaffected");
}

#[tokio::test]
async fn an_actor_cannot_send_a_frame_over_the_limit() {
    let setup = start_with(|c| c.max_frame = 1024).await;
    let session = setup.connect("ayla").await;
    session.send(b"big 4096").await.unwrap();
    assert_eq!(recv_frame(&session).await, "too-large 1024");
}

#[tokio::test]
async fn a_flooding_client_is_closed_for_its_rate() {
    let setup = start_with(|c| {
        c.message_rate = 50;
        c.message_burst = 50;
    })
    .await;
    let bystander = setup.connect("bren").await;
    let session = setup.connect("ayla").await;
    for _ in 0..500 {
        if session.send(b"spam").await.is_err() {
            break;
        }
    }
    let closed = closed_within(&session).await;
    assert_eq!(closed.code, Some(CloseCode::RateLimited));
    assert!(closed.reason.contains("50 messages per second"), "{closed}");
    bystander.send(b"unaffected").await.unwrap();
    assert_eq!(recv_frame(&bystander).await, "unaffected");
}

#[tokio::test]
async fn oversized_or_truncated_first_packets_are_refused() {
    let setup = start_with(|c| c.max_credentials = 256).await;
    let addr = setup.gateway.local_addr();
    let closed = refusal(setup.client.connect(addr, &[b'a'; 300]).await);
    assert_eq!(closed.code, Some(CloseCode::BadFirstPacket));
    assert!(closed.reason.contains("300"), "{closed}");

    // A frame that announces 100 bytes, then the stream ends after 3.
    let connection = setup.client.handshake(addr).await.unwrap();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame_header(100)).await.unwrap();
    send.write_all(b"abc").await.unwrap();
    send.finish().unwrap();
    let closed: Closed = tokio::time::timeout(WAIT, connection.closed())
        .await
        .unwrap()
        .into();
    assert_eq!(closed.code, Some(CloseCode::BadFirstPacket));
}

#[tokio::test]
async fn a_client_that_never_sends_credentials_is_closed_at_the_auth_timeout() {
    let setup = start_with(|c| c.auth_timeout = Duration::from_millis(300)).await;
    let connection = setup
        .client
        .handshake(setup.gateway.local_addr())
        .await
        .unwrap();
    let closed: Closed = tokio::time::timeout(WAIT, connection.closed())
        .await
        .unwrap()
        .into();
    assert_eq!(closed.code, Some(CloseCode::AuthTimeout));
}

#[tokio::test]
async fn a_client_pinning_another_certificate_fails_to_connect() {
    let setup = start().await;
    let other = Identity::self_signed(&["localhost".into()]).unwrap();
    let wrong: Fingerprint = other.fingerprint();
    let client = Client::new(ClientConfig::pinned(wrong)).unwrap();
    match client.connect(setup.gateway.local_addr(), b"ayla").await {
        Err(ConnectError::Handshake(error)) => {
            assert!(error.to_string().contains("certificate"), "{error}")
        }
        Err(other) => panic!("expected a failed handshake, got {other}"),
        Ok(_) => panic!("connected despite the wrong pin"),
    }
    assert!(!setup.host.is_active(&"echo/ayla".parse().unwrap()));
}

#[tokio::test]
async fn shutting_the_gateway_down_tells_clients_and_owners() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    setup
        .wait_for_event("echo/ayla", &format!("connect {}", session.id()))
        .await;
    setup.gateway.shutdown().await;
    let closed = closed_within(&session).await;
    assert_eq!(closed.code, Some(CloseCode::HostShutdown));
    setup
        .wait_for_event(
            "echo/ayla",
            &format!("disconnect {} host-shutdown", session.id()),
        )
        .await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let setup = start_with(|c| c.outbound_queue = 4).await;
    let bystander = setup.connect("bren").await;
    let session = setup.connect("ayla").await;
    // Each command makes the actor queue a 60 KB frame this client never
    // reads: once QUIC's flow-control window is full, the queue fills.
    for _ in 0..100 {
        if session.send(b"big 60000").await.is_err() {
            break;
        }
    }
    let closed = closed_within(&session).await;
    assert_eq!(closed.code, Some(CloseCode::SlowConsumer), "{closed}");
    setup
        .wait_for_event(
            "echo/ayla",
            &format!("disconnect {} kicked: slow-consumer", session.id()),
        )
        .await;
    bystander.send(b"unaffected").await.unwrap();
    assert_eq!(recv_frame(&bystander).await, "unaffected");
}
