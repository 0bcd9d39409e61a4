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
        if self.buffer.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let mut prefix = [0; LENGTH_PREFIX];
        prefix.copy_from_slice(&self.buffer[..LENGTH_PREFIX]);
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
    /// The gateway has as many sessions as it accepts.
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
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
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
        }
    }

    /// Takes one token; `false` if the bucket is empty.
    pub fn allow(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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
}
