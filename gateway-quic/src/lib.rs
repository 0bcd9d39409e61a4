//! Grove's gateway for game clients, and the Rust client library.
//!
//! Clients come through one of three doors onto the same sessions: QUIC
//! (below), WebTransport for browsers ([`webtransport`]) and WebSocket
//! ([`websocket`]). An actor never knows which one a client used.
//!
//! A game client connects over QUIC (ALPN `grove`), opens one bidirectional
//! stream and sends its credentials as the first frame. The host's
//! authentication actor names the actor that owns the session, or rejects the
//! client with a reason. From then on length-prefixed frames flow both ways on
//! the stream, and unreliable QUIC datagrams alongside. `docs/protocol.md`
//! specifies the wire format for clients in other languages.
//!
//! * [`server`]: the [`Gateway`] a host embeds, and the [`Backend`] trait
//!   through which it reaches actors.
//! * [`sessions`]: the registry of live sessions that actors send to.
//! * [`client`]: the Rust client library; [`websocket_client`] for the
//!   WebSocket door.
//! * [`protocol`]: framing, close codes and limits, without I/O.
//! * [`tls`]: certificates, fingerprints and pinning.

pub mod client;
mod drain;
pub mod protocol;
mod reader;
pub mod server;
pub mod sessions;
pub mod tls;
pub mod websocket;
pub mod websocket_client;
pub mod webtransport;

pub use protocol::CloseCode;
pub use server::{AuthError, Backend, Gateway, GatewayConfig, GatewayError};
pub use sessions::{origin_of, Disconnect, DoorKind, End, SendError, SessionId, Sessions, Traffic};
pub use tls::{Fingerprint, Identity};
