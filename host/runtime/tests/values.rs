//! Every kind of WIT type, end to end: JSON and WAVE in, a dynamic call into
//! the inventory plugin, JSON and WAVE out.

mod common;

use grove_host::{values, ActorRef, Host};
use serde_json::{json, Value};

async fn call_json(host: &Host, actor: &ActorRef, function: &str, args: Value) -> Value {
    let plugin = host.plugin(&actor.actor_type).unwrap();
    let (_, func) = plugin.function(function).unwrap();
    let args = values::args_from_json(func, &args).unwrap();
    let result = host.call(actor, function, args).await.unwrap();
    result.as_ref().map_or(Value::Null, values::to_json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_variants_enums_flags_options_results_tuples_and_lists_round_trip() {
    let host = common::host();
    let inv = ActorRef::new("inventory", "hero");
    let axe = json!({"name": "axe", "rarity": "rare", "count": 2, "weight": 1.5, "tags": ["tradable", "quest"], "note": "chipped"});
    assert_eq!(
        call_json(&host, &inv, "add-item", json!([axe, 10.0])).await,
        json!({"ok": {"added": axe}})
    );
    // A missing optional field is `none`.
    let gem = json!({"name": "gem", "rarity": "legendary", "count": 1, "weight": 0.25, "tags": []});
    let added = call_json(&host, &inv, "add-item", json!([gem, null])).await;
    assert_eq!(added["ok"]["added"]["note"], Value::Null);
    // result<_, string> error side.
    let anvil =
        json!({"name": "anvil", "rarity": "common", "count": 1, "weight": 100.0, "tags": []});
    assert_eq!(
        call_json(&host, &inv, "add-item", json!([anvil, 50.0])).await,
        json!({"err": "too heavy: 103.25 > 50"})
    );

    let found = call_json(&host, &inv, "find", json!([["legendary"]])).await;
    assert_eq!(
        found,
        json!([[1, {"name": "gem", "rarity": "legendary", "count": 1, "weight": 0.25, "tags": [], "note": null}]])
    );
    assert_eq!(
        call_json(&host, &inv, "summary", json!([])).await,
        json!([2, 3, 3.25, "axe"])
    );
    // result<item, option<string>>: err(none).
    assert_eq!(
        call_json(&host, &inv, "remove-item", json!(["nothing"])).await,
        json!({"err": null})
    );
    assert_eq!(
        call_json(&host, &inv, "remove-item", json!(["gem"])).await["ok"]["name"],
        "gem"
    );
    // A variant case without payload.
    assert_eq!(
        call_json(&host, &inv, "clear", json!([])).await,
        json!("cleared")
    );
    assert_eq!(call_json(&host, &inv, "items", json!([])).await, json!([]));

    // Scalars at their extremes; 64-bit integers also as strings.
    let scalars = json!([
        -128,
        65535,
        -2147483648,
        "-9223372036854775808",
        "18446744073709551615",
        "λ",
        true
    ]);
    let back = call_json(&host, &inv, "scalars", scalars).await;
    assert_eq!(
        back,
        json!([-128, 65535, -2147483648i64, i64::MIN, u64::MAX, "λ", true])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_does_not_fit_the_wit_types_is_rejected_with_its_path() {
    let host = common::host();
    let plugin = host.plugin("inventory").unwrap();
    let (_, add) = plugin.function("add-item").unwrap();
    let item = |patch: Value| {
        let mut item =
            json!({"name": "axe", "rarity": "rare", "count": 2, "weight": 1.5, "tags": []});
        for (k, v) in patch.as_object().unwrap() {
            item[k] = v.clone();
        }
        item
    };
    let err = |args: Value| values::args_from_json(add, &args).unwrap_err();
    assert_eq!(
        err(json!([item(json!({"rarity": "epic"})), null])),
        "argument `item`.rarity: expected one of common, rare, legendary, got \"epic\""
    );
    assert_eq!(
        err(json!([item(json!({"count": -1})), null])),
        "argument `item`.count: expected a u32, got -1"
    );
    assert_eq!(
        err(json!([item(json!({"tags": ["shiny"]})), null])),
        "argument `item`.tags: expected flags from tradable, soulbound, quest, got \"shiny\""
    );
    assert_eq!(
        err(json!([item(json!({"colour": "red"})), null])),
        "argument `item`: unknown field `colour`"
    );
    assert!(err(json!([item(json!({})), "ten"])).starts_with("argument `limit`: expected an f64"));
    assert!(err(json!([item(json!({}))])).contains("takes 2 arguments"));
    assert_eq!(
        err(json!({"item": 1})),
        "the request body must be a JSON array of arguments"
    );
    let (_, scalars) = plugin.function("scalars").unwrap();
    let e = values::args_from_json(scalars, &json!([128, 0, 0, 0, 0, "ab", false])).unwrap_err();
    assert_eq!(e, "argument `a`: expected an s8, got 128");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wave_arguments_and_results_round_trip() {
    let host = common::host();
    let plugin = host.plugin("inventory").unwrap();
    let (_, add) = plugin.function("add-item").unwrap();
    let args = values::args_from_wave(
        add,
        &[r#"{name: "bow", rarity: common, count: 3, weight: 2.0, tags: {tradable, soulbound}, note: some("elven")}"#.into(), "none".into()],
    )
    .unwrap();
    let result = host
        .call(&ActorRef::new("inventory", "w"), "add-item", args)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        values::to_wave(&result).unwrap(),
        r#"ok(added({name: "bow", rarity: common, count: 3, weight: 2, tags: {tradable, soulbound}, note: some("elven")}))"#
    );
    let err = values::args_from_wave(add, &["{name: 1}".into(), "none".into()]).unwrap_err();
    assert!(
        err.starts_with("argument `item` is not a valid record"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_greeter_answers_as_documented() {
    let host =
        grove_host::Host::new(common::config(), grove_host::state::StateStore::memory()).unwrap();
    host.load_plugin(&common::plugin("greeter")).unwrap();
    let lobby = ActorRef::new("greeter", "lobby");
    let greet = |name: &str| {
        let (host, lobby, name) = (host.clone(), lobby.clone(), name.to_owned());
        async move {
            let plugin = host.plugin("greeter").unwrap();
            let (_, f) = plugin.function("greet").unwrap();
            let args = values::args_from_wave(f, &[format!("{name:?}")]).unwrap();
            values::to_wave(&host.call(&lobby, "greet", args).await.unwrap().unwrap()).unwrap()
        }
    };
    assert_eq!(
        greet("Ada").await,
        r#"("Hello, Ada, from greeter/lobby!", 1)"#
    );
    assert_eq!(
        greet("Bob").await,
        r#"("Hello, Bob, from greeter/lobby!", 2)"#
    );
}
