//! Host bindings of the `grove:actor` contract (`wit/actor`), generated once
//! here: the `host` imports guests call ([`crate::imports`] implements them)
//! and the WIT types both sides share, such as `disconnect-reason`.

wasmtime::component::bindgen!({
    path: "../../wit/actor",
    world: "imports",
    imports: { default: async | trappable },
});

pub(crate) use grove::actor::types::DisconnectReason;
