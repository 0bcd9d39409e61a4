//! Component values at Grove's edges.
//!
//! An actor's functions take and return component-model values, which the
//! host holds as wasmtime's dynamic [`Val`](wasmtime::component::Val)s, each
//! described by a [`Type`](wasmtime::component::Type) read from the plugin.
//! Wherever such a value leaves or enters the host it takes another form, and
//! this crate holds those forms, all driven by the WIT type:
//!
//! * [`check`]: whether a value fits a type, before it reaches a guest;
//! * [`json`]: the HTTP API's JSON, and [`schema`]: its JSON Schemas;
//! * [`wave`]: WAVE text, for the CLI and for people;
//! * [`wire`]: a compact binary encoding (the component model's value
//!   encoding as wRPC defines it) for values that travel between machines.
//!
//! Nothing here needs a [`Store`](wasmtime::Store): the functions work on
//! plain values and types, so they run on any thread, and values that hold
//! guest handles (resources, futures, streams, error contexts) are refused
//! rather than converted.

pub mod check;
pub mod json;
pub mod schema;
pub mod size;
pub mod wave;
pub mod wire;
