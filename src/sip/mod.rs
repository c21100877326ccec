//! SIP, in the layers of RFC 3261, sans I/O except [`transport`]:
//!
//! - [`syntax`]: the grammar of the header values sipdesk reads;
//! - [`wire`]: framing, normalisation and validation around `rsip`, the message model;
//! - [`message`]: validated requests and responses, building responses, encoding.

pub mod message;
pub mod peer;
pub mod policy;
pub mod syntax;
pub mod transaction;
pub mod transport;
pub mod wire;
