//! Media for the calls sipdesk answers itself (voicemail, issue 11): the formats, with no I/O
//! and no clock, so the RTP session that uses them stays a thin loop around sockets.
//!
//! - [`g711`]: μ-law and A-law companding (PCMU and PCMA);
//! - [`sdp`]: reading the caller's SDP offer, choosing the codec, writing the answer;
//! - [`wav`]: reading greeting files, writing recordings;
//! - [`resample`]: greetings at any rate from 8 to 48 kHz down to G.711's 8 kHz;
//! - [`greeting`]: a group's greeting file, checked and converted once to both laws.

pub mod g711;
pub mod greeting;
pub mod resample;
pub mod sdp;
pub mod wav;
