//! G.711 µ-law and A-law (ITU-T G.711), the two codecs every SIP phone and trunk speaks.
//! Prompts are encoded once at load; recordings decode what the parties send.

pub use wasmpbx_sip::sdp::Codec;

/// One 16-bit sample in `codec`.
pub fn encode(codec: Codec, sample: i16) -> u8 {
    match codec {
        Codec::Pcmu => ulaw_encode(sample),
        Codec::Pcma => alaw_encode(sample),
    }
}

/// One byte of `codec` as a 16-bit sample.
pub fn decode(codec: Codec, byte: u8) -> i16 {
    match codec {
        Codec::Pcmu => ulaw_decode(byte),
        Codec::Pcma => alaw_decode(byte),
    }
}
const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32_635;

pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(ULAW_CLIP) + ULAW_BIAS;
    // The segment: how far the highest set bit is above bit 7 (s is at least 0x84).
    let exponent = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if b & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// The upper end of each A-law segment, on the 13-bit magnitude scale.
const ALAW_SEGMENT_ENDS: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

pub fn alaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3;
    let mask = if s >= 0 {
        0xd5
    } else {
        s = -s - 1;
        0x55
    };
    let Some(segment) = ALAW_SEGMENT_ENDS.iter().position(|&end| s <= end) else {
        return 0x7f ^ mask;
    };
    let shift = if segment < 2 { 1 } else { segment };
    let value = ((segment as i32) << 4) | ((s >> shift) & 0x0f);
    value as u8 ^ mask
}

pub fn alaw_decode(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if b & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_code_points() {
        // Silence and full scale, from the G.711 tables.
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_encode(i16::MAX), 0xaa);
        assert_eq!(alaw_encode(i16::MIN), 0x2a);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(alaw_decode(0xd5), 8);
    }

    #[test]
    fn every_code_survives_a_round_trip() {
        for byte in 0..=255u8 {
            // µ-law has two zeros (0x7f and 0xff); both decode to 0, which encodes to 0xff.
            let back = ulaw_encode(ulaw_decode(byte));
            assert!(
                back == byte || (byte == 0x7f && back == 0xff),
                "µ-law {byte:#x}"
            );
            assert_eq!(alaw_encode(alaw_decode(byte)), byte, "A-law {byte:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_small_relative_to_the_signal() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for s in (-32_000i32..32_000).step_by(97) {
                let back = i32::from(decode(codec, encode(codec, s as i16)));
                let tolerance = (s.abs() / 16).max(16);
                assert!((back - s).abs() <= tolerance, "{codec:?} {s} -> {back}");
            }
        }
    }
}
