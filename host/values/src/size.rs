//! How big a set of values is as a message between actors, measured without
//! copying or encoding it, so that a host can refuse an oversized message
//! before it copies it.

use wasmtime::component::Val;

/// Largest message between actors Grove accepts, in units of
/// [`message_size`]: 1 Mi (a 1 MiB string, or a `list<u8>` of 1 Mi bytes).
/// It stays inside Grove's default per-call copy budget (48 MiB of
/// wasmtime's hostcall fuel, 40 bytes per `Val`, about 1.2 Mi list
/// elements), so a message somewhat over this limit meets it, with its own
/// error, before the engine's; a far larger one runs out of fuel first.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// The size of `vals` as a message: one unit per value, plus the bytes of
/// each string.
pub fn message_size(vals: &[Val]) -> usize {
    vals.iter().map(value_size).fold(0, usize::saturating_add)
}

fn value_size(val: &Val) -> usize {
    let nested = match val {
        Val::String(s) => s.len(),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => message_size(items),
        Val::Record(fields) => fields
            .iter()
            .map(|(_, v)| value_size(v))
            .fold(0, usize::saturating_add),
        Val::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| value_size(k).saturating_add(value_size(v)))
            .fold(0, usize::saturating_add),
        Val::Variant(_, Some(payload)) | Val::Option(Some(payload)) => value_size(payload),
        Val::Result(Ok(Some(payload)) | Err(Some(payload))) => value_size(payload),
        Val::Flags(flags) => flags.len(),
        _ => 0,
    };
    nested.saturating_add(1)
}
