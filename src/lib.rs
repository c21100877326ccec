//! sipdesk routes the calls of a PBX's queue numbers to agents over SIP, follows each call to its
//! outcome and reports it to helpdesks as tickets. `DESIGN.md`-level decisions live in the module
//! docs below; the binary (`src/main.rs`) is a thin command line over this library.
//!
//! # Layout
//!
//! - [`config`]: the TOML file admins edit, checked into settings with located errors;
//! - [`routing`]: pure decision of where a call goes (schedules, holidays, round-robin, overflow)
//!   with an explanation;
//! - [`phone`]: phone numbers to E.164;
//! - [`sip`]: SIP messages (parsing around rsip), transactions (sans-io) and transports;
//! - [`proxy`]: call control (sans-io): forking to agents one at a time, outcomes, agent states;
//! - [`call`]: the call record and events the proxy produces;
//! - [`media`]: voicemail's formats: G.711, SDP offer/answer, WAV greetings and recordings;
//! - [`store`]: SQLite/PostgreSQL: calls, cursors, agent states, the outbox, the contact
//!   directory; a background writer;
//! - [`tickets`]: pure ticket rules: whether a call is logged, which ticket, what is written;
//! - [`directory`]: routing's in-memory view of what helpdesks said about callers;
//! - [`helpdesk`]: connectors over HTTPS (Zendesk), with pacing and error classification;
//! - [`delivery`]: the outbox worker that carries deliveries out;
//! - [`recordings`]: voicemails after the call: signed links, the files helpdesks get, retention;
//! - [`control`]: the seam into the running proxy (commands with replies);
//! - [`admin`]: the HTTP API on loopback (health, ending stuck calls);
//! - [`daemon`]: the wiring: threads, signals, systemd notifications;
//! - [`report`]: errors as logs show them, with every cause.
//!
//! Dependency direction: `routing`, `phone`, `tickets`, `media` (but for reading a greeting file)
//! and the sans-io parts of `sip` and `proxy` do no I/O; `sip` and `proxy` know nothing of
//! helpdesks or the store (the proxy emits changes, the daemon hands them to the store);
//! `helpdesk` knows nothing of SIP; only `daemon` (and `main`) see everything.

pub mod admin;
pub mod call;
pub mod config;
pub mod control;
pub mod daemon;
pub mod delivery;
pub mod directory;
pub mod figures;
pub mod helpdesk;
pub mod live;
pub mod media;
pub mod metrics;
pub mod phone;
pub mod proxy;
pub mod recordings;
pub mod replies;
pub mod report;
pub mod routing;
pub mod sip;
pub mod store;
pub mod tickets;
