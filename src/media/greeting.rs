//! Greetings: the WAV files a group plays before recording a voicemail, loaded and converted
//! once (when the configuration is checked or loaded), never per call.
//!
//! A greeting is held as 8 kHz G.711 in both laws, so whichever codec a call negotiates, its
//! packets are slices of ready bytes (160 per 20 ms). A file already in one law at 8 kHz reaches
//! that law unchanged (every A-law code, and every μ-law code but negative zero, survives the
//! decode and re-encode); the other law and other formats go through 16-bit linear audio.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::g711::Law;
use super::resample::RATE;
use super::wav::{self, Format, WavError};

/// A greeting ready to be played. Its `Debug` shows the format, the length and a fingerprint of
/// the audio, not the audio (the configuration is compared by `Debug` on reload).
#[derive(Clone, PartialEq, Eq)]
pub struct Greeting {
    source: Format,
    pcmu: Vec<u8>,
    pcma: Vec<u8>,
}

/// Why a greeting file cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum GreetingError {
    #[error("cannot read greeting {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("greeting {}: {source}", path.display())]
    Wav { path: PathBuf, source: WavError },
    #[error("greeting {} holds no audio", path.display())]
    Empty { path: PathBuf },
    #[error("greeting {} is too long ({why}); a greeting plays at most {} s", path.display(), LONGEST.as_secs())]
    TooLong { path: PathBuf, why: String },
}

/// The longest greeting, and the largest file read for one (a minute of 48 kHz 16-bit stereo
/// is 11 MB): greetings are loaded whole and converted when the configuration loads.
pub const LONGEST: Duration = Duration::from_secs(120);
const LARGEST_FILE: u64 = 64 * 1024 * 1024;

impl std::fmt::Debug for Greeting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::hash::{Hash, Hasher};
        let mut hasher = rustc_hash::FxHasher::default();
        self.pcmu.hash(&mut hasher);
        f.debug_struct("Greeting")
            .field("source", &self.source)
            .field("duration", &self.duration())
            .field("fingerprint", &format_args!("{:016x}", hasher.finish()))
            .finish()
    }
}

impl Greeting {
    /// Reads and converts a greeting file; what `check-config` and the configuration call.
    pub fn load(path: &Path) -> Result<Greeting, GreetingError> {
        let size = std::fs::metadata(path)
            .map_err(|source| GreetingError::Read {
                path: path.to_owned(),
                source,
            })?
            .len();
        if size > LARGEST_FILE {
            return Err(GreetingError::TooLong {
                path: path.to_owned(),
                why: format!("a file of {} MB", size / (1024 * 1024)),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| GreetingError::Read {
            path: path.to_owned(),
            source,
        })?;
        match Greeting::from_wav(&bytes) {
            Ok(Some(greeting)) if greeting.duration() > LONGEST => Err(GreetingError::TooLong {
                path: path.to_owned(),
                why: format!("{} s", greeting.duration().as_secs()),
            }),
            Ok(Some(greeting)) => Ok(greeting),
            Ok(None) => Err(GreetingError::Empty {
                path: path.to_owned(),
            }),
            Err(source) => Err(GreetingError::Wav {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Converts a WAV file held in memory; `None` when it holds no audio.
    pub fn from_wav(bytes: &[u8]) -> Result<Option<Greeting>, WavError> {
        let wav = wav::read(bytes)?;
        let samples = wav.to_8khz();
        if samples.is_empty() {
            return Ok(None);
        }
        Ok(Some(Greeting {
            source: wav.format,
            pcmu: Law::Mu.encode_all(&samples),
            pcma: Law::A.encode_all(&samples),
        }))
    }

    /// A greeting from 8 kHz linear samples (made by sipdesk itself, or in tests).
    pub fn from_samples(samples: &[i16]) -> Greeting {
        Greeting {
            source: Format {
                encoding: wav::Encoding::Pcm16,
                channels: 1,
                sample_rate: RATE,
            },
            pcmu: Law::Mu.encode_all(samples),
            pcma: Law::A.encode_all(samples),
        }
    }

    /// The greeting in one law, one byte per 8 kHz sample.
    pub fn audio(&self, law: Law) -> &[u8] {
        match law {
            Law::Mu => &self.pcmu,
            Law::A => &self.pcma,
        }
    }

    /// How long the greeting plays.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.pcmu.len() as u64 * 1000 / u64::from(RATE))
    }

    /// The format of the file it was read from, for `check-config` to show.
    pub fn source(&self) -> Format {
        self.source
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::media::g711::{alaw_encode, ulaw_encode};
    use crate::media::wav::{Encoding, WavWriter};

    fn pcm16_file(samples: &[i16]) -> Vec<u8> {
        let mut writer = WavWriter::create(Cursor::new(Vec::new())).unwrap();
        writer.append(samples).unwrap();
        writer.finalize().unwrap().into_inner()
    }

    /// An 8 kHz mono G.711 WAV file, as PBX tools save prompts.
    fn g711_file(tag: u16, codes: &[u8]) -> Vec<u8> {
        let mut file = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0".to_vec();
        file.extend_from_slice(&tag.to_le_bytes());
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&8000u32.to_le_bytes());
        file.extend_from_slice(&8000u32.to_le_bytes());
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&8u16.to_le_bytes());
        file.extend_from_slice(b"data");
        file.extend_from_slice(&(codes.len() as u32).to_le_bytes());
        file.extend_from_slice(codes);
        file
    }

    #[test]
    fn an_8khz_pcm_greeting_is_encoded_in_both_laws() {
        let samples: Vec<i16> = (0..1600)
            .map(|i| ((i % 100) * 300 - 15000) as i16)
            .collect();
        let greeting = Greeting::from_wav(&pcm16_file(&samples)).unwrap().unwrap();
        assert_eq!(greeting.duration(), Duration::from_millis(200));
        let mu: Vec<u8> = samples.iter().map(|&s| ulaw_encode(s)).collect();
        let a: Vec<u8> = samples.iter().map(|&s| alaw_encode(s)).collect();
        assert_eq!(greeting.audio(Law::Mu), mu);
        assert_eq!(greeting.audio(Law::A), a);
        assert_eq!(greeting.source().encoding, Encoding::Pcm16);
    }

    #[test]
    fn a_g711_greeting_reaches_its_own_law_unchanged() {
        let codes: Vec<u8> = (0..=255).cycle().take(800).collect();
        let alaw = Greeting::from_wav(&g711_file(6, &codes)).unwrap().unwrap();
        assert_eq!(alaw.audio(Law::A), codes);
        let ulaw = Greeting::from_wav(&g711_file(7, &codes)).unwrap().unwrap();
        let expected: Vec<u8> = codes
            .iter()
            .map(|&c| if c == 0x7F { 0xFF } else { c })
            .collect();
        assert_eq!(ulaw.audio(Law::Mu), expected);
    }

    #[test]
    fn empty_audio_is_not_a_greeting() {
        assert_eq!(Greeting::from_wav(&pcm16_file(&[])).unwrap(), None);
    }

    #[test]
    fn file_errors_name_the_greeting() {
        let dir = std::env::temp_dir().join(format!("sipdesk-greeting-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.wav");
        let error = Greeting::load(&missing).unwrap_err();
        assert!(matches!(error, GreetingError::Read { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot read greeting {}: ", missing.display())),
            "{error}"
        );

        let mp3 = dir.join("soporte.wav");
        std::fs::write(&mp3, b"ID3\x04\0\0\0\0\0\0").unwrap();
        assert_eq!(
            Greeting::load(&mp3).unwrap_err().to_string(),
            format!(
                "greeting {}: not a WAV file (no RIFF header)",
                mp3.display()
            )
        );

        let empty = dir.join("empty.wav");
        std::fs::write(&empty, pcm16_file(&[])).unwrap();
        assert_eq!(
            Greeting::load(&empty).unwrap_err().to_string(),
            format!("greeting {} holds no audio", empty.display())
        );

        let good = dir.join("good.wav");
        std::fs::write(&good, pcm16_file(&[0; 8000])).unwrap();
        assert_eq!(
            Greeting::load(&good).unwrap().duration(),
            Duration::from_secs(1)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_greeting_longer_than_two_minutes_is_refused() {
        let dir = std::env::temp_dir().join(format!("sipdesk-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("long.wav");
        std::fs::write(&path, pcm16_file(&vec![100i16; 8000 * 121])).unwrap();
        let error = Greeting::load(&path).unwrap_err().to_string();
        assert!(error.contains("too long (121 s)"), "{error}");
        std::fs::write(&path, pcm16_file(&vec![100i16; 8000 * 119])).unwrap();
        assert!(Greeting::load(&path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
