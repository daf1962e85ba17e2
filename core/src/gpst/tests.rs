//! Round trips, corruption and limits of the `.gpst` format.

use super::*;
use alloc::vec::Vec;

fn header(dtype: DType) -> Header {
    // 300 x 200 pixels in 256 patches: a 2 x 1 grid, 3 tokens per patch, 2 channels.
    Header::for_image(dtype, 300, 200, 256, 3, 2)
}

fn tokens(h: &Header) -> Vec<f32> {
    (0..h.total_tokens())
        .flat_map(|i| {
            let t = i as f32;
            [0.05 + 0.01 * t, 0.1, -0.5 + 0.1 * t, 0.25 * t - 0.5, -0.3, 1.5 * t, -2.0]
        })
        .collect()
}

fn valid_file(dtype: DType) -> (Header, Vec<f32>, Vec<u8>) {
    let h = header(dtype);
    let t = tokens(&h);
    let bytes = to_bytes(&h, &t).unwrap();
    (h, t, bytes)
}

/// Recomputes the checksum so a deliberately edited file reaches the later checks.
fn reseal(bytes: &mut [u8]) {
    let crc = file_checksum(bytes).unwrap();
    bytes[CHECKSUM_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn round_trip_every_dtype() {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let (h, t, bytes) = valid_file(dtype);
        assert_eq!(h.patches_x, 2);
        assert_eq!(h.patches_y, 1);
        assert_eq!(bytes.len(), HEADER_LEN + 2 * 3 * 7 * dtype.bytes());
        assert_eq!(bytes.len(), h.file_len());
        let (h2, t2) = from_bytes(&bytes).unwrap();
        assert_eq!(h2, h);
        let expected: Vec<f32> = t.iter().map(|&v| dtype.round_trip(v)).collect();
        assert_eq!(t2, expected, "{dtype}");
        assert_eq!(read_header(&bytes[..HEADER_LEN]), Ok(h));
    }
}

#[test]
fn layout_is_as_documented() {
    let (h, t, bytes) = valid_file(DType::F32);
    assert_eq!(&bytes[..8], b"GPST\x01\x00\x00\x00");
    assert_eq!(bytes[36..40], 3.0f32.to_le_bytes());
    assert_eq!(bytes[40..44], [0; 4]);
    assert_eq!(bytes[HEADER_LEN..HEADER_LEN + 4], t[0].to_le_bytes());
    let stored = u32::from_le_bytes(bytes[44..48].try_into().unwrap());
    let mut whole = Vec::from(&bytes[..44]);
    whole.extend_from_slice(&bytes[48..]);
    assert_eq!(stored, crc32(&whole));
    assert_eq!(h.token_stride(), 7);
}

#[test]
fn no_alloc_encode_decode() {
    let h = header(DType::BF16);
    let t = tokens(&h);
    let mut file = [0u8; HEADER_LEN + 42 * 2];
    encode(&h, &t, &mut file).unwrap();
    let mut back = [0f32; 42];
    assert_eq!(decode(&file, &mut back), Ok(h));
    assert_eq!(decode(&file, &mut back[..41]), Err(GpstError::Length { expected: 42, got: 41 }));
    assert_eq!(encode(&h, &t, &mut file[..50]), Err(GpstError::Length { expected: 132, got: 50 }));
    assert_eq!(encode(&h, &t[..7], &mut file), Err(GpstError::Length { expected: 42, got: 7 }));
}

#[test]
fn framing_errors() {
    let (_, _, bytes) = valid_file(DType::F16);
    assert_eq!(from_bytes(b"PNG\x89").unwrap_err(), GpstError::BadMagic);
    assert_eq!(from_bytes(b"").unwrap_err(), GpstError::Truncated { expected: HEADER_LEN, got: 0 });
    assert_eq!(from_bytes(&bytes[..10]).unwrap_err(), GpstError::Truncated { expected: HEADER_LEN, got: 10 });
    let n = bytes.len();
    assert_eq!(from_bytes(&bytes[..n - 1]).unwrap_err(), GpstError::Truncated { expected: n, got: n - 1 });
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(from_bytes(&long).unwrap_err(), GpstError::TrailingBytes { expected: n, got: n + 1 });

    let mut v = bytes.clone();
    v[4] = 3;
    assert_eq!(from_bytes(&v).unwrap_err(), GpstError::UnsupportedVersion(3));
    let mut d = bytes.clone();
    d[6] = 7;
    assert_eq!(from_bytes(&d).unwrap_err(), GpstError::UnknownDType(7));
    let mut r = bytes.clone();
    r[7] = 1;
    assert_eq!(from_bytes(&r).unwrap_err(), GpstError::InvalidHeader("reserved bytes are not zero"));
    let mut c = bytes.clone();
    c[HEADER_LEN + 3] ^= 0x10;
    assert_eq!(from_bytes(&c).unwrap_err(), GpstError::ChecksumMismatch);
    let mut k = bytes;
    k[36..40].copy_from_slice(&3.5f32.to_le_bytes());
    assert_eq!(from_bytes(&k).unwrap_err(), GpstError::ChecksumMismatch, "the header is covered too");
}

#[test]
fn header_rules() {
    let good = header(DType::F32);
    assert_eq!(good.validate(), Ok(()));
    let cases = [
        Header { image_width: 0, patches_x: 0, ..good },
        Header { patch_width: 1, ..good },
        Header { patch_height: 1, ..good },
        Header { tokens_per_patch: 0, ..good },
        Header { patches_x: 3, ..good },
        Header { patches_y: 0, ..good },
        Header { kappa: f32::NAN, ..good },
        Header { kappa: 0.0, ..good },
        // 2^31 x 2^31 patches of (2^32 - 1) tokens: overflows usize everywhere.
        Header::for_image(DType::F32, u32::MAX, u32::MAX, 2, u32::MAX, u32::MAX),
    ];
    for h in cases {
        assert!(matches!(h.validate(), Err(GpstError::InvalidHeader(_))), "{h:?}");
        assert_eq!(to_bytes(&h, &[]).unwrap_err(), h.validate().unwrap_err());
    }
    // Layout-only files (no features) are allowed.
    assert_eq!(Header { channels: 0, ..good }.validate(), Ok(()));
}

#[test]
fn huge_header_fields_are_refused_not_allocated() {
    let (_, _, mut bytes) = valid_file(DType::F32);
    bytes[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    bytes[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(from_bytes(&bytes).unwrap_err(), GpstError::InvalidHeader(_)));
    // Large but representable (8 GiB of f32 on 64-bit targets): refused by the length check
    // before anything is allocated.
    bytes[28..32].copy_from_slice(&(1u32 << 20).to_le_bytes());
    bytes[32..36].copy_from_slice(&1024u32.to_le_bytes());
    reseal(&mut bytes);
    let err = from_bytes(&bytes).unwrap_err();
    if usize::BITS >= 64 {
        assert!(matches!(err, GpstError::Truncated { got: 216, .. }), "{err:?}");
    } else {
        assert!(matches!(err, GpstError::InvalidHeader(_)), "{err:?}");
    }
}

#[test]
fn invalid_tokens_are_refused_both_ways() {
    let h = header(DType::F32);
    let mut t = tokens(&h);
    t[7 * 4 + 1] = 0.0; // sigma_y of token 4
    assert_eq!(
        to_bytes(&h, &t).unwrap_err(),
        GpstError::InvalidToken { index: 4, error: TokenError::NonPositiveSigma { index: 1, value: 0.0 } }
    );
    // A file whose body was edited (and the checksum recomputed) is still refused.
    let (_, _, mut bytes) = valid_file(DType::F32);
    let at = HEADER_LEN + (7 * 2 + 2) * 4; // rho of token 2
    bytes[at..at + 4].copy_from_slice(&1.0f32.to_le_bytes());
    reseal(&mut bytes);
    assert_eq!(
        from_bytes(&bytes).unwrap_err(),
        GpstError::InvalidToken { index: 2, error: TokenError::RhoOutOfRange { value: 1.0 } }
    );
    let at = HEADER_LEN + (7 * 5 + 6) * 4; // last feature of the last token
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        from_bytes(&bytes).unwrap_err(),
        GpstError::InvalidToken { index: 2, .. } // the earlier bad rho is still reported first
    ));
}

#[test]
fn values_that_do_not_survive_rounding_are_refused() {
    for dtype in [DType::F16, DType::BF16] {
        let h = header(dtype);
        let mut t = tokens(&h);
        t[7 + 2] = 0.99999; // the generation clamp: rounds to 1.0
        assert_eq!(
            to_bytes(&h, &t).unwrap_err(),
            GpstError::Unrepresentable { index: 1, dtype, error: TokenError::RhoOutOfRange { value: 1.0 } }
        );
    }
    let h = header(DType::F16);
    let mut t = tokens(&h);
    t[0] = 1e-9; // below the smallest f16 subnormal
    assert!(matches!(
        to_bytes(&h, &t).unwrap_err(),
        GpstError::Unrepresentable { index: 0, error: TokenError::NonPositiveSigma { index: 0, .. }, .. }
    ));
    let mut t = tokens(&h);
    t[7 * 3 + 5] = 70000.0; // above f16::MAX
    assert!(matches!(
        to_bytes(&h, &t).unwrap_err(),
        GpstError::Unrepresentable { index: 3, error: TokenError::NotFinite { index: 5, .. }, .. }
    ));
    // bf16 has the f32 range, so the same feature is fine there.
    let h = header(DType::BF16);
    assert!(to_bytes(&h, &t).is_ok());
}

#[test]
fn dtype_names() {
    for d in [DType::F32, DType::F16, DType::BF16] {
        assert_eq!(DType::parse(d.name()), Some(d));
        assert_eq!(DType::from_code(d.code()), Some(d));
    }
    assert_eq!(DType::parse("f64"), None);
    assert_eq!(DType::from_code(3), None);
}

#[test]
fn messages_are_one_line() {
    use alloc::string::ToString;
    assert_eq!(GpstError::BadMagic.to_string(), "not a .gpst file (bad magic)");
    let e = GpstError::InvalidToken { index: 3, error: TokenError::RhoOutOfRange { value: 1.0 } };
    assert_eq!(e.to_string(), "invalid token 3: rho must satisfy |rho| < 1, got 1");
    assert!(!GpstError::Truncated { expected: 48, got: 1 }.to_string().contains('\n'));
}
