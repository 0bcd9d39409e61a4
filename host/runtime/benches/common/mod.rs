//! Helpers shared by Grove's benchmarks.

use std::path::PathBuf;
use std::time::Duration;

/// A plugin built by `scripts/build-plugins`.
pub fn plugin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../plugins/target/wasm32-wasip2/release/{name}.wasm"
    ))
}

/// The length of each measured phase: `GROVE_BENCH_SECS`, default 2 s.
pub fn phase() -> Duration {
    let secs = std::env::var("GROVE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}
