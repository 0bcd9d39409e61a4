//! Round trips through the gateway: client → gateway → `echo` actor →
//! client, at 1, 100, 1,000 and 5,000 concurrent clients, over QUIC beside a
//! raw quinn echo server, and over the WebSocket door beside a raw
//! tungstenite echo server, all measured in the same run.
//!
//! Each client sends a 32-byte frame, waits for it to come back, and repeats
//! for the phase. The raw server speaks the same framing (it answers the
//! credentials with a welcome, then writes back whatever it reads) but has no
//! authentication, no actor and no per-message turn: the difference is what
//! Grove costs.
//!
//! Run with: `cargo bench -p grove-host --bench gateway_echo` (phase length
//! in `GROVE_BENCH_SECS`, default 2 s; client counts in `GROVE_BENCH_CLIENTS`,
//! default `1,100,1000,5000`; the runtime's worker threads in
//! `GROVE_BENCH_WORKERS`, default one per core, as `grove run` has).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use grove_gateway_quic::client::{Client, ClientConfig, Received, Session};
use grove_gateway_quic::protocol::{encode_frame, Welcome, ALPN};
use grove_gateway_quic::websocket::WebSocketListen;
use grove_gateway_quic::websocket_client::WsSession;
use grove_gateway_quic::{Gateway, GatewayConfig, Identity};
use grove_host::gateway::{self, Authenticator};
use grove_host::state::StateStore;
use grove_host::{Host, HostConfig};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// Clients sharing one UDP socket.
const PER_SOCKET: usize = 100;

async fn grove_gateway(identity: Identity) -> (Host, Gateway) {
    let mut config = HostConfig::default();
    config.limits.max_activations = 20_000;
    let host = Host::new(config, StateStore::memory()).unwrap();
    host.load_plugin(&common::plugin("echo")).unwrap();
    let mut gateway_config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), identity);
    gateway_config.message_rate = 1_000_000;
    gateway_config.message_burst = 1_000_000;
    gateway_config.websocket = Some(WebSocketListen {
        listen: "127.0.0.1:0".parse().unwrap(),
        plain: true,
    });
    let auth: Authenticator = "echo.login".parse().unwrap();
    let gateway = gateway::start(&host, gateway_config, auth).await.unwrap();
    (host, gateway)
}

/// A bare quinn server speaking Grove's framing: welcome, then echo bytes.
async fn raw_echo(identity: Identity) -> SocketAddr {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(identity.chain, identity.key)
    .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        let mut next_session = 0;
        while let Some(incoming) = endpoint.accept().await {
            next_session += 1;
            let session = next_session;
            tokio::spawn(async move {
                let connection = incoming.await.ok()?;
                let (mut send, mut recv) = connection.accept_bi().await.ok()?;
                // Skip the credentials frame, then welcome.
                let mut header = [0; 4];
                recv.read_exact(&mut header).await.ok()?;
                let mut credentials = vec![0; u32::from_be_bytes(header) as usize];
                recv.read_exact(&mut credentials).await.ok()?;
                let welcome = Welcome {
                    session,
                    max_frame: 65536,
                    owner: "raw/echo".into(),
                };
                let mut frame = BytesMut::new();
                encode_frame(&welcome.encode(), &mut frame);
                send.write_all(&frame).await.ok()?;
                while let Some(chunk) = recv.read_chunk(65536, true).await.ok()? {
                    send.write_all(&chunk.bytes).await.ok()?;
                }
                Some(())
            });
        }
    });
    addr
}

/// A bare tungstenite server speaking the WebSocket door's protocol:
/// welcome, then every binary message back.
async fn raw_ws_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut next_session = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            next_session += 1;
            let session = next_session;
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let mut ws = tokio_tungstenite::accept_async(tcp).await.ok()?;
                ws.next().await?.ok()?;
                let welcome = Welcome {
                    session,
                    max_frame: 65536,
                    owner: "raw/echo".into(),
                };
                ws.send(Message::Binary(welcome.encode())).await.ok()?;
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_binary() {
                        ws.send(message).await.ok()?;
                    }
                }
                Some(())
            });
        }
    });
    addr
}

/// One echo client, through either door.
#[derive(Clone)]
enum Echo {
    Quic(Session),
    Ws(WsSession),
}

impl Echo {
    /// Sends `payload` and waits for it to come back.
    async fn round_trip(&self, payload: &[u8]) {
        match self {
            Echo::Quic(session) => {
                session.send(payload).await.unwrap();
                loop {
                    match session.recv().await.unwrap() {
                        Received::Frame(bytes) if bytes.len() == payload.len() => break,
                        _ => continue,
                    }
                }
            }
            Echo::Ws(session) => {
                session.send(payload).await.unwrap();
                while session.recv().await.unwrap().len() != payload.len() {}
            }
        }
    }

    async fn close(&self) {
        match self {
            Echo::Quic(session) => session.close("done"),
            Echo::Ws(session) => session.close("done").await,
        }
    }
}

/// Connects `count` WebSocket clients to `addr`.
async fn connect_all_ws(addr: SocketAddr, count: usize) -> Vec<Echo> {
    let gate = Arc::new(Semaphore::new(200));
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                WsSession::connect_plain(addr, format!("c{n}").as_bytes())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.push(Echo::Ws(task.await.unwrap()));
    }
    sessions
}

/// Connects `count` clients to `addr`.
async fn connect_all(
    pin: grove_gateway_quic::Fingerprint,
    addr: SocketAddr,
    count: usize,
) -> Vec<Echo> {
    let clients: Vec<Client> = (0..count.div_ceil(PER_SOCKET))
        .map(|_| Client::new(ClientConfig::pinned(pin)).unwrap())
        .collect();
    let gate = Arc::new(Semaphore::new(200));
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let client = clients[n / PER_SOCKET].clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                client
                    .connect(addr, format!("c{n}").as_bytes())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.push(Echo::Quic(task.await.unwrap()));
    }
    sessions
}

/// Every session does round trips until the phase ends; returns the round
/// trip times in microseconds.
async fn round_trips(sessions: &[Echo], phase: Duration) -> Vec<u32> {
    let until = Instant::now() + phase;
    let tasks: Vec<_> = sessions
        .iter()
        .cloned()
        .map(|session| {
            tokio::spawn(async move {
                let payload = [7u8; 32];
                let mut times = Vec::new();
                while Instant::now() < until {
                    let sent = Instant::now();
                    session.round_trip(&payload).await;
                    times.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                times
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len().max(1) - 1) as f64).round() as usize;
    f64::from(sorted.get(rank).copied().unwrap_or(0)) / 1000.0
}

fn main() {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = std::env::var("GROVE_BENCH_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build().unwrap();
    runtime.block_on(async {
        let phase = common::phase();
        let counts: Vec<usize> = std::env::var("GROVE_BENCH_CLIENTS")
            .unwrap_or_else(|_| "1,100,1000,5000".into())
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        let identity = Identity::self_signed(&["localhost".into()]).unwrap();
        let pin = identity.fingerprint();
        let (_host, gateway) = grove_gateway(identity.clone()).await;
        let raw = raw_echo(identity).await;
        let raw_ws = raw_ws_echo().await;
        let ws = gateway.websocket_addr().unwrap();
        println!(
            "echo round trips, 32-byte frames, {phase:?} per phase, {} runtime workers",
            tokio::runtime::Handle::current().metrics().num_workers()
        );
        println!(
            "{:<8}{:<24}{:>12}{:>10}{:>10}",
            "clients", "server", "msgs/s", "p50 ms", "p99 ms"
        );
        for &count in &counts {
            for (name, addr, quic) in [
                ("raw quinn echo", raw, true),
                ("grove quic+actor", gateway.local_addr(), true),
                ("raw websocket echo", raw_ws, false),
                ("grove websocket+actor", ws, false),
            ] {
                let sessions = if quic {
                    connect_all(pin, addr, count).await
                } else {
                    connect_all_ws(addr, count).await
                };
                let times = round_trips(&sessions, phase).await;
                println!(
                    "{count:<8}{name:<24}{:>12.0}{:>10.3}{:>10.3}",
                    times.len() as f64 / phase.as_secs_f64(),
                    percentile(&times, 50.0),
                    percentile(&times, 99.0),
                );
                for session in &sessions {
                    session.close().await;
                }
                drop(sessions);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        gateway.shutdown().await;
    });
}
