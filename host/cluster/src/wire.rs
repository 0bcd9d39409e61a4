//! The host-to-host wire format: frames on one QUIC stream per connection.
//!
//! A connection between two hosts carries one bidirectional stream, opened
//! by the host that dialled. Both hosts write [`Frame`]s on it, each a
//! little-endian `u32` byte length followed by the frame in
//! [postcard](https://postcard.jamesmunns.com/wire-format): a call from
//! either side is a [`Request`], a reminder firing or a game client's event
//! for an actor an [`Event`], bytes for (or the close of) sessions of the
//! receiving host's gateway a [`Push`]; each is answered by a [`Response`]
//! echoing its id (Skynet's session ids). Many calls are in flight at once;
//! answers come back in any order. Frames from one host arrive in the order
//! it wrote them, so one-way sends keep their per-sender order.
//!
//! The frame around the values is postcard; the values themselves — a call's
//! arguments and its result — are in the component model's value encoding
//! (`grove_values::wire`), so a peer in another language needs the WIT of the
//! actor interface and nothing Grove-specific to read them. `docs/cluster.md`
//! walks through a frame byte by byte.
//!
//! [`decode`] takes bytes from another process: it never panics, and what it
//! allocates is bounded by the frame's length, which is capped at
//! [`MAX_FRAME`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The ALPN protocol name of host-to-host connections.
pub const ALPN: &[u8] = b"grove-cluster/1";

/// The largest frame accepted, in bytes: a call's arguments are capped far
/// below this by the host's message size limit.
pub const MAX_FRAME: usize = 64 << 20;

/// One unit on a host-to-host stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame<E> {
    /// A call or one-way send to an actor the receiving host runs.
    Request(Request),
    /// The answer to a request or event the receiving host sent.
    Response(Response<E>),
    /// Something other than a call for an actor the receiving host runs.
    Event(Event),
    /// Bytes for, or the close of, game client sessions held by the
    /// receiving host's gateway.
    Push(Push),
}

/// Sends to, or closes, sessions of the receiving host's gateway, for an
/// actor on the sending host. Answered [`Outcome::Pushed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Push {
    /// As [`Request::id`].
    pub id: u64,
    /// The sessions, each held by the receiving host.
    pub sessions: Vec<u64>,
    /// What to do to them.
    pub action: PushAction,
}

/// What a [`Push`] does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PushAction {
    /// Send the payload to each session: on its reliable stream, or as a
    /// datagram.
    Send {
        /// The bytes.
        payload: Vec<u8>,
        /// Reliable and ordered, or an unreliable datagram.
        reliable: bool,
    },
    /// Close each session with the reason.
    Close {
        /// Told to the client.
        reason: String,
    },
}

/// Why a session refused a payload (`grove:actor/types.session-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// No such session.
    UnknownSession,
    /// Larger than the session takes; carries the limit.
    TooLarge(u32),
    /// The client does not read; it has been disconnected.
    SlowConsumer,
    /// The client takes no datagrams.
    DatagramsUnsupported,
}

/// Something other than a call for an actor: answered like a call, with
/// [`Outcome::Returned`]`(None)` once it has run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// As [`Request::id`].
    pub id: u64,
    /// The actor's type.
    pub actor_type: String,
    /// The actor's key.
    pub key: String,
    /// Microseconds the sender still waits.
    pub timeout_us: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] asks the actor to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// A firing of the actor's durable reminder: `on-reminder(name)`.
    Reminder {
        /// The reminder's name.
        name: String,
    },
    /// A game client's session, held by the sending host's gateway, is
    /// owned by the actor: `on-connect(session)`.
    Connect {
        /// The session.
        session: u64,
    },
    /// A frame or datagram from the session: `on-message`.
    Message {
        /// The session.
        session: u64,
        /// The client's bytes.
        payload: Vec<u8>,
        /// A frame (true) or a datagram.
        reliable: bool,
    },
    /// The session ended: `on-disconnect`.
    Disconnect {
        /// The session.
        session: u64,
        /// Why (`grove:actor/types.disconnect-reason`).
        reason: Disconnected,
    },
}

/// Why a session ended (`grove:actor/types.disconnect-reason`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disconnected {
    /// The client closed; its reason.
    ClientClosed(String),
    /// The client went silent.
    TimedOut,
    /// An actor closed the session; its reason.
    ClosedByActor(String),
    /// The gateway closed it; the reason the client was sent.
    Kicked(String),
    /// The host shut down.
    HostShutdown,
}

/// A call or one-way send to an actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the sender, unique among its requests in flight on this
    /// connection; echoed by the response.
    pub id: u64,
    /// The actor's type, e.g. `counter`.
    pub actor_type: String,
    /// The actor's key, e.g. `7`.
    pub key: String,
    /// The function of the actor interface, e.g. `add`.
    pub function: String,
    /// The arguments in parameter order, each in the value encoding, one
    /// after the other (the encoding of a tuple of the parameters).
    pub args: Vec<u8>,
    /// Microseconds the caller still waits, counted from when the frame was
    /// written: the receiver's deadline for the call.
    pub timeout_us: u64,
    /// The actors waiting on this call, each in a turn, outermost first, as
    /// `type/key`; empty for a call from outside any actor.
    pub chain: Vec<String>,
    /// A one-way send: answered [`Outcome::Queued`] once it is in the
    /// actor's mailbox, not when it has run.
    pub one_way: bool,
    /// The span that sent it, if traced: the turn that runs it joins the
    /// trace.
    pub trace: Option<grove_core::TraceParent>,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response<E> {
    /// The request's id.
    pub id: u64,
    /// What became of it.
    pub outcome: Outcome<E>,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome<E> {
    /// The call ran: its result in the value encoding, or `None` for a
    /// function without a result.
    Returned(Option<Vec<u8>>),
    /// The one-way send is in the actor's mailbox; it will run.
    Queued,
    /// The receiving host does not run the actor: the sender's placement
    /// entry is stale. Nothing ran; resolve the owner again and resend.
    NotHere,
    /// The call failed with a typed error.
    Failed(E),
    /// What a [`Push`] did: to how many sessions the payload was queued (or
    /// how many were closed), and, for a push to one session, why it was
    /// refused.
    Pushed {
        /// Sessions reached.
        done: u32,
        /// Why the one session refused.
        refused: Option<Refusal>,
    },
}

/// Bytes that are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix is larger than [`MAX_FRAME`].
    #[error("a frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The frame's bytes are not a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Appends `frame`, length prefix first, to `out`.
pub fn encode<E: Serialize>(frame: &Frame<E>, out: &mut Vec<u8>) {
    // Frames are plain data and always serialize; an error type `E` whose
    // `Serialize` fails would lose only its own frame.
    match postcard::to_allocvec(frame) {
        Ok(body) => {
            let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&body);
        }
        Err(error) => tracing::error!(%error, "a host-to-host frame does not serialize"),
    }
}

/// The body length a frame's 4-byte prefix announces.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, DecodeError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(DecodeError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes one frame's body (without its length prefix); the body must hold
/// exactly one frame.
pub fn decode<E: DeserializeOwned>(body: &[u8]) -> Result<Frame<E>, DecodeError> {
    if body.len() > MAX_FRAME {
        return Err(DecodeError::TooLarge(body.len()));
    }
    match postcard::take_from_bytes(body) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(DecodeError::Malformed(format!(
            "{} bytes after the frame",
            rest.len()
        ))),
        Err(error) => Err(DecodeError::Malformed(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Frame<String> {
        Frame::Request(Request {
            id: 1,
            actor_type: "counter".into(),
            key: "7".into(),
            function: "add".into(),
            args: vec![5],
            timeout_us: 30_000_000,
            chain: vec![],
            one_way: false,
            trace: None,
        })
    }

    fn roundtrip(frame: &Frame<String>) -> Frame<String> {
        let mut out = Vec::new();
        encode(frame, &mut out);
        let len = frame_len(out[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, out.len() - 4);
        decode(&out[4..]).unwrap()
    }

    #[test]
    fn frames_survive_the_round_trip() {
        assert_eq!(roundtrip(&request()), request());
        let mut traced = request();
        if let Frame::Request(r) = &mut traced {
            r.trace = Some(grove_core::TraceParent {
                trace_id: [0xfe; 16],
                span_id: [7; 8],
                sampled: true,
            });
        }
        assert_eq!(roundtrip(&traced), traced);
        for outcome in [
            Outcome::Returned(Some(vec![1, 2, 3])),
            Outcome::Returned(None),
            Outcome::Queued,
            Outcome::NotHere,
            Outcome::Failed("trapped".to_owned()),
        ] {
            let event = Frame::Event(Event {
                id: 3,
                actor_type: "probe".into(),
                key: "a".into(),
                timeout_us: 5,
                kind: EventKind::Reminder {
                    name: "ring".into(),
                },
            });
            assert_eq!(roundtrip(&event), event);
            let frame = Frame::Response(Response { id: 9, outcome });
            assert_eq!(roundtrip(&frame), frame);
        }
    }

    /// The example of `docs/cluster.md`, byte for byte.
    #[test]
    fn a_call_is_encoded_as_documented() {
        let mut out = Vec::new();
        encode(&request(), &mut out);
        let expected: Vec<u8> = [
            &[0x19, 0x00, 0x00, 0x00][..],                     // body length 25
            &[0x00],                                           // Frame::Request
            &[0x01],                                           // id 1
            &[0x07, b'c', b'o', b'u', b'n', b't', b'e', b'r'], // actor type
            &[0x01, b'7'],                                     // key
            &[0x03, b'a', b'd', b'd'],                         // function
            &[0x01, 0x05],                                     // args: u64 5 in LEB128
            &[0x80, 0x87, 0xa7, 0x0e],                         // 30,000,000 µs
            &[0x00],                                           // empty chain
            &[0x00],                                           // a call, not one-way
            &[0x00],                                           // not traced
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn an_answer_is_encoded_as_documented() {
        let mut out = Vec::new();
        let answer: Frame<String> = Frame::Response(Response {
            id: 1,
            outcome: Outcome::Returned(Some(vec![15])),
        });
        encode(&answer, &mut out);
        assert_eq!(out, [0x06, 0, 0, 0, 0x01, 0x01, 0x00, 0x01, 0x01, 0x0f]);
    }

    #[test]
    fn oversized_and_trailing_bytes_are_refused() {
        assert_eq!(
            frame_len((MAX_FRAME as u32 + 1).to_le_bytes()),
            Err(DecodeError::TooLarge(MAX_FRAME + 1))
        );
        let mut out = Vec::new();
        encode(&request(), &mut out);
        out.push(0);
        let error = decode::<String>(&out[4..]).unwrap_err();
        assert!(error.to_string().contains("1 bytes after"), "{error}");
        assert!(decode::<String>(&[0x07]).is_err());
        assert!(decode::<String>(&[]).is_err());
    }
}
