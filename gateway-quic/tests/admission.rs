//! Who gets in: the session limit holds however many clients log in at once,
//! and a slot comes back when its login fails or its session ends; clients
//! beyond the limit on unfinished logins are turned away before the
//! handshake, and shutting down does not wait for logins in progress.

mod support;

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use grove_gateway_quic::client::ConnectError;
use grove_gateway_quic::CloseCode;
use quinn::{ConnectionError, TransportErrorCode};
use support::{eventually, login_eventually, start, TestBackend, EVENTUALLY};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_never_exceed_max_sessions() -> anyhow::Result<()> {
    const MAX: usize = 3;
    let backend = TestBackend {
        auth_delay: Duration::from_millis(500),
        ..TestBackend::default()
    };
    let setup = start(backend, |config| config.max_sessions = MAX).await?;
    let addr = setup.gateway.local_addr();
    let mut logins = tokio::task::JoinSet::new();
    for player in 0..3 * MAX {
        let client = setup.client.clone();
        logins.spawn(async move { client.connect(addr, format!("p{player}").as_bytes()).await });
    }
    let mut admitted = Vec::new();
    let mut busy = 0;
    while let Some(login) = logins.join_next().await {
        match login? {
            Ok(session) => admitted.push(session),
            Err(ConnectError::Refused(closed)) if closed.code == Some(CloseCode::ServerBusy) => {
                busy += 1
            }
            Err(other) => bail!("unexpected login failure: {other}"),
        }
    }
    ensure!(
        admitted.len() == MAX && busy == 2 * MAX,
        "{} admitted, {busy} refused server-busy; expected {MAX} and {}",
        admitted.len(),
        2 * MAX
    );
    ensure!(setup.sessions.len() == MAX);
    ensure!(
        setup.backend.authentications() == MAX,
        "refused clients must not reach the authenticator"
    );

    // A session that ends gives its slot back.
    admitted
        .pop()
        .context("an admitted session")?
        .close("leaving");
    let backend = &setup.backend;
    eventually("the owner hears of the departure", || {
        !backend.disconnects().is_empty()
    })
    .await?;
    let again = login_eventually(&setup.client, addr, b"late").await?;
    ensure!(setup.sessions.len() == MAX);
    again.close("done");
    setup.gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_login_gives_its_session_slot_back() -> anyhow::Result<()> {
    let setup = start(TestBackend::default(), |config| config.max_sessions = 1).await?;
    let addr = setup.gateway.local_addr();
    for _ in 0..3 {
        match setup.client.connect(addr, b"reject").await {
            Err(ConnectError::Refused(closed)) if closed.code == Some(CloseCode::AuthRejected) => {}
            Err(other) => bail!("unexpected refusal: {other}"),
            Ok(_) => bail!("a rejected login was admitted"),
        }
    }
    let session = login_eventually(&setup.client, addr, b"ayla").await?;
    session.close("done");
    setup.gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_pending_auth_are_refused_before_the_handshake() -> anyhow::Result<()>
{
    let setup = start(TestBackend::default(), |config| config.max_pending_auth = 2).await?;
    let addr = setup.gateway.local_addr();
    // Two connections that never send credentials take both places.
    let silent = setup.client.handshake(addr).await?;
    let _also_silent = setup.client.handshake(addr).await?;
    for _ in 0..3 {
        match setup.client.connect(addr, b"ayla").await {
            Err(ConnectError::Handshake(ConnectionError::ConnectionClosed(close)))
                if close.error_code == TransportErrorCode::CONNECTION_REFUSED => {}
            Err(other) => bail!("unexpected refusal: {other}"),
            Ok(_) => bail!("a connection beyond max_pending_auth was admitted"),
        }
    }
    ensure!(
        setup.backend.authentications() == 0,
        "refused clients must not reach the authenticator"
    );

    // A connection that goes away gives its place back...
    silent.close(0u32.into(), b"gone");
    let ayla = login_eventually(&setup.client, addr, b"ayla").await?;
    // ... and so does one that authenticates: one place stays free.
    let bea = setup.client.connect(addr, b"bea").await?;
    let cal = setup.client.connect(addr, b"cal").await?;
    ensure!(setup.sessions.len() == 3);
    for session in [ayla, bea, cal] {
        session.close("done");
    }
    setup.gateway.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_logins_in_progress_at_once() -> anyhow::Result<()> {
    let setup = start(TestBackend::default(), |_| {}).await?;
    let silent = setup.client.handshake(setup.gateway.local_addr()).await?;
    // Shutting down waits up to five seconds for sessions to report their
    // disconnects; a login that has not sent its credentials is no reason to.
    timeout(Duration::from_secs(4), setup.gateway.shutdown())
        .await
        .context("shutdown waited for a login in progress")?;
    let closed = timeout(EVENTUALLY, silent.closed()).await?;
    // `host-shutdown`, or — when the server had not yet finished its side of
    // the handshake as it shut down — QUIC's own close during the handshake,
    // which cannot carry an application code.
    ensure!(
        matches!(
            &closed,
            ConnectionError::ApplicationClosed(close)
                if close.error_code == CloseCode::HostShutdown.code().into()
        ) || matches!(&closed, ConnectionError::ConnectionClosed(_)),
        "{closed}"
    );
    Ok(())
}
