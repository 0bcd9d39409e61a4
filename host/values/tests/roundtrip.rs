//! Property tests: every value of every generated WIT type survives each of
//! Grove's value forms — the binary wire encoding bit for bit, JSON and WAVE
//! as values — and every strict prefix of an encoding reads as incomplete.

mod common;

use common::{real_type, same, typed_values, Wit};
use grove_values::check::check;
use grove_values::json::{from_json, to_json};
use grove_values::wave::{from_wave, to_wave};
use grove_values::wire::{self, DecodeErrorKind, DecodeLimits};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: common::cases(),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wire_encoding_round_trips_bit_for_bit((ty, vals) in typed_values(4)) {
        let ty = real_type(&ty);
        let limits = DecodeLimits::default();
        for val in &vals {
            prop_assert_eq!(check(val, &ty), Ok(()));
            let mut bytes = Vec::new();
            wire::encode(val, &ty, &mut bytes).unwrap();

            let decoded = wire::decode(&ty, &bytes, &limits).unwrap();
            prop_assert!(same(&decoded, val), "{decoded:?} != {val:?}");

            // The encoding is self-delimiting: a decoder reading a stream
            // stops exactly at its end.
            let mut stream = bytes.clone();
            stream.extend_from_slice(&[0xAA, 0x55]);
            let (decoded, used) = wire::decode_prefix(&ty, &stream, &limits).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert!(same(&decoded, val));
            let err = wire::decode(&ty, &stream, &limits).unwrap_err();
            prop_assert_eq!(err.kind(), &DecodeErrorKind::TrailingBytes { count: 2 });
            prop_assert_eq!(err.offset(), bytes.len());

            // Appending to a buffer keeps what was there.
            let mut appended = vec![7];
            wire::encode(val, &ty, &mut appended).unwrap();
            prop_assert_eq!(&appended[1..], &bytes[..]);
        }
    }

    #[test]
    fn every_strict_prefix_of_an_encoding_is_incomplete((ty, vals) in typed_values(3)) {
        let ty = real_type(&ty);
        let limits = DecodeLimits::default();
        for val in &vals {
            let mut bytes = Vec::new();
            wire::encode(val, &ty, &mut bytes).unwrap();
            // Long byte lists: every prefix near the ends, a sample between.
            let cuts = (0..bytes.len()).filter(|&n| n < 64 || n + 64 > bytes.len() || n % 17 == 0);
            for cut in cuts {
                let err = wire::decode_prefix(&ty, &bytes[..cut], &limits).unwrap_err();
                prop_assert!(err.is_incomplete(), "cut at {cut} of {bytes:02x?}: {err}");
            }
        }
    }

    #[test]
    fn json_round_trips((ty, vals) in typed_values(4)) {
        let ty = real_type(&ty);
        for val in &vals {
            let json = to_json(val);
            let back = from_json(&json, &ty).map_err(|e| TestCaseError::fail(format!("{json}: {e}")))?;
            // NaN payloads do not survive JSON; `Val`'s equality treats all
            // NaNs as equal and tells -0.0 from 0.0.
            prop_assert_eq!(&back, val, "through {}", json);
        }
    }

    #[test]
    fn wave_round_trips((ty, vals) in typed_values(4)) {
        let wit = ty;
        let ty = real_type(&wit);
        for val in &vals {
            if !wave_expresses(&wit) {
                // Refused with an error, never a panic.
                let refused = to_wave(val).is_err() || from_wave(&ty, "x").is_err();
                prop_assert!(refused);
                continue;
            }
            let text = to_wave(val).map_err(TestCaseError::fail)?;
            let back = from_wave(&ty, &text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&back, val, "through {}", text);
        }
    }
}

/// Whether WAVE can write and read every value of `ty`: it has no maps, and
/// its parser does not know fixed-length lists.
fn wave_expresses(ty: &Wit) -> bool {
    let boxed = |t: &Option<Box<Wit>>| t.as_deref().is_none_or(wave_expresses);
    match ty {
        Wit::Map(..) | Wit::FixedList(..) => false,
        Wit::List(t) | Wit::Option(t) => wave_expresses(t),
        Wit::Tuple(ts) | Wit::Record(ts) => ts.iter().all(wave_expresses),
        Wit::Variant(cases) => cases.iter().flatten().all(wave_expresses),
        Wit::Result(ok, err) => boxed(ok) && boxed(err),
        _ => true,
    }
}
