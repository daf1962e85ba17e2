//! The `.gpst` format: round trips with random tokens in every dtype, and robustness of the
//! decoder against thousands of corrupted files: it must answer Ok or Err, never panic, and never
//! ask the allocator for more than twice the file's size (a counting global allocator checks).
//!
//! Inputs tried: every truncation (1,824) and every single-bit flip (14,592) of six files (three
//! version 1, three version 2), 20,000 random mutations, and 6,285 files with one or two header
//! fields set to extreme values (0, 1, 2^31, u32::MAX, ...) or a consistent but huge header, with
//! the checksum recomputed: 42,701.

use gpstoken_tests::alloc_count::{largest_request, reset_largest_request, CountingAllocator};
use std::panic::{catch_unwind, AssertUnwindSafe};

use gpstoken_core::gpst::{
    decode, file_checksum, from_bytes, read_header, to_bytes, DType, GpstError, Header, CHECKSUM_OFFSET, HEADER_LEN,
};
use gpstoken_core::token::validate_tokens;
use gpstoken_tests::TestRng;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Random tokens in the ranges the tokenizer produces: sigma in (0, 1), rho, x, y in (-1, 1),
/// features roughly N(0, 4).
fn random_tokens(rng: &mut TestRng, h: &Header) -> Vec<f32> {
    let mut t = Vec::with_capacity(h.total_values());
    for _ in 0..h.total_tokens() {
        t.push(rng.uniform(0.01, 0.99) as f32);
        t.push(rng.uniform(0.01, 0.99) as f32);
        t.push(rng.uniform(-0.99, 0.99) as f32);
        t.push(rng.uniform(-1.0, 1.0) as f32);
        t.push(rng.uniform(-1.0, 1.0) as f32);
        for _ in 0..h.channels {
            t.push((2.0 * rng.normal()) as f32);
        }
    }
    t
}

/// Round to nearest, ties to even, keeping `bits` significant bits, with the smallest exponent
/// `min_exp` (below it the quantum stays fixed: subnormals). Written independently of the `half`
/// crate the encoder uses, so the round trip is checked against the IEEE definition.
fn round_to_format(x: f32, bits: i32, min_exp: i32) -> f32 {
    if x == 0.0 {
        return x;
    }
    let exp = ((x.to_bits() >> 23) & 0xFF) as i32 - 127;
    let quantum = 2f64.powi(exp.max(min_exp) - (bits - 1));
    ((f64::from(x) / quantum).round_ties_even() * quantum) as f32
}

fn reseal(bytes: &mut [u8]) {
    if let Some(crc) = file_checksum(bytes) {
        bytes[CHECKSUM_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }
}

#[test]
fn round_trip_random_tokens_every_dtype() {
    let mut rng = TestRng::new(1);
    // One 256 patch of 128 tokens (S64/M128 shape), and a 2x2 grid with L256's 32 channels.
    let shapes = [(256, 256, 128, 16), (512, 400, 64, 32), (100, 30, 5, 0)];
    for dtype in DTYPES {
        for &(w, hgt, n, c) in &shapes {
            let h = Header::for_image(dtype, w, hgt, 256, n, c);
            let tokens = random_tokens(&mut rng, &h);
            let bytes = to_bytes(&h, &tokens).unwrap();
            assert_eq!(bytes.len(), h.file_len());
            assert_eq!(read_header(&bytes), Ok(h));
            let (h2, back) = from_bytes(&bytes).unwrap();
            assert_eq!(h2, h);
            assert_eq!(back.len(), tokens.len());
            for (i, (&orig, &got)) in tokens.iter().zip(&back).enumerate() {
                // The reader sees the value rounded to nearest even in the stored format.
                let expected = match dtype {
                    DType::F32 => orig,
                    DType::F16 => round_to_format(orig, 11, -14),
                    DType::BF16 => round_to_format(orig, 8, -126),
                };
                assert_eq!(got.to_bits(), expected.to_bits(), "{dtype} value {i}: {orig}");
                // And that is within half an ulp of the format (relative, normal range).
                let eps = match dtype {
                    DType::F32 => 0.0,
                    DType::F16 => 2f32.powi(-11),
                    DType::BF16 => 2f32.powi(-8),
                };
                assert!((got - orig).abs() <= eps * orig.abs() + 6e-8, "{dtype}: {orig} -> {got}");
            }
            // No-alloc path, same answer.
            let mut buf = vec![0f32; h.total_values()];
            assert_eq!(decode(&bytes, &mut buf), Ok(h));
            assert_eq!(buf, back);
            // Encoding what was decoded is a fixed point.
            assert_eq!(to_bytes(&h, &back).unwrap(), bytes);
        }
    }
}

/// Decodes under `catch_unwind`, failing the test on a panic. On success the tokens must be valid.
fn decode_without_panic(bytes: &[u8], what: &str) -> Result<(), GpstError> {
    reset_largest_request();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = read_header(bytes);
        from_bytes(bytes)
    }));
    // f16 and bf16 widen to f32: at most twice the file, plus the error message of a failure.
    let largest = largest_request();
    assert!(largest <= 2 * bytes.len() + 1024, "{what}: allocated {largest} bytes for a {}-byte file", bytes.len());
    match result {
        Err(_) => panic!("decoder panicked on {what}"),
        Ok(Ok((h, tokens))) => {
            assert_eq!(tokens.len(), h.total_values());
            assert_eq!(validate_tokens(&tokens, h.channels as usize), Ok(()));
            Ok(())
        }
        Ok(Err(e)) => {
            assert!(!e.to_string().is_empty());
            Err(e)
        }
    }
}

/// Three version-1 files (square 256 patches, one per dtype), then three version-2 files
/// (256x64 patches, a 2x2 grid).
fn valid_files(rng: &mut TestRng) -> Vec<Vec<u8>> {
    let square = DTYPES.iter().map(|&dtype| Header::for_image(dtype, 300, 256, 256, 4, 3));
    let wide = DTYPES.iter().map(|&dtype| Header::for_image_with_patch(dtype, 300, 100, (256, 64), 4, 3));
    square
        .chain(wide)
        .map(|h| {
            let file = to_bytes(&h, &random_tokens(rng, &h)).unwrap();
            assert_eq!(file[4], if h.patch_width == h.patch_height { 1 } else { 2 }, "version");
            file
        })
        .collect()
}

/// Version 1 files are read as they always were (square patches, bytes 40..44 reserved) and
/// still written for square patches; a non-square patch is written as version 2 with its height
/// at offset 40, and each axis of the grid is checked against its own patch side.
#[test]
fn version_1_stays_readable_and_non_square_patches_are_version_2() {
    let mut rng = TestRng::new(8);
    // A version-1 file laid out by hand from the version-1 table of docs/FORMAT.md.
    let tokens = random_tokens(&mut rng, &Header::for_image(DType::F32, 64, 64, 64, 3, 1));
    let mut v1 = Vec::new();
    v1.extend_from_slice(b"GPST");
    v1.extend_from_slice(&1u16.to_le_bytes());
    v1.extend_from_slice(&[0, 0]);
    for v in [100u32, 64, 64, 2, 1, 3, 1] {
        v1.extend_from_slice(&v.to_le_bytes());
    }
    v1.extend_from_slice(&3.0f32.to_le_bytes());
    v1.extend_from_slice(&[0; 8]);
    for _ in 0..2 {
        for t in &tokens {
            v1.extend_from_slice(&t.to_le_bytes());
        }
    }
    reseal(&mut v1);
    let (h, back) = from_bytes(&v1).unwrap();
    assert_eq!((h.image_width, h.image_height, h.patch_width, h.patch_height), (100, 64, 64, 64));
    assert_eq!((h.patches_x, h.patches_y, back.len()), (2, 1, 2 * tokens.len()));
    assert_eq!(to_bytes(&h, &back).unwrap(), v1, "a square patch is written as version 1, byte for byte");
    let mut bad = v1.clone();
    bad[40] = 64;
    reseal(&mut bad);
    assert_eq!(from_bytes(&bad).unwrap_err(), GpstError::InvalidHeader("reserved bytes are not zero"));

    let h = Header::for_image_with_patch(DType::BF16, 100, 70, (64, 32), 3, 1);
    assert_eq!((h.patches_x, h.patches_y), (2, 3));
    let t = random_tokens(&mut rng, &h);
    let file = to_bytes(&h, &t).unwrap();
    assert_eq!((file[4], &file[16..20], &file[40..44]), (2, &64u32.to_le_bytes()[..], &32u32.to_le_bytes()[..]));
    assert_eq!(from_bytes(&file).unwrap().0, h);
    // The grid rows follow the patch height: a header claiming ceil(70 / 64) rows is refused.
    let mut rows = file.clone();
    rows[24..28].copy_from_slice(&2u32.to_le_bytes());
    reseal(&mut rows);
    assert!(matches!(from_bytes(&rows).unwrap_err(), GpstError::InvalidHeader(_)));
    // A one-pixel patch side is refused on either axis.
    for at in [16, 40] {
        let mut thin = file.clone();
        thin[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
        reseal(&mut thin);
        assert!(matches!(from_bytes(&thin).unwrap_err(), GpstError::InvalidHeader(_)), "offset {at}");
    }
    // A version-2 file with a square patch (another writer's) is read too.
    let mut square = v1.clone();
    square[4] = 2;
    square[40..44].copy_from_slice(&64u32.to_le_bytes());
    reseal(&mut square);
    assert_eq!(from_bytes(&square).unwrap().0, from_bytes(&v1).unwrap().0);
}

#[test]
fn truncation_at_every_length_is_an_error() {
    let mut rng = TestRng::new(2);
    for file in valid_files(&mut rng) {
        for len in 0..file.len() {
            let err = decode_without_panic(&file[..len], "a truncated file").unwrap_err();
            assert!(matches!(err, GpstError::Truncated { .. }), "length {len}: {err:?}");
        }
        let mut long = file.clone();
        long.extend_from_slice(&[0; 3]);
        let err = decode_without_panic(&long, "trailing bytes").unwrap_err();
        assert!(matches!(err, GpstError::TrailingBytes { .. }), "{err:?}");
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let mut rng = TestRng::new(3);
    for file in valid_files(&mut rng) {
        for bit in 0..file.len() * 8 {
            let mut f = file.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            // CRC-32 detects every single-bit error, and the header checks catch the rest first.
            assert!(decode_without_panic(&f, "a bit flip").is_err(), "bit {bit} went unnoticed");
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let mut rng = TestRng::new(4);
    let files = valid_files(&mut rng);
    let huge = [0u32, 1, 2, 255, 256, 257, 65535, 1 << 20, 1 << 31, u32::MAX - 1, u32::MAX];
    let (mut ok, mut err) = (0usize, 0usize);
    for round in 0..20_000 {
        let mut f = files[round % files.len()].clone();
        let kind = round % 6;
        match kind {
            // Random bit flips anywhere.
            0 => {
                for _ in 0..1 + rng.next_u64() % 8 {
                    let i = (rng.next_u64() % f.len() as u64) as usize;
                    f[i] ^= 1 << (rng.next_u64() % 8);
                }
            }
            // A header field (4-byte aligned, after the magic) set to an extreme value.
            1 | 2 => {
                let field = 4 * (1 + rng.next_u64() % 10) as usize;
                let v = huge[(rng.next_u64() % huge.len() as u64) as usize];
                f[field..field + 4].copy_from_slice(&v.to_le_bytes());
            }
            // Random garbage bytes after a valid magic, of random length.
            3 => {
                let len = (rng.next_u64() % 400) as usize;
                f.truncate(4);
                f.extend((0..len).map(|_| rng.next_u64() as u8));
            }
            // Random bytes in the body (and sometimes the header) with the checksum recomputed,
            // so token validation is what has to catch them.
            _ => {
                let from = if kind == 4 { HEADER_LEN } else { 4 };
                for _ in 0..1 + rng.next_u64() % 4 {
                    let i = from + (rng.next_u64() % (f.len() - from) as u64) as usize;
                    f[i] = rng.next_u64() as u8;
                }
            }
        }
        if kind != 0 {
            reseal(&mut f);
        }
        match decode_without_panic(&f, "a mutated file") {
            Ok(()) => ok += 1,
            Err(_) => err += 1,
        }
    }
    println!("{ok} mutated files decoded, {err} refused");
    // Resealed body edits usually still decode, so both outcomes must have been exercised.
    assert!(ok > 100 && err > 1000, "ok {ok}, err {err}");
}

#[test]
fn extreme_header_fields_are_refused_or_decoded_within_the_allocation_bound() {
    let mut rng = TestRng::new(6);
    let files = valid_files(&mut rng);
    let extremes = [0u32, 1, 2, 3, 256, 1 << 16, 1 << 31, (1 << 31) + 1, u32::MAX - 1, u32::MAX, 0x7F80_0000];
    // The ten u32 fields after the magic and version (offset 4 holds version + dtype + reserved).
    let fields: Vec<usize> = (1..11).map(|i| 4 * i).collect();
    let mut tried = 0;
    // One field at a time, in every dtype and both versions: 6 x 10 x 11 = 660 files.
    for file in &files {
        for &at in &fields {
            for &v in &extremes {
                let mut f = file.clone();
                f[at..at + 4].copy_from_slice(&v.to_le_bytes());
                reseal(&mut f);
                let _ = decode_without_panic(&f, &format!("field {at} = {v}"));
                tried += 1;
            }
        }
    }
    // Two fields at once in the f16 file (the one whose decode widens): 45 x 11 x 11 = 5,445 files,
    // plus the image size and the patch grid made consistent with each other (165 files).
    for (i, &a) in fields.iter().enumerate() {
        for &b in &fields[i + 1..] {
            for &va in &extremes {
                for &vb in &extremes {
                    let mut f = files[1].clone();
                    f[a..a + 4].copy_from_slice(&va.to_le_bytes());
                    f[b..b + 4].copy_from_slice(&vb.to_le_bytes());
                    reseal(&mut f);
                    let _ = decode_without_panic(&f, &format!("fields {a} = {va}, {b} = {vb}"));
                    tried += 1;
                }
            }
        }
    }
    for &w in &extremes[1..] {
        for &patch in &[2u32, 256, u32::MAX] {
            for &n in &[1u32, 1 << 20, u32::MAX] {
                let mut f = files[0].clone();
                for (at, v) in [(8, w), (12, w), (16, patch), (20, w.div_ceil(patch)), (24, w.div_ceil(patch)), (28, n)]
                {
                    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                reseal(&mut f);
                // A consistent header that asks for more than the file holds is refused as truncated.
                assert!(decode_without_panic(&f, &format!("{w}x{w}, patch {patch}, {n} tokens")).is_err() || n == 1);
                tried += 1;
            }
        }
    }
    // The same for version 2, with patch width and height apart (90 files).
    for &w in &extremes[1..] {
        for &(pw, ph) in &[(2u32, 256u32), (256, 2), (u32::MAX, 2)] {
            for &n in &[1u32, 1 << 20, u32::MAX] {
                let mut f = files[3].clone();
                let fields = [(8, w), (12, w), (16, pw), (40, ph), (20, w.div_ceil(pw)), (24, w.div_ceil(ph)), (28, n)];
                for (at, v) in fields {
                    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                reseal(&mut f);
                assert!(decode_without_panic(&f, &format!("{w}x{w}, patch {pw}x{ph}, {n} tokens")).is_err() || n == 1);
                tried += 1;
            }
        }
    }
    assert_eq!(tried, 660 + 5_445 + 90 + 90);
}

#[test]
fn resealed_invalid_tokens_are_refused_with_their_index() {
    let mut rng = TestRng::new(5);
    let h = Header::for_image(DType::F16, 256, 256, 256, 10, 2);
    let mut bytes = to_bytes(&h, &random_tokens(&mut rng, &h)).unwrap();
    // sigma_x of token 7 := -0.0 in f16, which validation must see as non-positive.
    let at = HEADER_LEN + 7 * h.token_stride() * 2;
    bytes[at..at + 2].copy_from_slice(&0x8000u16.to_le_bytes());
    reseal(&mut bytes);
    match from_bytes(&bytes) {
        Err(GpstError::InvalidToken { index: 7, .. }) => {}
        other => panic!("{other:?}"),
    }
}
