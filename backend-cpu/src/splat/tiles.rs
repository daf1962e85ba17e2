//! The CPU's fast splat forward: one row band of one image, cache-tiled.
//!
//! Bit-identical to the core's reference (`gpstoken_core::render::splat_forward`): every pixel
//! is the f32 sum, in Gaussian index order, of exactly the terms the brute-force `gs.cu` loop
//! adds, computed with the same f32 operations ([`SplatKernel::column_terms`],
//! [`SplatKernel::row_term`], [`SplatKernel::value_from_terms`]). Tiling only changes which
//! pixels are visited when, never the order of the additions into one pixel, so any split of the
//! canvas into bands and tiles gives the same bits (see ARCHITECTURE.md, "Why the fast CPU splat
//! is bit-identical to the brute force").

use super::expf::{expf16, LANES};
use gpstoken_core::render::{Footprint, SplatDesc, SplatKernel};
use gpstoken_core::token::GAUSSIAN_PARAMS;
use std::ops::Range;

/// Columns processed together: the per-column terms of the kernel are computed once per
/// Gaussian and chunk, the per-pixel values land in a stack buffer, then each channel is one
/// contiguous multiply-add over the chunk (vectorisable, no allocation).
const CHUNK: usize = 64;
/// Half a block.
const HALF: usize = LANES / 2;
/// Output bytes (all channels) of one row tile of the forward.
pub(super) const TILE_BYTES: usize = 512 * 1024;
/// Fewest rows per tile: below that, the per-(Gaussian, tile) set-up would dominate.
pub(super) const MIN_TILE_ROWS: usize = 8;

/// Rows per tile for `desc`.
fn tile_rows(desc: &SplatDesc) -> usize {
    let row_bytes = desc.width * desc.channels * std::mem::size_of::<f32>();
    (TILE_BYTES / row_bytes.max(1)).max(MIN_TILE_ROWS)
}

/// The length of the tile buffer that [`splat_forward_planes`] needs for a band of `rows` rows:
/// one tile as `[rows, C, W]`, then `LANES` values that whole-block writes may touch.
pub(super) fn tile_buffer_len(desc: &SplatDesc, rows: usize) -> usize {
    tile_rows(desc).min(rows) * desc.channels * desc.width + LANES
}

super::multiversion! {
    /// Renders the rows `rows` of ONE image (`tokens [N, 5+C]`) into per-channel slices: `planes[c]`
    /// holds `rows.len() * W` values, the band of channel `c`, overwritten. `footprints` are the
    /// image's per-Gaussian [`Footprint`]s (computed once, shared by every band); `grid` holds
    /// `pixel_coord` of every column, then of every row; `tile` is working memory of
    /// [`tile_buffer_len`] values (any contents).
    ///
    /// Cutting each channel plane of a CHW image into row bands gives every thread disjoint memory
    /// without copying. The caller (the `SplatKernels` front end's checked buffers) guarantees the
    /// lengths; they are only debug-asserted here.
    pub(super) fn splat_forward_planes(
        desc: &SplatDesc,
        grid: &[f32],
        tokens: &[f32],
        footprints: &[Footprint],
        rows: Range<usize>,
        planes: &mut [&mut [f32]],
        tile: &mut [f32],
    ) => forward_planes
}

/// [`splat_forward_planes`], compiled once per instruction set (see `multiversion!`).
#[inline(always)]
fn forward_planes(
    desc: &SplatDesc,
    grid: &[f32],
    tokens: &[f32],
    footprints: &[Footprint],
    rows: Range<usize>,
    planes: &mut [&mut [f32]],
    tile_buf: &mut [f32],
) {
    let (height, width) = (desc.height, desc.width);
    let (grid_x, grid_y) = grid.split_at(width);
    debug_assert!(rows.end <= height && footprints.len() == desc.gaussians && planes.len() == desc.channels);
    debug_assert!(planes.iter().all(|p| p.len() == rows.len() * width));
    debug_assert_eq!(tokens.len(), desc.gaussians * desc.token_stride());
    if desc.channels == 0 || rows.is_empty() {
        return;
    }
    debug_assert!(tile_buf.len() >= tile_buffer_len(desc, rows.len()));
    // Row tiles small enough for their output (all channels) to stay in cache while every
    // Gaussian touching them is added: Gaussians come in index order, which is spatially
    // random, so without tiling each one would fetch its footprint from memory.
    // A tile is rendered as `[rows, C, W]` and then copied into the planes: written in place,
    // the `C` planes (256 KB apart at 256x256) put the channels of a pixel block in the same
    // cache sets, which evicted each other (40% of the forward's time, in the stores). Every
    // pixel still gets the same additions in the same order.
    let channels = desc.channels;
    let buf_len = tile_buf.len();
    for tile_start in rows.clone().step_by(tile_rows(desc)) {
        let tile = tile_start..rows.end.min(tile_start + tile_rows(desc));
        tile_buf[..tile.len() * channels * width].fill(0.0);
        for (token, fp) in tokens.chunks_exact(desc.token_stride()).zip(footprints) {
            let (r0, r1) = (fp.row_start.max(tile.start), fp.row_end.min(tile.end));
            if r0 >= r1 || fp.col_start >= fp.col_end {
                continue;
            }
            let k = SplatKernel::new(token, desc.kappa);
            let colors = &token[GAUSSIAN_PARAMS..];
            let finite = colors.iter().all(|c| c.is_finite());
            for j0 in fp.cols().step_by(CHUNK) {
                let n = CHUNK.min(fp.col_end - j0);
                let mut t_x = [0.0f32; CHUNK];
                let mut p_x = [0.0f32; CHUNK];
                for q in 0..n {
                    (t_x[q], p_x[q]) = k.column_terms(grid_x[j0 + q] - k.x);
                }
                let blocks = n.div_ceil(LANES);
                // Lane masks of every block, all ones up to column `n`. Opaque to the optimiser
                // (`black_box`): knowing them, it compiled the masking into a branch and a scalar
                // store per lane, and the 16-lane reload of `v` that follows stalled on those
                // stores (store forwarding): 40% of the forward's time.
                let mut keep = [[0u32; LANES]; CHUNK / LANES];
                for (b, k) in keep.iter_mut().enumerate() {
                    *k = super::prefix_mask(n.saturating_sub(b * LANES));
                }
                let keep = std::hint::black_box(keep);
                // A row ending in at most HALF columns leaves its last columns to a block shared
                // with the next row (below); each pixel still gets its term from the same f32
                // operations, and a Gaussian adds one term per pixel, so the order is free.
                let (full, rem) = (n / LANES, n % LANES);
                let paired = rem > 0 && rem <= HALF;
                let row_blocks = if paired { full } else { blocks };
                for (i, &row_coord) in grid_y.iter().enumerate().take(r1).skip(r0) {
                    let dy = row_coord - k.y;
                    let t_y = k.row_term(dy);
                    let at = (i - tile.start) * channels * width + j0;
                    // Whole blocks of LANES pixels where they stay inside the buffer: the pixels
                    // past the footprint (past the row: the next channel's row, or the padding)
                    // get `0 * col = ±0`, which leaves every value unchanged (a sum that starts
                    // at +0.0 is never -0.0), unless `col` is not finite.
                    let last = at + (channels - 1) * width + row_blocks * LANES;
                    let len = if finite && last <= buf_len { row_blocks * LANES } else { n.min(row_blocks * LANES) };
                    for (b, keep) in keep.iter().enumerate().take(row_blocks) {
                        // `value_from_terms`: the exponents, then `expf` on all lanes (same bits).
                        let mut e = [0.0f32; LANES];
                        for (l, el) in e.iter_mut().enumerate() {
                            let q = b * LANES + l;
                            *el = k.exponent_from_terms(t_x[q], p_x[q], dy, t_y);
                        }
                        let mut v = expf16(e);
                        // `v` is positive or NaN: AND-ing clears exactly the lanes past `n` (+0).
                        for (vl, &m) in v.iter_mut().zip(keep) {
                            *vl = f32::from_bits(vl.to_bits() & m);
                        }
                        let (lo, hi) = (b * LANES, len.min((b + 1) * LANES));
                        for (c, &col) in colors.iter().enumerate() {
                            let at = at + c * width;
                            for (o, &vq) in tile_buf[at + lo..at + hi].iter_mut().zip(&v) {
                                *o += vq * col;
                            }
                        }
                    }
                }
                if paired {
                    let q0 = full * LANES;
                    let (mut t_xs, mut p_xs) = ([0.0f32; LANES], [0.0f32; LANES]);
                    for l in 0..LANES {
                        (t_xs[l], p_xs[l]) = (t_x[q0 + l % HALF], p_x[q0 + l % HALF]);
                    }
                    for i in (r0..r1).step_by(2) {
                        // Lanes 0..HALF: row `i`; HALF..: row `i + 1` (or `i` again, not written).
                        let i2 = if i + 1 < r1 { i + 1 } else { i };
                        let (dy0, dy1) = (grid_y[i] - k.y, grid_y[i2] - k.y);
                        let (t_y0, t_y1) = (k.row_term(dy0), k.row_term(dy1));
                        let mut e = [0.0f32; LANES];
                        for l in 0..LANES {
                            let (dy, t_y) = if l < HALF { (dy0, t_y0) } else { (dy1, t_y1) };
                            e[l] = k.exponent_from_terms(t_xs[l], p_xs[l], dy, t_y);
                        }
                        let v = expf16(e);
                        for (half, r) in [i, i2].into_iter().enumerate().take(if i2 > i { 2 } else { 1 }) {
                            let at = (r - tile.start) * channels * width + j0 + q0;
                            // Whole halves where they stay inside the buffer, as above (the lanes
                            // past `rem` hold `v` of columns past the footprint: cleared).
                            let whole = finite && at + (channels - 1) * width + HALF <= buf_len;
                            let mut vh = [0.0f32; HALF];
                            for (l, o) in vh.iter_mut().enumerate() {
                                *o = f32::from_bits(v[half * HALF + l].to_bits() & keep[full][l]);
                            }
                            let len = if whole { HALF } else { rem };
                            for (c, &col) in colors.iter().enumerate() {
                                let at = at + c * width;
                                for (o, &vq) in tile_buf[at..at + len].iter_mut().zip(&vh) {
                                    *o += vq * col;
                                }
                            }
                        }
                    }
                }
            }
        }
        let rendered = tile_buf[..tile.len() * channels * width].chunks_exact(width);
        for (k, src) in rendered.enumerate() {
            let (i, c) = (tile.start + k / channels, k % channels);
            planes[c][(i - rows.start) * width..][..width].copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpstoken_core::render::{self, footprint, pixel_coord};
    use gpstoken_core::rng::SplitMix64;

    fn random_tokens(rng: &mut SplitMix64, n: usize, stride: usize, sigma: (f32, f32)) -> Vec<f32> {
        let mut uniform = |lo: f32, hi: f32| lo + (hi - lo) * rng.unit_f32();
        let mut tokens = vec![0.0f32; n * stride];
        for token in tokens.chunks_exact_mut(stride) {
            token[0] = uniform(sigma.0, sigma.1);
            token[1] = uniform(sigma.0, sigma.1);
            token[2] = uniform(-0.9, 0.9);
            token[3] = uniform(-1.2, 1.2);
            token[4] = uniform(-1.2, 1.2);
            for f in &mut token[GAUSSIAN_PARAMS..] {
                *f = uniform(-1.0, 1.0);
            }
        }
        tokens
    }

    /// Every band of `bands` rendered into plane slices, compared bit for bit with the core's
    /// reference render of the whole image.
    fn assert_bands_match_reference(desc: &SplatDesc, tokens: &[f32], bands: &[Range<usize>]) {
        let (h, w, c) = (desc.height, desc.width, desc.channels);
        let mut want = vec![0.0f32; c * h * w];
        render::splat_forward(desc, tokens, &mut want).unwrap();
        assert!(want.iter().any(|&v| v != 0.0));
        let fps: Vec<Footprint> = tokens
            .chunks_exact(desc.token_stride())
            .map(|t| footprint(&SplatKernel::new(t, desc.kappa), h, w))
            .collect();
        for rows in bands {
            let mut data = vec![vec![f32::NAN; rows.len() * w]; c];
            let mut planes: Vec<&mut [f32]> = data.iter_mut().map(|p| &mut p[..]).collect();
            let mut tile = vec![f32::NAN; tile_buffer_len(desc, rows.len())];
            let grid: Vec<f32> = (0..w).map(|j| pixel_coord(j, w)).chain((0..h).map(|i| pixel_coord(i, h))).collect();
            splat_forward_planes(desc, &grid, tokens, &fps, rows.clone(), &mut planes, &mut tile);
            for (ch, plane) in data.iter().enumerate() {
                let reference = &want[(ch * h + rows.start) * w..(ch * h + rows.end) * w];
                assert!(plane.iter().zip(reference).all(|(a, b)| a.to_bits() == b.to_bits()), "rows {rows:?}");
            }
        }
    }

    #[test]
    fn bands_give_the_reference_bits() {
        let mut rng = SplitMix64::new(11);
        // 70 columns: boxes wider than one CHUNK occur.
        let desc = SplatDesc { batch: 1, gaussians: 20, channels: 3, height: 23, width: 70, kappa: 3.0 };
        let tokens = random_tokens(&mut rng, 20, desc.token_stride(), (0.02, 0.4));
        assert_bands_match_reference(&desc, &tokens, &[0..23, 0..5, 5..6, 6..23, 7..7]);
    }

    #[test]
    fn shared_blocks_of_narrow_rows_give_the_reference_bits() {
        // Narrow footprints: rows ending in 1 to 8 columns share a block with the next row;
        // odd and even row counts, and bands that cut a footprint after an odd row.
        let desc = SplatDesc { batch: 1, gaussians: 60, channels: 5, height: 31, width: 90, kappa: 3.0 };
        let mut rng = SplitMix64::new(7);
        let tokens = random_tokens(&mut rng, 60, desc.token_stride(), (0.005, 0.12));
        let fps: Vec<Footprint> = tokens
            .chunks_exact(desc.token_stride())
            .map(|t| footprint(&SplatKernel::new(t, desc.kappa), desc.height, desc.width))
            .collect();
        let shared = |fp: &&Footprint| (1..=HALF).contains(&((fp.col_end - fp.col_start) % LANES));
        assert!(fps.iter().filter(shared).any(|fp| (fp.row_end - fp.row_start) % 2 == 1));
        assert!(fps.iter().filter(shared).any(|fp| (fp.row_end - fp.row_start) % 2 == 0));
        assert!(fps.iter().filter(shared).any(|fp| fp.col_end - fp.col_start > LANES));
        assert_bands_match_reference(&desc, &tokens, &[0..31, 0..7, 7..20, 20..31]);
    }

    #[test]
    fn row_tiles_give_the_reference_bits() {
        // 600 columns x 120 channels: 288 KB per row, so row tiles of MIN_TILE_ROWS rows.
        let desc = SplatDesc { batch: 1, gaussians: 12, channels: 120, height: 21, width: 600, kappa: 3.0 };
        assert!(TILE_BYTES / (desc.width * desc.channels * 4) < desc.height);
        let mut rng = SplitMix64::new(3);
        let tokens = random_tokens(&mut rng, 12, desc.token_stride(), (0.05, 0.3));
        assert_bands_match_reference(&desc, &tokens, &[0..21, 3..20]);
    }
}
