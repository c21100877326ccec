//! `#` pressed in band: the DTMF tone pair 941 Hz + 1477 Hz (ITU-T Q.23) found in the caller's
//! decoded audio, for phones that send their keys as sound rather than as RFC 4733 events.
//!
//! The audio is cut into 20 ms blocks (160 samples at 8 kHz) and the eight DTMF frequencies are
//! measured in each with the Goertzel algorithm. A block holds `#` when 941 Hz is the strongest
//! row frequency and 1477 Hz the strongest column one, each at least four times (6 dB) the power
//! of the others of its kind, the two within 8 dB of each other (twist), together most of the
//! block's energy, and loud enough not to be line noise. Two such blocks in a row (40 ms, the
//! shortest key press Q.24 asks receivers to take) are a `#`. Speech rarely holds two pure tones
//! that long, and what it does hold it spreads over other frequencies too.

/// Samples per block.
const BLOCK: usize = 160;
const RATE: f32 = 8000.0;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLUMNS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// `#`: the fourth row and the third column.
const POUND: (usize, usize) = (3, 2);
/// Blocks in a row that make a key press.
const BLOCKS: usize = 2;
/// The quietest block considered (RMS).
const MIN_RMS: f64 = 300.0;

/// Finds `#` in a stream of samples.
#[derive(Debug, Default)]
pub struct PoundDetector {
    pending: Vec<i16>,
    /// `#` blocks in a row.
    run: usize,
}

impl PoundDetector {
    /// Feeds samples; returns true once a `#` has been heard.
    pub fn feed(&mut self, samples: &[i16]) -> bool {
        self.pending.extend_from_slice(samples);
        let mut heard = false;
        while self.pending.len() >= BLOCK {
            let block: Vec<i16> = self.pending.drain(..BLOCK).collect();
            if is_pound(&block) {
                self.run += 1;
                if self.run >= BLOCKS {
                    heard = true;
                }
            } else {
                self.run = 0;
            }
        }
        heard
    }
}

/// The power of one frequency in a block (Goertzel).
fn goertzel(block: &[i16], frequency: f32) -> f64 {
    let coefficient = 2.0 * f64::from((2.0 * std::f32::consts::PI * frequency / RATE).cos());
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for sample in block {
        let s = f64::from(*sample) + coefficient * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

/// Whether a block holds the `#` tone pair.
fn is_pound(block: &[i16]) -> bool {
    let energy: f64 = block.iter().map(|s| f64::from(*s).powi(2)).sum();
    if (energy / block.len() as f64).sqrt() < MIN_RMS {
        return false;
    }
    let rows: Vec<f64> = ROWS.iter().map(|f| goertzel(block, *f)).collect();
    let columns: Vec<f64> = COLUMNS.iter().map(|f| goertzel(block, *f)).collect();
    let strongest = |powers: &[f64]| {
        powers
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, p)| (i, *p))
            .unwrap_or((0, 0.0))
    };
    let (row, row_power) = strongest(&rows);
    let (column, column_power) = strongest(&columns);
    if (row, column) != POUND {
        return false;
    }
    let dominant = |powers: &[f64], best: usize, power: f64| {
        powers
            .iter()
            .enumerate()
            .all(|(i, p)| i == best || *p * 4.0 <= power)
    };
    if !dominant(&rows, row, row_power) || !dominant(&columns, column, column_power) {
        return false;
    }
    // Twist: the two within 8 dB (a power ratio of about 6.3).
    let twist = row_power.max(column_power) / row_power.min(column_power).max(f64::MIN_POSITIVE);
    if twist > 6.3 {
        return false;
    }
    // A pure tone of amplitude A gives a Goertzel power of (A·N/2)², and the block's energy is
    // A²·N/2: relative to N·energy/2, a pure pair shares about 1.
    let share = (row_power + column_power) * 2.0 / (block.len() as f64 * energy);
    share > 0.6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tones(frequencies: &[f32], milliseconds: usize, amplitude: f32) -> Vec<i16> {
        (0..milliseconds * 8)
            .map(|n| {
                let t = n as f32 / RATE;
                let sum: f32 = frequencies
                    .iter()
                    .map(|f| (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum();
                (amplitude * sum) as i16
            })
            .collect()
    }

    #[test]
    fn a_pound_key_press_is_heard_after_forty_milliseconds() {
        let mut detector = PoundDetector::default();
        let press = tones(&[941.0, 1477.0], 100, 6000.0);
        assert!(
            !detector.feed(&press[..160]),
            "one block is not yet a press"
        );
        assert!(detector.feed(&press[160..]));
    }

    #[test]
    fn other_keys_tones_noise_and_quiet_are_not_pound() {
        for frequencies in [
            &[697.0, 1209.0][..], // 1
            &[941.0, 1336.0][..], // 0
            &[941.0, 1209.0][..], // *
            &[1000.0][..],        // the greeting's own tone
            &[941.0][..],         // half a pair
        ] {
            let mut detector = PoundDetector::default();
            assert!(
                !detector.feed(&tones(frequencies, 200, 6000.0)),
                "{frequencies:?}"
            );
        }
        let mut detector = PoundDetector::default();
        assert!(
            !detector.feed(&tones(&[941.0, 1477.0], 200, 100.0)),
            "too quiet"
        );
        let mut noise = fastrand::Rng::with_seed(7);
        let hiss: Vec<i16> = (0..8000).map(|_| noise.i16(-8000..8000)).collect();
        assert!(!PoundDetector::default().feed(&hiss));
    }

    #[test]
    fn a_pound_over_background_noise_is_still_heard() {
        let mut noise = fastrand::Rng::with_seed(11);
        let press: Vec<i16> = tones(&[941.0, 1477.0], 100, 6000.0)
            .into_iter()
            .map(|s| s.saturating_add(noise.i16(-600..600)))
            .collect();
        assert!(PoundDetector::default().feed(&press));
    }
}
