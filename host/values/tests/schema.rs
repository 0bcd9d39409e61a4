//! The JSON Schemas of `grove_values::schema` against the JSON mapping
//! itself: every value of every generated WIT type, as `to_json` writes it,
//! fits its type's schema (checked by the `jsonschema` crate, draft
//! 2020-12), and JSON that `from_json` refuses is refused by the schema too.

mod common;

use common::{real_type, typed_values, wit};
use grove_values::json::{from_json, to_json};
use grove_values::schema::json_schema;
use proptest::prelude::*;
use serde_json::{json, Value as Json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: common::cases(),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_value_as_json_fits_its_types_schema((ty, vals) in typed_values(4)) {
        let ty = real_type(&ty);
        let schema = json_schema(&ty).unwrap();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        for val in &vals {
            let json = to_json(val);
            let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
            prop_assert!(errors.is_empty(), "{json} does not fit {schema}: {errors:?}");
        }
    }
}

/// Checks that `schema` of the WIT type `expr` (after `decls`) accepts and
/// refuses the same JSON as `from_json`.
fn agrees(decls: &str, expr: &str, samples: &[Json]) {
    let ty = wit(decls, expr);
    let schema = json_schema(&ty).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    for sample in samples {
        let taken = from_json(sample, &ty).is_ok();
        assert_eq!(
            validator.is_valid(sample),
            taken,
            "{expr}: {sample} is {} by from_json; schema {schema}",
            if taken { "taken" } else { "refused" }
        );
    }
}

#[test]
fn the_schema_refuses_what_the_mapping_refuses() {
    agrees(
        "",
        "u8",
        &[
            json!(0),
            json!(255),
            json!(256),
            json!(-1),
            json!(1.5),
            json!(true),
        ],
    );
    agrees(
        "",
        "u64",
        &[
            json!(18_446_744_073_709_551_615u64),
            json!("42"),
            json!(-1),
            json!("-1"),
            json!("x"),
        ],
    );
    agrees(
        "",
        "f64",
        &[
            json!(1.5),
            json!(3),
            json!("NaN"),
            json!("-Infinity"),
            json!("nan"),
        ],
    );
    agrees("", "char", &[json!("é"), json!(""), json!("ab"), json!(7)]);
    agrees(
        "",
        "tuple<u8, string>",
        &[json!([1, "a"]), json!([1]), json!([1, "a", 2])],
    );
    agrees(
        "record r { a: u8, b: option<string> }",
        "r",
        &[
            json!({"a": 1}),
            json!({"a": 1, "b": null}),
            json!({"a": 1, "b": "x"}),
            json!({"b": "x"}),
            json!({"a": 1, "c": 2}),
        ],
    );
    agrees(
        "variant v { none, some(u8) }",
        "v",
        &[
            json!("none"),
            json!({"none": null}),
            json!({"some": 3}),
            json!("some"),
            json!({"other": 1}),
            json!({"none": 1}),
        ],
    );
    agrees(
        "enum e { red, green }",
        "e",
        &[json!("red"), json!("blue"), json!(0)],
    );
    agrees(
        "flags f { a, b }",
        "f",
        &[json!([]), json!(["a", "b"]), json!(["c"]), json!("a")],
    );
    agrees(
        "",
        "option<option<u8>>",
        &[
            json!(null),
            json!({"some": null}),
            json!({"some": 3}),
            json!(3),
        ],
    );
    agrees(
        "",
        "result<u8, string>",
        &[
            json!({"ok": 1}),
            json!({"err": "no"}),
            json!({"ok": "no"}),
            json!({"ok": 1, "err": "x"}),
        ],
    );
    agrees(
        "",
        "result",
        &[json!({"ok": null}), json!({"err": null}), json!({"ok": 1})],
    );
    agrees(
        "",
        "list<u8>",
        &[json!([]), json!([1, 2]), json!([300]), json!({})],
    );
}
