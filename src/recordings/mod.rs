//! Voicemail recordings after the call: how helpdesks get them and how long sipdesk keeps them.
//! The recording itself is made by [`crate::media`]; the call record names its file
//! ([`crate::call::Voicemail`]).
//!
//! - Helpdesks that take a file get the file (Zendesk uploads, Help Scout attachments, a webhook
//!   with `inline_audio`); the others get a signed, expiring link ([`link`]) to sipdesk's admin
//!   HTTP server (`GET /voicemail/{id}.wav`), reached by helpdesk users at `[media] public_url`
//!   through a reverse proxy. Without `public_url` there are no links: the note says a voicemail
//!   was left and how long it is.
//! - The links are signed with the media key, `<state_directory>/media.key`: 32 random bytes,
//!   made (mode 0600) the first time a link is made or checked. Whoever makes it first wins; the
//!   others read it. Deleting the file makes every link given so far stop working.
//! - The file is found through the call record in the store, never through a path from a URL.
//!   A recording that is gone when a delivery needs it fails that delivery for good with a
//!   reason that says so ([`Missing`]), never a panic.
//! - Recordings older than `[media] retention` are removed ([`retention`]) once every delivery of
//!   their call is done or skipped; a failed delivery keeps its recording, since an admin may
//!   retry it.

pub mod link;
pub mod retention;

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;

use crate::call::CallRecord;
use crate::config::Config;

/// The content type of a recording (8 kHz 16-bit mono PCM WAV).
pub const CONTENT_TYPE: &str = "audio/wav";

/// The name of the media key's file in the state directory.
pub const KEY_FILE: &str = "media.key";

/// What links and retention need of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recordings {
    state_directory: PathBuf,
    public_url: Option<String>,
    link_lifetime: Duration,
    retention: Duration,
}

/// Why the media key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the media key {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the media key {path} holds {len} bytes, fewer than {min}: delete it and sipdesk makes a new one (links given so far stop working)"
    )]
    TooShort {
        path: String,
        len: usize,
        min: usize,
    },
}

/// A recording that is not where its call record says.
#[derive(Debug, thiserror::Error)]
#[error("the recording {path} was removed or cannot be read ({reason})")]
pub struct Missing {
    pub path: String,
    pub reason: String,
}

/// A link to a recording, and until when it works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub url: String,
    pub expires: Timestamp,
}

/// A recording read for a helpdesk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audio {
    /// The name helpdesks show: `voicemail-<call id>.wav`.
    pub file_name: String,
    pub bytes: Vec<u8>,
}

impl Recordings {
    pub fn of(config: &Config) -> Recordings {
        Recordings {
            state_directory: config.database.state_directory.clone(),
            public_url: config.media.public_url.clone(),
            link_lifetime: config.media.link_lifetime,
            retention: config.media.retention,
        }
    }

    /// Whether links are made at all (`[media] public_url` is set).
    pub fn links(&self) -> bool {
        self.public_url.is_some()
    }

    /// How long a recording is kept once its deliveries are done.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    fn key_path(&self) -> PathBuf {
        self.state_directory.join(KEY_FILE)
    }

    /// The media key, made when there is none yet.
    pub fn key(&self) -> Result<Vec<u8>, KeyError> {
        let path = self.key_path();
        let fail = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let key = match std::fs::read(&path) {
            Ok(key) => key,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => make_key(&path).map_err(fail)?,
            Err(e) => return Err(fail(e)),
        };
        if key.len() < link::MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                path: path.display().to_string(),
                len: key.len(),
                min: link::MIN_KEY_BYTES,
            });
        }
        Ok(key)
    }

    /// A link to `call_id`'s recording that works for `link_lifetime` from `now`; `None`
    /// without `public_url`.
    pub fn link(&self, call_id: &str, now: Timestamp) -> Result<Option<Link>, KeyError> {
        let Some(base) = &self.public_url else {
            return Ok(None);
        };
        let key = self.key()?;
        let lifetime = i64::try_from(self.link_lifetime.as_secs()).unwrap_or(i64::MAX);
        let expires = now.as_second().saturating_add(lifetime);
        let expires = Timestamp::from_second(expires).unwrap_or(Timestamp::MAX);
        Ok(Some(Link {
            url: link::url(base, &key, call_id, expires.as_second()),
            expires,
        }))
    }

    /// Whether a link's query opens `call_id`'s recording at `now`.
    pub fn check(
        &self,
        call_id: &str,
        expires: &str,
        signature: &str,
        now: Timestamp,
    ) -> Result<Result<(), link::Refused>, KeyError> {
        let key = self.key()?;
        Ok(link::check(&key, call_id, expires, signature, now))
    }
}

/// Makes a new random key at `path`, or reads the one another thread made first: the key is
/// written whole to a file of its own, then linked into place, so nobody reads half a key.
fn make_key(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let temporary =
        path.with_extension(format!("key.{}.{}", std::process::id(), fastrand::u64(..)));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    let written = file.write_all(&key).and_then(|()| file.sync_all());
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}

/// The recording of a call, read whole (off the async threads); `Ok(None)` for a call without
/// one.
pub async fn audio(call: &CallRecord) -> Result<Option<Audio>, Missing> {
    let Some(voicemail) = &call.voicemail else {
        return Ok(None);
    };
    let path = voicemail.file.clone();
    let read = tokio::task::spawn_blocking(move || std::fs::read(path)).await;
    let missing = |reason: String| Missing {
        path: voicemail.file.clone(),
        reason,
    };
    match read {
        Ok(Ok(bytes)) => Ok(Some(Audio {
            file_name: voicemail.file_name(&call.id),
            bytes,
        })),
        Ok(Err(e)) => Err(missing(e.to_string())),
        Err(e) => Err(missing(e.to_string())),
    }
}

/// The recording of a call, opened for streaming, with its length in bytes; `Ok(None)` for a
/// call without one.
pub async fn open(call: &CallRecord) -> Result<Option<(tokio::fs::File, u64, String)>, Missing> {
    let Some(voicemail) = &call.voicemail else {
        return Ok(None);
    };
    let missing = |e: std::io::Error| Missing {
        path: voicemail.file.clone(),
        reason: e.to_string(),
    };
    let file = tokio::fs::File::open(&voicemail.file)
        .await
        .map_err(missing)?;
    let size = file.metadata().await.map_err(missing)?.len();
    Ok(Some((file, size, voicemail.file_name(&call.id))))
}

/// The size of a call's recording in bytes, read from the file system without reading the
/// file; `Ok(None)` for a call without one.
pub async fn size(call: &CallRecord) -> Result<Option<u64>, Missing> {
    let Some(voicemail) = &call.voicemail else {
        return Ok(None);
    };
    match tokio::fs::metadata(&voicemail.file).await {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) => Err(Missing {
            path: voicemail.file.clone(),
            reason: e.to_string(),
        }),
    }
}

/// A size for people: `9.5 MB` (decimal megabytes, as the vendors state their limits).
pub fn size_text(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// A recording's length for people: `42s`, `1m 05s`.
pub fn duration_text(duration_ms: u64) -> String {
    let seconds = (duration_ms + 500) / 1000;
    if seconds >= 60 {
        format!("{}m {:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recordings(directory: &Path, public_url: Option<&str>) -> Recordings {
        Recordings {
            state_directory: directory.to_path_buf(),
            public_url: public_url.map(str::to_owned),
            link_lifetime: Duration::from_secs(3600),
            retention: Duration::from_secs(86400),
        }
    }

    #[test]
    fn the_key_is_made_once_private_and_then_read() {
        use std::os::unix::fs::PermissionsExt;
        let directory = std::env::temp_dir().join(format!("sipdesk-key-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&directory).unwrap();
        let r = recordings(&directory, Some("https://sipdesk.example.com"));
        let first = r.key().unwrap();
        assert_eq!(first.len(), 32);
        let mode = std::fs::metadata(directory.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(r.key().unwrap(), first);
        let now = Timestamp::from_second(1_000).unwrap();
        let made = r.link("c1", now).unwrap().unwrap();
        assert_eq!(made.expires.as_second(), 4_600);
        let query = made.url.split_once('?').unwrap().1;
        let signature = query.split_once("signature=").unwrap().1;
        assert_eq!(r.check("c1", "4600", signature, now).unwrap(), Ok(()));
        assert!(
            recordings(&directory, None)
                .link("c1", now)
                .unwrap()
                .is_none()
        );
        std::fs::write(directory.join(KEY_FILE), b"short").unwrap();
        assert!(matches!(r.key(), Err(KeyError::TooShort { len: 5, .. })));
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(12_400), "12s");
        assert_eq!(duration_text(65_000), "1m 05s");
    }
}
