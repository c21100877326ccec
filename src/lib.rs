//! sipdesk routes the calls of a PBX's queue numbers to agents over SIP, follows each call to its
//! outcome and reports it to helpdesks as tickets. `DESIGN.md`-level decisions live in the module
//! docs below; the binary (`src/main.rs`) is a thin command line over this library.
//!
//! # Layout
//!
//! - [`config`]: the TOML file admins edit, checked into settings with located errors;
//! - [`routing`]: pure decision of where a call goes (schedules, holidays, round-robin, overflow)
//!   with an explanation;
//! - [`phone`]: phone numbers to E.164.
//!
//! Dependency direction: `routing` and `phone` do no I/O; `config` reads one file and builds
//! `routing`'s types.

pub mod call;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod directory;
pub mod helpdesk;
pub mod phone;
pub mod proxy;
pub mod routing;
pub mod sip;
pub mod store;
pub mod tickets;
