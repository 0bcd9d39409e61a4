//! Arguments at Grove's edges: a call's arguments checked against, or parsed
//! for, the parameters of a plugin's [`Function`]. Single values — the type
//! check, the JSON mapping and WAVE text — live in the `grove-values` crate,
//! re-exported here.

use serde_json::Value as Json;
use wasmtime::component::Val;

pub use grove_values::check::check;
pub use grove_values::json::{from_json, to_json};
pub use grove_values::wave::to_wave;

use crate::plugin::Function;

/// Checks that `func` takes `given` arguments.
fn check_arity(func: &Function, given: usize) -> Result<(), String> {
    let wanted = func.params.len();
    if given == wanted {
        return Ok(());
    }
    let plural = if wanted == 1 { "" } else { "s" };
    Err(format!(
        "`{}` takes {wanted} argument{plural}, got {given} ({})",
        func.name, func.signature
    ))
}

/// Checks that `args` fit `func`'s parameters in number and type.
pub fn check_args(func: &Function, args: &[Val]) -> Result<(), String> {
    check_arity(func, args.len())?;
    for (param, arg) in func.params.iter().zip(args) {
        check(arg, &param.ty).map_err(|e| format!("argument `{}`: {e}", param.name))?;
    }
    Ok(())
}

/// Checks `args` against `func`'s parameters as [`check_args`] does; if
/// they do not fit, brings values of an older version of a parameter's type
/// to the current one first ([`grove_values::check::conform`]: a record that
/// gained `option` fields at its end), and checks again.
pub fn conform_args(func: &Function, args: &mut [Val]) -> Result<(), String> {
    if check_args(func, args).is_ok() {
        return Ok(());
    }
    for (param, arg) in func.params.iter().zip(args.iter_mut()) {
        grove_values::check::conform(arg, &param.ty);
    }
    check_args(func, args)
}

/// Parses one WAVE-encoded argument per parameter of `func`.
pub fn args_from_wave(func: &Function, args: &[String]) -> Result<Vec<Val>, String> {
    check_arity(func, args.len())?;
    func.params
        .iter()
        .zip(args)
        .map(|(p, text)| {
            grove_values::wave::from_wave(&p.ty, text)
                .map_err(|e| format!("argument `{}` is {e}", p.name))
        })
        .collect()
}

/// Converts a JSON array of arguments for `func`.
pub fn args_from_json(func: &Function, args: &Json) -> Result<Vec<Val>, String> {
    let Json::Array(items) = args else {
        return Err("the request body must be a JSON array of arguments".into());
    };
    check_arity(func, items.len())?;
    func.params
        .iter()
        .zip(items)
        .map(|(p, json)| from_json(json, &p.ty).map_err(|e| format!("argument `{}`{e}", p.name)))
        .collect()
}
