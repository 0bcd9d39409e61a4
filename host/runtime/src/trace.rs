//! Traces across actor calls.
//!
//! Every turn runs inside a `tracing` span named `turn` (target
//! `grove::turn`) carrying the actor ref, the function (or hook) and the
//! outcome. A message carries the span it was sent from ([`TraceParent`]):
//! [`Host::call`](crate::Host::call) takes the caller's current span, a
//! proxy call the calling turn's span, and a call forwarded to another host
//! carries it across. The turn that runs the message is that span's child,
//! so one request can be followed through every actor it touched, on every
//! host.
//!
//! The spans are `TRACE`-level and go to whichever `tracing` layer wants
//! them; trace ids come from OpenTelemetry's layer (`tracing-opentelemetry`,
//! which `grove run --otlp URL` installs). With no layer interested, the
//! spans are disabled, cost a branch, and messages carry no trace.

use grove_core::TraceParent;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::ActorRef;

/// The target of turn spans, for filters: `grove::turn=trace`.
pub const TURN_TARGET: &str = "grove::turn";

/// Where `span` sits in its trace, if it is traced.
fn parent_of(span: &Span) -> Option<Box<TraceParent>> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        Box::new(TraceParent {
            trace_id: span_context.trace_id().to_bytes(),
            span_id: span_context.span_id().to_bytes(),
            sampled: span_context.is_sampled(),
        })
    })
}

/// The current span's place in its trace, for a message sent from it.
pub(crate) fn current() -> Option<Box<TraceParent>> {
    parent_of(&Span::current())
}

/// A span for a turn of `actor` running `function`, the child of `parent`
/// if the message that started it was traced.
pub(crate) fn turn(actor: &ActorRef, function: &str, parent: Option<Box<TraceParent>>) -> Span {
    let span = tracing::trace_span!(
        target: TURN_TARGET,
        "turn",
        actor = %actor,
        function,
        outcome = tracing::field::Empty,
    );
    if let Some(parent) = parent.filter(|_| !span.is_disabled()) {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            if parent.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        );
        let context = opentelemetry::Context::new().with_remote_span_context(remote);
        // Fails only without an OpenTelemetry layer: then there is no trace
        // to join.
        let _ = span.set_parent(context);
    }
    span
}

/// Records how the turn in `span` ended: `ok`, or the error's kind.
pub(crate) fn ended(span: &Span, outcome: &str) {
    if !span.is_disabled() {
        span.record("outcome", outcome);
    }
}
