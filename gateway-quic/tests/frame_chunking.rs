//! QUIC delivers a stream in chunks of any size: the frame decoder must yield
//! the same frames, or the same error, however the bytes are split.

use bytes::{Bytes, BytesMut};
use grove_gateway_quic::protocol::{encode_frame, FrameDecoder, FrameError};
use proptest::prelude::*;

/// Everything a decoder yields from `chunks`: the frames, then the error if
/// one stops it.
fn decode_all(chunks: &[&[u8]], limit: usize) -> (Vec<Bytes>, Option<FrameError>, bool) {
    let mut decoder = FrameDecoder::new(limit);
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.extend(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e), true),
            }
        }
    }
    (frames, None, decoder.has_partial_frame())
}

/// `wire` cut at the given positions.
fn split<'a>(wire: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([wire.len()]) {
        chunks.push(&wire[start..cut]);
        start = cut;
    }
    chunks
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let payload = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        1 => prop::collection::vec(any::<u8>(), 0..600),
    ];
    prop::collection::vec(payload, 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if std::env::var_os("GROVE_SOAK").is_some() { 50_000 } else { 1_000 }))]

    #[test]
    fn frames_come_out_whole_and_in_order_however_the_stream_is_cut(
        payloads in payloads(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        byte_by_byte in any::<bool>(),
    ) {
        let mut wire = BytesMut::new();
        for p in &payloads {
            encode_frame(p, &mut wire);
        }
        let chunks = if byte_by_byte {
            wire.chunks(1).collect()
        } else {
            split(&wire, &cuts)
        };
        let (frames, error, partial) = decode_all(&chunks, 1024);
        prop_assert_eq!(error, None);
        prop_assert!(!partial);
        prop_assert_eq!(frames.len(), payloads.len());
        for (frame, payload) in frames.iter().zip(&payloads) {
            prop_assert_eq!(&frame[..], &payload[..]);
        }
    }

    #[test]
    fn an_oversized_frame_stops_the_decoder_at_the_same_place_however_the_stream_is_cut(
        payloads in payloads(),
        limit in 0usize..700,
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        cut_off in any::<usize>(),
    ) {
        let mut wire = BytesMut::new();
        for p in &payloads {
            encode_frame(p, &mut wire);
        }
        // The stream may also end anywhere.
        let end = cut_off % (wire.len() + 1);
        let wire = &wire[..end];
        let whole = decode_all(&[wire], limit);
        let chunked = decode_all(&split(wire, &cuts), limit);
        prop_assert_eq!(&chunked, &whole);

        // And it is what the payloads say: every frame up to the first one
        // over the limit, that one refused as soon as its prefix is in.
        let mut offset = 0;
        let mut expected = Vec::new();
        let mut refused = None;
        for p in &payloads {
            if offset + 4 > end {
                break;
            }
            if p.len() > limit {
                refused = Some(FrameError::TooLarge { len: p.len(), limit });
                break;
            }
            if offset + 4 + p.len() > end {
                break;
            }
            expected.push(Bytes::copy_from_slice(p));
            offset += 4 + p.len();
        }
        prop_assert_eq!(&whole.0, &expected);
        prop_assert_eq!(&whole.1, &refused);
    }
}
