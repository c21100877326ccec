//! sipdesk's own voice, for voicemail: the media a call gets when sipdesk answers it itself.
//!
//! - [`session`]: one media session, sans I/O — the greeting and tone paced out as RTP, the
//!   caller's audio put back in order and recorded, and the end of the recording (`#`,
//!   silence, no media, maximum length).
//! - [`dtmf`]: `#` found in band, for phones that send keys as sound.
pub mod dtmf;
pub mod session;
