//! Datagrams around authentication: those that reach the gateway before it
//! sends the welcome never reach the owner; those sent after it do.

mod support;

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::{Bytes, BytesMut};
use grove_gateway_quic::protocol::{encode_frame, FrameDecoder, Welcome};
use support::{start, TestBackend, EVENTUALLY};
use tokio::time::{sleep, timeout, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_sent_before_the_welcome_are_dropped() -> anyhow::Result<()> {
    let backend = TestBackend {
        auth_delay: Duration::from_millis(300),
        ..TestBackend::default()
    };
    let setup = start(backend, |_| {}).await?;
    let connection = setup.client.handshake(setup.gateway.local_addr()).await?;
    for early in 0..3 {
        connection.send_datagram(Bytes::from(format!("early {early}")))?;
    }
    let (mut send, mut recv) = connection.open_bi().await?;
    let mut credentials = BytesMut::new();
    encode_frame(b"ayla", &mut credentials);
    send.write_all(&credentials).await?;
    for early in 3..6 {
        connection.send_datagram(Bytes::from(format!("early {early}")))?;
    }
    let mut decoder = FrameDecoder::new(1 << 20);
    let welcome = loop {
        if let Some(frame) = decoder.next_frame()? {
            break Welcome::decode(&frame).context("malformed welcome")?;
        }
        match timeout(EVENTUALLY, recv.read_chunk(64 * 1024, true)).await?? {
            Some(chunk) => decoder.extend(&chunk.bytes),
            None => bail!("the stream ended before the welcome"),
        }
    };
    // After the welcome, datagrams are delivered (resent, as one may be lost).
    let backend = &setup.backend;
    let deadline = Instant::now() + EVENTUALLY;
    while !backend.messages().iter().any(|m| &m.payload[..] == b"late") {
        ensure!(
            Instant::now() < deadline,
            "no datagram sent after the welcome arrived"
        );
        connection.send_datagram(Bytes::from_static(b"late"))?;
        sleep(Duration::from_millis(50)).await;
    }
    let messages = backend.messages();
    ensure!(
        messages
            .iter()
            .all(|m| m.session == welcome.session && !m.payload.starts_with(b"early")),
        "datagrams sent before the welcome reached the owner: {messages:?}"
    );
    ensure!(backend.disconnects().is_empty());
    connection.close(0u32.into(), b"done");
    setup.gateway.shutdown().await;
    Ok(())
}
