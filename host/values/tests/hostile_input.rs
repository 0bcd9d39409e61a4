//! The wire decoder against bytes from someone who means harm: random bytes,
//! and valid encodings with bits flipped, bytes cut, inserted or overwritten,
//! and huge length prefixes spliced in. Each call must return (no panic, no
//! hang) and allocate no more than a bound linear in the input's length —
//! measured by a counting allocator — whatever the bytes claim.
//!
//! A normal run takes a few seconds; `GROVE_SOAK=1` runs for two minutes and
//! `GROVE_SOAK=<seconds>` for as long as asked. `GROVE_SEED` picks the seed.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use common::{element_count, real_type, same, wit, Wit};
use grove_values::check::check;
use grove_values::wire::{self, DecodeLimits};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use wasmtime::component::{Type, Val};

/// Counts the bytes this thread has allocated and not freed, and the peak.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(bytes);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(bytes)));
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only
// observe the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its result and the most memory it held at once
/// (what it returns included).
fn peak_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let result = f();
    (result, PEAK.with(Cell::get).saturating_sub(base))
}

/// splitmix64: small, fast and seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// A type under attack, with valid encodings to mutate.
struct Target {
    name: String,
    ty: Type,
    /// Nodes and names in the type: the decoded value's memory per input
    /// byte is bounded by a multiple of this.
    weight: usize,
    encodings: Vec<Vec<u8>>,
}

fn weight(ty: &Wit) -> usize {
    let boxed = |t: &Option<Box<Wit>>| t.as_deref().map_or(0, weight);
    1 + match ty {
        Wit::List(t) | Wit::Option(t) | Wit::FixedList(t, _) => weight(t),
        Wit::Map(k, v) => weight(k) + weight(v),
        Wit::Tuple(ts) | Wit::Record(ts) => ts.iter().map(weight).sum(),
        Wit::Variant(cases) => cases.iter().flatten().map(weight).sum::<usize>() + cases.len(),
        Wit::Result(ok, err) => boxed(ok) + boxed(err),
        Wit::Enum(n) | Wit::Flags(n) => *n,
        _ => 0,
    }
}

/// Hand-picked types that stress the decoder's length handling, and random
/// ones of every kind.
fn targets(seed: u64) -> Vec<Target> {
    let fixed = [
        Wit::List(Box::new(Wit::U8)),
        Wit::List(Box::new(Wit::List(Box::new(Wit::List(Box::new(
            Wit::Bool,
        )))))),
        Wit::String,
        Wit::List(Box::new(Wit::String)),
        Wit::Map(
            Box::new(Wit::String),
            Box::new(Wit::List(Box::new(Wit::U64))),
        ),
        Wit::Record(vec![
            Wit::String,
            Wit::Option(Box::new(Wit::U32)),
            Wit::List(Box::new(Wit::U8)),
            Wit::Variant(vec![None, Some(Wit::U64), Some(Wit::String)]),
        ]),
        Wit::List(Box::new(Wit::Tuple(vec![Wit::Char, Wit::S64, Wit::F32]))),
        Wit::Option(Box::new(Wit::Option(Box::new(Wit::Option(Box::new(
            Wit::Result(Some(Box::new(Wit::Flags(32))), Some(Box::new(Wit::Enum(5)))),
        )))))),
        Wit::FixedList(Box::new(Wit::List(Box::new(Wit::S16))), 4),
    ];
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed)),
    );
    let random: Vec<Wit> = (0..40)
        .map(|_| {
            common::wit_type(5)
                .new_tree(&mut runner)
                .expect("a type")
                .current()
        })
        .collect();
    fixed
        .into_iter()
        .chain(random)
        .map(|wit| {
            let ty = real_type(&wit);
            let values = common::value(&wit);
            let encodings = (0..16)
                .map(|_| {
                    let val = values.new_tree(&mut runner).expect("a value").current();
                    let mut out = Vec::new();
                    wire::encode(&val, &ty, &mut out).expect("a valid value encodes");
                    out
                })
                .collect();
            Target {
                name: common::wit_text(std::slice::from_ref(&wit)),
                weight: weight(&wit),
                ty,
                encodings,
            }
        })
        .collect()
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut bytes = [0; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&seed.wrapping_add(i as u64).to_le_bytes());
    }
    bytes
}

/// Bytes derived from a valid encoding, or random ones.
fn hostile(rng: &mut Rng, target: &Target) -> Vec<u8> {
    let valid = &target.encodings[rng.below(target.encodings.len())];
    let mut bytes = valid.clone();
    match rng.below(8) {
        0 => {
            let len = if rng.below(4) == 0 {
                rng.below(512)
            } else {
                rng.below(16)
            };
            bytes = (0..len).map(|_| rng.byte()).collect();
        }
        1 => bytes.truncate(rng.below(bytes.len() + 1)),
        2 => {
            for _ in 0..=rng.below(3) {
                if !bytes.is_empty() {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
        }
        3 => {
            let at = rng.below(bytes.len() + 1);
            let extra: Vec<u8> = (0..=rng.below(8)).map(|_| rng.byte()).collect();
            bytes.splice(at..at, extra);
        }
        4 => {
            // A length or count claiming far more than is there.
            let at = rng.below(bytes.len() + 1);
            let claim: &[u8] = match rng.below(3) {
                0 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                1 => &[0x80, 0x80, 0x80, 0x80, 0x04],
                _ => &[0xff, 0xff, 0x3f],
            };
            bytes.splice(at..at, claim.iter().copied());
        }
        5 if !bytes.is_empty() => {
            let at = rng.below(bytes.len());
            let end = (at + 1 + rng.below(8)).min(bytes.len());
            let fill = [0x00, 0xff, 0x80][rng.below(3)];
            bytes[at..end].fill(fill);
        }
        6 if !bytes.is_empty() => {
            let at = rng.below(bytes.len());
            let end = (at + 1 + rng.below(4)).min(bytes.len());
            bytes.drain(at..end);
        }
        // Valid, as is.
        _ => {}
    }
    bytes
}

fn run_for() -> Duration {
    match std::env::var("GROVE_SOAK") {
        Ok(secs) => Duration::from_secs(secs.parse().unwrap_or(120)),
        Err(_) => Duration::from_secs(5),
    }
}

#[test]
fn hostile_bytes_never_panic_and_stay_within_linear_memory() {
    let seed = std::env::var("GROVE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6772_6f76_6521);
    let targets = targets(seed);
    let mut rng = Rng(seed);
    let limits = [
        DecodeLimits::default(),
        DecodeLimits {
            max_elements: 64,
            max_depth: 4,
        },
    ];
    let deadline = Instant::now() + run_for();
    let (mut calls, mut decoded, mut worst_ratio) = (0u64, 0u64, 0f64);
    while calls < 10_000 || Instant::now() < deadline {
        for _ in 0..1_000 {
            let target = &targets[rng.below(targets.len())];
            let input = hostile(&mut rng, target);
            let limits = &limits[rng.below(limits.len())];
            let (result, peak) = peak_allocation(|| wire::decode(&target.ty, &input, limits));
            calls += 1;

            let bound = 4096 + 1024 * target.weight * (input.len() + 1);
            assert!(
                peak <= bound,
                "{peak} bytes (bound {bound}) for {input:02x?} as\n{}",
                target.name
            );
            worst_ratio = worst_ratio.max(peak as f64 / (target.weight * (input.len() + 1)) as f64);

            match result {
                Ok(val) => {
                    decoded += 1;
                    assert!(element_count(&val) <= limits.max_elements);
                    check(&val, &target.ty).unwrap();
                    // Whatever was accepted re-encodes to a value that reads
                    // back the same (padded integers come back shortest).
                    let mut again = Vec::new();
                    wire::encode(&val, &target.ty, &mut again).unwrap();
                    assert!(again.len() <= input.len());
                    let back = wire::decode(&target.ty, &again, limits).unwrap();
                    assert!(same(&back, &val));
                }
                Err(err) => {
                    assert!(err.offset() <= input.len(), "{err} for {input:02x?}");
                    assert!(!err.to_string().is_empty());
                }
            }
        }
    }
    eprintln!(
        "seed {seed}: {calls} inputs over {} types, {decoded} decoded as values; \
         peak memory at most {worst_ratio:.1} bytes per input byte per type node",
        targets.len()
    );
}

#[test]
fn a_claim_of_four_billion_elements_allocates_nothing_for_them() {
    let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3];
    let unlimited = DecodeLimits {
        max_elements: usize::MAX,
        max_depth: 64,
    };
    for expr in [
        "list<u8>",
        "list<u64>",
        "list<string>",
        "list<list<u8>>",
        "string",
    ] {
        let ty = wit("", expr);
        let (result, peak) = peak_allocation(|| wire::decode(&ty, &claim, &unlimited));
        assert!(result.unwrap_err().is_incomplete());
        assert!(peak < 1024, "{expr}: {peak} bytes");
    }
}

#[test]
fn bytes_of_a_list_u8_are_copied_in_one_allocation() {
    let ty = wit("", "list<u8>");
    let payload: Vec<u8> = (0..=255).cycle().take(100_000).collect();
    let val = Val::List(payload.iter().map(|&b| Val::U8(b)).collect());
    let mut bytes = Vec::new();
    wire::encode(&val, &ty, &mut bytes).unwrap();
    assert_eq!(&bytes[3..], &payload[..]);

    let (decoded, peak) = peak_allocation(|| wire::decode(&ty, &bytes, &DecodeLimits::default()));
    assert_eq!(decoded.unwrap(), val);
    // Exactly the elements: no growth by doubling, no per-byte allocation.
    assert_eq!(peak, payload.len() * std::mem::size_of::<Val>());

    let mut out = Vec::new();
    let ((), peak) = peak_allocation(|| wire::encode(&val, &ty, &mut out).unwrap());
    assert!(peak <= 2 * bytes.len(), "{peak}");
}
