//! A Python actor (plugins/guild-py, built with componentize-py) and a Rust
//! actor (plugins/player) calling each other through their proxies, typed by
//! WIT in both languages.

mod common;

use common::ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_actors_call_each_other_with_typed_values() {
    let host = common::host_of(&["player", "guild"]);
    ok(
        &host,
        "player/ayla",
        "create",
        &[r#""Ayla""#, "warrior", "3"],
    )
    .await;
    ok(&host, "player/bren", "create", &[r#""Bren""#, "mage", "5"]).await;

    // Rust → Python: a record with an enum and an option goes in, a record
    // holding a list of them comes back.
    assert_eq!(
        ok(
            &host,
            "player/ayla",
            "join-guild",
            &[r#""oak""#, r#"some("Bold")"#]
        )
        .await,
        r#"ok(["Ayla the Bold (warrior, level 3)"])"#
    );
    assert_eq!(
        ok(&host, "player/bren", "join-guild", &[r#""oak""#, "none"]).await,
        r#"ok(["Ayla the Bold (warrior, level 3)", "Bren (mage, level 5)"])"#
    );
    // The Python actor's own error variant reaches the Rust caller.
    let again = ok(&host, "player/bren", "join-guild", &[r#""oak""#, "none"]).await;
    assert_eq!(
        again,
        r#"err("the guild refused: GuildError::Duplicate(\"bren\")")"#
    );
    // The Rust actor kept what the Python actor answered.
    let info = ok(&host, "player/ayla", "info", &[]).await;
    assert!(
        info.contains(r#"title: some("Bold"), guild: some("oak")"#),
        "{info}"
    );

    // Python → Rust: the guild asks every member for its stats (a result of
    // a record) ...
    ok(&host, "player/bren", "give", &[r#"["wand"]"#]).await;
    assert_eq!(
        ok(&host, "guild/oak", "refresh", &[]).await,
        r#"ok({guild: "oak", members: [{player: "ayla", name: "Ayla", class: warrior, level: 3, title: some("Bold")}, {player: "bren", name: "Bren", class: mage, level: 5}]})"#
    );
    // ... and casts a spell (a variant carrying a record) on each; the Rust
    // actor's answers come back as results of records.
    assert_eq!(
        ok(&host, "guild/oak", "rally", &["30"]).await,
        r#"[ok("Ayla: 100 hp"), ok("Bren: 135 hp")]"#
    );
    ok(&host, "player/ayla", "take-hit", &["melee(100)"]).await;
    let rally = ok(&host, "guild/oak", "rally", &["1"]).await;
    assert!(
        rally.starts_with(r#"[err("ayla: "#) && rally.contains("Defeated"),
        "{rally}"
    );
}
