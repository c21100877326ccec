//! sipdesk's own voice, for voicemail (issue 11): the media a call gets when sipdesk answers it
//! itself. Everything here is free of I/O and of the clock (time is passed in), so the part that
//! owns the sockets stays a thin loop around it.
//!
//! - [`g711`]: μ-law and A-law companding (PCMU and PCMA);
//! - [`sdp`]: reading the caller's SDP offer, choosing the codec, writing the answer;
//! - [`wav`]: reading greeting files, writing recordings;
//! - [`resample`]: greetings at any rate from 8 to 48 kHz down to G.711's 8 kHz;
//! - [`greeting`]: a group's greeting file, checked and converted once to both laws;
//! - [`session`]: one media session — the greeting and tone paced out as RTP, the caller's audio
//!   put back in order and recorded, and the end of the recording (`#`, silence, no media,
//!   maximum length);
//! - [`dtmf`]: `#` found in band, for phones that send keys as sound;
//! - [`runner`]: the I/O around a session — its port, its UDP socket, its recording file.
//!
//! The SIP side (answering the call, hold, BYE) is the proxy's `call::voicemail`; the tasks that
//! run sessions are the daemon's `media`.

pub mod dtmf;
pub mod g711;
pub mod greeting;
pub mod resample;
pub mod runner;
pub mod sdp;
pub mod session;
pub mod wav;
