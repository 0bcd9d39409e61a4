//! The gateway's WebSocket door end to end, with the `echo` actor: the same
//! sessions, limits and close reasons as QUIC, over real sockets on
//! loopback. Close codes arrive as 4000 plus Grove's code.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grove_gateway_quic::client::{
    Client, ClientConfig, Closed, ConnectError, Received, ServerTrust,
};
use grove_gateway_quic::websocket::WebSocketListen;
use grove_gateway_quic::websocket_client::WsSession;
use grove_gateway_quic::{CloseCode, Gateway, GatewayConfig, Identity};
use grove_host::gateway::{self, Authenticator};
use grove_host::Host;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{eventually, ok};

const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    host: Host,
    gateway: Gateway,
}

async fn start_with(plain: bool, adjust: impl FnOnce(&mut GatewayConfig)) -> Setup {
    let host = common::host_of(&["echo"]);
    let identity = Identity::self_signed(&["localhost".into()]).unwrap();
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), identity);
    config.websocket = Some(WebSocketListen {
        listen: "127.0.0.1:0".parse().unwrap(),
        plain,
    });
    adjust(&mut config);
    let auth: Authenticator = "echo.login".parse().unwrap();
    let gateway = gateway::start(&host, config, auth).await.unwrap();
    Setup { host, gateway }
}

async fn start() -> Setup {
    start_with(true, |_| {}).await
}

impl Setup {
    fn ws_addr(&self) -> SocketAddr {
        self.gateway.websocket_addr().unwrap()
    }

    async fn connect(&self, name: &str) -> WsSession {
        WsSession::connect_plain(self.ws_addr(), name.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{name} could not connect: {e}"))
    }

    async fn wait_for_event(&self, owner: &str, event: &str) {
        eventually(&format!("{owner} saw `{event}`"), WAIT, || async {
            ok(&self.host, owner, "events", &[]).await.contains(event)
        })
        .await;
    }
}

async fn recv(session: &WsSession) -> String {
    match tokio::time::timeout(WAIT, session.recv()).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(Err(closed)) => panic!("session closed while waiting for a message: {closed}"),
        Err(_) => panic!("no message within {WAIT:?}"),
    }
}

/// Reads (and drops) messages until the gateway closes the session.
async fn closed_within(session: &WsSession) -> Closed {
    let closing = async {
        loop {
            if let Err(closed) = session.recv().await {
                return closed;
            }
        }
    };
    tokio::time::timeout(WAIT, closing)
        .await
        .expect("the gateway did not close the session")
}

fn refusal(result: Result<WsSession, ConnectError>) -> Closed {
    match result {
        Err(ConnectError::Refused(closed)) => closed,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(session) => panic!("expected a refusal, got session {}", session.id()),
    }
}

#[tokio::test]
async fn a_client_logs_in_over_tls_pinning_the_gateways_certificate() {
    let setup = start_with(false, |_| {}).await;
    let trust = ServerTrust::Pinned(setup.gateway.fingerprint());
    let session = WsSession::connect_tls(setup.ws_addr(), &trust, "localhost", b"ayla")
        .await
        .unwrap();
    assert_eq!(session.owner(), "echo/ayla");
    assert_eq!(session.max_frame(), 64 * 1024);
    session.send(b"over tls").await.unwrap();
    assert_eq!(recv(&session).await, "over tls");
    setup
        .wait_for_event("echo/ayla", &format!("connect {}", session.id()))
        .await;
    // Another pin is refused during the TLS handshake.
    let wrong = ServerTrust::Pinned(Identity::self_signed(&["x".into()]).unwrap().fingerprint());
    let refused = WsSession::connect_tls(setup.ws_addr(), &wrong, "localhost", b"bren").await;
    assert!(
        matches!(refused, Err(ConnectError::Tls(_))),
        "connected with a wrong pin"
    );
}

#[tokio::test]
async fn rejected_credentials_close_with_the_authenticators_reason() {
    let setup = start().await;
    let closed = refusal(WsSession::connect_plain(setup.ws_addr(), b"banned-bob").await);
    assert_eq!(closed.code, Some(CloseCode::AuthRejected));
    assert_eq!(closed.reason, "banned-bob is banned");
    let closed = refusal(WsSession::connect_plain(setup.ws_addr(), b"").await);
    assert_eq!(closed.code, Some(CloseCode::AuthRejected));
    setup.connect("ayla").await;
}

#[tokio::test]
async fn frames_flow_both_ways_in_order_and_timers_push() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    assert_eq!(session.owner(), "echo/ayla");
    for i in 0..200 {
        session.send(format!("frame {i}").as_bytes()).await.unwrap();
    }
    for i in 0..200 {
        assert_eq!(recv(&session).await, format!("frame {i}"));
    }
    session.send(b"tick 3 20").await.unwrap();
    for i in 1..=3 {
        assert_eq!(recv(&session).await, format!("tick {i}"));
    }
}

#[tokio::test]
async fn one_payload_reaches_sessions_on_quic_and_websocket_alike() {
    let setup = start().await;
    let client = Client::new(ClientConfig::pinned(setup.gateway.fingerprint())).unwrap();
    let quic = client
        .connect(setup.gateway.local_addr(), b"ayla")
        .await
        .unwrap();
    let ws = setup.connect("ayla").await;
    assert_ne!(quic.id(), ws.id());
    setup
        .wait_for_event("echo/ayla", &format!("connect {}", ws.id()))
        .await;
    setup
        .wait_for_event("echo/ayla", &format!("connect {}", quic.id()))
        .await;
    let reached = ok(
        &setup.host,
        "echo/ayla",
        "broadcast",
        &["[111, 107]", "true"],
    )
    .await;
    assert_eq!(reached, "2");
    assert_eq!(recv(&ws).await, "ok");
    let frame = tokio::time::timeout(WAIT, quic.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame, Received::Frame("ok".into()));
    // An unreliable send reaches the WebSocket client as a message too.
    let id = ws.id().to_string();
    ok(
        &setup.host,
        "echo/ayla",
        "push",
        &[&id, "[104, 105]", "false"],
    )
    .await;
    assert_eq!(recv(&ws).await, "hi");
}

#[tokio::test]
async fn client_and_actor_closes_reach_the_other_side_with_their_reasons() {
    let setup = start().await;
    let leaving = setup.connect("ayla").await;
    setup
        .wait_for_event("echo/ayla", &format!("connect {}", leaving.id()))
        .await;
    leaving.close("bye for now").await;
    setup
        .wait_for_event(
            "echo/ayla",
            &format!("disconnect {} client-closed: bye for now", leaving.id()),
        )
        .await;

    let closed_by_actor = setup.connect("bren").await;
    closed_by_actor.send(b"last words").await.unwrap();
    closed_by_actor
        .send(b"close see you tomorrow")
        .await
        .unwrap();
    // Frames queued before the close arrive before it.
    assert_eq!(recv(&closed_by_actor).await, "last words");
    let closed = closed_within(&closed_by_actor).await;
    assert_eq!(closed.code, Some(CloseCode::ClosedByActor));
    assert_eq!(closed.reason, "see you tomorrow");
    setup
        .wait_for_event(
            "echo/bren",
            &format!(
                "disconnect {} closed-by-actor: see you tomorrow",
                closed_by_actor.id()
            ),
        )
        .await;
}

/// The gateway and its client read a socket a few KiB at a time; frames up
/// to the limit, many times that, still arrive whole and in order, between
/// small ones, both ways.
#[tokio::test]
async fn frames_many_reads_long_arrive_whole_both_ways() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    assert_eq!(session.max_frame(), 65536);
    let large: Vec<u8> = (0..60_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    session.send(b"before").await.unwrap();
    session.send(&large).await.unwrap();
    session.send(b"after").await.unwrap();
    assert_eq!(recv(&session).await, "before");
    let echoed = tokio::time::timeout(WAIT, session.recv())
        .await
        .expect("no echo of the large frame")
        .expect("session closed");
    assert_eq!(echoed.len(), large.len());
    assert!(echoed[..] == large[..], "the large frame came back altered");
    assert_eq!(recv(&session).await, "after");
    // An actor's frame at the limit, sent to the client.
    session.send(b"big 65536").await.unwrap();
    let big = recv(&session).await;
    assert_eq!(big.len(), 65536);
    assert!(big.bytes().all(|b| b == b'x'));
    assert_eq!(recv(&session).await, "sent");
}

#[tokio::test]
async fn unreliable_payloads_sent_in_one_turn_all_arrive_in_order() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    // Fewer than the gateway queues for a client (`UNRELIABLE_QUEUE`, 64),
    // so that none may be dropped. The writer takes the payloads from its
    // queue in batches, with or without the frame; this checks that none is
    // lost or reordered on the way, not how many writes they took.
    for round in 0..3 {
        session.send(b"burst 40").await.unwrap();
        let mut unreliable = Vec::new();
        let mut frame = None;
        while unreliable.len() < 40 || frame.is_none() {
            let message = recv(&session).await;
            if message.starts_with('u') {
                unreliable.push(message);
            } else {
                assert!(
                    frame.replace(message).is_none(),
                    "round {round}: two frames"
                );
            }
        }
        let expected: Vec<String> = (0..40).map(|n| format!("u{n}")).collect();
        assert_eq!(unreliable, expected, "round {round}");
        assert_eq!(frame.as_deref(), Some("burst 40"));
    }
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_session() {
    let setup = start_with(true, |c| c.max_frame = 1024).await;
    let bystander = setup.connect("bren").await;
    let session = setup.connect("ayla").await;
    assert_eq!(session.max_frame(), 1024);
    session.send(&[b'x'; 1024]).await.unwrap();
    assert_eq!(recv(&session).await.len(), 1024);
    let _ = session.send(&vec![b'x'; 5000]).await;
    let closed = closed_within(&session).await;
    assert_eq!(closed.code, Some(CloseCode::FrameTooLarge), "{closed}");
    setup
        .wait_for_event(
            "echo/ayla",
            &format!("disconnect {} kicked: frame-too-large", session.id()),
        )
        .await;
    bystander.send(b"unaffected").await.unwrap();
    assert_eq!(recv(&bystander).await, "unaffected");
    // An actor cannot send more than the limit either.
    bystander.send(b"big 4096").await.unwrap();
    assert_eq!(recv(&bystander).await, "too-large 1024");
}

#[tokio::test]
async fn a_flooding_client_is_closed_for_its_rate() {
    let setup = start_with(true, |c| {
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
    assert_eq!(recv(&bystander).await, "unaffected");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let setup = start_with(true, |c| {
        c.outbound_queue = 4;
        c.message_rate = 10_000;
        c.message_burst = 10_000;
    })
    .await;
    let bystander = setup.connect("bren").await;
    let session = setup.connect("ayla").await;
    // Each command queues a 60 KB frame this client does not read: once the
    // socket buffers are full, the queue fills.
    for _ in 0..2_000 {
        if session.send(b"big 60000").await.is_err() {
            break;
        }
        if ok(&setup.host, "echo/ayla", "events", &[])
            .await
            .contains("slow-consumer")
        {
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
    assert_eq!(recv(&bystander).await, "unaffected");
}

#[tokio::test]
async fn text_messages_and_bad_first_packets_are_refused() {
    let setup = start_with(true, |c| c.max_credentials = 256).await;
    let closed = refusal(WsSession::connect_plain(setup.ws_addr(), &[b'a'; 300]).await);
    assert_eq!(closed.code, Some(CloseCode::BadFirstPacket));
    assert!(closed.reason.contains("300"), "{closed}");
    let session = setup.connect("ayla").await;
    session.send_text("hello").await.unwrap();
    let closed = closed_within(&session).await;
    assert_eq!(closed.code, Some(CloseCode::ProtocolViolation));
    setup
        .wait_for_event(
            "echo/ayla",
            &format!("disconnect {} kicked: protocol-violation", session.id()),
        )
        .await;
}

#[tokio::test]
async fn a_client_that_never_sends_credentials_is_closed_at_the_auth_timeout() {
    let setup = start_with(true, |c| c.auth_timeout = Duration::from_millis(500)).await;
    let tcp = TcpStream::connect(setup.ws_addr()).await.unwrap();
    let url = format!("ws://{}/", setup.ws_addr());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    use futures_util::StreamExt;
    let close = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    match close {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4004, "{frame}");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Forwards TCP between one client and the gateway until cut; a cut relay
/// keeps both sockets open and carries nothing, like a network that went
/// away.
async fn relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let x = cut.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let y = x.clone();
        let up = async move {
            let mut buf = vec![0; 65536];
            while let Ok(n @ 1..) = cr.read(&mut buf).await {
                if !x.load(Ordering::Relaxed) {
                    let _ = sw.write_all(&buf[..n]).await;
                }
            }
            std::future::pending::<()>().await;
        };
        let down = async move {
            let mut buf = vec![0; 65536];
            while let Ok(n @ 1..) = sr.read(&mut buf).await {
                if !y.load(Ordering::Relaxed) {
                    let _ = cw.write_all(&buf[..n]).await;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::join!(up, down);
    });
    (addr, cut)
}

#[tokio::test]
async fn a_client_that_vanishes_is_disconnected_at_the_idle_timeout() {
    let setup = start_with(true, |c| c.idle_timeout = Duration::from_millis(600)).await;
    let (addr, cut) = relay(setup.ws_addr()).await;
    let session = WsSession::connect_plain(addr, b"ayla").await.unwrap();
    session.send(b"still here").await.unwrap();
    assert_eq!(recv(&session).await, "still here");
    // A quiet client that answers the gateway's pings (as it reads) stays.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), session.recv()).await;
    assert!(quiet.is_err(), "nothing was sent, yet {quiet:?} arrived");
    session.send(b"and still").await.unwrap();
    assert_eq!(recv(&session).await, "and still");
    cut.store(true, Ordering::Relaxed);
    setup
        .wait_for_event(
            "echo/ayla",
            &format!("disconnect {} timed-out", session.id()),
        )
        .await;
}

#[tokio::test]
async fn shutting_the_gateway_down_tells_websocket_clients_and_owners() {
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
async fn a_full_gateway_refuses_websocket_clients_as_busy_whatever_their_door() {
    let setup = start_with(true, |c| c.max_sessions = 1).await;
    let client = Client::new(ClientConfig::pinned(setup.gateway.fingerprint())).unwrap();
    // The one slot goes to a QUIC client; the WebSocket door shares it.
    let _quic = client
        .connect(setup.gateway.local_addr(), b"ayla")
        .await
        .unwrap();
    let closed = refusal(WsSession::connect_plain(setup.ws_addr(), b"bren").await);
    assert_eq!(closed.code, Some(CloseCode::ServerBusy), "{closed}");
    assert!(closed.reason.contains("at most 1 sessions"), "{closed}");
}

#[tokio::test]
async fn a_client_that_ignores_an_actors_close_loses_its_session_anyway() {
    let setup = start().await;
    let session = setup.connect("ayla").await;
    session.send(b"close enough").await.unwrap();
    // The client never reads, so it never answers the close frame; it
    // keeps sending instead.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok(&setup.host, "echo/ayla", "events", &[])
        .await
        .contains(&format!(
            "disconnect {} closed-by-actor: enough",
            session.id()
        ))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session outlived its actor's close"
        );
        let _ = session.send(b"still talking").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ok(&setup.host, "echo/ayla", "sessions", &[]).await, "[]");
}
