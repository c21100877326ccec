//! Sample-rate conversion to G.711's 8 kHz, for greetings recorded at whatever rate an editor
//! saves (11025, 16000, 22050, 44100, 48000 Hz…).
//!
//! The choice: band-limited interpolation. Each output sample is a windowed-sinc low-pass filter
//! evaluated at that sample's exact position in the input, so one filter does both the
//! anti-aliasing and the fractional-ratio interpolation, for any input rate. The sinc's cutoff
//! is 3700 Hz and its Kaiser window (β = 7) spans ±4 ms: the passband is flat (±0.1 dB) up to the
//! 3400 Hz of telephone audio and everything from 4 kHz up is attenuated by over 70 dB, so
//! nothing audible folds back into the voice band. Weights are normalised per output sample, so a
//! constant input stays constant, including at the file's edges where the filter is cut short.
//! Linear interpolation alone would fold a 44.1 kHz recording's 4–22 kHz content back into the
//! voice band as hiss; a better filter than this one is inaudible through G.711.
//!
//! This runs once per greeting at load (a minute of 48 kHz audio is ~2·10⁸ multiply-adds), never
//! per call.

use std::f64::consts::PI;

/// G.711's sample rate.
pub const RATE: u32 = 8000;

/// The low-pass cutoff, in cycles per output sample (3700 Hz at 8 kHz).
const CUTOFF: f64 = 3700.0 / RATE as f64;
/// How far the filter reaches each side, in output samples (4 ms).
const HALF_WIDTH: usize = 32;
/// Kernel table points per output sample; linear interpolation between them is accurate to
/// about -100 dB.
const RESOLUTION: usize = 256;
/// The Kaiser window's shape: about 70 dB of stopband attenuation.
const BETA: f64 = 7.0;

/// Resamples mono audio at `rate` Hz to 8 kHz. The output lasts as long as the input, to the
/// nearest output sample. `rate` is meant to be at least 8000 (the WAV reader allows
/// 8000–48000); a zero rate gives no audio.
pub fn to_8khz(samples: &[i16], rate: u32) -> Vec<i16> {
    if rate == RATE {
        return samples.to_vec();
    }
    if rate == 0 || samples.is_empty() {
        return Vec::new();
    }
    let kernel = Kernel::new();
    let ratio = f64::from(rate) / f64::from(RATE); // input samples per output sample
    let reach = HALF_WIDTH as f64 * ratio; // in input samples
    let len = samples.len() as u64;
    let out_len = (len * u64::from(RATE) + u64::from(rate) / 2) / u64::from(rate);
    let last_input = samples.len() - 1;
    (0..out_len)
        .map(|n| {
            let centre = n as f64 * ratio;
            let first = (centre - reach).ceil().max(0.0) as usize;
            let last = ((centre + reach).floor() as usize).min(last_input);
            let window = samples.get(first..=last).unwrap_or_default();
            let (mut sum, mut weight) = (0.0, 0.0);
            for (k, &sample) in (first..).zip(window) {
                let h = kernel.at((k as f64 - centre) / ratio);
                sum += h * f64::from(sample);
                weight += h;
            }
            if weight.abs() < f64::EPSILON {
                return 0;
            }
            // Overshoot near full scale saturates: `as` clamps a float to the integer's range.
            (sum / weight).round() as i16
        })
        .collect()
}

/// The filter's impulse response, tabulated for one side (it is symmetric).
struct Kernel {
    table: Vec<f64>,
}

impl Kernel {
    fn new() -> Kernel {
        let points = HALF_WIDTH * RESOLUTION;
        let scale = bessel_i0(BETA);
        let table = (0..=points)
            .map(|i| {
                let t = i as f64 / RESOLUTION as f64; // output samples from the centre
                let x = t / HALF_WIDTH as f64;
                let window = bessel_i0(BETA * (1.0 - x * x).max(0.0).sqrt()) / scale;
                sinc(2.0 * CUTOFF * t) * window
            })
            .collect();
        Kernel { table }
    }

    /// The response `t` output samples from the centre.
    fn at(&self, t: f64) -> f64 {
        let position = t.abs() * RESOLUTION as f64;
        let index = position as usize;
        match (self.table.get(index), self.table.get(index + 1)) {
            (Some(&a), Some(&b)) => a + (b - a) * (position - index as f64),
            (Some(&a), None) => a,
            _ => 0.0,
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        (PI * x).sin() / (PI * x)
    }
}

/// The modified Bessel function of the first kind, order 0, by its power series (which
/// converges quickly for the window's arguments, at most β).
fn bessel_i0(x: f64) -> f64 {
    let quarter = x * x / 4.0;
    let (mut sum, mut term) = (1.0, 1.0);
    for k in 1..50 {
        term *= quarter / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f64, amplitude: f64, seconds: f64) -> Vec<i16> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * PI * hz * i as f64 / f64::from(rate)).sin()).round() as i16
            })
            .collect()
    }

    /// The samples away from the edges, where the filter is cut short.
    fn middle(samples: &[i16]) -> &[i16] {
        &samples[HALF_WIDTH..samples.len() - HALF_WIDTH]
    }

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        (sum / samples.len() as f64).sqrt()
    }

    #[test]
    fn eight_khz_is_passed_through_unchanged() {
        let samples = sine(8000, 440.0, 9000.0, 0.1);
        assert_eq!(to_8khz(&samples, 8000), samples);
    }

    #[test]
    fn duration_is_kept_at_every_common_rate() {
        for rate in [11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000] {
            let one_second = vec![0; rate as usize];
            assert_eq!(to_8khz(&one_second, rate).len(), 8000, "{rate} Hz");
            let odd = vec![0; rate as usize / 3 + 1];
            let expected = ((rate as usize / 3 + 1) as f64 * 8000.0 / f64::from(rate)).round();
            assert_eq!(to_8khz(&odd, rate).len(), expected as usize, "{rate} Hz");
        }
        assert!(to_8khz(&[], 44100).is_empty());
        assert!(to_8khz(&[1, 2, 3], 0).is_empty());
    }

    #[test]
    fn a_constant_stays_constant_up_to_the_edges() {
        let samples = vec![-12345; 4410];
        let out = to_8khz(&samples, 44100);
        assert!(out.iter().all(|&s| (s + 12345).abs() <= 1), "{out:?}");
    }

    #[test]
    fn voice_band_tones_keep_their_shape() {
        for rate in [16000, 22050, 44100, 48000] {
            for hz in [300.0, 1000.0, 3000.0] {
                let out = to_8khz(&sine(rate, hz, 10000.0, 0.25), rate);
                let expected = sine(8000, hz, 10000.0, 0.25);
                let worst = middle(&out)
                    .iter()
                    .zip(middle(&expected))
                    .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                    .max()
                    .unwrap_or(0);
                // 1% of the amplitude: well under what G.711 quantisation adds.
                assert!(worst <= 100, "{hz} Hz at {rate} Hz: off by {worst}");
            }
        }
    }

    #[test]
    fn tones_above_four_khz_do_not_fold_into_the_voice_band() {
        // Without a low-pass these alias to 2000, 3500 and 1000 Hz at full amplitude.
        for (rate, hz) in [
            (48000, 6000.0),
            (44100, 4500.0),
            (16000, 7000.0),
            (22050, 9000.0),
        ] {
            let out = to_8khz(&sine(rate, hz, 10000.0, 0.25), rate);
            let level = rms(middle(&out));
            // -60 dB below the input's RMS of about 7071.
            assert!(level < 7.1, "{hz} Hz at {rate} Hz leaves RMS {level}");
        }
    }

    #[test]
    fn bessel_i0_matches_known_values() {
        assert!((bessel_i0(0.0) - 1.0).abs() < 1e-15);
        assert!((bessel_i0(1.0) - 1.266_065_877_752_008_4).abs() < 1e-12);
        assert!((bessel_i0(7.0) - 168.593_908_510_289_8).abs() < 1e-9);
    }
}
