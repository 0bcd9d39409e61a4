//! The Rust client for the gateway's WebSocket door.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use grove_gateway_quic::websocket_client::WsSession;
//!
//! let session = WsSession::connect_plain("127.0.0.1:7073".parse()?, b"ayla").await?;
//! session.send(b"hello").await?;
//! let reply = session.recv().await?;
//! session.close("bye").await;
//! # Ok(()) }
//! ```
//!
//! Every binary message is one payload. Over WebSocket an actor's frames and
//! its unreliable sends arrive the same way (frames in order, unreliable
//! payloads possibly ahead of or behind them); a client that needs to
//! tell them apart does so from their content.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::client::{tls_config, Closed, ConnectError, ServerTrust};
use crate::protocol::{CloseCode, Welcome};
use crate::websocket::{grove_close_code, READ_BUFFER};

/// Largest message the client accepts from the gateway.
const MAX_INCOMING: usize = 16 * 1024 * 1024;

/// A byte stream a WebSocket can run over, with TLS or without.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

type Sink = SplitSink<WebSocketStream<Box<dyn Transport>>, Message>;
type Stream = SplitStream<WebSocketStream<Box<dyn Transport>>>;

/// One authenticated session over WebSocket. Cheap to clone: clones share
/// the socket.
#[derive(Clone)]
pub struct WsSession {
    inner: Arc<Inner>,
}

struct Inner {
    welcome: Welcome,
    sink: Mutex<Sink>,
    stream: Mutex<Stream>,
    /// How the session ended, once it has.
    ended: std::sync::Mutex<Option<Closed>>,
}

impl WsSession {
    /// Connects over plain `ws://` (a gateway started with its WebSocket door
    /// in plain mode), sends `credentials` and waits for the welcome.
    pub async fn connect_plain(
        addr: SocketAddr,
        credentials: &[u8],
    ) -> Result<WsSession, ConnectError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(ConnectError::Unreachable)?;
        let _ = tcp.set_nodelay(true);
        let url = format!("ws://{addr}/");
        WsSession::handshake(Box::new(tcp), &url, credentials).await
    }

    /// Connects over `wss://`, checking the gateway's certificate as `trust`
    /// says (`server_name` is checked with [`ServerTrust::Roots`]).
    pub async fn connect_tls(
        addr: SocketAddr,
        trust: &ServerTrust,
        server_name: &str,
        credentials: &[u8],
    ) -> Result<WsSession, ConnectError> {
        let mut tls = tls_config(trust)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(ConnectError::Unreachable)?;
        let _ = tcp.set_nodelay(true);
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let url = format!("wss://{server_name}:{}/", addr.port());
        WsSession::handshake(Box::new(stream), &url, credentials).await
    }

    async fn handshake(
        transport: Box<dyn Transport>,
        url: &str,
        credentials: &[u8],
    ) -> Result<WsSession, ConnectError> {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(MAX_INCOMING))
            .max_frame_size(Some(MAX_INCOMING));
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, transport, Some(config))
            .await
            .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let refused = |closed: Closed| ConnectError::Refused(closed);
        if let Err(error) = sink
            .send(Message::Binary(Bytes::copy_from_slice(credentials)))
            .await
        {
            return Err(refused(lost(&error)));
        }
        let welcome = loop {
            match stream.next().await {
                Some(Ok(Message::Binary(payload))) => {
                    break Welcome::decode(&payload).ok_or(ConnectError::BadWelcome)?
                }
                Some(Ok(Message::Close(frame))) => return Err(refused(closed_by(frame))),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(refused(lost(&error))),
                None => return Err(refused(gone())),
            }
        };
        Ok(WsSession {
            inner: Arc::new(Inner {
                welcome,
                sink: Mutex::new(sink),
                stream: Mutex::new(stream),
                ended: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The session id the gateway assigned.
    pub fn id(&self) -> u64 {
        self.inner.welcome.session
    }

    /// The actor that owns the session, written `type/key`.
    pub fn owner(&self) -> &str {
        &self.inner.welcome.owner
    }

    /// The largest payload the gateway accepts.
    pub fn max_frame(&self) -> usize {
        self.inner.welcome.max_frame as usize
    }

    /// Sends one payload (one binary message).
    pub async fn send(&self, payload: &[u8]) -> Result<(), Closed> {
        let mut sink = self.inner.sink.lock().await;
        match sink
            .send(Message::Binary(Bytes::copy_from_slice(payload)))
            .await
        {
            Ok(()) => Ok(()),
            Err(error) => Err(self.end(lost(&error))),
        }
    }

    /// Sends a text message, which the protocol does not allow: for tests
    /// of the gateway's handling of it.
    pub async fn send_text(&self, text: &str) -> Result<(), Closed> {
        let mut sink = self.inner.sink.lock().await;
        match sink.send(Message::Text(text.into())).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.end(lost(&error))),
        }
    }

    /// The next payload from the gateway. `Err` once the session has ended,
    /// with the gateway's close code and reason.
    pub async fn recv(&self) -> Result<Bytes, Closed> {
        let mut stream = self.inner.stream.lock().await;
        loop {
            if let Some(closed) = self.ended() {
                return Err(closed);
            }
            match stream.next().await {
                Some(Ok(Message::Binary(payload))) => return Ok(payload),
                Some(Ok(Message::Close(frame))) => {
                    let closed = self.end(closed_by(frame));
                    // Answer the close so the gateway can let go.
                    let _ = self.inner.sink.lock().await.close().await;
                    return Err(closed);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(self.end(lost(&error))),
                None => return Err(self.end(gone())),
            }
        }
    }

    /// Closes the session with WebSocket code 4000 (`closed`) and `reason`.
    pub async fn close(&self, reason: &str) {
        let frame = CloseFrame {
            code: WsCloseCode::from(crate::websocket::ws_close_code(CloseCode::Closed)),
            reason: reason.into(),
        };
        let mut sink = self.inner.sink.lock().await;
        let _ = sink.send(Message::Close(Some(frame))).await;
    }

    /// How the session ended, if it has.
    fn ended(&self) -> Option<Closed> {
        self.inner
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the first way the session ended; returns it.
    fn end(&self, closed: Closed) -> Closed {
        self.inner
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(closed)
            .clone()
    }
}

/// The gateway's close frame as a [`Closed`].
fn closed_by(frame: Option<CloseFrame>) -> Closed {
    match frame {
        Some(frame) => Closed {
            code: grove_close_code(u16::from(frame.code)),
            reason: frame.reason.to_string(),
        },
        None => Closed {
            code: None,
            reason: "closed without a code".into(),
        },
    }
}

fn lost(error: &WsError) -> Closed {
    Closed {
        code: None,
        reason: error.to_string(),
    }
}

fn gone() -> Closed {
    Closed {
        code: None,
        reason: "the connection ended without a close frame".into(),
    }
}
