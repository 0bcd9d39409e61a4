//! Checking a [`Val`] against a WIT [`Type`] before it is handed to a guest.
//!
//! wasmtime checks too, but its errors name neither the argument nor the part
//! of it that does not fit; these errors start with the path to that part
//! (`.field`, `[index]`, `.case`) so a client can find its mistake.

use wasmtime::component::{Type, Val};

/// Brings `val`, a value of an older version of `ty`, to `ty`: a record
/// that lacks fields `ty` added at its end gets `none` for each that is an
/// `option`, at any depth. Anything else is left as it is (for [`check`] to
/// judge).
pub fn conform(val: &mut Val, ty: &Type) {
    match (val, ty) {
        (Val::Record(fields), Type::Record(record)) => {
            for (i, field) in record.fields().enumerate() {
                match fields.get_mut(i) {
                    Some((name, value)) if name == field.name => conform(value, &field.ty),
                    None if matches!(field.ty, Type::Option(_)) => {
                        fields.push((field.name.to_owned(), Val::Option(None)));
                    }
                    _ => return,
                }
            }
        }
        (Val::List(items) | Val::FixedLengthList(items), Type::List(list)) => {
            let ty = list.ty();
            for item in items {
                conform(item, &ty);
            }
        }
        (Val::Tuple(items), Type::Tuple(tuple)) => {
            for (item, ty) in items.iter_mut().zip(tuple.types()) {
                conform(item, &ty);
            }
        }
        (Val::Option(Some(value)), Type::Option(option)) => conform(value, &option.ty()),
        (Val::Result(Ok(Some(value))), Type::Result(result)) => {
            if let Some(ty) = result.ok() {
                conform(value, &ty);
            }
        }
        (Val::Result(Err(Some(value))), Type::Result(result)) => {
            if let Some(ty) = result.err() {
                conform(value, &ty);
            }
        }
        (Val::Variant(name, Some(value)), Type::Variant(variant)) => {
            if let Some(ty) = variant.cases().find(|c| c.name == name).and_then(|c| c.ty) {
                conform(value, &ty);
            }
        }
        _ => {}
    }
}

/// The WIT name of a type's kind (`u32`, `record`, `list`, ...), for messages.
pub fn type_name(ty: &Type) -> &'static str {
    match ty {
        Type::Bool => "bool",
        Type::S8 => "s8",
        Type::U8 => "u8",
        Type::S16 => "s16",
        Type::U16 => "u16",
        Type::S32 => "s32",
        Type::U32 => "u32",
        Type::S64 => "s64",
        Type::U64 => "u64",
        Type::Float32 => "f32",
        Type::Float64 => "f64",
        Type::Char => "char",
        Type::String => "string",
        Type::List(_) | Type::FixedLengthList(_) => "list",
        Type::Map(_) => "map",
        Type::Record(_) => "record",
        Type::Tuple(_) => "tuple",
        Type::Variant(_) => "variant",
        Type::Enum(_) => "enum",
        Type::Option(_) => "option",
        Type::Result(_) => "result",
        Type::Flags(_) => "flags",
        Type::Own(_) | Type::Borrow(_) => "resource",
        Type::Future(_) => "future",
        Type::Stream(_) => "stream",
        Type::ErrorContext => "error-context",
    }
}

fn mismatch(ty: &Type, val: &Val) -> String {
    format!("expected {}, got {val:?}", type_name(ty))
}

/// Checks that `val` is a value of type `ty`.
pub fn check(val: &Val, ty: &Type) -> Result<(), String> {
    let ok = match (ty, val) {
        (Type::Bool, Val::Bool(_))
        | (Type::S8, Val::S8(_))
        | (Type::U8, Val::U8(_))
        | (Type::S16, Val::S16(_))
        | (Type::U16, Val::U16(_))
        | (Type::S32, Val::S32(_))
        | (Type::U32, Val::U32(_))
        | (Type::S64, Val::S64(_))
        | (Type::U64, Val::U64(_))
        | (Type::Float32, Val::Float32(_))
        | (Type::Float64, Val::Float64(_))
        | (Type::Char, Val::Char(_))
        | (Type::String, Val::String(_)) => true,
        (Type::List(l), Val::List(items)) => {
            let t = l.ty();
            let misfit = match scalar_misfit(&t, items) {
                Some(found) => found,
                None => items.iter().position(|item| check(item, &t).is_err()),
            };
            if let Some((i, item)) = misfit.and_then(|i| Some((i, items.get(i)?))) {
                return check(item, &t).map_err(|e| format!("[{i}]: {e}"));
            }
            true
        }
        (Type::FixedLengthList(l), Val::FixedLengthList(items)) => {
            if items.len() != l.len() as usize {
                return Err(format!(
                    "expected {} elements, got {}",
                    l.len(),
                    items.len()
                ));
            }
            let t = l.ty();
            for (i, item) in items.iter().enumerate() {
                check(item, &t).map_err(|e| format!("[{i}]: {e}"))?;
            }
            true
        }
        (Type::Map(m), Val::Map(pairs)) => {
            let (k, v) = (m.key(), m.value());
            for (i, (key, value)) in pairs.iter().enumerate() {
                check(key, &k).map_err(|e| format!("[{i}] key: {e}"))?;
                check(value, &v).map_err(|e| format!("[{i}] value: {e}"))?;
            }
            true
        }
        (Type::Record(r), Val::Record(fields)) => {
            if fields.len() != r.fields().len() {
                return Err(format!(
                    "expected {} fields, got {}",
                    r.fields().len(),
                    fields.len()
                ));
            }
            for (field, (name, value)) in r.fields().zip(fields) {
                if field.name != name {
                    return Err(format!("expected field `{}`, got `{name}`", field.name));
                }
                check(value, &field.ty).map_err(|e| format!(".{name}: {e}"))?;
            }
            true
        }
        (Type::Tuple(t), Val::Tuple(items)) => {
            if items.len() != t.types().len() {
                return Err(format!(
                    "expected {} elements, got {}",
                    t.types().len(),
                    items.len()
                ));
            }
            for (i, (ty, item)) in t.types().zip(items).enumerate() {
                check(item, &ty).map_err(|e| format!(".{i}: {e}"))?;
            }
            true
        }
        (Type::Variant(v), Val::Variant(name, payload)) => {
            let case = v
                .cases()
                .find(|c| c.name == name)
                .ok_or_else(|| format!("no case `{name}`"))?;
            match (case.ty, payload) {
                (None, None) => {}
                (Some(t), Some(p)) => check(p, &t).map_err(|e| format!("{name}: {e}"))?,
                _ => return Err(format!("case `{name}` payload does not match")),
            }
            true
        }
        (Type::Enum(e), Val::Enum(name)) => e.names().any(|n| n == name),
        (Type::Flags(f), Val::Flags(names)) => {
            for name in names {
                if !f.names().any(|n| n == name) {
                    return Err(format!("no flag `{name}`"));
                }
            }
            true
        }
        (Type::Option(o), Val::Option(v)) => {
            if let Some(v) = v {
                check(v, &o.ty())?;
            }
            true
        }
        (Type::Result(r), Val::Result(v)) => {
            match v {
                Ok(p) => check_payload(p.as_deref(), r.ok()).map_err(|e| format!("ok: {e}"))?,
                Err(p) => check_payload(p.as_deref(), r.err()).map_err(|e| format!("err: {e}"))?,
            }
            true
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(mismatch(ty, val))
    }
}

/// For a list of scalars (`list<u8>` above all), the index of the first item
/// of another kind, found in one tight pass; `None` when `ty` is not a
/// scalar.
fn scalar_misfit(ty: &Type, items: &[Val]) -> Option<Option<usize>> {
    macro_rules! first_not {
        ($variant:ident) => {
            items.iter().position(|v| !matches!(v, Val::$variant(_)))
        };
    }
    Some(match ty {
        Type::Bool => first_not!(Bool),
        Type::S8 => first_not!(S8),
        Type::U8 => first_not!(U8),
        Type::S16 => first_not!(S16),
        Type::U16 => first_not!(U16),
        Type::S32 => first_not!(S32),
        Type::U32 => first_not!(U32),
        Type::S64 => first_not!(S64),
        Type::U64 => first_not!(U64),
        Type::Float32 => first_not!(Float32),
        Type::Float64 => first_not!(Float64),
        Type::Char => first_not!(Char),
        _ => return None,
    })
}

fn check_payload(val: Option<&Val>, ty: Option<Type>) -> Result<(), String> {
    match (val, ty) {
        (None, None) => Ok(()),
        (Some(v), Some(t)) => check(v, &t),
        (Some(_), None) => Err("unexpected payload".into()),
        (None, Some(_)) => Err("missing payload".into()),
    }
}
