//! Where a guest's stdout and stderr go: each complete line is logged under
//! the actor's ref, and the last few lines are kept so that when the actor
//! traps, its own last words (a Rust panic message, say) reach the caller.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes of output kept for error reports.
const TAIL_BYTES: usize = 2048;
/// Longest line forwarded to the log; longer ones are cut.
const MAX_LINE: usize = 4096;

#[derive(Default)]
struct Buffers {
    /// The incomplete line being written.
    line: Vec<u8>,
    /// The last `TAIL_BYTES` bytes written.
    tail: VecDeque<u8>,
}

/// A guest output stream. Cheap to clone: clones share the buffers.
#[derive(Clone)]
pub struct GuestOutput {
    actor: Arc<str>,
    buffers: Arc<Mutex<Buffers>>,
}

impl GuestOutput {
    /// A stream whose lines are logged as coming from `actor`.
    pub fn new(actor: Arc<str>) -> Self {
        GuestOutput {
            actor,
            buffers: Arc::default(),
        }
    }

    fn buffers(&self) -> std::sync::MutexGuard<'_, Buffers> {
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, bytes: &[u8]) {
        let mut b = self.buffers();
        b.tail.extend(bytes);
        let excess = b.tail.len().saturating_sub(TAIL_BYTES);
        b.tail.drain(..excess);
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut b.line);
                tracing::info!(actor = %self.actor, "{}", String::from_utf8_lossy(&line));
            } else if b.line.len() < MAX_LINE {
                b.line.push(byte);
            }
        }
    }

    /// The last lines the guest wrote, trimmed, if any.
    pub fn tail(&self) -> Option<String> {
        let b = self.buffers();
        let (front, back) = b.tail.as_slices();
        let text = String::from_utf8_lossy(&[front, back].concat())
            .trim()
            .to_owned();
        (!text.is_empty()).then_some(text)
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_LINE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_words_only() {
        let out = GuestOutput::new("probe/1".into());
        assert_eq!(out.tail(), None);
        out.push(&vec![b'x'; 5000]);
        out.push(b"\nthread panicked: boom\n");
        let tail = out.tail().unwrap();
        assert!(tail.len() <= TAIL_BYTES);
        assert!(tail.ends_with("thread panicked: boom"));
    }
}
