//! WAV files (RIFF/WAVE): reading the greetings admins record, in the formats audio editors and
//! PBX tools save, and writing the callers' recordings.
//!
//! Read: PCM 8-bit (unsigned) and 16-bit (signed, little-endian), G.711 A-law (format 6) and
//! μ-law (7), each also inside WAVE_FORMAT_EXTENSIBLE; mono or stereo (mixed to mono); 8000 to
//! 48000 Hz. Anything else is refused with a message that says what to save instead.
//!
//! Decisions on damaged or unusual files:
//! - chunks other than `fmt ` and `data` (`LIST`, `fact`, `cue `…) are skipped, honouring the pad
//!   byte after an odd-sized chunk; the walk stops once both are found, so trailing metadata
//!   cannot spoil a good file;
//! - the RIFF header's size is not trusted (streaming writers leave it wrong): chunks are walked
//!   to the end of the file;
//! - a chunk that claims more bytes than the file holds is an error: a truncated greeting would
//!   otherwise play cut off with nothing telling the admin why. The exception is a `data` size
//!   of 0xFFFFFFFF, the "length unknown" mark of streaming writers (and of [`WavWriter`] before it
//!   is finalised), which means "to the end of the file";
//! - a partial last frame (a stereo frame missing its right sample, an odd byte of 16-bit
//!   audio) is dropped: it is less than one sample period.
//!
//! Written: 8 kHz mono 16-bit PCM, the plainest WAV every player and helpdesk preview reads.

use std::io::{self, Seek, SeekFrom, Write};
use std::time::Duration;

use super::resample;

/// How a WAV file's samples are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// 8-bit unsigned PCM (128 is silence).
    Pcm8,
    /// 16-bit signed little-endian PCM.
    Pcm16,
    /// G.711 A-law.
    Alaw,
    /// G.711 μ-law.
    Mulaw,
}

/// The audio format a WAV file declares in its `fmt ` chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub encoding: Encoding,
    /// 1 or 2.
    pub channels: u16,
    /// 8000 to 48000 Hz.
    pub sample_rate: u32,
}

/// A WAV file's audio: mono linear samples at the file's own rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wav {
    /// What the file held.
    pub format: Format,
    /// Stereo files are mixed down to the average of both channels.
    pub samples: Vec<i16>,
}

impl Wav {
    /// How long the audio plays.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.format.sample_rate))
    }

    /// The audio at 8 kHz, ready to be G.711 encoded (see [`resample`]).
    pub fn to_8khz(&self) -> Vec<i16> {
        resample::to_8khz(&self.samples, self.format.sample_rate)
    }
}

/// Why a file is not a WAV file sipdesk can play.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a WAV file (no RIFF header)")]
    NotRiff,
    #[error("not a WAV file (a RIFF file of type \"{form}\")")]
    NotWave { form: String },
    #[error(
        "the file is truncated: its \"{chunk}\" chunk declares {declared} bytes but only {available} follow"
    )]
    Truncated {
        chunk: String,
        declared: u32,
        available: usize,
    },
    #[error("no \"fmt \" chunk: the file does not say how its audio is encoded")]
    NoFormat,
    #[error("no \"data\" chunk: the file holds no audio")]
    NoData,
    #[error("the \"fmt \" chunk is {len} bytes, too short for {needed}")]
    FormatTooShort { len: usize, needed: &'static str },
    #[error(
        "{} audio (format tag {tag:#06x}) is not supported; save it as 16-bit PCM",
        encoding_name(*.tag)
    )]
    UnsupportedEncoding { tag: u16 },
    #[error("WAVE_FORMAT_EXTENSIBLE sub-format {guid} is not supported; save it as 16-bit PCM")]
    UnsupportedSubformat { guid: String },
    #[error("{bits}-bit PCM is not supported; save it as 16-bit PCM")]
    UnsupportedBits { bits: u16 },
    #[error("{bits}-bit {law} is not G.711, which has 8 bits per sample; save it as 16-bit PCM")]
    G711Bits { bits: u16, law: &'static str },
    #[error("{channels} channels: only mono or stereo audio is supported")]
    Channels { channels: u16 },
    #[error(
        "{} {rate} Hz: the sample rate must be 8000 to 48000 Hz",
        channel_name(*.channels)
    )]
    SampleRate { channels: u16, rate: u32 },
    #[error(
        "the \"fmt \" chunk says {declared} bytes per frame, but {} {bits}-bit audio takes {expected}",
        channel_name(*.channels)
    )]
    BlockAlign {
        declared: u16,
        expected: u16,
        channels: u16,
        bits: u16,
    },
}

fn encoding_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => "Microsoft ADPCM",
        0x0003 => "floating-point",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG",
        0x0055 => "MP3",
        _ => "this",
    }
}

fn channel_name(channels: u16) -> &'static str {
    if channels == 1 { "mono" } else { "stereo" }
}

const FORMAT_PCM: u16 = 0x0001;
const FORMAT_ALAW: u16 = 0x0006;
const FORMAT_MULAW: u16 = 0x0007;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// The part of a KSDATAFORMAT_SUBTYPE GUID after its first two bytes, which hold the format tag:
/// `xxxx0000-0000-0010-8000-00AA00389B71`, as stored (the first three fields little-endian).
const SUBTYPE_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];
/// A chunk size meaning "to the end of the file".
const UNKNOWN_SIZE: u32 = 0xFFFF_FFFF;
const MIN_RATE: u32 = 8000;
const MAX_RATE: u32 = 48000;

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A four-character code as text, escaping bytes that are not printable ASCII.
fn fourcc(id: &[u8]) -> String {
    id.iter()
        .flat_map(|b| b.escape_ascii())
        .map(char::from)
        .collect()
}

/// Reads a WAV file held in memory.
pub fn read(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" {
        return Err(WavError::NotRiff);
    }
    if &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave {
            form: fourcc(&bytes[8..12]),
        });
    }
    let mut fmt = None;
    let mut data = None;
    let mut at = 12;
    while bytes.len() - at >= 8 && (fmt.is_none() || data.is_none()) {
        let id = &bytes[at..at + 4];
        let declared = u32_at(bytes, at + 4);
        let start = at + 8;
        let available = bytes.len() - start;
        let size = if id == b"data" && declared == UNKNOWN_SIZE {
            available
        } else {
            match usize::try_from(declared) {
                Ok(size) if size <= available => size,
                _ => {
                    return Err(WavError::Truncated {
                        chunk: fourcc(id),
                        declared,
                        available,
                    });
                }
            }
        };
        let body = &bytes[start..start + size];
        match id {
            b"fmt " if fmt.is_none() => fmt = Some(body),
            b"data" if data.is_none() => data = Some(body),
            _ => {}
        }
        // An odd-sized chunk is followed by a pad byte, which may be missing at the very end.
        at = (start + size + size % 2).min(bytes.len());
    }
    let format = format(fmt.ok_or(WavError::NoFormat)?)?;
    let data = data.ok_or(WavError::NoData)?;
    Ok(Wav {
        format,
        samples: decode(format, data),
    })
}

/// Checks a `fmt ` chunk.
fn format(fmt: &[u8]) -> Result<Format, WavError> {
    if fmt.len() < 16 {
        return Err(WavError::FormatTooShort {
            len: fmt.len(),
            needed: "an audio format",
        });
    }
    let mut tag = u16_at(fmt, 0);
    let channels = u16_at(fmt, 2);
    let sample_rate = u32_at(fmt, 4);
    let block_align = u16_at(fmt, 12);
    let bits = u16_at(fmt, 14);
    if tag == FORMAT_EXTENSIBLE {
        // cbSize, valid bits, channel mask, then the sub-format GUID at 24..40.
        if fmt.len() < 40 || u16_at(fmt, 16) < 22 {
            return Err(WavError::FormatTooShort {
                len: fmt.len(),
                needed: "WAVE_FORMAT_EXTENSIBLE",
            });
        }
        let guid = &fmt[24..40];
        if guid[2..] != SUBTYPE_TAIL {
            return Err(WavError::UnsupportedSubformat {
                guid: format_guid(guid),
            });
        }
        tag = u16_at(guid, 0);
    }
    let encoding = match (tag, bits) {
        (FORMAT_PCM, 8) => Encoding::Pcm8,
        (FORMAT_PCM, 16) => Encoding::Pcm16,
        (FORMAT_PCM, bits) => return Err(WavError::UnsupportedBits { bits }),
        (FORMAT_ALAW, 8) => Encoding::Alaw,
        (FORMAT_MULAW, 8) => Encoding::Mulaw,
        (FORMAT_ALAW, bits) => return Err(WavError::G711Bits { bits, law: "A-law" }),
        (FORMAT_MULAW, bits) => {
            return Err(WavError::G711Bits {
                bits, law: "μ-law"
            });
        }
        (tag, _) => return Err(WavError::UnsupportedEncoding { tag }),
    };
    if !(1..=2).contains(&channels) {
        return Err(WavError::Channels { channels });
    }
    if !(MIN_RATE..=MAX_RATE).contains(&sample_rate) {
        return Err(WavError::SampleRate {
            channels,
            rate: sample_rate,
        });
    }
    let expected = channels * (bits / 8);
    if block_align != expected {
        return Err(WavError::BlockAlign {
            declared: block_align,
            expected,
            channels,
            bits,
        });
    }
    Ok(Format {
        encoding,
        channels,
        sample_rate,
    })
}

/// A GUID as usually written: the first three fields are stored little-endian.
fn format_guid(guid: &[u8]) -> String {
    format!(
        "{{{:08X}-{:04X}-{:04X}-{}-{}}}",
        u32_at(guid, 0),
        u16_at(guid, 4),
        u16_at(guid, 6),
        hex(&guid[8..10]),
        hex(&guid[10..16])
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Decodes whole frames to mono linear samples.
fn decode(format: Format, data: &[u8]) -> Vec<i16> {
    let width = match format.encoding {
        Encoding::Pcm16 => 2,
        Encoding::Pcm8 | Encoding::Alaw | Encoding::Mulaw => 1,
    };
    let sample = |bytes: &[u8]| -> i32 {
        match format.encoding {
            Encoding::Pcm8 => (i32::from(bytes[0]) - 128) << 8,
            Encoding::Pcm16 => i32::from(i16::from_le_bytes([bytes[0], bytes[1]])),
            Encoding::Alaw => i32::from(super::g711::alaw_decode(bytes[0])),
            Encoding::Mulaw => i32::from(super::g711::ulaw_decode(bytes[0])),
        }
    };
    let channels = usize::from(format.channels);
    data.chunks_exact(width * channels)
        .map(|frame| {
            let sum: i32 = frame.chunks_exact(width).map(&sample).sum();
            // The mean of at most two i16 values fits an i16.
            (sum / channels as i32) as i16
        })
        .collect()
}

/// The sample rate of recordings.
const WRITE_RATE: u32 = resample::RATE;
/// The header [`WavWriter`] writes: RIFF, WAVE, a 16-byte `fmt ` chunk and the `data` header.
const HEADER_LEN: u64 = 44;
/// The most audio bytes a RIFF file's 32-bit sizes can describe.
const MAX_DATA: u64 = u32::MAX as u64 - (HEADER_LEN - 8);

/// Why a recording could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WavWriteError {
    #[error("cannot write the WAV file: {0}")]
    Io(#[from] io::Error),
    #[error("the recording exceeds the 4 GiB a WAV file can hold")]
    TooLarge,
}

/// Writes an 8 kHz mono 16-bit PCM WAV file as the audio arrives.
///
/// The header is written first with both sizes set to "unknown" (0xFFFFFFFF), so a file left
/// behind by a crash still plays to its end in tools that honour that mark (and in [`read`]);
/// [`WavWriter::finalize`] writes the real sizes.
pub struct WavWriter<W: Write + Seek> {
    inner: W,
    start: u64,
    data_len: u64,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Writes the header at the current position of `inner`.
    pub fn create(mut inner: W) -> Result<WavWriter<W>, WavWriteError> {
        let start = inner.stream_position()?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(b"RIFF");
        header.extend_from_slice(&UNKNOWN_SIZE.to_le_bytes());
        header.extend_from_slice(b"WAVEfmt ");
        header.extend_from_slice(&16u32.to_le_bytes());
        header.extend_from_slice(&FORMAT_PCM.to_le_bytes());
        header.extend_from_slice(&1u16.to_le_bytes()); // mono
        header.extend_from_slice(&WRITE_RATE.to_le_bytes());
        header.extend_from_slice(&(WRITE_RATE * 2).to_le_bytes()); // bytes per second
        header.extend_from_slice(&2u16.to_le_bytes()); // bytes per frame
        header.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
        header.extend_from_slice(b"data");
        header.extend_from_slice(&UNKNOWN_SIZE.to_le_bytes());
        inner.write_all(&header)?;
        Ok(WavWriter {
            inner,
            start,
            data_len: 0,
        })
    }

    /// Appends samples. Nothing is written if they would take the file past the RIFF limit.
    pub fn append(&mut self, samples: &[i16]) -> Result<(), WavWriteError> {
        let len = samples.len() as u64 * 2;
        if self.data_len + len > MAX_DATA {
            return Err(WavWriteError::TooLarge);
        }
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.inner.write_all(&bytes)?;
        self.data_len += len;
        Ok(())
    }

    /// How long the audio written so far plays.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.data_len / 2 * 1000 / u64::from(WRITE_RATE))
    }

    /// Writes the real sizes into the header, leaves the position at the end of the audio and
    /// gives back the writer.
    pub fn finalize(mut self) -> Result<W, WavWriteError> {
        // Both fit in u32: `append` keeps data_len within MAX_DATA.
        let riff_len = (self.data_len + HEADER_LEN - 8) as u32;
        let data_len = self.data_len as u32;
        self.inner.seek(SeekFrom::Start(self.start + 4))?;
        self.inner.write_all(&riff_len.to_le_bytes())?;
        self.inner
            .seek(SeekFrom::Start(self.start + HEADER_LEN - 4))?;
        self.inner.write_all(&data_len.to_le_bytes())?;
        self.inner
            .seek(SeekFrom::Start(self.start + HEADER_LEN + self.data_len))?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests;
