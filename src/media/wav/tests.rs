use std::io::Cursor;

use proptest::prelude::*;

use super::*;

/// A chunk with its header and, after an odd-sized body, the pad byte.
fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    if body.len() % 2 == 1 {
        out.push(0);
    }
    out
}

fn fmt_body(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
    let block_align = channels * bits.div_ceil(8);
    let mut body = Vec::new();
    body.extend_from_slice(&tag.to_le_bytes());
    body.extend_from_slice(&channels.to_le_bytes());
    body.extend_from_slice(&rate.to_le_bytes());
    body.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    body.extend_from_slice(&block_align.to_le_bytes());
    body.extend_from_slice(&bits.to_le_bytes());
    body
}

/// A WAVE_FORMAT_EXTENSIBLE `fmt ` body whose sub-format GUID is `guid`.
fn extensible_body(guid: [u8; 16], channels: u16, rate: u32, bits: u16) -> Vec<u8> {
    let mut body = fmt_body(FORMAT_EXTENSIBLE, channels, rate, bits);
    body.extend_from_slice(&22u16.to_le_bytes());
    body.extend_from_slice(&bits.to_le_bytes()); // valid bits
    body.extend_from_slice(&(if channels == 1 { 4u32 } else { 3 }).to_le_bytes()); // speakers
    body.extend_from_slice(&guid);
    body
}

fn ksdataformat(tag: u16) -> [u8; 16] {
    let mut guid = [0; 16];
    guid[..2].copy_from_slice(&tag.to_le_bytes());
    guid[2..].copy_from_slice(&SUBTYPE_TAIL);
    guid
}

fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(&body);
    out
}

fn wav_file(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    riff(&[
        chunk(b"fmt ", &fmt_body(tag, channels, rate, bits)),
        chunk(b"data", data),
    ])
}

fn pcm16(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn error(bytes: &[u8]) -> String {
    read(bytes).expect_err("the file is refused").to_string()
}

#[test]
fn pcm16_mono_is_read_sample_for_sample() {
    let samples = [0, 1000, -1000, i16::MAX, i16::MIN];
    let wav = read(&wav_file(1, 1, 8000, 16, &pcm16(&samples))).unwrap();
    assert_eq!(
        wav.format,
        Format {
            encoding: Encoding::Pcm16,
            channels: 1,
            sample_rate: 8000
        }
    );
    assert_eq!(wav.samples, samples);
}

#[test]
fn duration_follows_the_sample_rate() {
    let one_second = pcm16(&vec![7; 22050]);
    let wav = read(&wav_file(1, 1, 22050, 16, &one_second)).unwrap();
    assert_eq!(wav.duration(), Duration::from_secs(1));
    assert_eq!(wav.to_8khz().len(), 8000);
    let stereo_half_second = pcm16(&vec![7; 48000]);
    let wav = read(&wav_file(1, 2, 48000, 16, &stereo_half_second)).unwrap();
    assert_eq!(wav.duration(), Duration::from_millis(500));
    assert_eq!(wav.to_8khz().len(), 4000);
}

#[test]
fn pcm8_is_unsigned_and_scaled_to_16_bits() {
    let wav = read(&wav_file(1, 1, 11025, 8, &[128, 255, 0, 129, 127])).unwrap();
    assert_eq!(wav.format.encoding, Encoding::Pcm8);
    assert_eq!(wav.samples, [0, 32512, -32768, 256, -256]);
}

#[test]
fn stereo_is_mixed_to_the_mean_of_both_channels() {
    let frames = pcm16(&[1000, 3000, i16::MIN, i16::MIN, i16::MAX, i16::MIN, -5, 0]);
    let wav = read(&wav_file(1, 2, 16000, 16, &frames)).unwrap();
    assert_eq!(wav.samples, [2000, i16::MIN, 0, -2]);
    let frames = [128, 255, 0, 0];
    let wav = read(&wav_file(1, 2, 8000, 8, &frames)).unwrap();
    assert_eq!(wav.samples, [16256, -32768]);
}

#[test]
fn g711_files_are_decoded() {
    let wav_a = read(&wav_file(6, 1, 8000, 8, &[0xD5, 0x55, 0xAA])).unwrap();
    assert_eq!(wav_a.format.encoding, Encoding::Alaw);
    assert_eq!(wav_a.samples, [8, -8, 32256]);
    let wav_u = read(&wav_file(7, 1, 8000, 8, &[0xFF, 0x00, 0x80])).unwrap();
    assert_eq!(wav_u.format.encoding, Encoding::Mulaw);
    assert_eq!(wav_u.samples, [0, -32124, 32124]);
    let stereo = read(&wav_file(7, 2, 8000, 8, &[0x80, 0x80, 0x00, 0x80])).unwrap();
    assert_eq!(stereo.samples, [32124, 0]);
}

#[test]
fn extensible_files_are_read_by_their_sub_format() {
    let data = pcm16(&[1, -2, 3]);
    let file = riff(&[
        chunk(b"fmt ", &extensible_body(ksdataformat(1), 1, 44100, 16)),
        chunk(b"data", &data),
    ]);
    let wav = read(&file).unwrap();
    assert_eq!(wav.format.encoding, Encoding::Pcm16);
    assert_eq!(wav.format.sample_rate, 44100);
    assert_eq!(wav.samples, [1, -2, 3]);
    let file = riff(&[
        chunk(b"fmt ", &extensible_body(ksdataformat(6), 2, 8000, 8)),
        chunk(b"data", &[0xD5, 0xD5]),
    ]);
    assert_eq!(read(&file).unwrap().samples, [8]);
}

#[test]
fn unsupported_extensible_sub_formats_are_named() {
    let float = riff(&[
        chunk(b"fmt ", &extensible_body(ksdataformat(3), 1, 48000, 32)),
        chunk(b"data", &[0; 8]),
    ]);
    assert_eq!(
        error(&float),
        "floating-point audio (format tag 0x0003) is not supported; save it as 16-bit PCM"
    );
    // KSDATAFORMAT_SUBTYPE_AMBISONIC_B_FORMAT_PCM, 00000001-0721-11D3-8644-C8C1CA000000.
    let ambisonic = [
        0x01, 0x00, 0x00, 0x00, 0x21, 0x07, 0xD3, 0x11, 0x86, 0x44, 0xC8, 0xC1, 0xCA, 0x00, 0x00,
        0x00,
    ];
    let file = riff(&[
        chunk(b"fmt ", &extensible_body(ambisonic, 1, 48000, 16)),
        chunk(b"data", &[0; 8]),
    ]);
    assert_eq!(
        error(&file),
        "WAVE_FORMAT_EXTENSIBLE sub-format {00000001-0721-11D3-8644-C8C1CA000000} is not supported; save it as 16-bit PCM"
    );
    let mut short = extensible_body(ksdataformat(1), 1, 8000, 16);
    short.truncate(30);
    let file = riff(&[chunk(b"fmt ", &short), chunk(b"data", &[0; 8])]);
    assert_eq!(
        error(&file),
        "the \"fmt \" chunk is 30 bytes, too short for WAVE_FORMAT_EXTENSIBLE"
    );
}

#[test]
fn unknown_chunks_and_odd_padding_are_skipped() {
    let mut info = b"INFO".to_vec();
    info.extend_from_slice(&chunk(b"INAM", b"Soporte\0"));
    let file = riff(&[
        chunk(b"LIST", &info),
        chunk(b"fmt ", &fmt_body(1, 1, 8000, 8)),
        chunk(b"junk", &[1, 2, 3]), // odd: followed by a pad byte
        chunk(b"fact", &3u32.to_le_bytes()),
        chunk(b"data", &[128, 129, 130]), // odd and last: padded too
        chunk(b"LIST", b"INFOtrailing"),
    ]);
    assert_eq!(read(&file).unwrap().samples, [0, 256, 512]);
}

#[test]
fn a_missing_pad_byte_at_the_end_is_tolerated() {
    let mut file = wav_file(1, 1, 8000, 8, &[128, 129, 130]);
    assert_eq!(file.pop(), Some(0));
    assert_eq!(read(&file).unwrap().samples, [0, 256, 512]);
}

#[test]
fn data_may_come_before_fmt() {
    let file = riff(&[
        chunk(b"data", &pcm16(&[5, 6])),
        chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)),
    ]);
    assert_eq!(read(&file).unwrap().samples, [5, 6]);
}

#[test]
fn the_riff_size_is_not_trusted() {
    let mut file = wav_file(1, 1, 8000, 16, &pcm16(&[1, 2, 3]));
    file[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert_eq!(read(&file).unwrap().samples, [1, 2, 3]);
}

#[test]
fn damage_after_the_audio_is_ignored() {
    let mut file = wav_file(1, 1, 8000, 16, &pcm16(&[1, 2, 3]));
    file.extend_from_slice(b"LIST\xff\xff\x00\x00INFO");
    assert_eq!(read(&file).unwrap().samples, [1, 2, 3]);
    file.extend_from_slice(b"xyz"); // less than a chunk header
    assert_eq!(read(&file).unwrap().samples, [1, 2, 3]);
}

#[test]
fn truncated_audio_is_an_error() {
    let mut file = wav_file(1, 1, 8000, 16, &pcm16(&[1, 2, 3, 4]));
    file.truncate(file.len() - 3);
    assert_eq!(
        read(&file),
        Err(WavError::Truncated {
            chunk: "data".into(),
            declared: 8,
            available: 5
        })
    );
    assert_eq!(
        error(&file),
        "the file is truncated: its \"data\" chunk declares 8 bytes but only 5 follow"
    );
}

#[test]
fn a_truncated_chunk_before_the_audio_is_an_error() {
    let file = riff(&[chunk(b"fmt ", &fmt_body(1, 1, 8000, 16))]);
    let mut file = [file, b"LIST\x00\x01\x00\x00INFO".to_vec()].concat();
    assert!(matches!(read(&file), Err(WavError::Truncated { ref chunk, .. }) if chunk == "LIST"));
    file.truncate(file.len() - 4);
    // The LIST header is all that is left of it: still truncated.
    assert!(matches!(read(&file), Err(WavError::Truncated { .. })));
}

#[test]
fn an_unknown_data_length_means_to_the_end_of_the_file() {
    let mut file = wav_file(1, 1, 8000, 16, &pcm16(&[1, 2, 3]));
    let at = file.len() - 6 - 4;
    file[at..at + 4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    file[4..8].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    assert_eq!(read(&file).unwrap().samples, [1, 2, 3]);
}

#[test]
fn a_partial_last_frame_is_dropped() {
    let file = wav_file(1, 1, 8000, 16, &[1, 0, 2, 0, 3]);
    assert_eq!(read(&file).unwrap().samples, [1, 2]);
    let file = wav_file(1, 2, 8000, 16, &pcm16(&[10, 20, 30]));
    assert_eq!(read(&file).unwrap().samples, [15]);
}

#[test]
fn empty_audio_reads_as_no_samples() {
    let wav = read(&wav_file(1, 1, 8000, 16, &[])).unwrap();
    assert!(wav.samples.is_empty());
    assert_eq!(wav.duration(), Duration::ZERO);
}

#[test]
fn files_that_are_not_wav_are_named_as_such() {
    assert_eq!(error(b""), "not a WAV file (no RIFF header)");
    assert_eq!(
        error(b"ID3\x04\x00\x00\x00\x00\x00\x00\x00\x00\xff\xfb"),
        "not a WAV file (no RIFF header)"
    );
    assert_eq!(
        error(b"RIFF\x04\x00\x00\x00WAV"),
        "not a WAV file (no RIFF header)"
    );
    assert_eq!(
        error(b"RIFF\x04\x00\x00\x00AVI LIST"),
        "not a WAV file (a RIFF file of type \"AVI \")"
    );
    assert_eq!(
        error(b"RIFF\x04\x00\x00\x00\x00\xffAB"),
        "not a WAV file (a RIFF file of type \"\\x00\\xffAB\")"
    );
}

#[test]
fn unsupported_formats_say_what_to_save_instead() {
    let data = [0; 12];
    assert_eq!(
        error(&wav_file(1, 1, 44100, 24, &data)),
        "24-bit PCM is not supported; save it as 16-bit PCM"
    );
    assert_eq!(
        error(&wav_file(3, 1, 44100, 32, &data)),
        "floating-point audio (format tag 0x0003) is not supported; save it as 16-bit PCM"
    );
    assert_eq!(
        error(&wav_file(0x55, 2, 44100, 0, &data)),
        "MP3 audio (format tag 0x0055) is not supported; save it as 16-bit PCM"
    );
    assert_eq!(
        error(&wav_file(0x1234, 1, 8000, 16, &data)),
        "this audio (format tag 0x1234) is not supported; save it as 16-bit PCM"
    );
    assert_eq!(
        error(&wav_file(6, 1, 8000, 16, &data)),
        "16-bit A-law is not G.711, which has 8 bits per sample; save it as 16-bit PCM"
    );
    assert_eq!(
        error(&wav_file(1, 6, 48000, 16, &data)),
        "6 channels: only mono or stereo audio is supported"
    );
    assert_eq!(
        error(&wav_file(1, 0, 48000, 16, &data)),
        "0 channels: only mono or stereo audio is supported"
    );
}

#[test]
fn sample_rates_outside_8_to_48_khz_are_refused() {
    let data = [0; 8];
    assert_eq!(
        error(&wav_file(1, 2, 96000, 16, &data)),
        "stereo 96000 Hz: the sample rate must be 8000 to 48000 Hz"
    );
    assert_eq!(
        error(&wav_file(1, 1, 7999, 16, &data)),
        "mono 7999 Hz: the sample rate must be 8000 to 48000 Hz"
    );
    assert!(read(&wav_file(1, 1, 8000, 16, &data)).is_ok());
    assert!(read(&wav_file(1, 2, 48000, 16, &data)).is_ok());
}

#[test]
fn broken_format_chunks_are_refused() {
    assert_eq!(
        error(&riff(&[chunk(b"data", &[0; 4])])),
        "no \"fmt \" chunk: the file does not say how its audio is encoded"
    );
    assert_eq!(
        error(&riff(&[chunk(b"fmt ", &fmt_body(1, 1, 8000, 16))])),
        "no \"data\" chunk: the file holds no audio"
    );
    assert_eq!(
        error(&riff(&[
            chunk(b"fmt ", &[1, 0, 1, 0]),
            chunk(b"data", &[0; 4])
        ])),
        "the \"fmt \" chunk is 4 bytes, too short for an audio format"
    );
    let mut body = fmt_body(1, 2, 8000, 16);
    body[12..14].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(
        error(&riff(&[chunk(b"fmt ", &body), chunk(b"data", &[0; 4])])),
        "the \"fmt \" chunk says 2 bytes per frame, but stereo 16-bit audio takes 4"
    );
}

fn written(chunks: &[&[i16]]) -> Vec<u8> {
    let mut writer = WavWriter::create(Cursor::new(Vec::new())).unwrap();
    for samples in chunks {
        writer.append(samples).unwrap();
    }
    writer.finalize().unwrap().into_inner()
}

#[test]
fn written_recordings_read_back_identically() {
    let samples: Vec<i16> = (0..1000).map(|i| (i * 67 % 65536 - 32768) as i16).collect();
    let file = written(&[&samples[..10], &[], &samples[10..999], &samples[999..]]);
    assert_eq!(file.len(), 44 + 2000);
    let wav = read(&file).unwrap();
    assert_eq!(
        wav.format,
        Format {
            encoding: Encoding::Pcm16,
            channels: 1,
            sample_rate: 8000
        }
    );
    assert_eq!(wav.samples, samples);
}

#[test]
fn finalize_writes_the_real_sizes() {
    let file = written(&[&[1, 2, 3]]);
    assert_eq!(u32_at(&file, 4), 36 + 6);
    assert_eq!(&file[36..40], b"data");
    assert_eq!(u32_at(&file, 40), 6);
    let empty = written(&[]);
    assert_eq!(
        (empty.len(), u32_at(&empty, 4), u32_at(&empty, 40)),
        (44, 36, 0)
    );
    assert!(read(&empty).unwrap().samples.is_empty());
}

#[test]
fn an_unfinalized_recording_still_reads_to_its_end() {
    let mut writer = WavWriter::create(Cursor::new(Vec::new())).unwrap();
    writer.append(&[4, 5, 6]).unwrap();
    let file = writer.inner.get_ref().clone();
    assert_eq!(u32_at(&file, 40), 0xFFFF_FFFF);
    assert_eq!(read(&file).unwrap().samples, [4, 5, 6]);
}

#[test]
fn a_recording_after_other_bytes_fixes_its_own_header() {
    let mut cursor = Cursor::new(b"prefix".to_vec());
    cursor.set_position(6);
    let mut writer = WavWriter::create(cursor).unwrap();
    writer.append(&[9, -9]).unwrap();
    let mut cursor = writer.finalize().unwrap();
    assert_eq!(cursor.position(), 6 + 44 + 4);
    cursor.write_all(b"!").unwrap();
    let file = cursor.into_inner();
    assert_eq!(&file[..6], b"prefix");
    assert_eq!(read(&file[6..file.len() - 1]).unwrap().samples, [9, -9]);
    assert_eq!(u32_at(&file, 6 + 40), 4);
}

#[test]
fn recording_duration_counts_samples_at_8_khz() {
    let mut writer = WavWriter::create(Cursor::new(Vec::new())).unwrap();
    writer.append(&[0; 12000]).unwrap();
    assert_eq!(writer.duration(), Duration::from_millis(1500));
}

#[test]
fn a_recording_stops_at_the_riff_limit() {
    let mut writer = WavWriter::create(Cursor::new(Vec::new())).unwrap();
    writer.data_len = MAX_DATA - 2;
    writer.append(&[1]).unwrap();
    assert!(matches!(writer.append(&[1]), Err(WavWriteError::TooLarge)));
    assert_eq!(writer.data_len, MAX_DATA);
}

#[test]
fn write_failures_are_reported() {
    /// Accepts the header, then fails.
    struct Full(Cursor<Vec<u8>>);
    impl Write for Full {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.0.position() >= HEADER_LEN {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            self.0.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Full {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.0.seek(to)
        }
    }
    let mut writer = WavWriter::create(Full(Cursor::new(Vec::new()))).unwrap();
    let error = writer.append(&[1, 2]).unwrap_err();
    assert_eq!(error.to_string(), "cannot write the WAV file: disk full");
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = read(&bytes);
        let mut file = b"RIFF\x00\x00\x00\x00WAVE".to_vec();
        file.extend_from_slice(&bytes);
        let _ = read(&file);
    }

    #[test]
    fn damaged_wav_files_never_panic_the_reader(
        channels in 1u16..=2,
        bits in prop_oneof![Just(8u16), Just(16)],
        samples in proptest::collection::vec(any::<u8>(), 0..64),
        damage in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
        cut in 0usize..200,
    ) {
        let mut file = wav_file(1, channels, 16000, bits, &samples);
        let frame = usize::from(channels * bits / 8);
        prop_assert_eq!(read(&file).map(|wav| wav.samples.len()), Ok(samples.len() / frame));
        for (at, byte) in damage {
            if let Some(b) = file.get_mut(at) {
                *b = byte;
            }
        }
        let _ = read(&file);
        file.truncate(cut);
        let _ = read(&file);
    }

    #[test]
    fn any_recording_round_trips(chunks in proptest::collection::vec(
        proptest::collection::vec(any::<i16>(), 0..50), 0..5)
    ) {
        let slices: Vec<&[i16]> = chunks.iter().map(Vec::as_slice).collect();
        let file = written(&slices);
        prop_assert_eq!(read(&file).unwrap().samples, chunks.concat());
    }
}
