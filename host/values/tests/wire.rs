//! The wire encoding byte by byte, as `docs/values.md` describes it, and what
//! the decoder says about bytes that are not a value.

mod common;

use common::wit;
use grove_values::wire::{
    self, DecodeError, DecodeErrorKind, DecodeLimits, EncodeErrorKind, PathSegment,
};
use wasmtime::component::{Type, Val};

const ORDER: &str = "
    variant status { pending, shipped(u64), failed(string) }
    record order { note: string, discount: option<u32>, payload: list<u8>, status: status }
";

fn encoded(val: &Val, ty: &Type) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(val, ty, &mut out).unwrap();
    out
}

fn decode_err(ty: &Type, bytes: &[u8]) -> DecodeError {
    wire::decode(ty, bytes, &DecodeLimits::default()).unwrap_err()
}

fn bytes(vals: &[u8]) -> Val {
    Val::List(vals.iter().map(|&b| Val::U8(b)).collect())
}

#[test]
fn the_documented_example_encodes_to_the_documented_bytes() {
    let ty = wit(ORDER, "order");
    let order = Val::Record(vec![
        ("note".into(), Val::String("hi".into())),
        (
            "discount".into(),
            Val::Option(Some(Box::new(Val::U32(300)))),
        ),
        ("payload".into(), bytes(&[0xde, 0xad])),
        (
            "status".into(),
            Val::Variant("shipped".into(), Some(Box::new(Val::U64(1000)))),
        ),
    ]);
    let expected = [
        0x02, 0x68, 0x69, // note: length 2, "hi"
        0x01, 0xac, 0x02, // discount: some, 300
        0x02, 0xde, 0xad, // payload: length 2, the bytes
        0x01, 0xe8, 0x07, // status: case 1 (shipped), 1000
    ];
    assert_eq!(encoded(&order, &ty), expected);
    assert_eq!(
        wire::decode(&ty, &expected, &DecodeLimits::default()).unwrap(),
        order
    );
}

#[test]
fn each_kind_encodes_as_documented() {
    let cases: Vec<(&str, &str, Val, Vec<u8>)> = vec![
        ("", "bool", Val::Bool(true), vec![0x01]),
        ("", "s8", Val::S8(-2), vec![0xfe]),
        ("", "u8", Val::U8(200), vec![0xc8]),
        ("", "u16", Val::U16(u16::MAX), vec![0xff, 0xff, 0x03]),
        ("", "s16", Val::S16(i16::MIN), vec![0x80, 0x80, 0x7e]),
        ("", "u32", Val::U32(624_485), vec![0xe5, 0x8e, 0x26]),
        ("", "s32", Val::S32(-2), vec![0x7e]),
        ("", "s32", Val::S32(63), vec![0x3f]),
        ("", "s32", Val::S32(64), vec![0xc0, 0x00]),
        ("", "s32", Val::S32(-65), vec![0xbf, 0x7f]),
        (
            "",
            "s32",
            Val::S32(i32::MIN),
            vec![0x80, 0x80, 0x80, 0x80, 0x78],
        ),
        (
            "",
            "u64",
            Val::U64(u64::MAX),
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        (
            "",
            "s64",
            Val::S64(i64::MIN),
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f],
        ),
        ("", "f32", Val::Float32(1.0), vec![0x00, 0x00, 0x80, 0x3f]),
        (
            "",
            "f64",
            Val::Float64(-0.0),
            vec![0, 0, 0, 0, 0, 0, 0, 0x80],
        ),
        ("", "char", Val::Char('é'), vec![0xc3, 0xa9]),
        ("", "char", Val::Char('🦀'), vec![0xf0, 0x9f, 0xa6, 0x80]),
        ("", "string", Val::String(String::new()), vec![0x00]),
        (
            "",
            "list<u16>",
            Val::List(vec![Val::U16(1), Val::U16(300)]),
            vec![0x02, 0x01, 0xac, 0x02],
        ),
        (
            "",
            "list<u8, 3>",
            Val::FixedLengthList(vec![Val::U8(1), Val::U8(2), Val::U8(3)]),
            vec![0x01, 0x02, 0x03],
        ),
        (
            "",
            "map<string, bool>",
            Val::Map(vec![(Val::String("a".into()), Val::Bool(true))]),
            vec![0x01, 0x01, 0x61, 0x01],
        ),
        (
            "",
            "tuple<u8, string>",
            Val::Tuple(vec![Val::U8(7), Val::String("x".into())]),
            vec![0x07, 0x01, 0x78],
        ),
        (
            "enum color { red, green, blue }",
            "color",
            Val::Enum("blue".into()),
            vec![0x02],
        ),
        ("", "option<u8>", Val::Option(None), vec![0x00]),
        (
            "",
            "option<option<u8>>",
            Val::Option(Some(Box::new(Val::Option(None)))),
            vec![0x01, 0x00],
        ),
        (
            "",
            "result<u8, string>",
            Val::Result(Err(Some(Box::new(Val::String("no".into()))))),
            vec![0x01, 0x02, 0x6e, 0x6f],
        ),
        ("", "result", Val::Result(Ok(None)), vec![0x00]),
        (
            "flags perms { read, write, exec }",
            "perms",
            Val::Flags(vec!["read".into(), "exec".into()]),
            vec![0x05],
        ),
        (
            "flags many { f0, f1, f2, f3, f4, f5, f6, f7, f8 }",
            "many",
            Val::Flags(vec!["f1".into(), "f8".into()]),
            vec![0x02, 0x01],
        ),
    ];
    for (decls, expr, val, expected) in cases {
        let ty = wit(decls, expr);
        assert_eq!(encoded(&val, &ty), expected, "{expr} {val:?}");
        let back = wire::decode(&ty, &expected, &DecodeLimits::default()).unwrap();
        assert!(common::same(&back, &val), "{expr}: {back:?}");
    }
}

#[test]
fn padded_leb128_within_the_width_is_read_and_longer_is_refused() {
    let u32_ty = wit("", "u32");
    let read = |bytes: &[u8]| wire::decode(&u32_ty, bytes, &DecodeLimits::default());
    assert_eq!(read(&[0x80, 0x80, 0x80, 0x80, 0x00]).unwrap(), Val::U32(0));
    assert_eq!(
        read(&[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap(),
        Val::U32(u32::MAX)
    );
    // A sixth byte, and bits beyond 32 in the fifth.
    for bad in [
        &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00][..],
        &[0xff, 0xff, 0xff, 0xff, 0x1f],
    ] {
        let err = read(bad).unwrap_err();
        assert_eq!(err.kind(), &DecodeErrorKind::IntegerOverflow { ty: "u32" });
        assert_eq!(err.offset(), 0);
    }

    let s16 = wit("", "s16");
    let read = |bytes: &[u8]| wire::decode(&s16, bytes, &DecodeLimits::default());
    assert_eq!(read(&[0xff, 0xff, 0x7f]).unwrap(), Val::S16(-1));
    assert_eq!(read(&[0xff, 0xff, 0x01]).unwrap(), Val::S16(i16::MAX));
    // 0x02 in the last byte would be bit 15 without its sign extension.
    let err = read(&[0xff, 0xff, 0x02]).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::IntegerOverflow { ty: "s16" });
}

#[test]
fn malformed_scalars_are_named_with_their_offset() {
    let tuple = |inner: &str| wit("", &format!("tuple<u8, {inner}>"));
    let cases: Vec<(Type, Vec<u8>, DecodeErrorKind)> = vec![
        (
            tuple("bool"),
            vec![0, 2],
            DecodeErrorKind::InvalidBool { byte: 2 },
        ),
        (
            tuple("option<u8>"),
            vec![0, 7],
            DecodeErrorKind::InvalidTag {
                what: "option",
                byte: 7,
            },
        ),
        (
            tuple("result"),
            vec![0, 2],
            DecodeErrorKind::InvalidTag {
                what: "result",
                byte: 2,
            },
        ),
        (
            tuple("string"),
            vec![0, 3, 0x61, 0xc3, 0x28],
            DecodeErrorKind::InvalidUtf8,
        ),
        // An overlong NUL.
        (
            tuple("char"),
            vec![0, 0xc0, 0x80],
            DecodeErrorKind::InvalidUtf8,
        ),
        (tuple("char"), vec![0, 0x80], DecodeErrorKind::InvalidUtf8),
        // A surrogate, and a number past the last code point.
        (
            tuple("char"),
            vec![0, 0xed, 0xa0, 0x80],
            DecodeErrorKind::InvalidChar { scalar: 0xd800 },
        ),
        (
            tuple("char"),
            vec![0, 0xf4, 0x90, 0x80, 0x80],
            DecodeErrorKind::InvalidChar { scalar: 0x11_0000 },
        ),
    ];
    for (ty, input, kind) in cases {
        let err = decode_err(&ty, &input);
        assert_eq!(err.kind(), &kind, "{input:02x?}");
        assert_eq!(err.path().segments(), [PathSegment::Position(1)]);
        // The bad byte: the string's second one, or the scalar's first.
        let expected_offset = if input.get(1) == Some(&3) { 3 } else { 1 };
        assert_eq!(err.offset(), expected_offset, "{input:02x?}: {err}");
    }
}

#[test]
fn unknown_cases_and_flags_are_refused() {
    let status = wit(ORDER, "status");
    let err = decode_err(&status, &[0x03]);
    assert_eq!(
        err.kind(),
        &DecodeErrorKind::UnknownCase {
            what: "variant",
            index: 3,
            count: 3
        }
    );
    let color = wit("enum color { red, green, blue }", "color");
    let err = decode_err(&color, &[0x80, 0x01]);
    assert_eq!(
        err.kind(),
        &DecodeErrorKind::UnknownCase {
            what: "enum",
            index: 128,
            count: 3
        }
    );
    let perms = wit("flags perms { read, write, exec }", "perms");
    let err = decode_err(&perms, &[0x09]);
    assert_eq!(
        err.kind(),
        &DecodeErrorKind::UnknownFlags { byte: 9, count: 3 }
    );
    let many = wit("flags many { f0, f1, f2, f3, f4, f5, f6, f7, f8 }", "many");
    assert!(wire::decode(&many, &[0xff, 0x01], &DecodeLimits::default()).is_ok());
    let err = decode_err(&many, &[0xff, 0x03]);
    assert_eq!(
        err.kind(),
        &DecodeErrorKind::UnknownFlags { byte: 3, count: 9 }
    );
    assert_eq!(err.offset(), 1);
}

#[test]
fn errors_name_the_path_to_the_failing_part() {
    let ty = wit(
        "record item { name: string, count: u32 }\nrecord cart { items: list<item> }",
        "cart",
    );
    let mut input = vec![0x04];
    for name in ["a", "b", "c"] {
        input.extend_from_slice(&[0x01, name.as_bytes()[0], 0x01]);
    }
    input.extend_from_slice(&[0x01, 0xff, 0x01]);
    let err = decode_err(&ty, &input);
    assert_eq!(err.kind(), &DecodeErrorKind::InvalidUtf8);
    assert_eq!(err.path().to_string(), ".items[3].name");
    assert_eq!(err.offset(), 11);
    assert_eq!(
        err.to_string(),
        "invalid UTF-8 in `.items[3].name` (byte 11)"
    );

    let nested = wit(
        "variant v { a(result<_, map<string, option<u8>>>) }",
        "tuple<bool, v>",
    );
    let err = decode_err(&nested, &[0x01, 0x00, 0x01, 0x01, 0x01, 0x6b, 0x01]);
    assert_eq!(err.path().to_string(), ".1.a.err[0].value.some");
    assert!(err.is_incomplete());
}

#[test]
fn trailing_bytes_are_an_error_and_decode_prefix_reports_the_length() {
    let ty = wit("", "string");
    let input = [0x01, 0x61, 0x62];
    let err = decode_err(&ty, &input);
    assert_eq!(err.kind(), &DecodeErrorKind::TrailingBytes { count: 1 });
    assert_eq!(err.offset(), 2);
    let (val, used) = wire::decode_prefix(&ty, &input, &DecodeLimits::default()).unwrap();
    assert_eq!((val, used), (Val::String("a".into()), 2));
    assert!(
        wire::decode_prefix(&ty, &input[..1], &DecodeLimits::default())
            .unwrap_err()
            .is_incomplete()
    );
}

#[test]
fn a_huge_length_prefix_fails_on_the_input_not_on_memory() {
    let max_u32 = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let unlimited = DecodeLimits {
        max_elements: usize::MAX,
        max_depth: 64,
    };
    for expr in [
        "list<u8>",
        "list<u64>",
        "list<list<u8>>",
        "string",
        "map<u8, u8>",
    ] {
        let ty = wit("", expr);
        let mut input = max_u32.to_vec();
        input.extend_from_slice(&[0, 0, 0]);
        let err = wire::decode(&ty, &input, &unlimited).unwrap_err();
        assert!(err.is_incomplete(), "{expr}: {err}");
        if expr != "string" {
            // With the default limits the claim alone is refused.
            let err = decode_err(&ty, &input);
            assert_eq!(
                err.kind(),
                &DecodeErrorKind::TooManyElements { limit: 1 << 20 },
                "{expr}"
            );
            assert_eq!(err.offset(), 0);
        }
    }
}

#[test]
fn the_element_limit_counts_nested_lists_together() {
    let ty = wit("", "list<list<u8>>");
    let val = Val::List(vec![bytes(&[1, 2, 3]), bytes(&[4, 5])]);
    let input = encoded(&val, &ty);
    let limits = |max_elements| DecodeLimits {
        max_elements,
        max_depth: 64,
    };
    // 2 outer + 3 + 2 inner.
    assert_eq!(wire::decode(&ty, &input, &limits(7)).unwrap(), val);
    let err = wire::decode(&ty, &input, &limits(6)).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::TooManyElements { limit: 6 });
    assert_eq!(err.path().to_string(), "[1]");
}

#[test]
fn the_depth_limit_stops_deep_values() {
    let ty = wit("", "option<option<option<option<u8>>>>");
    let input = [1, 1, 1, 1, 9];
    let limits = |max_depth| DecodeLimits {
        max_elements: 10,
        max_depth,
    };
    assert!(wire::decode(&ty, &input, &limits(4)).is_ok());
    let err = wire::decode(&ty, &input, &limits(3)).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::TooDeep { limit: 3 });
    assert_eq!(err.path().to_string(), ".some.some.some");
}

#[test]
fn values_that_do_not_fit_the_type_are_refused_and_leave_the_buffer_alone() {
    let ty = wit(ORDER, "order");
    let mut out = vec![0xaa];
    let bad_status = Val::Record(vec![
        ("note".into(), Val::String("hi".into())),
        ("discount".into(), Val::Option(None)),
        ("payload".into(), bytes(&[1])),
        ("status".into(), Val::Variant("lost".into(), None)),
    ]);
    let err = wire::encode(&bad_status, &ty, &mut out).unwrap_err();
    assert_eq!(
        err.kind(),
        &EncodeErrorKind::UnknownCase {
            name: "lost".into()
        }
    );
    assert_eq!(err.path().to_string(), ".status");
    assert_eq!(err.offset(), 6);
    assert_eq!(out, [0xaa]);

    let bad_byte = Val::Record(vec![
        ("note".into(), Val::String("hi".into())),
        ("discount".into(), Val::Option(None)),
        ("payload".into(), Val::List(vec![Val::U8(1), Val::U32(2)])),
        ("status".into(), Val::Variant("pending".into(), None)),
    ]);
    let err = wire::encode(&bad_byte, &ty, &mut out).unwrap_err();
    assert_eq!(
        err.kind(),
        &EncodeErrorKind::Mismatch {
            expected: "u8",
            got: "u32"
        }
    );
    assert_eq!(err.path().to_string(), ".payload[1]");

    let cases: Vec<(&str, &str, Val, EncodeErrorKind)> = vec![
        (
            "",
            "u32",
            Val::S32(1),
            EncodeErrorKind::Mismatch {
                expected: "u32",
                got: "s32",
            },
        ),
        (
            "record r { a: u8, b: u8 }",
            "r",
            Val::Record(vec![("a".into(), Val::U8(1))]),
            EncodeErrorKind::WrongLength {
                what: "fields",
                expected: 2,
                got: 1,
            },
        ),
        (
            "record r { a: u8, b: u8 }",
            "r",
            Val::Record(vec![("b".into(), Val::U8(1)), ("a".into(), Val::U8(1))]),
            EncodeErrorKind::WrongField {
                expected: "a".into(),
                got: "b".into(),
            },
        ),
        (
            "",
            "list<u8, 2>",
            Val::FixedLengthList(vec![Val::U8(1)]),
            EncodeErrorKind::WrongLength {
                what: "elements",
                expected: 2,
                got: 1,
            },
        ),
        (
            "flags perms { read, write }",
            "perms",
            Val::Flags(vec!["exec".into()]),
            EncodeErrorKind::UnknownFlag {
                name: "exec".into(),
            },
        ),
        (
            "",
            "result<u8>",
            Val::Result(Ok(None)),
            EncodeErrorKind::MissingPayload { case: "ok".into() },
        ),
        (
            "",
            "result<u8>",
            Val::Result(Err(Some(Box::new(Val::U8(1))))),
            EncodeErrorKind::UnexpectedPayload { case: "err".into() },
        ),
    ];
    for (decls, expr, val, kind) in cases {
        let err = wire::encode(&val, &wit(decls, expr), &mut out).unwrap_err();
        assert_eq!(err.kind(), &kind, "{expr}");
        assert_eq!(out, [0xaa]);
    }
}

#[test]
fn resources_cannot_cross_the_wire() {
    let ty = wit("resource door;", "own<door>");
    let err = decode_err(&ty, &[0x00]);
    assert_eq!(err.kind(), &DecodeErrorKind::Unsupported { ty: "resource" });
    let ty = wit("resource door;", "option<borrow<door>>");
    let err = decode_err(&ty, &[0x01, 0x00]);
    assert_eq!(err.kind(), &DecodeErrorKind::Unsupported { ty: "resource" });
    assert_eq!(err.path().to_string(), ".some");
}
