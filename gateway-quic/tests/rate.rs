//! A client's message rate is measured as the gateway reads its messages off
//! the connection, not as its owner takes them: a client within its rate is
//! never closed `rate-limited` because its owner or its authenticator was
//! slow, and every message it sent still arrives, in order.

mod support;

use std::time::Duration;

use anyhow::{anyhow, bail, ensure};
use bytes::BytesMut;
use grove_gateway_quic::protocol::{encode_frame, FrameDecoder, Welcome};
use grove_gateway_quic::{CloseCode, Disconnect, GatewayConfig};
use support::{assert_all_in_order, eventually, send_steadily, start, TestBackend, EVENTUALLY};
use tokio::time::{sleep, timeout};

// The bucket holds 250 ms of traffic at the full rate. The owner (or the
// authenticator) stalls four times that long while the client sends at half
// the rate, so the frames that pile up meanwhile are twice the burst; and the
// gateway itself would have to stall for half a second to misjudge the
// client.
const RATE: u32 = 200;
const BURST: u32 = 50;
const STALL: Duration = Duration::from_secs(1);
const HALF_RATE: Duration = Duration::from_millis(10);
const COUNT: u32 = 200;

async fn steady_client_survives_a_stalled_owner(
    adjust: impl FnOnce(&mut GatewayConfig),
) -> anyhow::Result<()> {
    let backend = TestBackend {
        stall: Some((20, STALL)),
        ..TestBackend::default()
    };
    let setup = start(backend, |config| {
        config.message_rate = RATE;
        config.message_burst = BURST;
        adjust(config);
    })
    .await?;
    let session = setup
        .client
        .connect(setup.gateway.local_addr(), b"ayla")
        .await?;
    send_steadily(
        async |payload| Ok(session.send(payload).await?),
        COUNT,
        HALF_RATE,
    )
    .await?;
    let backend = &setup.backend;
    eventually("every message reaches the owner", || {
        backend.messages().len() >= COUNT as usize || !backend.disconnects().is_empty()
    })
    .await?;
    ensure!(
        backend.disconnects().is_empty(),
        "the client was disconnected: {:?}",
        backend.disconnects()
    );
    assert_all_in_order(&backend.messages(), COUNT)?;
    ensure!(setup.sessions.contains(session.id()));
    session.close("done");
    setup.gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_within_its_rate_survives_an_owner_that_stalls() -> anyhow::Result<()> {
    steady_client_survives_a_stalled_owner(|_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_within_its_rate_survives_an_owner_that_stalls_when_the_gateway_stops_reading(
) -> anyhow::Result<()> {
    // No read-ahead at all: while the owner stalls, the client's frames wait
    // in QUIC's buffers, and come out together once the owner is back.
    steady_client_survives_a_stalled_owner(|config| config.inbound_backlog = 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_during_a_slow_authentication_are_not_counted_as_a_burst() -> anyhow::Result<()>
{
    let backend = TestBackend {
        auth_delay: STALL,
        ..TestBackend::default()
    };
    let setup = start(backend, |config| {
        config.message_rate = RATE;
        config.message_burst = BURST;
    })
    .await?;
    // By hand, since the client library waits for the welcome: the
    // credentials, then frames at half the rate while authentication runs.
    let connection = setup.client.handshake(setup.gateway.local_addr()).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let mut credentials = BytesMut::new();
    encode_frame(b"ayla", &mut credentials);
    send.write_all(&credentials).await?;
    let welcome = tokio::spawn(async move {
        let mut decoder = FrameDecoder::new(1 << 20);
        loop {
            if let Some(frame) = decoder.next_frame()? {
                return Welcome::decode(&frame).ok_or_else(|| anyhow!("malformed welcome"));
            }
            match recv.read_chunk(64 * 1024, true).await? {
                Some(chunk) => decoder.extend(&chunk.bytes),
                None => bail!("the stream ended before the welcome"),
            }
        }
    });
    send_steadily(
        async |payload| {
            let mut frame = BytesMut::new();
            encode_frame(payload, &mut frame);
            Ok(send.write_all(&frame).await?)
        },
        COUNT,
        HALF_RATE,
    )
    .await?;
    let welcome = timeout(EVENTUALLY, welcome).await???;
    let backend = &setup.backend;
    eventually("every message reaches the owner", || {
        backend.messages().len() >= COUNT as usize || !backend.disconnects().is_empty()
    })
    .await?;
    ensure!(
        backend.disconnects().is_empty(),
        "the client was disconnected: {:?}",
        backend.disconnects()
    );
    assert_all_in_order(&backend.messages(), COUNT)?;
    ensure!(setup.sessions.contains(welcome.session));
    connection.close(0u32.into(), b"done");
    setup.gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_the_gateway_did_not_read_cannot_be_saved_up_for_a_flood() -> anyhow::Result<()> {
    let backend = TestBackend {
        stall: Some((0, STALL)),
        ..TestBackend::default()
    };
    let setup = start(backend, |config| {
        config.message_rate = RATE;
        config.message_burst = BURST;
        config.inbound_backlog = 1;
    })
    .await?;
    let session = setup
        .client
        .connect(setup.gateway.local_addr(), b"ayla")
        .await?;
    // The owner stalls on the first message; the second fills the backlog,
    // so the gateway stops reading. The client sends nothing more until long
    // after the owner is back, then floods.
    session.send(b"first").await?;
    let backend = &setup.backend;
    eventually("the first message reaches the owner", || {
        !backend.messages().is_empty()
    })
    .await?;
    session.send(b"second").await?;
    sleep(STALL * 2).await;
    ensure!(backend.messages().len() == 2);
    for number in 0..3 * BURST {
        if session.send(&number.to_be_bytes()).await.is_err() {
            break;
        }
    }
    eventually("the flood closes the session", || {
        !backend.disconnects().is_empty()
    })
    .await?;
    let disconnects = backend.disconnects();
    ensure!(
        matches!(
            &disconnects[..],
            [(
                _,
                Disconnect::Kicked {
                    code: CloseCode::RateLimited,
                    ..
                }
            )]
        ),
        "expected one rate-limited disconnect: {disconnects:?}"
    );
    ensure!(session.closed().await.code == Some(CloseCode::RateLimited));
    setup.gateway.shutdown().await;
    Ok(())
}
