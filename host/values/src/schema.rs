//! JSON Schemas (draft 2020-12, the dialect of OpenAPI 3.1) for the JSON
//! mapping of [`crate::json`], as `docs/http-api.md` documents it: what a
//! schema accepts, [`from_json`](crate::json::from_json) takes, and
//! everything [`to_json`](crate::json::to_json) writes fits it. Two
//! leniencies of `from_json` are left out of the schemas, so that clients
//! are not told to rely on them: integers of 32 bits or less written as
//! strings, and a `+` sign. A 64-bit integer written as a string is
//! checked for its digits, not its range.
//!
//! WIT types are not recursive, so every schema is written out in full.

use serde_json::{json, Value as Json};
use wasmtime::component::Type;

use crate::check::type_name;

/// The strings that stand for the floats JSON has no number for.
const NON_FINITE: [&str; 3] = ["NaN", "Infinity", "-Infinity"];

fn integer(min: i128, max: i128) -> Json {
    json!({ "type": "integer", "minimum": min, "maximum": max })
}

/// A 64-bit integer: a number, or a decimal string (JSON parsers that read
/// numbers as doubles lose precision past 2^53).
fn wide_integer(min: i128, max: i128) -> Json {
    let digits = if min < 0 { "^-?[0-9]+$" } else { "^[0-9]+$" };
    json!({ "anyOf": [integer(min, max), { "type": "string", "pattern": digits }] })
}

/// An object with exactly one property, `name`, holding `value`.
fn single(name: &str, value: Json) -> Json {
    json!({
        "type": "object",
        "properties": { name: value },
        "required": [name],
        "additionalProperties": false,
    })
}

fn null_schema() -> Json {
    json!({ "type": "null" })
}

/// The schema of the JSON for a value of type `ty`, or why it has none (a
/// resource, future or stream cannot be passed as JSON).
pub fn json_schema(ty: &Type) -> Result<Json, String> {
    Ok(match ty {
        Type::Bool => json!({ "type": "boolean" }),
        Type::S8 => integer(i8::MIN.into(), i8::MAX.into()),
        Type::U8 => integer(0, u8::MAX.into()),
        Type::S16 => integer(i16::MIN.into(), i16::MAX.into()),
        Type::U16 => integer(0, u16::MAX.into()),
        Type::S32 => integer(i32::MIN.into(), i32::MAX.into()),
        Type::U32 => integer(0, u32::MAX.into()),
        Type::S64 => wide_integer(i64::MIN.into(), i64::MAX.into()),
        Type::U64 => wide_integer(0, u64::MAX.into()),
        Type::Float32 | Type::Float64 => {
            json!({ "anyOf": [{ "type": "number" }, { "enum": NON_FINITE }] })
        }
        Type::Char => json!({ "type": "string", "minLength": 1, "maxLength": 1 }),
        Type::String => json!({ "type": "string" }),
        Type::List(l) => json!({ "type": "array", "items": json_schema(&l.ty())? }),
        Type::FixedLengthList(l) => json!({
            "type": "array",
            "items": json_schema(&l.ty())?,
            "minItems": l.len(),
            "maxItems": l.len(),
        }),
        Type::Map(m) => json!({
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [json_schema(&m.key())?, json_schema(&m.value())?],
                "minItems": 2,
                "maxItems": 2,
            },
        }),
        Type::Record(r) => {
            let mut properties = serde_json::Map::new();
            let mut required = Vec::new();
            for field in r.fields() {
                properties.insert(field.name.to_owned(), json_schema(&field.ty)?);
                // A missing `option` field is `none`.
                if !matches!(field.ty, Type::Option(_)) {
                    required.push(field.name);
                }
            }
            json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            })
        }
        Type::Tuple(t) => {
            let items = t
                .types()
                .map(|t| json_schema(&t))
                .collect::<Result<Vec<_>, _>>()?;
            json!({
                "type": "array",
                "prefixItems": items,
                "minItems": items.len(),
                "maxItems": items.len(),
            })
        }
        Type::Variant(v) => {
            let mut cases = Vec::new();
            for case in v.cases() {
                match case.ty {
                    // `"case"`, or `{"case": null}`.
                    None => {
                        cases.push(json!({ "const": case.name }));
                        cases.push(single(case.name, null_schema()));
                    }
                    Some(payload) => cases.push(single(case.name, json_schema(&payload)?)),
                }
            }
            json!({ "anyOf": cases })
        }
        Type::Enum(e) => json!({ "type": "string", "enum": e.names().collect::<Vec<_>>() }),
        Type::Flags(f) => json!({
            "type": "array",
            "items": { "type": "string", "enum": f.names().collect::<Vec<_>>() },
        }),
        Type::Option(o) => {
            let inner = o.ty();
            let some = match inner {
                // `none` inside `some` would be ambiguous with `none`.
                Type::Option(_) => single("some", json_schema(&inner)?),
                _ => json_schema(&inner)?,
            };
            json!({ "anyOf": [null_schema(), some] })
        }
        Type::Result(r) => {
            let side = |ty: Option<Type>| ty.map_or(Ok(null_schema()), |t| json_schema(&t));
            json!({ "anyOf": [single("ok", side(r.ok())?), single("err", side(r.err())?)] })
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(format!("a {} cannot be passed as JSON", type_name(ty)));
        }
    })
}
