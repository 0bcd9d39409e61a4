//! The WebSocket door: the same sessions as QUIC, for clients that cannot
//! use UDP (browsers without WebTransport, networks that filter UDP).
//!
//! A client opens a WebSocket (TLS with the gateway's certificate, or plain
//! when the host allows it for local development) and sends its credentials
//! as its first binary message. The first binary message back is the same
//! welcome a QUIC client gets; from then on every binary message is one frame
//! both ways. An actor's unreliable sends arrive as binary messages too, on
//! the same socket, and are dropped, never queued without bound, when
//! the socket is behind. Frames keep their order; an unreliable payload
//! may arrive before or after frames sent around it. The gateway closes with
//! WebSocket close code 4000 plus Grove's close code (`docs/protocol.md`).
//!
//! The socket is split: the session's reader holds the read half (as its
//! source of messages) and a writer task the write half. The writer also
//! pings the client, so that a client that vanished without closing is found
//! at the idle timeout. When the reader is done it hands its half to the
//! writer, which reads the client's answer to the close frame before letting
//! the socket go. The writer ends when the session's frame queue closes
//! (the session left the registry) or after it sent the close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::protocol::{CloseCode, FrameDecoder};
use crate::reader::{
    authenticate, drain, run_session, session_slot, Admission, Incoming, Login, Refusal, Source,
};
use crate::server::{Backend, Shared, SHUTDOWN_GRACE};
use crate::sessions::{truncate_to, Disconnect, Door, End, Outbound, SendError, SessionId};

/// WebSocket close codes for Grove's codes start here: Grove's code `n` is
/// sent as `4000 + n`, in the range RFC 6455 leaves to applications.
pub const CLOSE_CODE_BASE: u16 = 4000;

/// Bytes of a WebSocket close reason: a control frame carries at most 125
/// bytes, two of which are the code.
const MAX_WS_REASON: usize = 123;

/// Unreliable payloads queued for a client before more are dropped.
const UNRELIABLE_QUEUE: usize = 64;

/// Messages (frames, unreliable payloads, a ping) the writer sends before
/// it flushes the socket.
const WRITE_BATCH: usize = 64;

/// Bytes each socket reads at most at once: a few frames. tungstenite
/// zeroes its whole read buffer (128 KiB by default) before every read from
/// the socket, and game frames are small: the gateway and its client both
/// read this much at a time. A frame larger than the buffer grows it.
pub(crate) const READ_BUFFER: usize = 4096;

/// How long a close waits for the client to take the close frame and answer
/// it, as on QUIC.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the gateway asked a session's socket to close with, once it has.
type Closing = Option<(CloseCode, String)>;

/// The WebSocket close code for a Grove close code.
pub fn ws_close_code(code: CloseCode) -> u16 {
    // Grove's codes are small (0..=12).
    CLOSE_CODE_BASE + code.code() as u16
}

/// The Grove close code a WebSocket close code stands for, if any.
pub fn grove_close_code(code: u16) -> Option<CloseCode> {
    code.checked_sub(CLOSE_CODE_BASE)
        .and_then(|code| CloseCode::from_code(u64::from(code)))
}

/// A close frame carrying Grove's `code` and `reason`.
fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    CloseFrame {
        code: WsCloseCode::from(ws_close_code(code)),
        reason: truncate_to(reason, MAX_WS_REASON).into(),
    }
}

/// Where the WebSocket door listens, and whether it speaks TLS.
#[derive(Debug, Clone)]
pub struct WebSocketListen {
    /// The TCP address to listen on.
    pub listen: SocketAddr,
    /// Serve plain `ws://` without TLS: for local development only, since
    /// credentials and frames then cross the network in the clear.
    pub plain: bool,
}

/// How the gateway reaches a WebSocket session from outside its tasks.
#[derive(Clone)]
pub(crate) struct WsDoor {
    unreliable: mpsc::Sender<Bytes>,
    close: Arc<watch::Sender<Closing>>,
    max_frame: usize,
}

impl WsDoor {
    /// Asks the writer to close the socket now with `code` and `reason`,
    /// and the reader to stop.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        close_once(&self.close, code, reason);
    }

    /// Queues an unreliable payload, or drops it if the socket is behind.
    pub(crate) fn send_unreliable(
        &self,
        session: SessionId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let len = payload.len();
        if len > self.max_frame {
            return Err(SendError::TooLarge {
                len,
                limit: self.max_frame,
            });
        }
        match self.unreliable.try_send(payload) {
            // Dropped, as a datagram would be on a congested path.
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::UnknownSession(session)),
        }
    }
}

/// Records the first close asked for; later ones change nothing.
fn close_once(close: &watch::Sender<Closing>, code: CloseCode, reason: &str) {
    close.send_if_modified(|closing| {
        if closing.is_some() {
            return false;
        }
        *closing = Some((code, reason.to_owned()));
        true
    });
}

/// Either a TLS stream or the bare TCP stream.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// Accepts WebSocket clients on `listener` until `stop` changes.
pub(crate) async fn accept<B: Backend>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared<B>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => match shared.pending_auth.clone().try_acquire_owned() {
                    Ok(pending) => {
                        connections.spawn(serve(shared.clone(), tcp, remote, tls.clone(), pending));
                    }
                    // As on QUIC, refused before any work is done for it.
                    Err(_) => {
                        tracing::debug!(%remote, "too many connections logging in; WebSocket refused");
                        drop(tcp);
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "accepting a WebSocket connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Ok(()) = stop.changed() => break,
        }
    }
    drop(listener);
    // Sessions are closed with the others (the QUIC door's `close_all`);
    // logins still running give up on `stopping`.
    drain(connections, SHUTDOWN_GRACE).await;
}

/// Serves one TCP connection: TLS, the WebSocket handshake, the login, the
/// session.
async fn serve<B: Backend>(
    shared: Arc<Shared<B>>,
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    pending: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let config = &shared.config;
    let limit = config.max_frame.max(config.max_credentials);
    // A host holds thousands of sockets: each reads into a small buffer.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let handshake = async {
        match tls {
            Some(tls) => {
                let stream = tls.accept(tcp).await.ok()?;
                let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config));
                Some(Either::Tls(ws.await.ok()?))
            }
            None => {
                let ws = tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config));
                Some(Either::Plain(ws.await.ok()?))
            }
        }
    };
    match tokio::time::timeout(config.auth_timeout, handshake).await {
        Ok(Some(Either::Tls(ws))) => run(shared.as_ref(), ws, remote, pending).await,
        Ok(Some(Either::Plain(ws))) => run(shared.as_ref(), ws, remote, pending).await,
        _ => tracing::debug!(%remote, "WebSocket handshake failed or timed out"),
    }
}

/// A socket with TLS or without.
enum Either<T, P> {
    Tls(T),
    Plain(P),
}

/// A WebSocket over TLS or TCP.
type Socket<S> = WebSocketStream<S>;

/// Logs the client in and runs its session.
async fn run<B: Backend, S: Transport>(
    shared: &Shared<B>,
    mut ws: Socket<S>,
    remote: SocketAddr,
    pending: OwnedSemaphorePermit,
) {
    let config = &shared.config;
    let slot = match session_slot(shared) {
        Ok(slot) => slot,
        Err((code, reason)) => return refuse(shared, ws, code, &reason).await,
    };
    let mut stopping = shared.stopping.clone();
    let login = tokio::select! {
        login = login(shared, &mut ws, slot) => login,
        // (A gateway dropped without a shutdown goes on serving.)
        Ok(_) = stopping.wait_for(|stopping| *stopping) => {
            Err(Some((CloseCode::HostShutdown, "host is shutting down".to_owned())))
        }
    };
    let login = match login {
        Ok(login) => login,
        Err(Some((code, reason))) => return refuse(shared, ws, code, &reason).await,
        Err(None) => return,
    };
    drop(pending);
    let (sink, stream) = ws.split();
    let (unreliable, unreliable_rx) = mpsc::channel(UNRELIABLE_QUEUE);
    let (close, close_rx) = watch::channel(None);
    let door = WsDoor {
        unreliable,
        close: Arc::new(close),
        max_frame: config.max_frame,
    };
    let (give_back, taken_back) = oneshot::channel();
    let source = WsSource {
        stream: Some(stream),
        give_back: Some(give_back),
        idle_timeout: config.idle_timeout,
        deadline: Instant::now() + config.idle_timeout,
        closing: close_rx.clone(),
    };
    let writer = Writer {
        sink,
        unreliable: unreliable_rx,
        close: door.close.clone(),
        closing: close_rx,
        taken_back,
        ping_every: config.idle_timeout / 3,
    };
    let admission = Admission {
        login,
        door: Door::WebSocket(door),
        remote,
        source,
        decoder: FrameDecoder::new(config.max_frame),
    };
    run_session(shared, admission, |outbound| {
        tokio::spawn(writer.run(outbound));
    })
    .await;
}

/// Reads the credentials and asks the authenticator.
async fn login<B: Backend, S: Transport>(
    shared: &Shared<B>,
    ws: &mut Socket<S>,
    slot: OwnedSemaphorePermit,
) -> Result<Login<B::Owner>, Refusal> {
    let config = &shared.config;
    let credentials = match tokio::time::timeout(config.auth_timeout, first_message(ws)).await {
        Ok(Ok(credentials)) if credentials.len() > config.max_credentials => {
            let reason = format!(
                "credentials of {} bytes exceed the limit of {} bytes",
                credentials.len(),
                config.max_credentials
            );
            return Err(Some((CloseCode::BadFirstPacket, reason)));
        }
        Ok(Ok(credentials)) => credentials,
        Ok(Err(refusal)) => return Err(refusal),
        Err(_) => {
            let reason = format!("no credentials within {:?}", config.auth_timeout);
            return Err(Some((CloseCode::AuthTimeout, reason)));
        }
    };
    authenticate(shared, credentials, slot).await
}

/// The first binary message: the credentials. `Err(None)` if the client
/// went away.
async fn first_message<S: Transport>(
    ws: &mut Socket<S>,
) -> Result<Bytes, Option<(CloseCode, String)>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(credentials))) => return Ok(credentials),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Text(_))) => {
                return Err(Some((
                    CloseCode::BadFirstPacket,
                    "the credentials must be a binary message".into(),
                )))
            }
            Some(Err(WsError::Capacity(error))) => {
                return Err(Some((CloseCode::BadFirstPacket, error.to_string())))
            }
            Some(Ok(_)) | Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Closes a client that has no session with `code` and `reason`.
async fn refuse<B: Backend, S: Transport>(
    shared: &Shared<B>,
    mut ws: Socket<S>,
    code: CloseCode,
    reason: &str,
) {
    shared.sessions.count_end(End::Closed(code));
    tracing::debug!(%code, reason, "WebSocket refused");
    let closing = async {
        if ws
            .send(Message::Close(Some(close_frame(code, reason))))
            .await
            .is_ok()
        {
            // Wait for the client's answer, so the close frame is not lost
            // to a reset of a socket with unread bytes.
            while let Some(Ok(_)) = ws.next().await {}
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
}

/// A WebSocket client's messages, as the session's reader takes them.
struct WsSource<S: Transport> {
    /// Always `Some` until dropped.
    stream: Option<SplitStream<Socket<S>>>,
    /// Hands the stream to the writer when the reader is done with it, so
    /// that the writer can wait for the client's answer to its close.
    give_back: Option<oneshot::Sender<SplitStream<Socket<S>>>>,
    idle_timeout: Duration,
    deadline: Instant,
    closing: watch::Receiver<Closing>,
}

impl<S: Transport> Drop for WsSource<S> {
    fn drop(&mut self) {
        if let (Some(stream), Some(give_back)) = (self.stream.take(), self.give_back.take()) {
            let _ = give_back.send(stream);
        }
    }
}

impl<S: Transport> Source for WsSource<S> {
    async fn next(&mut self) -> Incoming {
        let Some(stream) = self.stream.as_mut() else {
            return Incoming::Gone(Disconnect::ClientClosed("connection closed".into()));
        };
        // A deadline that passed while the reader was paused (its owner's
        // read-ahead full) says nothing of the client: nobody listened.
        let now = Instant::now();
        if self.deadline <= now {
            self.deadline = now + self.idle_timeout;
        }
        let read = tokio::select! {
            biased;
            read = stream.next() => read,
            // The gateway closed the socket. The reason it recorded takes
            // precedence over this one.
            closing = self.closing.wait_for(Option::is_some) => {
                let asked = closing.ok().and_then(|closing| closing.clone());
                return Incoming::Gone(closed_by_gateway(asked));
            }
            () = tokio::time::sleep_until(self.deadline) => {
                return Incoming::Gone(Disconnect::TimedOut);
            }
        };
        self.deadline = Instant::now() + self.idle_timeout;
        match read {
            Some(Ok(Message::Binary(payload))) => Incoming::Message(payload, true),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Incoming::Heard,
            Some(Ok(Message::Text(_))) => Incoming::Violation(
                CloseCode::ProtocolViolation,
                "text messages are not part of the protocol; send binary messages".into(),
            ),
            Some(Ok(Message::Close(frame))) => Incoming::Gone(Disconnect::ClientClosed(
                frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            )),
            Some(Err(WsError::Capacity(error))) => {
                Incoming::Violation(CloseCode::FrameTooLarge, error.to_string())
            }
            Some(Err(error)) => Incoming::Gone(Disconnect::ClientClosed(error.to_string())),
            None => Incoming::Gone(Disconnect::ClientClosed("connection closed".into())),
        }
    }
}

/// Why a session ended that the gateway closed with `closing`.
fn closed_by_gateway(closing: Closing) -> Disconnect {
    match closing {
        Some((CloseCode::ClosedByActor, reason)) => Disconnect::ClosedByActor(reason),
        Some((CloseCode::HostShutdown, _)) | None => Disconnect::HostShutdown,
        Some((code, reason)) => Disconnect::Kicked { code, reason },
    }
}

/// Writes one WebSocket session's frames, unreliable payloads, pings and
/// close.
struct Writer<S: Transport> {
    sink: SplitSink<Socket<S>, Message>,
    unreliable: mpsc::Receiver<Bytes>,
    /// Set once the close is sent, so the reader stops even if the client
    /// never answers it.
    close: Arc<watch::Sender<Closing>>,
    closing: watch::Receiver<Closing>,
    taken_back: oneshot::Receiver<SplitStream<Socket<S>>>,
    ping_every: Duration,
}

/// What the writer does next.
enum Step {
    /// Send these messages, then close if asked to.
    Frames(Vec<Message>, Option<(CloseCode, String)>),
    /// Close now.
    Close(CloseCode, String),
    /// The session is over and nothing more is to be sent.
    Done,
}

impl<S: Transport> Writer<S> {
    async fn run(mut self, mut outbound: mpsc::Receiver<Outbound>) {
        let mut ping = tokio::time::interval(self.ping_every.max(Duration::from_millis(10)));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        loop {
            let step = tokio::select! {
                biased;
                _ = self.closing.wait_for(Option::is_some) => None,
                // Before the data: a busy socket must still be pinged.
                _ = ping.tick() => Some(Step::Frames(vec![Message::Ping(Bytes::new())], None)),
                item = outbound.recv() => Some(batch(item, &mut outbound)),
                Some(payload) = self.unreliable.recv() => {
                    Some(Step::Frames(vec![Message::Binary(payload)], None))
                }
            };
            // Unreliable payloads queued meanwhile go in the same write: a
            // cell's snapshot in several parts, or a snapshot beside a reply,
            // costs the socket one send, not one each.
            let step = match step {
                Some(Step::Frames(mut frames, None)) => {
                    while frames.len() < WRITE_BATCH {
                        let Ok(payload) = self.unreliable.try_recv() else {
                            break;
                        };
                        frames.push(Message::Binary(payload));
                    }
                    Some(Step::Frames(frames, None))
                }
                step => step,
            };
            let step = step.unwrap_or_else(|| self.close_step());
            match step {
                Step::Frames(messages, then) => {
                    if !self.write(messages).await {
                        // The socket failed, or the gateway closed the
                        // session while the client was not taking bytes.
                        if let Step::Close(code, reason) = self.close_step() {
                            self.close(code, &reason).await;
                        }
                        return;
                    }
                    if let Some((code, reason)) = then {
                        return self.close(code, &reason).await;
                    }
                }
                Step::Close(code, reason) => return self.close(code, &reason).await,
                Step::Done => return,
            }
        }
    }

    /// The close the gateway asked for.
    fn close_step(&self) -> Step {
        match &*self.closing.borrow() {
            Some((code, reason)) => Step::Close(*code, reason.clone()),
            None => Step::Done,
        }
    }

    /// Sends `messages` and flushes; gives up (returns `false`) if the
    /// socket fails or the gateway closes the session meanwhile.
    async fn write(&mut self, messages: Vec<Message>) -> bool {
        let sink = &mut self.sink;
        let writing = async {
            for message in messages {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        let closing = &mut self.closing;
        tokio::select! {
            written = writing => written.is_ok(),
            _ = closing.wait_for(Option::is_some) => false,
        }
    }

    /// Sends the close frame, stops the reader, then waits (a little) for
    /// the client's answer.
    async fn close(mut self, code: CloseCode, reason: &str) {
        let frame = Message::Close(Some(close_frame(code, reason)));
        let (sink, close, taken_back) = (&mut self.sink, &self.close, self.taken_back);
        let closing = async {
            let sent = sink.send(frame).await.is_ok();
            // A client that ignores the close must not keep its session.
            close_once(close, code, reason);
            if sent {
                if let Ok(mut stream) = taken_back.await {
                    while let Some(Ok(_)) = stream.next().await {}
                }
            }
        };
        if tokio::time::timeout(CLOSE_GRACE, closing).await.is_err() {
            close_once(&self.close, code, reason);
        }
    }
}

/// The frames waiting after `first`, up to a batch, and the close that
/// follows them if one was queued.
fn batch(first: Option<Outbound>, outbound: &mut mpsc::Receiver<Outbound>) -> Step {
    let mut frames = Vec::new();
    let mut next = first;
    while let Some(item) = next.take() {
        match item {
            Outbound::Frame(payload) => frames.push(Message::Binary(payload)),
            Outbound::Close(code, reason) if frames.is_empty() => return Step::Close(code, reason),
            Outbound::Close(code, reason) => return Step::Frames(frames, Some((code, reason))),
        }
        if frames.len() < WRITE_BATCH {
            next = outbound.try_recv().ok();
        }
    }
    if frames.is_empty() {
        Step::Done
    } else {
        Step::Frames(frames, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grove_codes_map_to_the_application_range_and_back() {
        for code in CloseCode::ALL {
            let ws = ws_close_code(code);
            assert!((4000..4100).contains(&ws), "{code}: {ws}");
            assert_eq!(grove_close_code(ws), Some(code));
        }
        assert_eq!(ws_close_code(CloseCode::AuthRejected), 4002);
        assert_eq!(grove_close_code(1000), None);
        assert_eq!(grove_close_code(4999), None);
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let frame = close_frame(CloseCode::RateLimited, &"é".repeat(200));
        assert!(frame.reason.len() <= MAX_WS_REASON);
        assert_eq!(u16::from(frame.code), 4008);
    }
}
