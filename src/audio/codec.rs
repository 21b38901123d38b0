//! G.711 μ-law, bit-identical to the ITU-T reference (Sun/CCITT `g711.c`: bias 0x84, clip 32635,
//! no zero trap).
//!
//! Decoding is a 512-byte table; encoding is computed with a leading-zero count instead of a
//! segment search or a 64 KiB table, so it stays branch-free and out of the data cache.

/// Bias added to the magnitude so that every segment boundary falls on a power of two.
const BIAS: i32 = 0x84;
/// Largest magnitude that still fits the top segment once the bias is added.
const CLIP: i32 = 32635;

/// μ-law byte → linear sample, built at compile time from the reference formula.
static DECODE_TABLE: [i16; 256] = build_decode_table();

const fn build_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let u = !(i as u8);
        let t = (((u & 0x0F) as i32) << 3) + BIAS;
        let t = t << ((u & 0x70) >> 4);
        table[i] = if u & 0x80 != 0 { BIAS - t } else { t - BIAS } as i16;
        i += 1;
    }
    table
}

/// Decodes one μ-law byte to a 16-bit linear sample.
#[inline]
pub fn decode(byte: u8) -> i16 {
    DECODE_TABLE[byte as usize]
}

/// Encodes one 16-bit linear sample to μ-law.
#[inline]
pub fn encode(sample: i16) -> u8 {
    let s = i32::from(sample);
    // 0x80 for negative samples: the sign bit of the code word before inversion.
    let sign = ((s >> 8) & 0x80) as u32;
    let magnitude = s.unsigned_abs().min(CLIP as u32) + BIAS as u32; // 132..=32767
    // The segment is the position of the highest set bit above bit 7 (bit 7 → 0, bit 14 → 7).
    let segment = 24 - magnitude.leading_zeros();
    let mantissa = (magnitude >> (segment + 3)) & 0x0F;
    !((sign | (segment << 4) | mantissa) as u8)
}

/// Decodes μ-law bytes, appending the linear samples to `out`.
pub fn decode_into(mulaw: &[u8], out: &mut Vec<i16>) {
    out.extend(mulaw.iter().map(|&b| decode(b)));
}

/// Encodes linear samples, appending the μ-law bytes to `out`.
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode(s)));
}

/// The ITU-T reference algorithm transcribed literally (segment search), to check the fast
/// codec against in tests and in the fidelity report.
pub(crate) mod reference {
    /// Straight transcription of the reference `ulaw2linear`.
    pub fn reference_decode(u_val: u8) -> i16 {
        let u_val = !u_val;
        let mut t: i32 = ((i32::from(u_val) & 0x0F) << 3) + 0x84;
        t <<= (i32::from(u_val) & 0x70) >> 4;
        if u_val & 0x80 != 0 {
            (0x84 - t) as i16
        } else {
            (t - 0x84) as i16
        }
    }

    /// Straight transcription of the reference `linear2ulaw` with its linear segment search.
    pub fn reference_encode(pcm: i16) -> u8 {
        const SEG_END: [i32; 8] = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF];
        let mut pcm_val = i32::from(pcm);
        let mask: i32;
        if pcm_val < 0 {
            pcm_val = -pcm_val;
            mask = 0x7F;
        } else {
            mask = 0xFF;
        }
        if pcm_val > 32635 {
            pcm_val = 32635;
        }
        pcm_val += 0x84;
        let mut seg = 8;
        for (i, &end) in SEG_END.iter().enumerate() {
            if pcm_val <= end {
                seg = i as i32;
                break;
            }
        }
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let uval = (seg << 4) | ((pcm_val >> (seg + 3)) & 0x0F);
        (uval ^ mask) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::reference::{reference_decode, reference_encode};
    use super::*;

    #[test]
    fn decode_matches_reference_for_all_codes() {
        for b in 0..=255u8 {
            assert_eq!(decode(b), reference_decode(b), "code {b:#04x}");
        }
    }

    #[test]
    fn encode_matches_reference_for_all_samples() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(encode(s), reference_encode(s), "sample {s}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(encode(0), 0xFF);
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x7F), 0);
        assert_eq!(decode(0x00), -32124);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(encode(i16::MAX), 0x80);
        assert_eq!(encode(i16::MIN), 0x00);
    }

    #[test]
    fn decode_then_encode_is_identity_except_negative_zero() {
        for b in 0..=255u8 {
            let expected = if b == 0x7F { 0xFF } else { b };
            assert_eq!(encode(decode(b)), expected, "code {b:#04x}");
        }
    }

    #[test]
    fn slice_helpers_append() {
        let mut pcm = vec![7i16];
        decode_into(&[0xFF, 0x00, 0x80], &mut pcm);
        assert_eq!(pcm, [7, 0, -32124, 32124]);
        let mut bytes = vec![1u8];
        encode_into(&pcm[1..], &mut bytes);
        assert_eq!(bytes, [1, 0xFF, 0x00, 0x80]);
        decode_into(&[], &mut pcm);
        encode_into(&[], &mut bytes);
        assert_eq!((pcm.len(), bytes.len()), (4, 4));
    }
}
