//! Bad input of every kind gets a clear error, and the host keeps serving.

mod common;

use grove_host::error::{ActorFailure, CallError, RejectedCall};
use grove_host::ActorRef;
use wasmtime::component::Val;

fn probe(key: &str) -> ActorRef {
    ActorRef::new("probe", key)
}

async fn still_serving(host: &grove_host::Host) {
    let counter = ActorRef::new("counter", "alive");
    let before = match host.call(&counter, "get", vec![]).await.unwrap() {
        Some(Val::U64(n)) => n,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        host.call(&counter, "add", vec![Val::U64(1)]).await.unwrap(),
        Some(Val::U64(before + 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_and_functions_are_named_in_the_error() {
    let host = common::host();
    let err = host
        .call(&ActorRef::new("ghost", "1"), "boo", vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Rejected(RejectedCall::UnknownActorType(ref t)) if t == "ghost"),
        "{err}"
    );
    let err = host
        .call(&ActorRef::new("counter", "1"), "multiply", vec![])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "actor type `counter` has no function `multiply`"
    );
    assert!("counter"
        .parse::<ActorRef>()
        .unwrap_err()
        .to_string()
        .contains("type/key"));
    still_serving(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_argument_counts_and_types_are_rejected_before_the_actor_runs() {
    let host = common::host();
    let counter = ActorRef::new("counter", "args");
    let err = host.call(&counter, "add", vec![]).await.unwrap_err();
    assert_eq!(err.kind(), "bad-arguments");
    assert!(err.to_string().contains("takes 1 argument, got 0"), "{err}");
    let err = host
        .call(&counter, "add", vec![Val::String("five".into())])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("argument `amount`: expected u64"),
        "{err}"
    );
    // The actor was never activated for the bad calls.
    assert!(!host.is_active(&counter));
    still_serving(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_ends_only_that_activation_and_carries_the_guest_panic() {
    let host = common::host();
    let actor = probe("trap");
    host.call(&actor, "remember", vec![Val::String("before".into())])
        .await
        .unwrap();
    let err = host
        .call(
            &actor,
            "fail",
            vec![Val::String("the dragon ate my save".into())],
        )
        .await
        .unwrap_err();
    let CallError::Failed(ActorFailure::Trapped {
        ref reason,
        ref backtrace,
        ..
    }) = err
    else {
        panic!("expected a trap, got {err}")
    };
    assert!(
        reason.contains("the dragon ate my save"),
        "the panic message reaches the caller: {reason}"
    );
    assert!(
        backtrace.as_deref().unwrap_or_default().contains("fail"),
        "backtrace: {backtrace:?}"
    );
    assert!(
        err.to_string()
            .starts_with("actor probe/trap trapped in `fail`"),
        "{err}"
    );
    // The next call reactivates the actor: fresh memory, state intact.
    assert_eq!(
        host.call(&actor, "recall", vec![]).await.unwrap(),
        Some(Val::Option(None))
    );
    still_serving(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_never_ends_is_stopped_at_its_deadline() {
    let host = common::host();
    let actor = probe("loop");
    let err = host.call(&actor, "spin", vec![]).await.unwrap_err();
    assert_eq!(err.kind(), "deadline-exceeded");
    assert!(
        err.to_string()
            .contains("ran past its turn deadline of 1.5s in `spin`"),
        "{err}"
    );
    assert!(host.call(&actor, "recall", vec![]).await.is_ok());
    still_serving(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hungry_actor_hits_its_limit_alone() {
    let host = common::host();
    let actor = probe("hog");
    // 4 MiB fits in the 32 MiB test limit; 64 MiB does not.
    assert_eq!(
        host.call(&actor, "hog", vec![Val::U32(4)]).await.unwrap(),
        Some(Val::U64(4 << 20))
    );
    let err = host
        .call(&actor, "hog", vec![Val::U32(64)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "out-of-memory", "{err}");
    assert!(err.to_string().contains("the limit is 33554432"), "{err}");
    assert_eq!(
        host.call(&actor, "hog", vec![Val::U32(1)]).await.unwrap(),
        Some(Val::U64(1 << 20))
    );
    still_serving(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_foreign_wasm_files_are_rejected_by_name() {
    let dir = common::plugin_dir(&["counter"]);
    std::fs::write(dir.path().join("garbage.wasm"), b"this is not wasm at all").unwrap();
    // A valid core module, not a component.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    // A valid but empty component: no actor interface, no lifecycle.
    std::fs::write(dir.path().join("empty.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    // A truncated copy of a real plugin.
    let real = std::fs::read(common::plugin("probe")).unwrap();
    std::fs::write(dir.path().join("truncated.wasm"), &real[..real.len() / 2]).unwrap();

    let host =
        grove_host::Host::new(common::config(), grove_host::state::StateStore::memory()).unwrap();
    let (loaded, rejected) = host.load_plugin_dir(dir.path()).unwrap();
    assert_eq!(
        loaded
            .iter()
            .map(|p| p.actor_type.as_str())
            .collect::<Vec<_>>(),
        ["counter"]
    );
    let messages: Vec<String> = rejected.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    let find = |file: &str| {
        messages
            .iter()
            .find(|m| m.contains(file))
            .unwrap_or_else(|| panic!("{file} not reported"))
    };
    assert!(find("core.wasm").contains("core WebAssembly module"));
    assert!(find("empty.wasm").contains("not a Grove actor plugin"));
    assert!(find("garbage.wasm").contains("not a valid WebAssembly component"));
    assert!(find("truncated.wasm").contains("not a valid WebAssembly component"));
    assert_eq!(host.rejected().len(), 4);
    let counter = ActorRef::new("counter", "1");
    assert_eq!(
        host.call(&counter, "add", vec![Val::U64(2)]).await.unwrap(),
        Some(Val::U64(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_plugin_for_the_same_actor_type_is_rejected() {
    let host = common::host();
    let err = host.load_plugin(&common::plugin("counter")).unwrap_err();
    assert!(
        err.to_string()
            .contains("actor type `counter` is already provided by"),
        "{err}"
    );
    still_serving(&host).await;
}
