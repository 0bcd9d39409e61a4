//! The wire protocol between game clients and the gateway, without any I/O:
//! frame encoding, the welcome message, close codes and the limits both sides
//! agree on. `docs/protocol.md` describes the same thing for client authors in
//! other languages; keep the two in step.
//!
//! One bidirectional stream, opened by the client, carries length-prefixed
//! frames both ways: a frame is a 4-byte big-endian payload length followed by
//! the payload. The first client frame holds the credentials; the first server
//! frame is the [`Welcome`]. QUIC datagrams carry one payload each, no prefix.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The ALPN protocol name client and gateway must both offer.
pub const ALPN: &[u8] = b"grove";

/// Bytes in a frame's length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Bytes in a welcome frame before the owner's actor ref.
const WELCOME_FIXED: usize = 8 + 4;

/// A frame header for a payload of `len` bytes.
pub fn frame_header(len: usize) -> [u8; LENGTH_PREFIX] {
    // Payloads are limited far below 4 GiB before they get here.
    (len as u32).to_be_bytes()
}

/// Appends one frame carrying `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut BytesMut) {
    out.reserve(LENGTH_PREFIX + payload.len());
    out.put_slice(&frame_header(payload.len()));
    out.put_slice(payload);
}

/// Why bytes read from a peer are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced payload length.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
}

/// Splits a byte stream into frames, enforcing a size limit before any
/// payload is buffered.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    limit: usize,
}

impl FrameDecoder {
    /// A decoder that refuses payloads longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameDecoder {
            buffer: BytesMut::new(),
            limit,
        }
    }

    /// Changes the size limit (the first frame has its own).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(&prefix) = self.buffer.first_chunk::<LENGTH_PREFIX>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if self.buffer.len() < LENGTH_PREFIX + len {
            self.buffer.reserve(LENGTH_PREFIX + len - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(LENGTH_PREFIX);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// Whether bytes of an unfinished frame are buffered.
    pub fn has_partial_frame(&self) -> bool {
        !self.buffer.is_empty()
    }
}

/// The gateway's first frame to an authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The session's id, as the owning actor sees it.
    pub session: u64,
    /// The largest frame payload the gateway accepts from this client.
    pub max_frame: u32,
    /// The actor that owns the session, written `type/key`.
    pub owner: String,
}

impl Welcome {
    /// The welcome frame's payload: session id (u64), max frame (u32), both
    /// big-endian, then the owner as UTF-8.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(WELCOME_FIXED + self.owner.len());
        out.put_u64(self.session);
        out.put_u32(self.max_frame);
        out.put_slice(self.owner.as_bytes());
        out.freeze()
    }

    /// Reads a welcome frame's payload.
    pub fn decode(mut payload: &[u8]) -> Option<Welcome> {
        if payload.len() < WELCOME_FIXED {
            return None;
        }
        let session = payload.get_u64();
        let max_frame = payload.get_u32();
        let owner = String::from_utf8(payload.to_vec()).ok()?;
        Some(Welcome {
            session,
            max_frame,
            owner,
        })
    }
}

/// Why a session's connection was closed: the QUIC application close code.
/// The close frame's reason bytes carry a human-readable explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// Closed normally by the client or the gateway.
    Closed = 0,
    /// The owning actor closed the session.
    ClosedByActor = 1,
    /// The authentication function rejected the credentials.
    AuthRejected = 2,
    /// Authentication could not run (the authenticator failed or timed out);
    /// retrying later may succeed.
    AuthFailed = 3,
    /// No credentials arrived in time.
    AuthTimeout = 4,
    /// The first frame was malformed or larger than the credentials limit.
    BadFirstPacket = 5,
    /// A frame was larger than the session's frame limit.
    FrameTooLarge = 6,
    /// The client broke the protocol (opened a second stream, sent a
    /// truncated frame, ...).
    ProtocolViolation = 7,
    /// The client sent messages faster than its rate limit allows.
    RateLimited = 8,
    /// The client did not read its frames and too many were queued for it.
    SlowConsumer = 9,
    /// The owning actor could not be reached.
    OwnerUnavailable = 10,
    /// The host is shutting down.
    HostShutdown = 11,
    /// The gateway has as many sessions as it accepts, counting clients that
    /// are still authenticating.
    ServerBusy = 12,
}

impl CloseCode {
    /// Every code, in numeric order.
    pub const ALL: [CloseCode; 13] = [
        CloseCode::Closed,
        CloseCode::ClosedByActor,
        CloseCode::AuthRejected,
        CloseCode::AuthFailed,
        CloseCode::AuthTimeout,
        CloseCode::BadFirstPacket,
        CloseCode::FrameTooLarge,
        CloseCode::ProtocolViolation,
        CloseCode::RateLimited,
        CloseCode::SlowConsumer,
        CloseCode::OwnerUnavailable,
        CloseCode::HostShutdown,
        CloseCode::ServerBusy,
    ];

    /// The code's number on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The code with number `code`, if it is one of Grove's.
    pub fn from_code(code: u64) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.code()) == code)
    }

    /// The code's name, as `docs/protocol.md` writes it.
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::Closed => "closed",
            CloseCode::ClosedByActor => "closed-by-actor",
            CloseCode::AuthRejected => "auth-rejected",
            CloseCode::AuthFailed => "auth-failed",
            CloseCode::AuthTimeout => "auth-timeout",
            CloseCode::BadFirstPacket => "bad-first-packet",
            CloseCode::FrameTooLarge => "frame-too-large",
            CloseCode::ProtocolViolation => "protocol-violation",
            CloseCode::RateLimited => "rate-limited",
            CloseCode::SlowConsumer => "slow-consumer",
            CloseCode::OwnerUnavailable => "owner-unavailable",
            CloseCode::HostShutdown => "host-shutdown",
            CloseCode::ServerBusy => "server-busy",
        }
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A token bucket: `rate` messages per second on average, bursts of up to
/// `burst`. Time comes in as an argument so tests can drive it.
///
/// The gateway takes a token for each message as it reads it off the
/// connection. While it does not read (its backlog for a busy owner is full,
/// or the session is still being set up), it cannot tell when messages were
/// sent; they wait in QUIC's buffers and come out together once it reads
/// again. So the time reading was paused is credited to the client: it may
/// have sent up to `rate` messages per second of it, on top of what its bucket
/// held when the pause began, and those may arrive as one burst. The credit
/// ends when reading has caught up with the client ([`RateLimit::caught_up`]),
/// so a client cannot bank it for later.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
    paused_since: Option<std::time::Instant>,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub fn new(rate: u32, burst: u32, now: std::time::Instant) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimit {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
            paused_since: None,
        }
    }

    /// Adds the tokens earned since the last update, up to the burst; credit
    /// above the burst is kept but not added to.
    fn refill(&mut self, now: std::time::Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if self.tokens < self.burst {
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
    }

    /// Takes one token; `false` if the bucket is empty.
    pub fn allow(&mut self, now: std::time::Instant) -> bool {
        self.resume(now);
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The reader stops reading the client at `now`.
    pub fn pause(&mut self, now: std::time::Instant) {
        if self.paused_since.is_none() {
            self.refill(now);
            self.paused_since = Some(now);
        }
    }

    /// The reader reads again at `now`: the paused time becomes credit.
    pub fn resume(&mut self, now: std::time::Instant) {
        if let Some(since) = self.paused_since.take() {
            let paused = now.saturating_duration_since(since).as_secs_f64();
            self.tokens += paused * self.rate;
            self.last = now;
        }
    }

    /// Whether reading is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// Whether the bucket holds credit for a pause beyond its burst.
    pub fn has_credit(&self) -> bool {
        self.tokens > self.burst
    }

    /// Nothing more was waiting to be read: whatever credit is left goes.
    pub fn caught_up(&mut self) {
        self.tokens = self.tokens.min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn frames_split_across_reads_come_out_whole_and_in_order() {
        let mut wire = BytesMut::new();
        encode_frame(b"hello", &mut wire);
        encode_frame(b"", &mut wire);
        encode_frame(&[7; 300], &mut wire);
        let mut decoder = FrameDecoder::new(1024);
        let mut frames = Vec::new();
        for chunk in wire.chunks(3) {
            decoder.extend(chunk);
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"hello");
        assert!(frames[1].is_empty());
        assert_eq!(&frames[2][..], &[7; 300][..]);
        assert!(!decoder.has_partial_frame());
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_prefix_alone() {
        let mut decoder = FrameDecoder::new(16);
        decoder.extend(&frame_header(17));
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { len: 17, limit: 16 })
        );
    }

    #[test]
    fn welcome_round_trips_and_rejects_short_payloads() {
        let welcome = Welcome {
            session: 42,
            max_frame: 65536,
            owner: "player/ayla".into(),
        };
        assert_eq!(Welcome::decode(&welcome.encode()), Some(welcome));
        assert_eq!(Welcome::decode(&[0; 11]), None);
    }

    #[test]
    fn close_codes_round_trip_through_their_numbers() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(code.code().into()), Some(code));
        }
        assert_eq!(CloseCode::from_code(999), None);
    }

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10, 5, start);
        assert_eq!((0..10).filter(|_| limit.allow(start)).count(), 5);
        assert!(limit.allow(start + Duration::from_millis(100)));
        assert!(!limit.allow(start + Duration::from_millis(100)));
    }

    #[test]
    fn messages_that_waited_through_a_pause_pass_at_the_sustained_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::new(100, 10, start);
        limit.pause(start);
        // Two seconds paused: 200 messages at the rate, plus the full burst.
        let resumed = start + Duration::from_secs(2);
        limit.resume(resumed);
        assert!(limit.has_credit());
        assert_eq!((0..300).filter(|_| limit.allow(resumed)).count(), 210);
        assert!(!limit.has_credit());
    }

    #[test]
    fn credit_left_once_reading_caught_up_is_dropped() {
        let start = Instant::now();
        let mut limit = RateLimit::new(100, 10, start);
        limit.pause(start);
        let resumed = start + Duration::from_secs(2);
        limit.resume(resumed);
        assert_eq!((0..5).filter(|_| limit.allow(resumed)).count(), 5);
        limit.caught_up();
        assert!(!limit.has_credit());
        assert_eq!((0..300).filter(|_| limit.allow(resumed)).count(), 10);
    }

    #[test]
    fn credit_is_not_refilled_and_a_pause_starts_from_the_bucket_of_its_time() {
        let start = Instant::now();
        let mut limit = RateLimit::new(100, 10, start);
        assert_eq!((0..10).filter(|_| limit.allow(start)).count(), 10);
        limit.pause(start);
        let resumed = start + Duration::from_millis(500);
        limit.resume(resumed);
        // An empty bucket, then half a second paused: 50 messages.
        assert_eq!((0..100).filter(|_| limit.allow(resumed)).count(), 50);
        // Time after the pause refills as usual, up to the burst only.
        let later = resumed + Duration::from_secs(10);
        assert_eq!((0..100).filter(|_| limit.allow(later)).count(), 10);
        // Taking a token while paused ends the pause.
        limit.pause(later);
        assert!(limit.is_paused());
        assert!(limit.allow(later + Duration::from_secs(1)));
        assert!(!limit.is_paused());
    }
}
