//! The host-to-host frame decoder against millions of random and mutated
//! inputs: it never panics, and whatever it accepts encodes back to a frame
//! it accepts again. `GROVE_FUZZ_INPUTS` sets how many of each kind are
//! tried (default 1,000,000).

use grove_cluster::wire::{
    self, Disconnected, Event, EventKind, Frame, Outcome, Push, PushAction, Refusal, Request,
    Response,
};

/// The error type travelling in `Outcome::Failed`: a string is as hostile to
/// the decoder as any serde type.
type Any = Frame<String>;

fn inputs() -> usize {
    std::env::var("GROVE_FUZZ_INPUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// Frames of every kind, encoded without their length prefix.
fn seeds() -> Vec<Vec<u8>> {
    let frames: Vec<Any> = vec![
        Frame::Request(Request {
            id: 1,
            actor_type: "counter".into(),
            key: "7".into(),
            function: "add".into(),
            args: vec![5],
            timeout_us: 30_000_000,
            chain: vec!["room/1".into(), "player/42".into()],
            one_way: false,
            trace: Some(grove_core::TraceParent {
                trace_id: 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128.to_be_bytes(),
                span_id: 0xb7ad_6b71_6920_3331_u64.to_be_bytes(),
                sampled: true,
            }),
        }),
        Frame::Request(Request {
            id: u64::MAX,
            actor_type: "guild".into(),
            key: "k".repeat(40),
            function: "post".into(),
            args: (0..=255).collect(),
            timeout_us: 0,
            chain: vec![],
            one_way: true,
            trace: None,
        }),
        Frame::Response(Response {
            id: 3,
            outcome: Outcome::Returned(Some(vec![1, 2, 3])),
        }),
        Frame::Response(Response {
            id: 4,
            outcome: Outcome::Returned(None),
        }),
        Frame::Response(Response {
            id: 5,
            outcome: Outcome::Queued,
        }),
        Frame::Response(Response {
            id: 6,
            outcome: Outcome::NotHere,
        }),
        Frame::Response(Response {
            id: 7,
            outcome: Outcome::Failed("actor counter/7 trapped".into()),
        }),
        Frame::Event(Event {
            id: 9,
            actor_type: "player".into(),
            key: "42".into(),
            timeout_us: 1,
            kind: EventKind::Message {
                session: 1 << 48 | 7,
                payload: vec![1, 2, 3],
                reliable: true,
            },
        }),
        Frame::Event(Event {
            id: 10,
            actor_type: "player".into(),
            key: "42".into(),
            timeout_us: 1,
            kind: EventKind::Disconnect {
                session: 3,
                reason: Disconnected::Kicked("rate".into()),
            },
        }),
        Frame::Push(Push {
            id: 11,
            sessions: vec![1, 2, 3],
            action: PushAction::Send {
                payload: vec![9; 20],
                reliable: false,
            },
        }),
        Frame::Response(Response {
            id: 12,
            outcome: Outcome::Pushed {
                done: 0,
                refused: Some(Refusal::TooLarge(1200)),
            },
        }),
        Frame::Event(Event {
            id: 8,
            actor_type: "probe".into(),
            key: "alarm".into(),
            timeout_us: 30_000_000,
            kind: EventKind::Reminder {
                name: "ring".into(),
            },
        }),
    ];
    frames
        .iter()
        .map(|frame| {
            let mut out = Vec::new();
            wire::encode(frame, &mut out);
            out.split_off(4)
        })
        .collect()
}

/// Whatever decodes must encode to bytes that decode to the same frame.
fn check(bytes: &[u8]) -> bool {
    match wire::decode::<String>(bytes) {
        Ok(frame) => {
            let mut again = Vec::new();
            wire::encode(&frame, &mut again);
            assert_eq!(wire::decode::<String>(&again[4..]), Ok(frame));
            true
        }
        Err(_) => false,
    }
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = fastrand::Rng::with_seed(0x0067_726f_7665);
    let mut buffer = Vec::new();
    for _ in 0..inputs() {
        let len = rng.usize(0..64);
        buffer.clear();
        buffer.extend((0..len).map(|_| rng.u8(..)));
        check(&buffer);
    }
}

#[test]
fn mutated_frames_never_panic_the_decoder() {
    let seeds = seeds();
    for seed in &seeds {
        assert!(check(seed), "seed does not decode: {seed:?}");
    }
    let mut rng = fastrand::Rng::with_seed(0x0066_7261_6d65);
    let mut input = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..inputs() {
        input.clear();
        input.extend_from_slice(&seeds[rng.usize(..seeds.len())]);
        for _ in 0..rng.usize(1..4) {
            match rng.u8(0..5) {
                // Flip a byte.
                0 if !input.is_empty() => {
                    let at = rng.usize(..input.len());
                    input[at] ^= 1 << rng.u8(0..8);
                }
                // Set a byte to an edge value: huge varints, lengths, tags.
                1 if !input.is_empty() => {
                    let at = rng.usize(..input.len());
                    input[at] = [0x00, 0x7f, 0x80, 0xff][rng.usize(..4)];
                }
                // Cut the tail.
                2 => input.truncate(rng.usize(..=input.len())),
                // Insert a random byte.
                3 => {
                    let at = rng.usize(..=input.len());
                    input.insert(at, rng.u8(..));
                }
                // Splice in a piece of another frame.
                _ => {
                    let other = &seeds[rng.usize(..seeds.len())];
                    let from = rng.usize(..other.len());
                    let to = rng.usize(from..=other.len());
                    let at = rng.usize(..=input.len());
                    input.splice(at..at, other[from..to].iter().copied());
                }
            }
        }
        if check(&input) {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    // Both sides of the decoder were exercised.
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn a_length_prefix_past_the_limit_is_refused_before_reading_the_body() {
    let prefix = u32::MAX.to_le_bytes();
    assert!(matches!(
        wire::frame_len(prefix),
        Err(wire::DecodeError::TooLarge(_))
    ));
}
