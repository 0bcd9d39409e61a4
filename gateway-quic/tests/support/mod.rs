//! What the gateway's integration tests share: a [`Backend`] whose
//! authentication and delivery can be slowed down and which records what it
//! is told, a gateway started on loopback with a pinned client, and waiting
//! helpers. Timings are generous so the tests hold on a loaded machine.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use grove_gateway_quic::client::{Client, ClientConfig, Session};
use grove_gateway_quic::{
    AuthError, Backend, Disconnect, Gateway, GatewayConfig, Identity, SessionId, Sessions,
};
use tokio::time::{sleep, Instant, MissedTickBehavior};

/// How long "eventually" waits.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// One message as the owner received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub session: SessionId,
    pub payload: Bytes,
    pub reliable: bool,
}

/// A backend that accepts every credential but `reject`, naming the owner
/// `player/<credentials>`, and records what it is told.
#[derive(Default)]
pub struct TestBackend {
    /// How long each authentication takes.
    pub auth_delay: Duration,
    /// The message (numbered from 0 across all sessions) whose delivery
    /// stalls, and for how long.
    pub stall: Option<(usize, Duration)>,
    /// What it was told; read through the methods below.
    pub authentications: AtomicUsize,
    pub messages: Mutex<Vec<Message>>,
    pub disconnects: Mutex<Vec<(SessionId, Disconnect)>>,
}

impl TestBackend {
    /// Every message delivered so far, in delivery order.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Every disconnect reported so far.
    pub fn disconnects(&self) -> Vec<(SessionId, Disconnect)> {
        self.disconnects.lock().unwrap().clone()
    }

    /// How many times the gateway asked to authenticate someone.
    pub fn authentications(&self) -> usize {
        self.authentications.load(Ordering::SeqCst)
    }
}

impl Backend for TestBackend {
    type Owner = String;

    async fn authenticate(&self, credentials: Bytes) -> Result<String, AuthError> {
        self.authentications.fetch_add(1, Ordering::SeqCst);
        sleep(self.auth_delay).await;
        if &credentials[..] == b"reject" {
            return Err(AuthError::Rejected("rejected by the test".into()));
        }
        Ok(format!("player/{}", String::from_utf8_lossy(&credentials)))
    }

    async fn connected(&self, _session: SessionId, _owner: &String) -> Result<(), String> {
        Ok(())
    }

    async fn message(&self, session: SessionId, _owner: &String, payload: Bytes, reliable: bool) {
        let number = {
            let mut messages = self.messages.lock().unwrap();
            messages.push(Message {
                session,
                payload,
                reliable,
            });
            messages.len() - 1
        };
        if let Some((at, stall)) = self.stall {
            if number == at {
                sleep(stall).await;
            }
        }
    }

    async fn disconnected(&self, session: SessionId, _owner: &String, reason: Disconnect) {
        self.disconnects.lock().unwrap().push((session, reason));
    }
}

/// A running gateway with its test backend, and a client for it.
pub struct Setup {
    pub gateway: Gateway,
    pub sessions: Sessions,
    pub backend: Arc<TestBackend>,
    pub client: Client,
}

/// Starts a gateway on loopback with a fresh self-signed certificate, its
/// configuration changed by `adjust`, and a client that pins it.
pub async fn start(
    backend: TestBackend,
    adjust: impl FnOnce(&mut GatewayConfig),
) -> anyhow::Result<Setup> {
    let identity = Identity::self_signed(&["localhost".to_owned()])?;
    let mut config = GatewayConfig::new("127.0.0.1:0".parse()?, identity);
    adjust(&mut config);
    let sessions = Sessions::new();
    let backend = Arc::new(backend);
    let gateway = Gateway::start(config, sessions.clone(), backend.clone()).await?;
    let mut client_config = ClientConfig::pinned(gateway.fingerprint());
    client_config.bind = "127.0.0.1:0".parse()?;
    let client = Client::new(client_config)?;
    Ok(Setup {
        gateway,
        sessions,
        backend,
        client,
    })
}

/// Waits until `done` holds, for [`EVENTUALLY`] at most.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + EVENTUALLY;
    while !done() {
        if Instant::now() > deadline {
            bail!("not within {EVENTUALLY:?}: {what}");
        }
        sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Logs in, retrying while the gateway refuses (a slot it gives back may take
/// a moment to free).
pub async fn login_eventually(
    client: &Client,
    addr: SocketAddr,
    credentials: &[u8],
) -> anyhow::Result<Session> {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        match client.connect(addr, credentials).await {
            Ok(session) => return Ok(session),
            Err(error) if Instant::now() > deadline => {
                bail!("no login within {EVENTUALLY:?}: {error}")
            }
            Err(_) => sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Sends `count` numbered frames (`u32` big-endian), one every `every`, from
/// a ticker that does not catch up after a delay, so the client itself never
/// bursts.
pub async fn send_steadily(
    mut send: impl AsyncFnMut(&[u8]) -> anyhow::Result<()>,
    count: u32,
    every: Duration,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for number in 0..count {
        tick.tick().await;
        send(&number.to_be_bytes())
            .await
            .with_context(|| format!("sending message {number}"))?;
    }
    Ok(())
}

/// Checks that the owner received exactly the frames `0..count`, in order.
pub fn assert_all_in_order(messages: &[Message], count: u32) -> anyhow::Result<()> {
    let numbers: Vec<u32> = messages
        .iter()
        .map(|m| {
            ensure!(m.reliable, "a datagram arrived: {m:?}");
            let bytes: [u8; 4] = m.payload[..].try_into()?;
            Ok(u32::from_be_bytes(bytes))
        })
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        numbers == (0..count).collect::<Vec<_>>(),
        "messages out of order or missing: {numbers:?}"
    );
    Ok(())
}
