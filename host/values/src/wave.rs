//! WAVE, the WebAssembly Value Encoding: the text form of one value that the
//! CLI reads and prints (`{name: "sword", count: 2}`, `some(3)`, `ok("done")`).
//! wasmtime implements the format; these helpers give its errors the wording
//! Grove's users see.

use wasmtime::component::{Type, Val};

use crate::check::type_name;

/// WAVE text for a value.
pub fn to_wave(val: &Val) -> Result<String, String> {
    val.to_wave()
        .map_err(|e| format!("cannot print the result as WAVE: {e}"))
}

/// Parses WAVE text as a value of type `ty`.
pub fn from_wave(ty: &Type, text: &str) -> Result<Val, String> {
    Val::from_wave(ty, text).map_err(|e| format!("not a valid {}: {e}", type_name(ty)))
}
