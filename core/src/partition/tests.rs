use super::*;

fn blank() -> [Region; 4] {
    [Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; 4]
}

#[test]
fn region_limits() {
    assert_eq!(max_regions(256, 256, 8), MAX_REGIONS);
    assert_eq!(max_regions(64, 64, 8), 64);
    assert_eq!(max_regions(9, 9, 8), 1);
    assert_eq!(max_regions(10, 9, 8), 2);
}

#[test]
fn errors_not_panics() {
    let g = [0.0f32; 16 * 16];
    let mut out = blank();
    let p = |tokens| PartitionParams::new(tokens);
    assert_eq!(partition_patch(&g, 16, 16, &p(0), None, &mut out[..0]), Err(PartitionError::ZeroTokens));
    assert_eq!(
        partition_patch(&g, 16, 16, &p(5), None, &mut out),
        Err(PartitionError::TooManyTokens { requested: 5, max: 4 })
    );
    assert!(matches!(partition_patch(&g[1..], 16, 16, &p(4), None, &mut out), Err(PartitionError::PatchShape { .. })));
    assert!(matches!(
        partition_patch(&g, 16, 16, &p(4), Some(&g[1..]), &mut out),
        Err(PartitionError::BiasShape { .. })
    ));
    assert!(matches!(partition_patch(&g, 16, 16, &p(4), None, &mut out[..3]), Err(PartitionError::PatchShape { .. })));
    // A flat patch: every key ties, so the stable order and the Y-first tie rule decide.
    partition_patch(&g, 16, 16, &p(4), None, &mut out).unwrap();
    let r: [(u16, u16, u16, u16); 4] = out.map(|r| (r.y0, r.y1, r.x0, r.x1));
    // Root square: the four halves tie, so the Y split wins (top, bottom); the top half (a
    // 2:1 rectangle) splits into columns and its halves go to the end; the bottom half, now
    // the highest key, splits next.
    assert_eq!(r, [(0, 7, 0, 7), (0, 7, 8, 15), (8, 15, 0, 7), (8, 15, 8, 15)]);
    assert!(out[0].score > 0.0 && out[0].score < 1e-15);
}

#[test]
fn gaussian_and_box() {
    let r = Region { y0: 0, y1: 255, x0: 0, x1: 127, score: 0.0 };
    let g = region_gaussian(&r, 256, 256);
    assert_eq!(
        g,
        [
            (127.0f64 / 256.0 * 2.0 / 3.0) as f32,
            (255.0f64 / 256.0 * 2.0 / 3.0) as f32,
            0.0,
            ((63.5f64 / 255.0 - 0.5) * 2.0) as f32,
            0.0
        ]
    );
    assert_eq!(region_box(&r, 256, 256), [-1.0, -1.0, ((127.0f64 / 255.0 - 0.5) * 2.0) as f32, 1.0]);
}
