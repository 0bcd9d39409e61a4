//! The gateway's WebTransport door end to end, with the `echo` actor and
//! wtransport's client, which checks a pinned certificate by the browsers'
//! rules (ECDSA P-256, valid for at most two weeks): login, frames and
//! datagrams both ways, refusals with their reasons, and certificates that
//! rotate while the host serves.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use grove_gateway_quic::protocol::{encode_frame, FrameDecoder, Welcome};
use grove_gateway_quic::webtransport::WebTransportListen;
use grove_gateway_quic::{CloseCode, Fingerprint, Gateway, GatewayConfig, Identity};
use grove_host::gateway::{self, Authenticator};
use wtransport::error::ConnectionError;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};

const WAIT: Duration = Duration::from_secs(10);

async fn start(rotate_every: Duration) -> Gateway {
    start_with(rotate_every, |_| {}).await
}

async fn start_with(rotate_every: Duration, adjust: impl FnOnce(&mut GatewayConfig)) -> Gateway {
    let host = common::host_of(&["echo"]);
    let identity = Identity::self_signed(&["localhost".into()]).unwrap();
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), identity);
    adjust(&mut config);
    let mut door = WebTransportListen::new("127.0.0.1:0".parse().unwrap());
    door.rotate_every = rotate_every;
    config.webtransport = Some(door);
    let auth: Authenticator = "echo.login".parse().unwrap();
    gateway::start(&host, config, auth).await.unwrap()
}

/// Opens a WebTransport session pinning `hash`, as a browser would.
async fn open(gateway: &Gateway, hash: Fingerprint) -> Result<Connection, String> {
    let config = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([Sha256Digest::new(hash.0)])
        .build();
    let endpoint = Endpoint::client(config).unwrap();
    let url = format!(
        "https://127.0.0.1:{}/grove",
        gateway.webtransport_addr().unwrap().port()
    );
    endpoint.connect(url).await.map_err(|e| e.to_string())
}

struct Stream {
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
}

impl Stream {
    async fn login(connection: &Connection, credentials: &[u8]) -> Stream {
        let (mut send, recv) = connection.open_bi().await.unwrap().await.unwrap();
        let mut frame = BytesMut::new();
        encode_frame(credentials, &mut frame);
        send.write_all(&frame).await.unwrap();
        Stream {
            send,
            recv,
            decoder: FrameDecoder::new(1 << 20),
        }
    }

    async fn send(&mut self, payload: &[u8]) {
        let mut frame = BytesMut::new();
        encode_frame(payload, &mut frame);
        self.send.write_all(&frame).await.unwrap();
    }

    async fn frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return Some(frame.to_vec());
            }
            let mut buf = [0; 4096];
            match tokio::time::timeout(WAIT, self.recv.read(&mut buf)).await {
                Ok(Ok(Some(n))) => self.decoder.extend(&buf[..n]),
                _ => return None,
            }
        }
    }
}

#[tokio::test]
async fn a_pinned_session_logs_in_and_carries_frames_and_datagrams() {
    let gateway = start(Duration::from_secs(3600)).await;
    let hashes = gateway.webtransport_hashes();
    assert_eq!(hashes.len(), 1);
    let connection = open(&gateway, hashes[0]).await.unwrap();
    let mut stream = Stream::login(&connection, b"ayla").await;
    let welcome = Welcome::decode(&stream.frame().await.unwrap()).unwrap();
    assert_eq!(welcome.owner, "echo/ayla");
    for i in 0..50 {
        stream.send(format!("frame {i}").as_bytes()).await;
    }
    for i in 0..50 {
        assert_eq!(
            stream.frame().await.unwrap(),
            format!("frame {i}").into_bytes()
        );
    }
    // Datagrams may be lost, even on loopback: retry until one comes back.
    let mut echoed = None;
    for attempt in 0..50 {
        connection
            .send_datagram(format!("position {attempt}"))
            .unwrap();
        if let Ok(Ok(datagram)) =
            tokio::time::timeout(Duration::from_millis(200), connection.receive_datagram()).await
        {
            echoed = Some(datagram.payload());
            break;
        }
    }
    let echoed = echoed.expect("no datagram came back in 50 attempts");
    assert!(echoed.starts_with(b"position "), "{echoed:?}");
}

#[tokio::test]
async fn refused_credentials_close_with_grove_code_and_reason() {
    let gateway = start(Duration::from_secs(3600)).await;
    let connection = open(&gateway, gateway.webtransport_hashes()[0])
        .await
        .unwrap();
    let mut stream = Stream::login(&connection, b"banned-bob").await;
    assert_eq!(stream.frame().await, None, "a refused client got a frame");
    match tokio::time::timeout(WAIT, connection.closed())
        .await
        .unwrap()
    {
        ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.code().into_inner(),
                u64::from(CloseCode::AuthRejected.code())
            );
            assert_eq!(close.reason(), b"banned-bob is banned");
        }
        other => panic!("expected an application close, got {other}"),
    }
}

#[tokio::test]
async fn the_certificate_rotates_and_new_sessions_pin_the_new_hash() {
    let gateway = start(Duration::from_millis(700)).await;
    let first = gateway.webtransport_hashes()[0];
    // A session opened before the rotation lives on.
    let connection = open(&gateway, first).await.unwrap();
    let mut stream = Stream::login(&connection, b"ayla").await;
    stream.frame().await.unwrap();
    let start = Instant::now();
    let second = loop {
        let now = gateway.webtransport_hashes()[0];
        if now != first {
            break now;
        }
        assert!(start.elapsed() < WAIT, "the certificate did not rotate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fresh = open(&gateway, second).await.unwrap();
    let mut fresh_stream = Stream::login(&fresh, b"bren").await;
    assert_eq!(
        Welcome::decode(&fresh_stream.frame().await.unwrap())
            .unwrap()
            .owner,
        "echo/bren"
    );
    // The old hash no longer opens a session, unless it rotated back (it
    // cannot: every certificate has a fresh key).
    let stale = open(&gateway, first).await;
    assert!(stale.is_err(), "a stale hash still opened a session");
    stream.send(b"still here").await;
    assert_eq!(stream.frame().await.unwrap(), b"still here");
}

#[tokio::test]
async fn a_full_gateway_refuses_browsers_as_busy() {
    let gateway = start_with(Duration::from_secs(3600), |c| c.max_sessions = 1).await;
    let hash = gateway.webtransport_hashes()[0];
    let first = open(&gateway, hash).await.unwrap();
    let mut stream = Stream::login(&first, b"ayla").await;
    stream.frame().await.unwrap();
    // Refused as soon as the session is open, before its credentials: the
    // close can reach the client while it still sets the session up.
    let reason = match open(&gateway, hash).await {
        Err(error) => error,
        Ok(second) => tokio::time::timeout(WAIT, second.closed())
            .await
            .unwrap()
            .to_string(),
    };
    let code = CloseCode::ServerBusy.code();
    assert!(
        reason.contains(&format!("(code {code})")) && reason.contains("at most 1 sessions"),
        "{reason}"
    );
}
