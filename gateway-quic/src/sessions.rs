//! The registry of live sessions, and the way actors push bytes to them.
//!
//! [`Sessions`] is a cheap handle (`Arc` inside) shared by the gateway, which
//! adds and removes sessions as clients come and go, and the host, which sends
//! to them on behalf of actors. Sending never waits: a reliable frame goes into
//! the session's bounded outbound queue (a writer task drains it onto the
//! client's stream or socket), a datagram goes straight to QUIC (or, for a
//! WebSocket client, into a small queue that drops it when full). A client
//! whose frame queue overflows is not reading; it is disconnected rather than
//! allowed to hold memory. Sessions from every door (QUIC, WebTransport,
//! WebSocket) live in the same registry and look the same to actors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::protocol::CloseCode;

/// Identifies one session on its host. Never reused while the host runs.
/// In a cluster, its top 16 bits are the number of the host whose gateway
/// holds it ([`Sessions::set_origin`]), so that any host can route to it.
pub type SessionId = u64;

/// The host number of a session id: 0 for a host outside a cluster.
pub fn origin_of(session: SessionId) -> u16 {
    (session >> 48) as u16
}

/// Why a payload could not be sent to a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// There is no such session: it never existed or it has ended.
    #[error("no session {0}: it never existed or has ended")]
    UnknownSession(SessionId),
    /// The payload is larger than the session accepts (the frame limit for
    /// reliable frames, the path's datagram size for datagrams).
    #[error("payload of {len} bytes exceeds the session's limit of {limit} bytes")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload the session takes this way.
        limit: usize,
    },
    /// The client has not read its frames and its outbound queue is full; the
    /// session is being closed.
    #[error("session {0} is not reading its frames; it has been disconnected")]
    SlowConsumer(SessionId),
    /// The client's QUIC stack does not take datagrams.
    #[error("session {0} does not accept datagrams")]
    DatagramsUnsupported(SessionId),
}

/// Why a session ended, as its owning actor is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed the connection or finished its stream; carries the
    /// client's reason.
    ClientClosed(String),
    /// Nothing came from the client within the idle timeout: it vanished.
    TimedOut,
    /// An actor closed the session; carries its reason.
    ClosedByActor(String),
    /// The gateway closed the session because the client misbehaved (frame
    /// too large, rate limit, slow reader, protocol violation).
    Kicked {
        /// The close code sent to the client.
        code: CloseCode,
        /// The reason sent with it.
        reason: String,
    },
    /// The host is shutting down.
    HostShutdown,
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disconnect::ClientClosed(reason) => write!(f, "client closed: {reason}"),
            Disconnect::TimedOut => f.write_str("client timed out"),
            Disconnect::ClosedByActor(reason) => write!(f, "closed by actor: {reason}"),
            Disconnect::Kicked { code, reason } => write!(f, "{code}: {reason}"),
            Disconnect::HostShutdown => f.write_str("host shutting down"),
        }
    }
}

/// What a session's writer task is asked to do.
pub(crate) enum Outbound {
    /// Write one frame.
    Frame(Bytes),
    /// Write everything queued before, wait until the client has it, then
    /// close the connection with this code and reason.
    Close(CloseCode, String),
}

/// Which door a session came through, as metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorKind {
    /// Grove's own QUIC protocol.
    Quic,
    /// WebTransport (HTTP/3), from browsers.
    WebTransport,
    /// WebSocket.
    WebSocket,
}

impl DoorKind {
    /// Every door, in the order [`Sessions::doors`] lists them.
    pub const ALL: [DoorKind; 3] = [DoorKind::Quic, DoorKind::WebTransport, DoorKind::WebSocket];

    /// `quic`, `webtransport` or `websocket`.
    pub fn name(self) -> &'static str {
        match self {
            DoorKind::Quic => "quic",
            DoorKind::WebTransport => "webtransport",
            DoorKind::WebSocket => "websocket",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The connection a session came through, one per door.
#[derive(Clone)]
pub(crate) enum Door {
    /// Grove's own QUIC protocol (ALPN `grove`).
    Quic(quinn::Connection),
    /// A WebTransport session (HTTP/3 over QUIC).
    WebTransport(wtransport::Connection),
    /// A WebSocket.
    WebSocket(crate::websocket::WsDoor),
}

impl Door {
    /// Which door it is.
    pub(crate) fn kind(&self) -> DoorKind {
        match self {
            Door::Quic(_) => DoorKind::Quic,
            Door::WebTransport(_) => DoorKind::WebTransport,
            Door::WebSocket(_) => DoorKind::WebSocket,
        }
    }

    /// Closes the connection at once with `code` and `reason`.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        let reason = truncate_reason(reason);
        match self {
            Door::Quic(connection) => connection.close(code.code().into(), reason.as_bytes()),
            Door::WebTransport(connection) => connection
                .quic_connection()
                .close(code.code().into(), reason.as_bytes()),
            Door::WebSocket(socket) => socket.close(code, reason),
        }
    }

    /// Sends one unreliable payload.
    fn send_datagram(&self, session: SessionId, payload: Bytes) -> Result<(), SendError> {
        let len = payload.len();
        let too_large = |limit: Option<usize>| SendError::TooLarge {
            len,
            limit: limit.unwrap_or(0),
        };
        match self {
            Door::Quic(connection) => match connection.send_datagram(payload) {
                Ok(()) => Ok(()),
                Err(quinn::SendDatagramError::TooLarge) => {
                    Err(too_large(connection.max_datagram_size()))
                }
                Err(quinn::SendDatagramError::ConnectionLost(_)) => {
                    Err(SendError::UnknownSession(session))
                }
                Err(_) => Err(SendError::DatagramsUnsupported(session)),
            },
            Door::WebTransport(connection) => match connection.send_datagram(&payload) {
                Ok(()) => Ok(()),
                Err(wtransport::error::SendDatagramError::TooLarge) => {
                    Err(too_large(connection.max_datagram_size()))
                }
                Err(wtransport::error::SendDatagramError::NotConnected) => {
                    Err(SendError::UnknownSession(session))
                }
                Err(wtransport::error::SendDatagramError::UnsupportedByPeer) => {
                    Err(SendError::DatagramsUnsupported(session))
                }
            },
            Door::WebSocket(socket) => socket.send_unreliable(session, payload),
        }
    }
}

/// What the gateway keeps about one live session.
pub(crate) struct SessionLink {
    pub(crate) door: Door,
    pub(crate) frames: mpsc::Sender<Outbound>,
    pub(crate) max_frame: usize,
    /// Why the gateway itself closed the connection, once it has.
    pub(crate) closing: Arc<Mutex<Option<Disconnect>>>,
}

impl SessionLink {
    /// Records why the gateway is closing the session; `false` if it
    /// already was.
    fn mark_closing(&self, why: Disconnect) -> bool {
        let mut closing = self.closing.lock().unwrap_or_else(|e| e.into_inner());
        if closing.is_some() {
            return false;
        }
        *closing = Some(why);
        true
    }

    /// Records why, then closes the connection with `code` and `reason`.
    pub(crate) fn close(&self, code: CloseCode, reason: &str, why: Disconnect) {
        if self.mark_closing(why) {
            self.door.close(code, reason);
        }
    }

    /// Like [`SessionLink::close`], but the frames already queued for the
    /// client reach it first.
    pub(crate) fn close_after_queued(&self, code: CloseCode, reason: &str, why: Disconnect) {
        if !self.mark_closing(why) {
            return;
        }
        let close = Outbound::Close(code, truncate_reason(reason).to_owned());
        if self.frames.try_send(close).is_err() {
            self.door.close(code, reason);
        }
    }
}

/// Close reasons must fit in one packet with room to spare.
const MAX_REASON: usize = 512;

fn truncate_reason(reason: &str) -> &str {
    truncate_to(reason, MAX_REASON)
}

/// The longest prefix of `reason` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn truncate_to(reason: &str, max: usize) -> &str {
    if reason.len() <= max {
        return reason;
    }
    let mut end = max;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// What the sessions of one host have carried since it started: counters
/// that only grow (`Sessions::traffic`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Sessions admitted (welcomed).
    pub sessions_opened: u64,
    /// Frames read from clients.
    pub frames_in: u64,
    /// Datagrams read from clients.
    pub datagrams_in: u64,
    /// Payload bytes of the frames and datagrams read from clients.
    pub bytes_in: u64,
    /// Frames actors sent to clients.
    pub frames_out: u64,
    /// Datagrams sent to clients.
    pub datagrams_out: u64,
    /// Payload bytes of the frames and datagrams sent to clients.
    pub bytes_out: u64,
}

/// The counters behind [`Traffic`], and connection ends by reason.
#[derive(Debug, Default)]
struct Counters {
    sessions_opened: AtomicU64,
    /// Sessions admitted, by [`DoorKind::ALL`] index.
    opened_by_door: [AtomicU64; DoorKind::ALL.len()],
    frames_in: AtomicU64,
    datagrams_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_out: AtomicU64,
    /// By [`End::ALL`] index.
    ends: [AtomicU64; End::ALL.len()],
}

/// How a client's connection ended, as the gateway counts it: the close
/// code the gateway sent, or the client's own doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed its connection or finished its stream.
    ClientClosed,
    /// Nothing came from the client within the idle timeout.
    TimedOut,
    /// The gateway closed it with this code: a refused login, a kick, an
    /// actor's close or the host's shutdown.
    Closed(CloseCode),
}

impl End {
    /// Every end, in the order [`Sessions::ends`] lists them.
    pub const ALL: [End; 14] = [
        End::ClientClosed,
        End::TimedOut,
        End::Closed(CloseCode::ClosedByActor),
        End::Closed(CloseCode::AuthRejected),
        End::Closed(CloseCode::AuthFailed),
        End::Closed(CloseCode::AuthTimeout),
        End::Closed(CloseCode::BadFirstPacket),
        End::Closed(CloseCode::FrameTooLarge),
        End::Closed(CloseCode::ProtocolViolation),
        End::Closed(CloseCode::RateLimited),
        End::Closed(CloseCode::SlowConsumer),
        End::Closed(CloseCode::OwnerUnavailable),
        End::Closed(CloseCode::HostShutdown),
        End::Closed(CloseCode::ServerBusy),
    ];

    /// `client-closed`, `timed-out`, or the close code's name.
    pub fn name(self) -> &'static str {
        match self {
            End::ClientClosed | End::Closed(CloseCode::Closed) => "client-closed",
            End::TimedOut => "timed-out",
            End::Closed(code) => code.name(),
        }
    }

    /// Its place in [`End::ALL`].
    fn index(self) -> usize {
        match self {
            End::ClientClosed | End::Closed(CloseCode::Closed) => 0,
            End::TimedOut => 1,
            End::Closed(CloseCode::ClosedByActor) => 2,
            End::Closed(CloseCode::AuthRejected) => 3,
            End::Closed(CloseCode::AuthFailed) => 4,
            End::Closed(CloseCode::AuthTimeout) => 5,
            End::Closed(CloseCode::BadFirstPacket) => 6,
            End::Closed(CloseCode::FrameTooLarge) => 7,
            End::Closed(CloseCode::ProtocolViolation) => 8,
            End::Closed(CloseCode::RateLimited) => 9,
            End::Closed(CloseCode::SlowConsumer) => 10,
            End::Closed(CloseCode::OwnerUnavailable) => 11,
            End::Closed(CloseCode::HostShutdown) => 12,
            End::Closed(CloseCode::ServerBusy) => 13,
        }
    }

    /// How a session that ended for `why` ended.
    pub(crate) fn of(why: &Disconnect) -> End {
        match why {
            Disconnect::ClientClosed(_) => End::ClientClosed,
            Disconnect::TimedOut => End::TimedOut,
            Disconnect::ClosedByActor(_) => End::Closed(CloseCode::ClosedByActor),
            Disconnect::Kicked { code, .. } => End::Closed(*code),
            Disconnect::HostShutdown => End::Closed(CloseCode::HostShutdown),
        }
    }
}

#[derive(Default)]
struct Registry {
    live: DashMap<SessionId, SessionLink>,
    counters: Counters,
    next: AtomicU64,
    /// This host's number in its cluster, in the top 16 bits of every id.
    origin: std::sync::atomic::AtomicU16,
}

/// The live sessions of one host. Cheap to clone: clones share the registry.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Registry>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.inner.live.len())
            .finish()
    }
}

impl Sessions {
    /// An empty registry.
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.inner.live.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.inner.live.is_empty()
    }

    /// Gives this host's sessions ids that name it: `origin` in their top
    /// 16 bits. Set it when joining a cluster, before the gateway starts.
    pub fn set_origin(&self, origin: u16) {
        self.inner.origin.store(origin, Ordering::Relaxed);
    }

    /// This host's number (0 outside a cluster).
    pub fn origin(&self) -> u16 {
        self.inner.origin.load(Ordering::Relaxed)
    }

    /// Whether `session` would be held by this host's gateway (its id names
    /// this host), live or not.
    pub fn is_local(&self, session: SessionId) -> bool {
        origin_of(session) == self.origin()
    }

    /// Whether `session` is live.
    pub fn contains(&self, session: SessionId) -> bool {
        self.inner.live.contains_key(&session)
    }

    /// Sends `payload` to `session`: as a frame on its reliable, ordered
    /// stream, or as one unreliable datagram. Never waits.
    pub fn send(
        &self,
        session: SessionId,
        payload: Bytes,
        reliable: bool,
    ) -> Result<(), SendError> {
        let link = self
            .inner
            .live
            .get(&session)
            .ok_or(SendError::UnknownSession(session))?;
        let len = payload.len() as u64;
        let counters = &self.inner.counters;
        if reliable {
            send_frame(session, &link, payload)?;
            counters.frames_out.fetch_add(1, Ordering::Relaxed);
        } else {
            link.door.send_datagram(session, payload)?;
            counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
        }
        counters.bytes_out.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// What this host's sessions have carried since it started.
    pub fn traffic(&self) -> Traffic {
        let c = &self.inner.counters;
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Traffic {
            sessions_opened: read(&c.sessions_opened),
            frames_in: read(&c.frames_in),
            datagrams_in: read(&c.datagrams_in),
            bytes_in: read(&c.bytes_in),
            frames_out: read(&c.frames_out),
            datagrams_out: read(&c.datagrams_out),
            bytes_out: read(&c.bytes_out),
        }
    }

    /// How many client connections ended each way since the host started,
    /// in the order of [`End::ALL`]; refused logins included.
    pub fn ends(&self) -> Vec<(End, u64)> {
        End::ALL
            .iter()
            .zip(&self.inner.counters.ends)
            .map(|(end, n)| (*end, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts a session admitted through `door`.
    pub(crate) fn count_opened(&self, door: DoorKind) {
        let c = &self.inner.counters;
        c.sessions_opened.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = c.opened_by_door.get(door.index()) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Per door, in the order of [`DoorKind::ALL`]: the sessions open now
    /// and those admitted since the host started. Counting the open ones
    /// walks the registry, so this is for scrapes, not hot paths.
    pub fn doors(&self) -> Vec<(DoorKind, u64, u64)> {
        let mut live = [0u64; DoorKind::ALL.len()];
        for link in self.inner.live.iter() {
            if let Some(n) = live.get_mut(link.door.kind().index()) {
                *n += 1;
            }
        }
        DoorKind::ALL
            .iter()
            .zip(live)
            .zip(&self.inner.counters.opened_by_door)
            .map(|((door, live), opened)| (*door, live, opened.load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts a message read from a client.
    pub(crate) fn count_in(&self, len: usize, reliable: bool) {
        let c = &self.inner.counters;
        if reliable {
            c.frames_in.fetch_add(1, Ordering::Relaxed);
        } else {
            c.datagrams_in.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Counts a connection that ended `end`.
    pub(crate) fn count_end(&self, end: End) {
        if let Some(n) = self.inner.counters.ends.get(end.index()) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends one payload to many sessions, sharing its bytes among them;
    /// returns how many sessions it was queued for. Sessions that are gone
    /// or refuse it are skipped (a slow reader among them is disconnected).
    pub fn send_many(&self, sessions: &[SessionId], payload: &Bytes, reliable: bool) -> usize {
        sessions
            .iter()
            .filter(|&&session| self.send(session, payload.clone(), reliable).is_ok())
            .count()
    }

    /// Closes `session`, sending the client `reason` with the code
    /// `closed-by-actor` once the frames queued for it have been delivered;
    /// returns whether it was live.
    pub fn close(&self, session: SessionId, reason: &str) -> bool {
        let Some(link) = self.inner.live.get(&session) else {
            return false;
        };
        link.close_after_queued(
            CloseCode::ClosedByActor,
            reason,
            Disconnect::ClosedByActor(reason.to_owned()),
        );
        true
    }

    /// Closes one session with `code` and `reason`, recording `why`.
    pub(crate) fn close_with(
        &self,
        session: SessionId,
        code: CloseCode,
        reason: &str,
        why: Disconnect,
    ) {
        if let Some(link) = self.inner.live.get(&session) {
            link.close(code, reason, why);
        }
    }

    /// Closes every session with `code` and `reason`.
    pub(crate) fn close_all(&self, code: CloseCode, reason: &str, why: &Disconnect) {
        for link in self.inner.live.iter() {
            link.close(code, reason, why.clone());
        }
    }

    pub(crate) fn next_id(&self) -> SessionId {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed) + 1;
        (u64::from(self.origin()) << 48) | (n & ((1 << 48) - 1))
    }

    pub(crate) fn insert(&self, session: SessionId, link: SessionLink) {
        self.inner.live.insert(session, link);
    }

    pub(crate) fn remove(&self, session: SessionId) {
        self.inner.live.remove(&session);
    }
}

fn send_frame(session: SessionId, link: &SessionLink, payload: Bytes) -> Result<(), SendError> {
    if payload.len() > link.max_frame {
        return Err(SendError::TooLarge {
            len: payload.len(),
            limit: link.max_frame,
        });
    }
    match link.frames.try_send(Outbound::Frame(payload)) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::UnknownSession(session)),
        Err(mpsc::error::TrySendError::Full(_)) => {
            let reason = format!(
                "{} frames are waiting for this client to read them",
                link.frames.max_capacity()
            );
            link.close(
                CloseCode::SlowConsumer,
                &reason,
                Disconnect::Kicked {
                    code: CloseCode::SlowConsumer,
                    reason: reason.clone(),
                },
            );
            Err(SendError::SlowConsumer(session))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(400);
        let cut = truncate_reason(&reason);
        assert!(cut.len() <= MAX_REASON);
        assert!(reason.starts_with(cut));
        assert_eq!(truncate_reason("short"), "short");
    }

    #[test]
    fn every_end_has_its_own_counter() {
        for (i, end) in End::ALL.iter().enumerate() {
            assert_eq!(end.index(), i, "{}", end.name());
        }
    }

    #[test]
    fn unknown_sessions_are_refused_with_their_id() {
        let sessions = Sessions::new();
        assert_eq!(
            sessions.send(7, Bytes::from_static(b"x"), true),
            Err(SendError::UnknownSession(7))
        );
        assert_eq!(sessions.send_many(&[1, 2], &Bytes::new(), false), 0);
        assert!(!sessions.close(7, "bye"));
    }

    #[test]
    fn session_ids_name_the_host_of_their_gateway() {
        let sessions = Sessions::new();
        assert_eq!(sessions.next_id(), 1);
        assert!(sessions.is_local(1));
        sessions.set_origin(513);
        let id = sessions.next_id();
        assert_eq!(id, (513 << 48) | 2);
        assert_eq!(origin_of(id), 513);
        assert!(sessions.is_local(id));
        assert!(!sessions.is_local(1));
    }
}
