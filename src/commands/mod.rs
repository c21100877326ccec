//! The commands that read or change the store, one module each; `run` and `check-config` live in
//! `main.rs`.

pub(crate) mod agents;
pub(crate) mod calls;
pub(crate) mod deliveries;
pub(crate) mod route;
