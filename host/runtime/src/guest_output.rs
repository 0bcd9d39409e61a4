//! Where a guest's stdout and stderr go: each complete line is logged under
//! the actor's ref, and the last few lines are kept so that when the actor
//! traps, its own last words (a Rust panic message, say) reach the caller.
//!
//! An activation's log lines — these and those of the host's `log` import —
//! share one budget: a burst of twice its type's rate (100 lines a second
//! unless set otherwise, see `crate::limits`), then the rate. Lines past it
//! are dropped, counted as incidents of the actor type, and reported in one
//! warning when lines flow again, so one actor cannot flood the host's log.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::incidents::{Counts, Incident};
use crate::ActorRef;
use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes of output kept for error reports.
const TAIL_BYTES: usize = 2048;
/// Longest line forwarded to the log; longer ones are cut.
const MAX_LINE: usize = 4096;

/// An activation's log budget: a token bucket of lines.
#[derive(Debug)]
struct LogBudget {
    /// Lines a second.
    rate: f64,
    tokens: f64,
    at: Instant,
    /// Lines dropped since the last one written.
    dropped: u64,
}

/// What the budget says of one line.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Write it.
    Write,
    /// Write it, after a warning that this many were dropped before it.
    WriteAfterDropping(u64),
    /// Drop it.
    Drop,
}

impl LogBudget {
    fn new(now: Instant, lines_per_second: u32) -> LogBudget {
        let rate = f64::from(lines_per_second);
        LogBudget {
            rate,
            tokens: 2.0 * rate,
            at: now,
            dropped: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> Admit {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(2.0 * self.rate);
        self.at = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return Admit::Drop;
        }
        self.tokens -= 1.0;
        match std::mem::take(&mut self.dropped) {
            0 => Admit::Write,
            dropped => Admit::WriteAfterDropping(dropped),
        }
    }
}

struct Buffers {
    /// The actor whose lines these are: named when an instance made ahead
    /// of its activation is given to one (see [`GuestOutput::name`]).
    /// Written out only when a line is logged.
    actor: ActorRef,
    /// The incomplete line being written.
    line: Vec<u8>,
    /// The last `TAIL_BYTES` bytes written.
    tail: VecDeque<u8>,
    budget: LogBudget,
}

/// A guest output stream. Cheap to clone: clones share the buffers.
#[derive(Clone)]
pub struct GuestOutput {
    buffers: Arc<Mutex<Buffers>>,
    incidents: Arc<Counts>,
}

impl GuestOutput {
    /// A stream whose lines are logged as coming from `actor`, at most
    /// `lines_per_second` (after a burst of twice as many); dropped lines
    /// are counted in `incidents`.
    pub(crate) fn new(actor: ActorRef, lines_per_second: u32, incidents: Arc<Counts>) -> Self {
        GuestOutput {
            buffers: Arc::new(Mutex::new(Buffers {
                actor,
                line: Vec::new(),
                tail: VecDeque::new(),
                budget: LogBudget::new(Instant::now(), lines_per_second),
            })),
            incidents,
        }
    }

    /// Logs `message` at `level` under the actor's ref, within its budget,
    /// cut to [`MAX_LINE`] bytes.
    pub fn log(&self, level: tracing::Level, message: &str) {
        let (admit, rate, actor) = {
            let mut buffers = self.buffers();
            let admit = buffers.budget.admit(Instant::now());
            (admit, buffers.budget.rate, buffers.actor.clone())
        };
        if let Admit::WriteAfterDropping(dropped) = admit {
            tracing::warn!(%actor, dropped, "log lines dropped: over {rate} a second");
        }
        if admit == Admit::Drop {
            self.incidents.add(Incident::LogLineDropped);
            return;
        }
        let message = match message.char_indices().nth(MAX_LINE) {
            Some((cut, _)) => message.get(..cut).unwrap_or(message),
            None => message,
        };
        match level {
            tracing::Level::TRACE => tracing::trace!(%actor, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(%actor, "{message}"),
            tracing::Level::INFO => tracing::info!(%actor, "{message}"),
            tracing::Level::WARN => tracing::warn!(%actor, "{message}"),
            tracing::Level::ERROR => tracing::error!(%actor, "{message}"),
        }
    }

    /// Logs the lines written from now on as coming from `actor`.
    pub(crate) fn name(&self, actor: ActorRef) {
        self.buffers().actor = actor;
    }

    fn buffers(&self) -> std::sync::MutexGuard<'_, Buffers> {
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, bytes: &[u8]) {
        let mut b = self.buffers();
        b.tail.extend(bytes);
        let excess = b.tail.len().saturating_sub(TAIL_BYTES);
        b.tail.drain(..excess);
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push(std::mem::take(&mut b.line));
            } else if b.line.len() < MAX_LINE {
                b.line.push(byte);
            }
        }
        drop(b);
        for line in lines {
            self.log(tracing::Level::INFO, &String::from_utf8_lossy(&line));
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
    fn a_flood_of_log_lines_is_cut_to_the_budget_and_counted() {
        let start = Instant::now();
        let mut budget = LogBudget::new(start, 100);
        // A burst, then nothing more within the same instant.
        let written = (0..10_000)
            .filter(|_| budget.admit(start) != Admit::Drop)
            .count();
        assert_eq!(written, 200);
        // Over the next ten seconds of a flood, the rate.
        let mut written = 0;
        let mut reported = 0;
        for ms in 1..=10_000u64 {
            let now = start + std::time::Duration::from_millis(ms);
            for _ in 0..100 {
                match budget.admit(now) {
                    Admit::Write => written += 1,
                    Admit::WriteAfterDropping(n) => {
                        written += 1;
                        reported += n;
                    }
                    Admit::Drop => {}
                }
            }
        }
        // The rate, give or take a line of rounding.
        let rate = 10 * 100;
        assert!((rate - 1..=rate).contains(&written), "{written}");
        // Quiet again: the next line comes with the count of all dropped,
        // and the burst is back.
        let later = start + std::time::Duration::from_secs(20);
        let Admit::WriteAfterDropping(last) = budget.admit(later) else {
            panic!("the dropped lines were not reported");
        };
        let offered = 10_000 + 10_000 * 100;
        let kept = 200 + written;
        assert_eq!(reported + last, offered - kept);
        assert_eq!(budget.admit(later), Admit::Write);
    }

    #[test]
    fn keeps_the_last_words_only() {
        let out = GuestOutput::new(ActorRef::new("probe", "1"), 100, Arc::default());
        assert_eq!(out.tail(), None);
        out.push(&vec![b'x'; 5000]);
        out.push(b"\nthread panicked: boom\n");
        let tail = out.tail().unwrap();
        assert!(tail.len() <= TAIL_BYTES);
        assert!(tail.ends_with("thread panicked: boom"));
    }
}
