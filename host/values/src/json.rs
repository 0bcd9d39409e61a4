//! JSON for component values: the HTTP API's form of arguments and results.
//!
//! ## The mapping
//! Driven by the WIT type, so JSON that does not fit is rejected with the path
//! to the offending part:
//!
//! | WIT | JSON |
//! |---|---|
//! | `bool` | `true` / `false` |
//! | integers | numbers (64-bit integers may also be given as decimal strings) |
//! | `f32`, `f64` | numbers; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | `char`, `string` | strings (a `char` is a one-character string) |
//! | `list<T>`, fixed-length list | arrays |
//! | `map<K, V>` | array of `[key, value]` pairs |
//! | `tuple<...>` | arrays |
//! | `record` | objects keyed by field name (kebab-case, as in WIT) |
//! | `enum` | the case name as a string |
//! | `flags` | array of the set flag names (read in any order, kept in declaration order) |
//! | `variant` | `"case"` for a case without payload, `{"case": payload}` otherwise |
//! | `option<T>` | `null` or the value; an `option` directly inside an `option` is `{"some": value}` |
//! | `result<T, E>` | `{"ok": value}` or `{"err": value}` (`null` when that side has no type) |
//!
//! Numbers parse back to exactly the float they were printed from, so
//! `from_json(&to_json(v), ty) == v` for every value `v` of type `ty` (NaN
//! payloads aside). Resources, futures and streams cannot cross this edge.

use serde_json::{json, Map as JsonMap, Number, Value as Json};
use wasmtime::component::{Type, Val};

use crate::check::type_name;

fn expected(what: &str, got: &Json) -> String {
    let got = match got {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => format!("{s:?}"),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    };
    format!(": expected {what}, got {got}")
}

fn int<T: TryFrom<i128>>(json: &Json, what: &str) -> Result<T, String> {
    let wide: Option<i128> = match json {
        Json::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Json::String(s) => s.parse().ok(),
        _ => None,
    };
    wide.and_then(|w| T::try_from(w).ok())
        .ok_or_else(|| expected(what, json))
}

fn float(json: &Json, what: &str) -> Result<f64, String> {
    match json {
        Json::Number(n) => n.as_f64().ok_or_else(|| expected(what, json)),
        Json::String(s) if s == "NaN" => Ok(f64::NAN),
        Json::String(s) if s == "Infinity" => Ok(f64::INFINITY),
        Json::String(s) if s == "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => Err(expected(what, json)),
    }
}

fn array<'a>(json: &'a Json, what: &str) -> Result<&'a Vec<Json>, String> {
    json.as_array().ok_or_else(|| expected(what, json))
}

fn elements(items: &[Json], ty: &Type) -> Result<Vec<Val>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, j)| from_json(j, ty).map_err(|e| format!("[{i}]{e}")))
        .collect()
}

/// Converts JSON to a value of type `ty`. Errors start with the path to the
/// part that does not fit (`.field`, `[index]`) and then `: expected ...`.
pub fn from_json(json: &Json, ty: &Type) -> Result<Val, String> {
    Ok(match ty {
        Type::Bool => Val::Bool(json.as_bool().ok_or_else(|| expected("a boolean", json))?),
        Type::S8 => Val::S8(int(json, "an s8")?),
        Type::U8 => Val::U8(int(json, "a u8")?),
        Type::S16 => Val::S16(int(json, "an s16")?),
        Type::U16 => Val::U16(int(json, "a u16")?),
        Type::S32 => Val::S32(int(json, "an s32")?),
        Type::U32 => Val::U32(int(json, "a u32")?),
        Type::S64 => Val::S64(int(json, "an s64")?),
        Type::U64 => Val::U64(int(json, "a u64")?),
        Type::Float32 => Val::Float32(float(json, "an f32")? as f32),
        Type::Float64 => Val::Float64(float(json, "an f64")?),
        Type::Char => {
            let s = json
                .as_str()
                .ok_or_else(|| expected("a one-character string", json))?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(expected("a one-character string", json)),
            }
        }
        Type::String => Val::String(
            json.as_str()
                .ok_or_else(|| expected("a string", json))?
                .to_owned(),
        ),
        Type::List(l) => Val::List(elements(array(json, "an array")?, &l.ty())?),
        Type::FixedLengthList(l) => {
            let items = array(json, "an array")?;
            if items.len() != l.len() as usize {
                return Err(expected(&format!("an array of {} elements", l.len()), json));
            }
            Val::FixedLengthList(elements(items, &l.ty())?)
        }
        Type::Map(m) => {
            let (kt, vt) = (m.key(), m.value());
            let pairs = array(json, "an array of [key, value] pairs")?;
            let mut out = Vec::with_capacity(pairs.len());
            for (i, pair) in pairs.iter().enumerate() {
                match pair.as_array().map(Vec::as_slice) {
                    Some([k, v]) => out.push((
                        from_json(k, &kt).map_err(|e| format!("[{i}][0]{e}"))?,
                        from_json(v, &vt).map_err(|e| format!("[{i}][1]{e}"))?,
                    )),
                    _ => return Err(format!("[{i}]{}", expected("a [key, value] pair", pair))),
                }
            }
            Val::Map(out)
        }
        Type::Record(r) => {
            let obj = json
                .as_object()
                .ok_or_else(|| expected("an object", json))?;
            if let Some(unknown) = obj
                .keys()
                .find(|k| !r.fields().any(|f| f.name == k.as_str()))
            {
                return Err(format!(": unknown field `{unknown}`"));
            }
            let mut fields = Vec::with_capacity(r.fields().len());
            for field in r.fields() {
                let value = match (obj.get(field.name), &field.ty) {
                    (Some(v), ty) => from_json(v, ty).map_err(|e| format!(".{}{e}", field.name))?,
                    // A missing optional field means `none`.
                    (None, Type::Option(_)) => Val::Option(None),
                    (None, _) => return Err(format!(": missing field `{}`", field.name)),
                };
                fields.push((field.name.to_owned(), value));
            }
            Val::Record(fields)
        }
        Type::Tuple(t) => {
            let items = array(json, "an array")?;
            if items.len() != t.types().len() {
                return Err(expected(
                    &format!("an array of {} elements", t.types().len()),
                    json,
                ));
            }
            let vals = t
                .types()
                .zip(items)
                .enumerate()
                .map(|(i, (ty, j))| from_json(j, &ty).map_err(|e| format!("[{i}]{e}")))
                .collect::<Result<_, _>>()?;
            Val::Tuple(vals)
        }
        Type::Variant(v) => {
            let names = || v.cases().map(|c| c.name).collect::<Vec<_>>().join(", ");
            let (name, payload) = match json {
                Json::String(s) => (s.as_str(), None),
                Json::Object(o) => match (o.len(), o.iter().next()) {
                    (1, Some((k, v))) => (k.as_str(), Some(v)),
                    _ => return Err(expected(&format!("a case of {}", names()), json)),
                },
                _ => return Err(expected(&format!("a case of {}", names()), json)),
            };
            let case = v
                .cases()
                .find(|c| c.name == name)
                .ok_or_else(|| format!(": no case `{name}` (cases: {})", names()))?;
            let payload = match (case.ty, payload) {
                (None, None | Some(Json::Null)) => None,
                (Some(t), Some(p)) => Some(Box::new(
                    from_json(p, &t).map_err(|e| format!(".{name}{e}"))?,
                )),
                (Some(_), None) => {
                    return Err(format!(
                        ": case `{name}` needs a payload: {{\"{name}\": ...}}"
                    ))
                }
                (None, Some(_)) => return Err(format!(": case `{name}` takes no payload")),
            };
            Val::Variant(name.to_owned(), payload)
        }
        Type::Enum(e) => {
            let s = json.as_str().unwrap_or_default();
            if !e.names().any(|n| n == s) {
                let names = e.names().collect::<Vec<_>>().join(", ");
                return Err(expected(&format!("one of {names}"), json));
            }
            Val::Enum(s.to_owned())
        }
        Type::Flags(f) => {
            let given = array(json, "an array of flag names")?;
            for item in given {
                match item.as_str() {
                    Some(name) if f.names().any(|n| n == name) => {}
                    _ => {
                        let names = f.names().collect::<Vec<_>>().join(", ");
                        return Err(expected(&format!("flags from {names}"), item));
                    }
                }
            }
            // A set: declaration order, each flag once, as wasmtime lifts
            // flags from a guest.
            let set = f
                .names()
                .filter(|&n| given.iter().any(|g| g.as_str() == Some(n)))
                .map(str::to_owned)
                .collect();
            Val::Flags(set)
        }
        Type::Option(o) => {
            let inner = o.ty();
            match (json, &inner) {
                (Json::Null, _) => Val::Option(None),
                (Json::Object(obj), Type::Option(_)) => match obj.get("some") {
                    Some(v) if obj.len() == 1 => Val::Option(Some(Box::new(from_json(v, &inner)?))),
                    _ => return Err(expected("null or {\"some\": ...}", json)),
                },
                (_, Type::Option(_)) => return Err(expected("null or {\"some\": ...}", json)),
                _ => Val::Option(Some(Box::new(from_json(json, &inner)?))),
            }
        }
        Type::Result(r) => {
            let obj = json.as_object().filter(|o| o.len() == 1);
            let Some((side, v)) = obj.and_then(|o| o.iter().next()) else {
                return Err(expected("{\"ok\": ...} or {\"err\": ...}", json));
            };
            let payload = |ty: Option<Type>| -> Result<Option<Box<Val>>, String> {
                match ty {
                    Some(t) => Ok(Some(Box::new(
                        from_json(v, &t).map_err(|e| format!(".{side}{e}"))?,
                    ))),
                    None if v.is_null() => Ok(None),
                    None => Err(format!(".{side}: expected null")),
                }
            };
            match side.as_str() {
                "ok" => Val::Result(Ok(payload(r.ok())?)),
                "err" => Val::Result(Err(payload(r.err())?)),
                _ => return Err(expected("{\"ok\": ...} or {\"err\": ...}", json)),
            }
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(format!(": a {} cannot be passed as JSON", type_name(ty)));
        }
    })
}

fn float_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => json!("NaN"),
        None if f > 0.0 => json!("Infinity"),
        None => json!("-Infinity"),
    }
}

fn payload_json(p: &Option<Box<Val>>) -> Json {
    p.as_deref().map_or(Json::Null, to_json)
}

/// Converts a value to JSON, following the mapping in the module docs.
pub fn to_json(val: &Val) -> Json {
    match val {
        Val::Bool(b) => json!(b),
        Val::S8(n) => json!(n),
        Val::U8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::Float32(f) => float_json(f64::from(*f)),
        Val::Float64(f) => float_json(*f),
        Val::Char(c) => json!(c.to_string()),
        Val::String(s) => json!(s),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Json::Array(items.iter().map(to_json).collect())
        }
        Val::Map(pairs) => Json::Array(
            pairs
                .iter()
                .map(|(k, v)| json!([to_json(k), to_json(v)]))
                .collect(),
        ),
        Val::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<JsonMap<_, _>>(),
        ),
        Val::Variant(name, None) | Val::Enum(name) => json!(name),
        Val::Variant(name, Some(p)) => json!({ name: to_json(p) }),
        Val::Flags(names) => json!(names),
        Val::Option(None) => Json::Null,
        Val::Option(Some(inner)) => match inner.as_ref() {
            Val::Option(_) => json!({ "some": to_json(inner) }),
            other => to_json(other),
        },
        Val::Result(Ok(p)) => json!({ "ok": payload_json(p) }),
        Val::Result(Err(p)) => json!({ "err": payload_json(p) }),
        Val::Resource(_) => json!("<resource>"),
        Val::Future(_) => json!("<future>"),
        Val::Stream(_) => json!("<stream>"),
        Val::ErrorContext(_) => json!("<error-context>"),
    }
}
