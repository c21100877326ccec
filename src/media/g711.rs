//! G.711 companding (ITU-T G.711): μ-law (PCMU, RTP payload type 0) and A-law (PCMA, type 8),
//! between one 8-bit code and a 16-bit linear sample.
//!
//! Linear samples are 16-bit, the way WAV files and sound cards hold them; G.711 itself works on
//! 14-bit (μ-law) and 13-bit (A-law) uniform codes, which are the top bits of those samples.
//! Decoding yields the middle of each quantisation interval scaled to 16 bits, so μ-law spans
//! ±32124 and A-law ±32256.
//!
//! A negative sample's magnitude is taken as its ones' complement (`!x`, i.e. `-x - 1`), as the
//! ITU-T software tools (G.191 STL) do: the quantiser is then exactly symmetric around -½, every
//! A-law code decodes to a value that encodes back to itself, and so does every μ-law code but
//! 0x7F, μ-law's "negative zero", which decodes to 0 and encodes back as 0xFF.

/// Which G.711 law a stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Law {
    /// μ-law, RTP's PCMU: North America and Japan.
    Mu,
    /// A-law, RTP's PCMA: Europe and most of the rest of the world.
    A,
}

impl Law {
    /// Encodes one linear sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Mu => ulaw_encode(sample),
            Law::A => alaw_encode(sample),
        }
    }

    /// Decodes one code to a linear sample.
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::Mu => ulaw_decode(code),
            Law::A => alaw_decode(code),
        }
    }

    /// Encodes linear samples, one code per sample.
    pub fn encode_all(self, samples: &[i16]) -> Vec<u8> {
        samples.iter().map(|&s| self.encode(s)).collect()
    }

    /// Decodes codes, one linear sample per code.
    pub fn decode_all(self, codes: &[u8]) -> Vec<i16> {
        codes.iter().map(|&c| self.decode(c)).collect()
    }
}

/// μ-law's bias: adding it to the 14-bit magnitude puts every segment's start on a power of two.
const ULAW_BIAS: i32 = 33;
/// The largest biased 14-bit magnitude μ-law can represent; louder samples clip to it.
const ULAW_CLIP: i32 = 0x1FFF;

/// Magnitude (0..=32767) and whether the sample is negative, by ones' complement.
fn magnitude(sample: i16) -> (i32, bool) {
    if sample < 0 {
        (i32::from(!sample), true)
    } else {
        (i32::from(sample), false)
    }
}

/// Encodes a linear sample as μ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let (magnitude, negative) = magnitude(sample);
    let biased = ((magnitude >> 2) + ULAW_BIAS).min(ULAW_CLIP);
    // The biased value is 33..=8191: its highest bit is bit 5 (segment 0) to bit 12 (segment 7).
    let segment = (31 - biased.leading_zeros()) as i32 - 5;
    let step = (biased >> (segment + 1)) & 0x0F;
    let code = (u8::from(negative) << 7) | ((segment as u8) << 4) | step as u8;
    // μ-law transmits every bit inverted.
    !code
}

/// Decodes a μ-law code.
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TABLE[usize::from(code)]
}

const fn ulaw_decode_computed(code: u8) -> i16 {
    let code = !code;
    let segment = ((code >> 4) & 0x07) as i32;
    let step = (code & 0x0F) as i32;
    // The middle of the step's interval, biased, in 14-bit units: the segment's leading bit (32),
    // the step and half a step, shifted by the segment; then unbiased and scaled to 16 bits.
    let biased = (32 + 2 * step + 1) << segment;
    let magnitude = (biased - ULAW_BIAS) << 2;
    if code & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes a linear sample as A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    let (magnitude, negative) = magnitude(sample);
    let magnitude = magnitude >> 3; // 13-bit code: 12 bits of magnitude
    let (segment, step) = if magnitude < 32 {
        // Segments 0 and 1 share one step size, so segment 0 is linear.
        (0, magnitude >> 1)
    } else {
        let segment = (31 - magnitude.leading_zeros()) as i32 - 4;
        (segment, (magnitude >> segment) & 0x0F)
    };
    // A-law's sign bit is set for positive samples, and the even bits are inverted on the line.
    let code = (u8::from(!negative) << 7) | ((segment as u8) << 4) | step as u8;
    code ^ 0x55
}

/// Decodes an A-law code.
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TABLE[usize::from(code)]
}

const fn alaw_decode_computed(code: u8) -> i16 {
    let code = code ^ 0x55;
    let segment = ((code >> 4) & 0x07) as i32;
    let step = (code & 0x0F) as i32;
    // The middle of the step's interval, in 13-bit units (steps of 2 in segments 0 and 1).
    let middle = if segment == 0 {
        2 * step + 1
    } else {
        (2 * step + 33) << (segment - 1)
    };
    let magnitude = middle << 3;
    if code & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

// Computed at compile time from the decoders above, which the tests check them against.
static ULAW_TABLE: [i16; 256] = {
    let mut table = [0; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = ulaw_decode_computed(code as u8);
        code += 1;
    }
    table
};
static ALAW_TABLE: [i16; 256] = {
    let mut table = [0; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = alaw_decode_computed(code as u8);
        code += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ulaw_reference_values_match_g711() {
        // 0xFF and 0x7F are μ-law's positive and negative zero; 0x80 and 0x00 its extremes,
        // ±8031 in 14-bit units (G.711 table 2a), ±32124 scaled to 16 bits.
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        // Segment 0's second step: 14-bit value 2 (interval 1..3).
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        // The first step of segment 1: interval 31..35, middle 33.
        assert_eq!(ulaw_decode(0xEF), 33 * 4);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
    }

    #[test]
    fn alaw_reference_values_match_g711() {
        // No zero code: the smallest steps are ±1 in 13-bit units (G.711 table 1a), ±8 scaled.
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        // The extremes: 4032 in 13-bit units.
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        // Segment 1's first step: interval 32..34, middle 33.
        assert_eq!(alaw_decode(0x80 ^ 0x10 ^ 0x55), 33 * 8);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_alaw_code_round_trips() {
        for code in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(code)), code, "code {code:#04x}");
        }
    }

    #[test]
    fn every_ulaw_code_round_trips_but_negative_zero() {
        for code in 0..=255u8 {
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), expected, "code {code:#04x}");
        }
    }

    #[test]
    fn decoded_values_are_distinct_except_ulaw_zero() {
        let mut alaw: Vec<i16> = (0..=255).map(alaw_decode).collect();
        alaw.sort_unstable();
        alaw.dedup();
        assert_eq!(alaw.len(), 256);
        let mut ulaw: Vec<i16> = (0..=255).map(ulaw_decode).collect();
        ulaw.sort_unstable();
        ulaw.dedup();
        assert_eq!(ulaw.len(), 255);
    }

    #[test]
    fn tables_equal_the_computed_decoders() {
        for code in 0..=255u8 {
            assert_eq!(ulaw_decode(code), ulaw_decode_computed(code));
            assert_eq!(alaw_decode(code), alaw_decode_computed(code));
        }
    }

    fn assert_monotonic(law: Law) {
        let mut previous = law.decode(law.encode(i16::MIN));
        for sample in i16::MIN..=i16::MAX {
            let value = law.decode(law.encode(sample));
            assert!(
                value >= previous,
                "{law:?}: {sample} decodes back to {value}, below {previous}"
            );
            previous = value;
        }
    }

    #[test]
    fn encoding_is_monotonic_over_every_sample() {
        assert_monotonic(Law::Mu);
        assert_monotonic(Law::A);
    }

    #[test]
    fn quantisation_error_is_at_most_half_a_step() {
        // Step sizes in 16-bit units double per segment: μ-law 8·2^seg (the clipped top aside),
        // A-law 16·2^(seg-1) with segment 0 like segment 1.
        for sample in i16::MIN..=i16::MAX {
            let value = i32::from(sample);
            let mu = i32::from(ulaw_decode(ulaw_encode(sample)));
            let segment = i32::from((!ulaw_encode(sample) >> 4) & 7);
            let half_step = 4 << segment;
            if value.abs() <= 32124 {
                assert!((value - mu).abs() <= half_step + 3, "μ-law {sample} → {mu}");
            }
            let a = i32::from(alaw_decode(alaw_encode(sample)));
            let segment = i32::from(((alaw_encode(sample) ^ 0x55) >> 4) & 7).max(1);
            let half_step = 8 << (segment - 1);
            if value.abs() <= 32256 {
                assert!((value - a).abs() <= half_step, "A-law {sample} → {a}");
            }
        }
    }

    #[test]
    fn sign_is_kept() {
        for sample in i16::MIN..=i16::MAX {
            let mu = ulaw_decode(ulaw_encode(sample));
            let a = alaw_decode(alaw_encode(sample));
            if sample > 0 {
                assert!(mu >= 0 && a > 0, "{sample}: μ {mu}, A {a}");
            } else if sample < 0 {
                assert!(mu <= 0 && a < 0, "{sample}: μ {mu}, A {a}");
            }
        }
    }

    proptest! {
        #[test]
        fn slices_code_like_single_samples(samples in proptest::collection::vec(any::<i16>(), 0..64)) {
            for law in [Law::Mu, Law::A] {
                let codes = law.encode_all(&samples);
                prop_assert_eq!(codes.len(), samples.len());
                let decoded = law.decode_all(&codes);
                for ((&s, &c), &d) in samples.iter().zip(&codes).zip(&decoded) {
                    prop_assert_eq!(c, law.encode(s));
                    prop_assert_eq!(d, law.decode(c));
                }
            }
        }
    }
}
