//! WAVE, the WebAssembly Value Encoding: the text form of one value that the
//! CLI reads and prints (`{name: "sword", count: 2}`, `some(3)`, `ok("done")`).
//! wasmtime implements the format; these helpers give its errors the wording
//! Grove's users see.
//!
//! WAVE has no syntax for maps, and its parser does not know fixed-length
//! lists; nor can it show handles (resources, futures, streams, error
//! contexts). wasmtime's printer panics on a value it cannot show, so values
//! and types are looked over first and refused with an error: a guest that
//! returns a map must not take the host down.

use wasmtime::component::{Type, Val};

use crate::check::type_name;

/// WAVE text for a value.
pub fn to_wave(val: &Val) -> Result<String, String> {
    if let Some(kind) = unprintable(val) {
        return Err(format!(
            "cannot print the result as WAVE: it holds a {kind}"
        ));
    }
    val.to_wave()
        .map_err(|e| format!("cannot print the result as WAVE: {e}"))
}

/// Parses WAVE text as a value of type `ty`.
pub fn from_wave(ty: &Type, text: &str) -> Result<Val, String> {
    if let Some(kind) = unparsable(ty) {
        return Err(format!(
            "not a valid {}: WAVE cannot express a {kind}",
            type_name(ty)
        ));
    }
    let mut val =
        Val::from_wave(ty, text).map_err(|e| format!("not a valid {}: {e}", type_name(ty)))?;
    flags_in_declaration_order(&mut val, ty);
    Ok(val)
}

/// Puts the flags in `val` in the order the type declares them, the order
/// wasmtime lifts them from a guest in (the WAVE parser sorts them by name).
fn flags_in_declaration_order(val: &mut Val, ty: &Type) {
    match (val, ty) {
        (Val::Flags(set), Type::Flags(flags)) => {
            *set = flags
                .names()
                .filter(|name| set.iter().any(|s| s == name))
                .map(str::to_owned)
                .collect();
        }
        (Val::List(items), Type::List(list)) => {
            let ty = list.ty();
            items
                .iter_mut()
                .for_each(|v| flags_in_declaration_order(v, &ty));
        }
        (Val::Record(fields), Type::Record(record)) => {
            for ((_, v), field) in fields.iter_mut().zip(record.fields()) {
                flags_in_declaration_order(v, &field.ty);
            }
        }
        (Val::Tuple(items), Type::Tuple(tuple)) => {
            for (v, ty) in items.iter_mut().zip(tuple.types()) {
                flags_in_declaration_order(v, &ty);
            }
        }
        (Val::Variant(name, Some(payload)), Type::Variant(variant)) => {
            if let Some(ty) = variant.cases().find(|c| c.name == name).and_then(|c| c.ty) {
                flags_in_declaration_order(payload, &ty);
            }
        }
        (Val::Option(Some(inner)), Type::Option(option)) => {
            flags_in_declaration_order(inner, &option.ty());
        }
        (Val::Result(Ok(Some(payload))), Type::Result(result)) => {
            if let Some(ty) = result.ok() {
                flags_in_declaration_order(payload, &ty);
            }
        }
        (Val::Result(Err(Some(payload))), Type::Result(result)) => {
            if let Some(ty) = result.err() {
                flags_in_declaration_order(payload, &ty);
            }
        }
        _ => {}
    }
}

/// The first kind of part in `val` that WAVE cannot print.
fn unprintable(val: &Val) -> Option<&'static str> {
    let boxed = |v: &Option<Box<Val>>| v.as_deref().and_then(unprintable);
    match val {
        Val::Map(_) => Some("map"),
        Val::Resource(_) => Some("resource"),
        Val::Future(_) => Some("future"),
        Val::Stream(_) => Some("stream"),
        Val::ErrorContext(_) => Some("error-context"),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            items.iter().find_map(unprintable)
        }
        Val::Record(fields) => fields.iter().find_map(|(_, v)| unprintable(v)),
        Val::Variant(_, v) | Val::Option(v) => boxed(v),
        Val::Result(Ok(v) | Err(v)) => boxed(v),
        _ => None,
    }
}

/// The first kind of part in `ty` that WAVE cannot parse.
fn unparsable(ty: &Type) -> Option<&'static str> {
    match ty {
        Type::Map(_) => Some("map"),
        Type::FixedLengthList(_) => Some("fixed-length list"),
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            Some(type_name(ty))
        }
        Type::List(list) => unparsable(&list.ty()),
        Type::Record(record) => record.fields().find_map(|f| unparsable(&f.ty)),
        Type::Tuple(tuple) => tuple.types().find_map(|t| unparsable(&t)),
        Type::Variant(variant) => variant
            .cases()
            .find_map(|c| c.ty.as_ref().and_then(unparsable)),
        Type::Option(option) => unparsable(&option.ty()),
        Type::Result(result) => result
            .ok()
            .as_ref()
            .and_then(unparsable)
            .or_else(|| result.err().as_ref().and_then(unparsable)),
        _ => None,
    }
}
