//! The binary form of a component value: the component model's value
//! encoding as wRPC puts it on the wire, for values that travel between
//! machines (actor calls across a cluster, persisted messages).
//!
//! The encoding carries no type information: both sides hold the WIT type, and
//! the bytes are only the value, laid out by the type:
//!
//! | WIT | bytes |
//! |---|---|
//! | `bool` | one byte, `0x00` or `0x01` |
//! | `u8`, `s8` | one byte (two's complement for `s8`) |
//! | `u16`, `u32`, `u64` | unsigned LEB128, at most 3 / 5 / 10 bytes |
//! | `s16`, `s32`, `s64` | signed LEB128, at most 3 / 5 / 10 bytes |
//! | `f32`, `f64` | 4 / 8 bytes, IEEE 754 little-endian (NaN bits kept) |
//! | `char` | the character's UTF-8 encoding, 1 to 4 bytes |
//! | `string` | byte length (unsigned LEB128 `u32`), then UTF-8 bytes |
//! | `list<T>` | element count (unsigned LEB128 `u32`), then each element |
//! | `list<T, N>` | the `N` elements, no count |
//! | `map<K, V>` | as `list<tuple<K, V>>` |
//! | `record`, `tuple` | the fields in declaration order, nothing between |
//! | `variant` | case index (unsigned LEB128 `u32`), then the payload if the case has one |
//! | `enum` | case index (unsigned LEB128 `u32`) |
//! | `option<T>` | `0x00` for `none`; `0x01` then the value for `some` |
//! | `result<T, E>` | `0x00` then the `ok` payload, or `0x01` then the `err` payload (a side without a type has no payload) |
//! | `flags` | a little-endian bit vector, bit `i` for the `i`-th flag: ⌈n/8⌉ bytes, and one byte when there are 8 flags or fewer |
//!
//! `docs/values.md` walks through an example byte by byte.
//!
//! ## Where wRPC left a choice
//! * LEB128 follows core WebAssembly: an integer may be padded with `0x80`
//!   bytes up to its type's maximum length (5 bytes for a `u32`), anything
//!   longer is refused, and so are bits beyond the type's width; in the last
//!   byte of a signed integer the unused bits must repeat the sign. The
//!   encoder always writes the shortest form.
//! * A `char` whose UTF-8 is overlong (`0xC0 0x80` for NUL) is refused.
//! * `flags` with a bit set beyond the type's flags are refused (wRPC's reader
//!   ignores such bits).
//! * Fixed-length lists, maps, and the decode limits are Grove's additions:
//!   wRPC has no encoding for the first two.
//! * Resources, futures, streams and error contexts are handles into a running
//!   guest; wRPC sends them out of band through its transport, and this codec
//!   refuses them.
//!
//! ## Decoding untrusted bytes
//! [`decode`] takes bytes from the network. It never panics, and the memory
//! it uses is bounded by the length of its input whatever the bytes claim: a
//! length prefix only reserves room for as many elements as the rest of the
//! input could hold, and [`DecodeLimits`] caps the total number of list and
//! map elements in one value and the nesting depth. (Every WIT type encodes
//! to at least one byte today — the component model forbids `tuple<>` and
//! empty flags — but the decoder does not rely on it: a count is checked
//! against the element limit before anything is decoded or reserved.)
//! Every error says at which byte and in which part of the value it occurred.

use std::fmt;

use wasmtime::component::{Type, Val};

use crate::check::type_name;

/// Bounds on what one decoded value may hold, whatever its bytes claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The most list, fixed-length list and map elements in one value, nested
    /// lists included. Bytes of a `list<u8>` count too.
    pub max_elements: usize,
    /// The deepest nesting of lists, maps, records, tuples, variants, options
    /// and results.
    pub max_depth: usize,
}

impl DecodeLimits {
    /// 1 Mi elements, 64 levels deep.
    pub const DEFAULT: DecodeLimits = DecodeLimits {
        max_elements: 1 << 20,
        max_depth: 64,
    };
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::DEFAULT
    }
}

/// One step from a value into one of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// A record field, by name: `.name`.
    Field(String),
    /// A tuple element, by position: `.0`.
    Position(usize),
    /// A list element or a map entry, by index: `[3]`.
    Index(usize),
    /// The key of a map entry: `.key`.
    Key,
    /// The value of a map entry: `.value`.
    Value,
    /// The payload of a variant case, by case name: `.case`.
    Case(String),
    /// The value inside `some`: `.some`.
    Some,
    /// The payload of `ok`: `.ok`.
    Ok,
    /// The payload of `err`: `.err`.
    Err,
}

impl fmt::Display for PathSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSegment::Field(name) | PathSegment::Case(name) => write!(f, ".{name}"),
            PathSegment::Position(i) => write!(f, ".{i}"),
            PathSegment::Index(i) => write!(f, "[{i}]"),
            PathSegment::Key => f.write_str(".key"),
            PathSegment::Value => f.write_str(".value"),
            PathSegment::Some => f.write_str(".some"),
            PathSegment::Ok => f.write_str(".ok"),
            PathSegment::Err => f.write_str(".err"),
        }
    }
}

/// Where a part sits inside a value, from the outside in; it prints as
/// `.items[3].name`, and as nothing for the value itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(Vec<PathSegment>);

impl Path {
    /// The steps from the value to the part, outermost first.
    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }

    /// Whether the path names the value itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|segment| segment.fmt(f))
    }
}

/// `" in `.a.b`"`, or nothing at the root.
struct InPath<'a>(&'a Path);

impl fmt::Display for InPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_root() {
            Ok(())
        } else {
            write!(f, " in `{}`", self.0)
        }
    }
}

/// Why a value could not be encoded, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{} (output byte {offset})", InPath(&self.path))]
pub struct EncodeError {
    kind: EncodeErrorKind,
    offset: usize,
    path: Path,
}

impl EncodeError {
    /// What was wrong.
    pub fn kind(&self) -> &EncodeErrorKind {
        &self.kind
    }

    /// Where in the encoding the failing part would have started, counted
    /// from the start of this value's encoding.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The failing part of the value.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn within(mut self, segment: PathSegment) -> Self {
        // Segments are collected innermost first while unwinding; `finish`
        // puts them in order.
        self.path.0.push(segment);
        self
    }

    fn finish(mut self) -> Self {
        self.path.0.reverse();
        self
    }
}

/// What was wrong with a value given to [`encode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeErrorKind {
    /// The value is not of the type's kind (a string where a `u32` belongs).
    #[error("expected {expected}, got {got}")]
    Mismatch {
        /// The kind of the type (`u32`, `record`, ...).
        expected: &'static str,
        /// The kind of the value given.
        got: &'static str,
    },
    /// A record, tuple or fixed-length list has the wrong number of parts.
    #[error("expected {expected} {what}, got {got}")]
    WrongLength {
        /// What was counted (`fields`, `elements`).
        what: &'static str,
        /// How many the type has.
        expected: usize,
        /// How many the value has.
        got: usize,
    },
    /// A record field is not the one the type declares at that position.
    #[error("expected field `{expected}`, got `{got}`")]
    WrongField {
        /// The field the type declares.
        expected: String,
        /// The field the value has.
        got: String,
    },
    /// A variant or enum case the type does not have.
    #[error("no case `{name}`")]
    UnknownCase {
        /// The case named by the value.
        name: String,
    },
    /// A flag the type does not have.
    #[error("no flag `{name}`")]
    UnknownFlag {
        /// The flag named by the value.
        name: String,
    },
    /// A case that carries a payload was given none (also `ok`/`err`).
    #[error("case `{case}` needs a payload")]
    MissingPayload {
        /// The case.
        case: String,
    },
    /// A case without a payload type was given one (also `ok`/`err`).
    #[error("case `{case}` takes no payload")]
    UnexpectedPayload {
        /// The case.
        case: String,
    },
    /// A string, list or map longer than the encoding's `u32` length allows.
    #[error("length {len} does not fit the encoding's 32-bit length")]
    TooLong {
        /// The length of the string in bytes, or of the list or map.
        len: usize,
    },
    /// A resource, future, stream or error context: handles into a running
    /// guest have no byte form here.
    #[error("a {ty} cannot be encoded as bytes")]
    Unsupported {
        /// The kind of the type.
        ty: &'static str,
    },
}

/// Why bytes could not be decoded as a value, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{} (byte {offset})", InPath(&self.path))]
pub struct DecodeError {
    kind: DecodeErrorKind,
    offset: usize,
    path: Path,
}

impl DecodeError {
    /// What was wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }

    /// The offset in the input of the offending bytes.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The part of the value being decoded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the input merely stopped too soon: a reader of a byte stream
    /// may wait for more bytes and decode again.
    pub fn is_incomplete(&self) -> bool {
        matches!(self.kind, DecodeErrorKind::UnexpectedEnd { .. })
    }

    fn within(mut self, segment: PathSegment) -> Self {
        self.path.0.push(segment);
        self
    }

    fn finish(mut self) -> Self {
        self.path.0.reverse();
        self
    }
}

/// What was wrong with bytes given to [`decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ends before the value does.
    #[error("the input ends early: {needed} more bytes needed, {available} left")]
    UnexpectedEnd {
        /// Bytes the next part needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// Bytes remain after the value ([`decode`] only; [`decode_prefix`]
    /// returns how many it used).
    #[error("{count} bytes left over after the value")]
    TrailingBytes {
        /// How many bytes remain.
        count: usize,
    },
    /// A LEB128 integer is longer than its type allows or sets bits beyond
    /// the type's width.
    #[error("LEB128 integer too long or too large for {ty}")]
    IntegerOverflow {
        /// What the integer is (`u32`, `list length`, ...).
        ty: &'static str,
    },
    /// A `bool` byte other than 0 or 1.
    #[error("invalid bool byte {byte:#04x}")]
    InvalidBool {
        /// The byte read.
        byte: u8,
    },
    /// An `option` or `result` tag other than 0 or 1.
    #[error("invalid {what} tag {byte:#04x}")]
    InvalidTag {
        /// `option` or `result`.
        what: &'static str,
        /// The byte read.
        byte: u8,
    },
    /// A variant or enum case index beyond the type's cases.
    #[error("{what} case {index} does not exist (the type has {count} cases)")]
    UnknownCase {
        /// `variant` or `enum`.
        what: &'static str,
        /// The index read.
        index: u32,
        /// How many cases the type has.
        count: usize,
    },
    /// A string or char that is not valid UTF-8 (overlong forms included).
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A char that decodes to a surrogate or to a number above `0x10FFFF`.
    #[error("{scalar:#x} is not a Unicode scalar value")]
    InvalidChar {
        /// The number the bytes encode.
        scalar: u32,
    },
    /// A flags byte with bits set beyond the type's flags.
    #[error("flags byte {byte:#04x} sets bits beyond the type's {count} flags")]
    UnknownFlags {
        /// The byte read.
        byte: u8,
        /// How many flags the type has.
        count: usize,
    },
    /// The value holds more list and map elements than
    /// [`DecodeLimits::max_elements`].
    #[error("more than {limit} list elements in one value")]
    TooManyElements {
        /// The limit.
        limit: usize,
    },
    /// The value nests deeper than [`DecodeLimits::max_depth`].
    #[error("nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A resource, future, stream or error context: handles into a running
    /// guest have no byte form here.
    #[error("a {ty} cannot be decoded from bytes")]
    Unsupported {
        /// The kind of the type.
        ty: &'static str,
    },
}

/// Appends the encoding of `val`, a value of type `ty`, to `out`.
///
/// The value is checked against the type as it is written. On error `out` is
/// left as it was.
pub fn encode(val: &Val, ty: &Type, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let result = Encoder { out, start }.value(val, ty);
    result.map_err(|e| {
        out.truncate(start);
        e.finish()
    })
}

/// Decodes `bytes`, which must hold exactly one value of type `ty`.
pub fn decode(ty: &Type, bytes: &[u8], limits: &DecodeLimits) -> Result<Val, DecodeError> {
    let mut decoder = Decoder::new(bytes, limits);
    let val = decoder.value(ty).map_err(DecodeError::finish)?;
    if decoder.rest.is_empty() {
        Ok(val)
    } else {
        Err(decoder.error(DecodeErrorKind::TrailingBytes {
            count: decoder.rest.len(),
        }))
    }
}

/// Decodes one value of type `ty` from the start of `bytes`, returning it with
/// the number of bytes it took. For byte streams: when the bytes stop short of
/// a whole value the error [is incomplete](DecodeError::is_incomplete).
pub fn decode_prefix(
    ty: &Type,
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(Val, usize), DecodeError> {
    let mut decoder = Decoder::new(bytes, limits);
    let val = decoder.value(ty).map_err(DecodeError::finish)?;
    Ok((val, decoder.offset()))
}

/// The kind of a value, for [`EncodeErrorKind::Mismatch`].
fn val_kind(val: &Val) -> &'static str {
    match val {
        Val::Bool(_) => "bool",
        Val::S8(_) => "s8",
        Val::U8(_) => "u8",
        Val::S16(_) => "s16",
        Val::U16(_) => "u16",
        Val::S32(_) => "s32",
        Val::U32(_) => "u32",
        Val::S64(_) => "s64",
        Val::U64(_) => "u64",
        Val::Float32(_) => "f32",
        Val::Float64(_) => "f64",
        Val::Char(_) => "char",
        Val::String(_) => "string",
        Val::List(_) => "list",
        Val::FixedLengthList(_) => "fixed-length list",
        Val::Map(_) => "map",
        Val::Record(_) => "record",
        Val::Tuple(_) => "tuple",
        Val::Variant(..) => "variant",
        Val::Enum(_) => "enum",
        Val::Option(_) => "option",
        Val::Result(_) => "result",
        Val::Flags(_) => "flags",
        Val::Resource(_) => "resource",
        Val::Future(_) => "future",
        Val::Stream(_) => "stream",
        Val::ErrorContext(_) => "error-context",
    }
}

/// Bytes in the encoding of `count` flags: wRPC writes one byte even for
/// fewer than eight.
fn flags_len(count: usize) -> usize {
    count.div_ceil(8).max(1)
}

struct Encoder<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
}

impl Encoder<'_> {
    fn error(&self, kind: EncodeErrorKind) -> EncodeError {
        EncodeError {
            kind,
            offset: self.out.len().saturating_sub(self.start),
            path: Path::default(),
        }
    }

    fn unsigned(&mut self, mut n: u64) {
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.out.push(low);
                return;
            }
            self.out.push(low | 0x80);
        }
    }

    fn signed(&mut self, mut n: i64) {
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            // Done once the rest is all sign and the sign bit of `low` agrees.
            if (n == 0 && low & 0x40 == 0) || (n == -1 && low & 0x40 != 0) {
                self.out.push(low);
                return;
            }
            self.out.push(low | 0x80);
        }
    }

    fn length(&mut self, len: usize) -> Result<(), EncodeError> {
        let len32 = u32::try_from(len).map_err(|_| self.error(EncodeErrorKind::TooLong { len }))?;
        self.unsigned(u64::from(len32));
        Ok(())
    }

    fn value(&mut self, val: &Val, ty: &Type) -> Result<(), EncodeError> {
        match (ty, val) {
            (Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_), _)
            | (Type::ErrorContext, _) => {
                return Err(self.error(EncodeErrorKind::Unsupported { ty: type_name(ty) }))
            }
            (Type::Bool, Val::Bool(b)) => self.out.push(u8::from(*b)),
            (Type::S8, Val::S8(n)) => self.out.extend_from_slice(&n.to_le_bytes()),
            (Type::U8, Val::U8(n)) => self.out.push(*n),
            (Type::S16, Val::S16(n)) => self.signed(i64::from(*n)),
            (Type::U16, Val::U16(n)) => self.unsigned(u64::from(*n)),
            (Type::S32, Val::S32(n)) => self.signed(i64::from(*n)),
            (Type::U32, Val::U32(n)) => self.unsigned(u64::from(*n)),
            (Type::S64, Val::S64(n)) => self.signed(*n),
            (Type::U64, Val::U64(n)) => self.unsigned(*n),
            (Type::Float32, Val::Float32(x)) => self.out.extend_from_slice(&x.to_le_bytes()),
            (Type::Float64, Val::Float64(x)) => self.out.extend_from_slice(&x.to_le_bytes()),
            (Type::Char, Val::Char(c)) => {
                self.out
                    .extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            (Type::String, Val::String(s)) => {
                self.length(s.len())?;
                self.out.extend_from_slice(s.as_bytes());
            }
            (Type::List(list), Val::List(items)) => {
                self.length(items.len())?;
                self.elements(items, &list.ty())?;
            }
            (Type::FixedLengthList(list), Val::FixedLengthList(items)) => {
                let expected = list.len() as usize;
                if items.len() != expected {
                    return Err(self.error(EncodeErrorKind::WrongLength {
                        what: "elements",
                        expected,
                        got: items.len(),
                    }));
                }
                self.elements(items, &list.ty())?;
            }
            (Type::Map(map), Val::Map(entries)) => {
                self.length(entries.len())?;
                let (key_ty, value_ty) = (map.key(), map.value());
                for (i, (key, value)) in entries.iter().enumerate() {
                    self.value(key, &key_ty)
                        .map_err(|e| e.within(PathSegment::Key).within(PathSegment::Index(i)))?;
                    self.value(value, &value_ty)
                        .map_err(|e| e.within(PathSegment::Value).within(PathSegment::Index(i)))?;
                }
            }
            (Type::Record(record), Val::Record(fields)) => {
                if fields.len() != record.fields().len() {
                    return Err(self.error(EncodeErrorKind::WrongLength {
                        what: "fields",
                        expected: record.fields().len(),
                        got: fields.len(),
                    }));
                }
                for (field, (name, value)) in record.fields().zip(fields) {
                    if field.name != name {
                        return Err(self.error(EncodeErrorKind::WrongField {
                            expected: field.name.to_owned(),
                            got: name.clone(),
                        }));
                    }
                    self.value(value, &field.ty)
                        .map_err(|e| e.within(PathSegment::Field(name.clone())))?;
                }
            }
            (Type::Tuple(tuple), Val::Tuple(items)) => {
                if items.len() != tuple.types().len() {
                    return Err(self.error(EncodeErrorKind::WrongLength {
                        what: "elements",
                        expected: tuple.types().len(),
                        got: items.len(),
                    }));
                }
                for (i, (ty, item)) in tuple.types().zip(items).enumerate() {
                    self.value(item, &ty)
                        .map_err(|e| e.within(PathSegment::Position(i)))?;
                }
            }
            (Type::Variant(variant), Val::Variant(name, payload)) => {
                let found = variant
                    .cases()
                    .enumerate()
                    .find(|(_, case)| case.name == name);
                let Some((index, case)) = found else {
                    return Err(self.error(EncodeErrorKind::UnknownCase { name: name.clone() }));
                };
                self.unsigned(index as u64);
                self.payload(payload.as_deref(), case.ty, name)
                    .map_err(|e| e.within(PathSegment::Case(name.clone())))?;
            }
            (Type::Enum(cases), Val::Enum(name)) => {
                let Some(index) = cases.names().position(|n| n == name) else {
                    return Err(self.error(EncodeErrorKind::UnknownCase { name: name.clone() }));
                };
                self.unsigned(index as u64);
            }
            (Type::Option(option), Val::Option(inner)) => match inner {
                None => self.out.push(0),
                Some(inner) => {
                    self.out.push(1);
                    self.value(inner, &option.ty())
                        .map_err(|e| e.within(PathSegment::Some))?;
                }
            },
            (Type::Result(result), Val::Result(Ok(payload))) => {
                self.out.push(0);
                self.payload(payload.as_deref(), result.ok(), "ok")
                    .map_err(|e| e.within(PathSegment::Ok))?;
            }
            (Type::Result(result), Val::Result(Err(payload))) => {
                self.out.push(1);
                self.payload(payload.as_deref(), result.err(), "err")
                    .map_err(|e| e.within(PathSegment::Err))?;
            }
            (Type::Flags(flags), Val::Flags(set)) => {
                let base = self.out.len();
                self.out.resize(base + flags_len(flags.names().len()), 0);
                for name in set {
                    let Some(bit) = flags.names().position(|n| n == name) else {
                        self.out.truncate(base);
                        return Err(self.error(EncodeErrorKind::UnknownFlag { name: name.clone() }));
                    };
                    if let Some(byte) = self.out.get_mut(base + bit / 8) {
                        *byte |= 1 << (bit % 8);
                    }
                }
            }
            _ => {
                return Err(self.error(EncodeErrorKind::Mismatch {
                    expected: type_name(ty),
                    got: val_kind(val),
                }))
            }
        }
        Ok(())
    }

    /// The elements of a list, after its length if it has one.
    fn elements(&mut self, items: &[Val], ty: &Type) -> Result<(), EncodeError> {
        if *ty == Type::U8 {
            // Bytes go out in one pass, with no per-element type dispatch.
            self.out.reserve(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Val::U8(b) => self.out.push(*b),
                    other => {
                        let kind = EncodeErrorKind::Mismatch {
                            expected: "u8",
                            got: val_kind(other),
                        };
                        return Err(self.error(kind).within(PathSegment::Index(i)));
                    }
                }
            }
            return Ok(());
        }
        for (i, item) in items.iter().enumerate() {
            self.value(item, ty)
                .map_err(|e| e.within(PathSegment::Index(i)))?;
        }
        Ok(())
    }

    /// The payload of a variant case or a result side.
    fn payload(
        &mut self,
        val: Option<&Val>,
        ty: Option<Type>,
        case: &str,
    ) -> Result<(), EncodeError> {
        match (val, ty) {
            (None, None) => Ok(()),
            (Some(val), Some(ty)) => self.value(val, &ty),
            (None, Some(_)) => Err(self.error(EncodeErrorKind::MissingPayload {
                case: case.to_owned(),
            })),
            (Some(_), None) => Err(self.error(EncodeErrorKind::UnexpectedPayload {
                case: case.to_owned(),
            })),
        }
    }
}

struct Decoder<'a> {
    input: &'a [u8],
    rest: &'a [u8],
    limits: DecodeLimits,
    /// List and map elements decoded (or announced) so far.
    elements: usize,
    depth: usize,
}

impl<'a> Decoder<'a> {
    fn new(input: &'a [u8], limits: &DecodeLimits) -> Self {
        Decoder {
            input,
            rest: input,
            limits: *limits,
            elements: 0,
            depth: 0,
        }
    }

    fn offset(&self) -> usize {
        self.input.len() - self.rest.len()
    }

    fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        self.error_at(self.offset(), kind)
    }

    fn error_at(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            kind,
            offset,
            path: Path::default(),
        }
    }

    fn end(&self, needed: usize) -> DecodeError {
        self.error(DecodeErrorKind::UnexpectedEnd {
            needed,
            available: self.rest.len(),
        })
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&byte, rest) = self.rest.split_first().ok_or_else(|| self.end(1))?;
        self.rest = rest;
        Ok(byte)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (bytes, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.end(N))?;
        self.rest = rest;
        Ok(*bytes)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (bytes, rest) = self.rest.split_at_checked(n).ok_or_else(|| self.end(n))?;
        self.rest = rest;
        Ok(bytes)
    }

    /// An unsigned LEB128 integer of at most `bits` bits.
    fn unsigned(&mut self, bits: u32, ty: &'static str) -> Result<u64, DecodeError> {
        let start = self.offset();
        let mut n = 0u64;
        let mut shift = 0u32;
        loop {
            let byte = self.byte()?;
            let low = u64::from(byte & 0x7f);
            if shift + 7 >= bits {
                // The last byte the width allows: no continuation, and no
                // bits beyond the width.
                if byte & 0x80 != 0 || low >> (bits - shift) != 0 {
                    return Err(self.error_at(start, DecodeErrorKind::IntegerOverflow { ty }));
                }
                return Ok(n | low << shift);
            }
            n |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
            shift += 7;
        }
    }

    /// A signed LEB128 integer of at most `bits` bits.
    fn signed(&mut self, bits: u32, ty: &'static str) -> Result<i64, DecodeError> {
        let start = self.offset();
        let mut n = 0i64;
        let mut shift = 0u32;
        loop {
            let byte = self.byte()?;
            if shift + 7 >= bits {
                // The last byte the width allows: its 7 bits, read as a
                // signed number, must fit in the bits that remain.
                let room = bits - shift;
                let group = i64::from(((byte << 1) as i8) >> 1);
                let (min, max) = (-(1i64 << (room - 1)), (1i64 << (room - 1)) - 1);
                if byte & 0x80 != 0 || group < min || group > max {
                    return Err(self.error_at(start, DecodeErrorKind::IntegerOverflow { ty }));
                }
                return Ok(n | group << shift);
            }
            n |= i64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if byte & 0x40 != 0 {
                    n |= -1i64 << shift;
                }
                return Ok(n);
            }
        }
    }

    fn length(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let len = self.unsigned(32, what)?;
        usize::try_from(len).map_err(|_| self.error(DecodeErrorKind::IntegerOverflow { ty: what }))
    }

    /// Counts `n` more elements against the limit, before any is decoded.
    fn count_elements(&mut self, n: usize, offset: usize) -> Result<(), DecodeError> {
        self.elements = self.elements.saturating_add(n);
        if self.elements > self.limits.max_elements {
            let limit = self.limits.max_elements;
            return Err(self.error_at(offset, DecodeErrorKind::TooManyElements { limit }));
        }
        Ok(())
    }

    fn enter(&mut self) -> Result<(), DecodeError> {
        if self.depth >= self.limits.max_depth {
            let limit = self.limits.max_depth;
            return Err(self.error(DecodeErrorKind::TooDeep { limit }));
        }
        self.depth += 1;
        Ok(())
    }

    fn value(&mut self, ty: &Type) -> Result<Val, DecodeError> {
        Ok(match ty {
            Type::Bool => match self.byte()? {
                0 => Val::Bool(false),
                1 => Val::Bool(true),
                byte => {
                    let kind = DecodeErrorKind::InvalidBool { byte };
                    return Err(self.error_at(self.offset().saturating_sub(1), kind));
                }
            },
            Type::S8 => Val::S8(i8::from_le_bytes(self.array()?)),
            Type::U8 => Val::U8(self.byte()?),
            Type::S16 => {
                let n = self.signed(16, "s16")?;
                Val::S16(self.narrow(n, "s16")?)
            }
            Type::U16 => {
                let n = self.unsigned(16, "u16")?;
                Val::U16(self.narrow(n, "u16")?)
            }
            Type::S32 => {
                let n = self.signed(32, "s32")?;
                Val::S32(self.narrow(n, "s32")?)
            }
            Type::U32 => {
                let n = self.unsigned(32, "u32")?;
                Val::U32(self.narrow(n, "u32")?)
            }
            Type::S64 => Val::S64(self.signed(64, "s64")?),
            Type::U64 => Val::U64(self.unsigned(64, "u64")?),
            Type::Float32 => Val::Float32(f32::from_le_bytes(self.array()?)),
            Type::Float64 => Val::Float64(f64::from_le_bytes(self.array()?)),
            Type::Char => Val::Char(self.char()?),
            Type::String => {
                let len = self.length("string length")?;
                let start = self.offset();
                let bytes = self.take(len)?;
                match std::str::from_utf8(bytes) {
                    Ok(s) => Val::String(s.to_owned()),
                    Err(e) => {
                        let offset = start + e.valid_up_to();
                        return Err(self.error_at(offset, DecodeErrorKind::InvalidUtf8));
                    }
                }
            }
            Type::List(list) => {
                let offset = self.offset();
                let len = self.length("list length")?;
                Val::List(self.elements(len, &list.ty(), offset)?)
            }
            Type::FixedLengthList(list) => {
                let len = list.len() as usize;
                Val::FixedLengthList(self.elements(len, &list.ty(), self.offset())?)
            }
            Type::Map(map) => {
                let offset = self.offset();
                let len = self.length("map length")?;
                self.count_elements(len, offset)?;
                let (key_ty, value_ty) = (map.key(), map.value());
                let room = min_encoded_len(&key_ty).saturating_add(min_encoded_len(&value_ty));
                let mut entries = Vec::with_capacity(self.capacity(len, room));
                self.enter()?;
                for i in 0..len {
                    let key = self
                        .value(&key_ty)
                        .map_err(|e| e.within(PathSegment::Key).within(PathSegment::Index(i)))?;
                    let value = self
                        .value(&value_ty)
                        .map_err(|e| e.within(PathSegment::Value).within(PathSegment::Index(i)))?;
                    entries.push((key, value));
                }
                self.depth -= 1;
                Val::Map(entries)
            }
            Type::Record(record) => {
                self.enter()?;
                let mut fields = Vec::with_capacity(record.fields().len());
                for field in record.fields() {
                    let value = self
                        .value(&field.ty)
                        .map_err(|e| e.within(PathSegment::Field(field.name.to_owned())))?;
                    fields.push((field.name.to_owned(), value));
                }
                self.depth -= 1;
                Val::Record(fields)
            }
            Type::Tuple(tuple) => {
                self.enter()?;
                let mut items = Vec::with_capacity(tuple.types().len());
                for (i, ty) in tuple.types().enumerate() {
                    items.push(
                        self.value(&ty)
                            .map_err(|e| e.within(PathSegment::Position(i)))?,
                    );
                }
                self.depth -= 1;
                Val::Tuple(items)
            }
            Type::Variant(variant) => {
                let offset = self.offset();
                let index = self.unsigned(32, "variant case")?;
                let index: u32 = self.narrow(index, "variant case")?;
                let case = usize::try_from(index)
                    .ok()
                    .and_then(|i| variant.cases().nth(i))
                    .ok_or_else(|| {
                        let count = variant.cases().len();
                        let what = "variant";
                        self.error_at(offset, DecodeErrorKind::UnknownCase { what, index, count })
                    })?;
                let payload = match case.ty {
                    None => None,
                    Some(ty) => {
                        self.enter()?;
                        let payload = self
                            .value(&ty)
                            .map_err(|e| e.within(PathSegment::Case(case.name.to_owned())))?;
                        self.depth -= 1;
                        Some(Box::new(payload))
                    }
                };
                Val::Variant(case.name.to_owned(), payload)
            }
            Type::Enum(cases) => {
                let offset = self.offset();
                let index = self.unsigned(32, "enum case")?;
                let index: u32 = self.narrow(index, "enum case")?;
                let name = usize::try_from(index)
                    .ok()
                    .and_then(|i| cases.names().nth(i))
                    .ok_or_else(|| {
                        let count = cases.names().len();
                        let what = "enum";
                        self.error_at(offset, DecodeErrorKind::UnknownCase { what, index, count })
                    })?;
                Val::Enum(name.to_owned())
            }
            Type::Option(option) => match self.tag("option")? {
                false => Val::Option(None),
                true => {
                    self.enter()?;
                    let inner = self
                        .value(&option.ty())
                        .map_err(|e| e.within(PathSegment::Some))?;
                    self.depth -= 1;
                    Val::Option(Some(Box::new(inner)))
                }
            },
            Type::Result(result) => match self.tag("result")? {
                false => Val::Result(Ok(self.payload(result.ok(), PathSegment::Ok)?)),
                true => Val::Result(Err(self.payload(result.err(), PathSegment::Err)?)),
            },
            Type::Flags(flags) => {
                let count = flags.names().len();
                let start = self.offset();
                let bytes = self.take(flags_len(count))?;
                let mut set = Vec::new();
                for (i, &byte) in bytes.iter().enumerate() {
                    let known = count.saturating_sub(i * 8).min(8);
                    let mask = u8::try_from((1u16 << known) - 1).unwrap_or(u8::MAX);
                    if byte & !mask != 0 {
                        let kind = DecodeErrorKind::UnknownFlags { byte, count };
                        return Err(self.error_at(start + i, kind));
                    }
                }
                for (i, name) in flags.names().enumerate() {
                    let byte = bytes.get(i / 8).copied().unwrap_or(0);
                    if byte & (1 << (i % 8)) != 0 {
                        set.push(name.to_owned());
                    }
                }
                Val::Flags(set)
            }
            Type::Own(_)
            | Type::Borrow(_)
            | Type::Future(_)
            | Type::Stream(_)
            | Type::ErrorContext => {
                return Err(self.error(DecodeErrorKind::Unsupported { ty: type_name(ty) }));
            }
        })
    }

    /// Narrows an integer read for a type to that type; the readers never
    /// return anything wider, so this only turns a would-be panic into an
    /// error.
    fn narrow<T: TryFrom<W>, W>(&self, n: W, ty: &'static str) -> Result<T, DecodeError> {
        T::try_from(n).map_err(|_| self.error(DecodeErrorKind::IntegerOverflow { ty }))
    }

    /// Room to reserve for `len` elements of at least `min_len` bytes each:
    /// never more than the rest of the input could hold, so a length prefix
    /// alone cannot make the decoder allocate.
    fn capacity(&self, len: usize, min_len: usize) -> usize {
        match self.rest.len().checked_div(min_len) {
            Some(fit) => len.min(fit),
            // Zero-sized elements: `len` was already counted against
            // `max_elements`.
            None => len,
        }
    }

    /// `len` elements of type `ty`; `offset` is where the list began.
    fn elements(&mut self, len: usize, ty: &Type, offset: usize) -> Result<Vec<Val>, DecodeError> {
        self.count_elements(len, offset)?;
        if *ty == Type::U8 {
            // One bounds check, one exact allocation, one copy.
            let bytes = self.take(len)?;
            return Ok(bytes.iter().map(|&b| Val::U8(b)).collect());
        }
        let mut items = Vec::with_capacity(self.capacity(len, min_encoded_len(ty)));
        self.enter()?;
        for i in 0..len {
            items.push(
                self.value(ty)
                    .map_err(|e| e.within(PathSegment::Index(i)))?,
            );
        }
        self.depth -= 1;
        Ok(items)
    }

    /// The payload of a result side.
    fn payload(
        &mut self,
        ty: Option<Type>,
        segment: PathSegment,
    ) -> Result<Option<Box<Val>>, DecodeError> {
        let Some(ty) = ty else {
            return Ok(None);
        };
        self.enter()?;
        let val = self.value(&ty).map_err(|e| e.within(segment))?;
        self.depth -= 1;
        Ok(Some(Box::new(val)))
    }

    /// An option or result tag: `false` for `none`/`ok`, `true` for `some`/`err`.
    fn tag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(self.error_at(
                self.offset().saturating_sub(1),
                DecodeErrorKind::InvalidTag { what, byte },
            )),
        }
    }

    /// A char as 1 to 4 bytes of UTF-8.
    fn char(&mut self) -> Result<char, DecodeError> {
        let start = self.offset();
        let lead = self.byte()?;
        let (len, bits, min) = match lead {
            0x00..=0x7f => return Ok(char::from(lead)),
            0xc0..=0xdf => (2, lead & 0x1f, 0x80),
            0xe0..=0xef => (3, lead & 0x0f, 0x800),
            0xf0..=0xf7 => (4, lead & 0x07, 0x1_0000),
            _ => return Err(self.error_at(start, DecodeErrorKind::InvalidUtf8)),
        };
        let mut scalar = u32::from(bits);
        for &byte in self.take(len - 1)? {
            if byte & 0xc0 != 0x80 {
                return Err(self.error_at(start, DecodeErrorKind::InvalidUtf8));
            }
            scalar = scalar << 6 | u32::from(byte & 0x3f);
        }
        if scalar < min {
            // Overlong: a shorter form exists.
            return Err(self.error_at(start, DecodeErrorKind::InvalidUtf8));
        }
        char::from_u32(scalar)
            .ok_or_else(|| self.error_at(start, DecodeErrorKind::InvalidChar { scalar }))
    }
}

/// The fewest bytes any value of type `ty` encodes to.
fn min_encoded_len(ty: &Type) -> usize {
    match ty {
        Type::Float32 => 4,
        Type::Float64 => 8,
        Type::Record(record) => record.fields().fold(0, |sum, field| {
            sum.saturating_add(min_encoded_len(&field.ty))
        }),
        Type::Tuple(tuple) => tuple
            .types()
            .fold(0, |sum, ty| sum.saturating_add(min_encoded_len(&ty))),
        Type::FixedLengthList(list) => {
            (list.len() as usize).saturating_mul(min_encoded_len(&list.ty()))
        }
        Type::Flags(flags) => flags_len(flags.names().len()),
        // Resources and the like are refused before any byte is read.
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            0
        }
        // Everything else starts with at least one byte of its own.
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb_unsigned(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder {
            out: &mut out,
            start: 0,
        }
        .unsigned(n);
        out
    }

    fn leb_signed(n: i64) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder {
            out: &mut out,
            start: 0,
        }
        .signed(n);
        out
    }

    fn read<T>(
        bytes: &[u8],
        f: impl FnOnce(&mut Decoder<'_>) -> Result<T, DecodeError>,
    ) -> Option<T> {
        let mut decoder = Decoder::new(bytes, &DecodeLimits::default());
        let value = f(&mut decoder).ok()?;
        decoder.rest.is_empty().then_some(value)
    }

    #[test]
    fn every_16_bit_integer_round_trips_in_at_most_three_bytes() {
        for n in 0..=u16::MAX {
            let bytes = leb_unsigned(u64::from(n));
            assert!(bytes.len() <= 3);
            assert_eq!(read(&bytes, |d| d.unsigned(16, "u16")), Some(u64::from(n)));
        }
        for n in i16::MIN..=i16::MAX {
            let bytes = leb_signed(i64::from(n));
            assert!(bytes.len() <= 3);
            assert_eq!(read(&bytes, |d| d.signed(16, "s16")), Some(i64::from(n)));
        }
    }

    #[test]
    fn every_three_byte_sequence_reads_as_a_16_bit_integer_in_range_or_not_at_all() {
        for lead in [0x80u8, 0xff] {
            for mid in [0x80u8, 0xff] {
                for last in 0..=u8::MAX {
                    let bytes = [lead, mid, last];
                    let low = u64::from(lead & 0x7f) | u64::from(mid & 0x7f) << 7;
                    let unsigned = read(&bytes, |d| d.unsigned(16, "u16"));
                    let fits = last < 0x04;
                    assert_eq!(unsigned, fits.then(|| low | u64::from(last) << 14));
                    // Signed: the last byte's 7 bits must be a 2-bit
                    // signed number, sign-extended.
                    let signed = read(&bytes, |d| d.signed(16, "s16"));
                    let fits = last <= 0x01 || (0x7e..=0x7f).contains(&last);
                    assert_eq!(signed.is_some(), fits, "{bytes:02x?}");
                    if let Some(n) = signed {
                        assert!(i16::try_from(n).is_ok());
                    }
                }
            }
        }
    }

    #[test]
    fn extremes_of_64_bit_integers_round_trip() {
        for n in [0, 1, 127, 128, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            assert_eq!(read(&leb_unsigned(n), |d| d.unsigned(64, "u64")), Some(n));
        }
        for n in [0, -1, 63, 64, -64, -65, i64::MIN, i64::MIN + 1, i64::MAX] {
            assert_eq!(read(&leb_signed(n), |d| d.signed(64, "s64")), Some(n));
        }
        // Eleven bytes is one too many, even as padding.
        let mut padded = vec![0x80; 10];
        padded.push(0x00);
        assert_eq!(read(&padded, |d| d.unsigned(64, "u64")), None);
    }
}
