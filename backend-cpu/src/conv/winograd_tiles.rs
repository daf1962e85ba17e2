//! The tile transforms of the Winograd convolutions ([`super::winograd`]): `V = Bᵀ d B` of the
//! 4x4 input windows and `y = Aᵀ M A` back to the 2x2 output tiles, on groups of [`LANES`]
//! tiles that are consecutive along a tile row, so that every step is a vector operation.
//!
//! The input transform first runs the pass over the rows (`Bᵀ d`) on whole image rows, shared
//! by the two tiles that overlap in each column pair, and writes each combined row split into its
//! even and odd padded columns ([`SplitRows`]); the pass over the columns (`(…) B`) then reads
//! contiguous lanes. Every value gets the same f32 operations as in the per-tile order (rows
//! first, then columns), so the grouping changes no bit. The buffers of transformed tiles have
//! room for a whole lane group past a block's last tile ([`tile_stride`]): groups are always
//! copied whole.

// The transforms index rows and columns of small matrices in both orders; index loops say that
// more plainly than iterator chains.
#![allow(clippy::needless_range_loop)]

use super::winograd::Shape;
use crate::gemm::OutPtr;
use crate::simd::multiversion;

/// Tiles transformed together: the transforms run on arrays of this many tiles (consecutive
/// along a tile row), which the compiler turns into vector operations.
pub(super) const LANES: usize = 16;

/// Values between the rows of the transformed-tile buffers (`[16][channels][tile_stride]`): a
/// block's `nt` tiles and room for a whole lane group written or read at any tile, so that no
/// group needs a partial (scalar) copy. The room is never read by the GEMMs.
pub(super) fn tile_stride(nt: usize) -> usize {
    nt + LANES
}

/// Values in each half (even or odd padded columns) of a combined row of the transforms: room
/// for a whole lane group and its windows' right half from any tile of the row (a block's runs
/// may start anywhere in a row).
fn half_row_len(s: Shape) -> usize {
    s.tiles_x() + LANES + 1
}

/// Values of the row buffer [`input_tiles`] and the kernel gradient's `gradient_tiles` take:
/// 4 combined rows (each split into its even and odd padded columns) and one row of `w` zeros
/// (the image rows outside the plane).
pub(super) fn row_buffer_len(s: Shape) -> usize {
    8 * half_row_len(s) + s.w
}

/// Values of the row buffer [`output_tiles`] takes: the 2 columns of each tile of 2 output rows.
pub(super) fn output_row_buffer_len(s: Shape) -> usize {
    4 * s.tiles_x().next_multiple_of(LANES)
}

/// The runs of a block of tiles `t0 .. t0 + nt` (row-major over the tile grid) along tile
/// rows: `(ty, tx0, tx1, offset in the block)`.
pub(super) fn row_runs(t0: usize, nt: usize, tiles_x: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let mut t = t0;
    std::iter::from_fn(move || {
        if t >= t0 + nt {
            return None;
        }
        let (ty, tx0) = (t / tiles_x, t % tiles_x);
        let tx1 = tiles_x.min(tx0 + (t0 + nt - t));
        let run = (ty, tx0, tx1, t - t0);
        t += tx1 - tx0;
        Some(run)
    })
}

/// The combined rows of a transform, each split into its even and odd padded columns (image
/// column `j` is padded column `j + 1`): `even[r][k]` = padded column `2k`, `odd[r][k]` =
/// `2k + 1`, so that the columns of a lane group's windows are contiguous.
pub(super) struct SplitRows<'a> {
    pub even: [&'a mut [f32]; 4],
    pub odd: [&'a mut [f32]; 4],
    /// `w` zeros: the image rows outside the plane.
    pub zeros: &'a [f32],
}

impl<'a> SplitRows<'a> {
    /// The rows in `buffer` ([`row_buffer_len`] values), every value set to `pad[r]` for row `r`
    /// (the value the transform's row pass gives for zero inputs): the passes write the image
    /// columns only, so the padding keeps it.
    pub(super) fn new(s: Shape, buffer: &'a mut [f32], pad: [f32; 4]) -> SplitRows<'a> {
        let half = half_row_len(s);
        let (halves, zeros) = buffer[..row_buffer_len(s)].split_at_mut(8 * half);
        zeros.fill(0.0);
        let mut chunks = halves.chunks_exact_mut(half);
        let mut next = |r: usize| {
            let c = chunks.next().expect("8 half rows");
            c.fill(pad[r]);
            c
        };
        let even = [next(0), next(1), next(2), next(3)];
        let odd = [next(0), next(1), next(2), next(3)];
        SplitRows { even, odd, zeros }
    }
}

/// Rows `channels` of `V [16][cin][tile_stride(nt)]` (the other rows untouched): the
/// transformed tiles `t0 .. t0 + nt` of image `x_img [cin][h][w]`. Tile `(ty, tx)` reads rows
/// `2ty-1 .. 2ty+3` and columns `2tx-1 .. 2tx+3`, zero outside. `rows` holds
/// [`row_buffer_len`] values.
///
/// # Safety
/// Nobody else may access rows `channels` of `v` meanwhile.
#[inline(always)]
unsafe fn input_tiles_impl(
    s: Shape,
    x_img: &[f32],
    block: (usize, usize),
    channels: std::ops::Range<usize>,
    rows: &mut [f32],
    v: OutPtr,
) {
    let ((t0, nt), tiles_x, plane, w) = (block, s.tiles_x(), s.h * s.w, s.w);
    let stride = tile_stride(nt);
    // The row pass of zeros is +0 in every row.
    let SplitRows { mut even, mut odd, zeros } = SplitRows::new(s, rows, [0.0; 4]);
    let pairs = w / 2;
    for ci in channels {
        let xp = &x_img[ci * plane..(ci + 1) * plane];
        for (ty, tx0, tx1, at0) in row_runs(t0, nt, tiles_x) {
            let image_row = |r: usize| {
                let iy = (2 * ty + r) as isize - 1;
                if iy >= 0 && iy < s.h as isize {
                    &xp[iy as usize * w..(iy as usize + 1) * w]
                } else {
                    zeros
                }
            };
            let (d0, d1, d2, d3) = (image_row(0), image_row(1), image_row(2), image_row(3));
            // The pass over the rows, `[d0 - d2, d1 + d2, d2 - d1, d1 - d3]`, on whole rows:
            // image columns (2k, 2k + 1) go to odd[k] and even[k + 1].
            {
                let [e0, e1, e2, e3] = &mut even;
                let [o0, o1, o2, o3] = &mut odd;
                let (e0, e1, e2, e3) = (&mut e0[1..=pairs], &mut e1[1..=pairs], &mut e2[1..=pairs], &mut e3[1..=pairs]);
                let (o0, o1, o2, o3) = (&mut o0[..pairs], &mut o1[..pairs], &mut o2[..pairs], &mut o3[..pairs]);
                let (d0, d1, d2, d3) = (&d0[..2 * pairs], &d1[..2 * pairs], &d2[..2 * pairs], &d3[..2 * pairs]);
                for k in 0..pairs {
                    let (j, i) = (2 * k, 2 * k + 1);
                    o0[k] = d0[j] - d2[j];
                    o1[k] = d1[j] + d2[j];
                    o2[k] = d2[j] - d1[j];
                    o3[k] = d1[j] - d3[j];
                    e0[k] = d0[i] - d2[i];
                    e1[k] = d1[i] + d2[i];
                    e2[k] = d2[i] - d1[i];
                    e3[k] = d1[i] - d3[i];
                }
            }
            if w % 2 == 1 {
                let j = w - 1;
                odd[0][pairs] = d0[j] - d2[j];
                odd[1][pairs] = d1[j] + d2[j];
                odd[2][pairs] = d2[j] - d1[j];
                odd[3][pairs] = d1[j] - d3[j];
            }
            for lx in (tx0..tx1).step_by(LANES) {
                let at_t = at0 + (lx - tx0);
                for a in 0..4 {
                    // The pass over the columns: window columns c0..c3 of tile lx + l are
                    // even[l], odd[l], even[l + 1], odd[l + 1].
                    let e = <&[f32; LANES + 1]>::try_from(&even[a][lx..=lx + LANES]).expect("whole groups");
                    let o = <&[f32; LANES + 1]>::try_from(&odd[a][lx..=lx + LANES]).expect("whole groups");
                    let mut t = [[0.0f32; LANES]; 4];
                    for l in 0..LANES {
                        let (c0, c1, c2, c3) = (e[l], o[l], e[l + 1], o[l + 1]);
                        t[0][l] = c0 - c2;
                        t[1][l] = c1 + c2;
                        t[2][l] = c2 - c1;
                        t[3][l] = c1 - c3;
                    }
                    for (b, tb) in t.iter().enumerate() {
                        // A whole group: the lanes past the run land on later tiles of the row,
                        // written after this, or in the row's spare room.
                        // SAFETY: row `(a, b, ci)` of `v` is the caller's alone.
                        let dst = unsafe { v.slice(((a * 4 + b) * s.cin + ci) * stride + at_t, LANES) };
                        dst.copy_from_slice(tb);
                    }
                }
            }
        }
    }
}

/// `[m0 + m1 + m2, m1 - m2 - m3]` lane by lane: one pass of `Aᵀ M A`.
#[inline(always)]
fn at(m: &[[f32; LANES]; 4]) -> [[f32; LANES]; 2] {
    let mut o = [[0.0f32; LANES]; 2];
    for l in 0..LANES {
        o[0][l] = m[0][l] + m[1][l] + m[2][l];
        o[1][l] = m[1][l] - m[2][l] - m[3][l];
    }
    o
}

/// `y = Aᵀ M A + bias` of the tiles `t0 .. t0 + nt` of image `b` from
/// `M [16][cout][tile_stride(nt)]`, written into the image's planes of `out`
/// (`[batch][cout][h][w]`), cropped to `h x w`. `rows` holds [`output_row_buffer_len`] values.
///
/// # Safety
/// Nobody else may access these tiles' outputs in `out` meanwhile.
#[inline(always)]
unsafe fn output_tiles_impl(
    s: Shape,
    b: usize,
    block: (usize, usize),
    m: &[f32],
    bias: Option<&[f32]>,
    rows: &mut [f32],
    out: OutPtr,
) {
    let ((t0, nt), tiles_x, plane, w) = (block, s.tiles_x(), s.h * s.w, s.w);
    let stride = tile_stride(nt);
    // cols[a][c][k]: column c of output row a of tile tx0 + k of the run.
    let run_len = s.tiles_x().next_multiple_of(LANES);
    let mut halves = rows[..4 * run_len].chunks_exact_mut(run_len);
    let mut next = || halves.next().expect("4 half rows");
    let cols = [[next(), next()], [next(), next()]];
    for co in 0..s.cout {
        let bv = bias.map_or(0.0, |bias| bias[co]);
        for (ty, tx0, tx1, at0) in row_runs(t0, nt, tiles_x) {
            for lx in (tx0..tx1).step_by(LANES) {
                let at_t = at0 + (lx - tx0);
                // mv[c][r] = M[4 r + c] (by columns, as in `input_tiles`); whole groups (the
                // lanes past the run read other tiles or the spare room, and are dropped).
                let mut mv = [[[0.0f32; LANES]; 4]; 4];
                for xi in 0..16 {
                    let o = (xi * s.cout + co) * stride + at_t;
                    mv[xi % 4][xi / 4] = *<&[f32; LANES]>::try_from(&m[o..o + LANES]).expect("whole groups");
                }
                // Aᵀ M over the rows (per column c), then over the columns.
                let mut r = [[[0.0f32; LANES]; 2]; 4];
                for c in 0..4 {
                    r[c] = at(&mv[c]);
                }
                for a in 0..2 {
                    let y2 = at(&[r[0][a], r[1][a], r[2][a], r[3][a]]);
                    for c in 0..2 {
                        cols[a][c][lx - tx0..lx - tx0 + LANES].copy_from_slice(&y2[c]);
                    }
                }
            }
            // The two columns of each tile interleaved, plus the bias, cropped to the plane.
            let (x0, x1) = (2 * tx0, w.min(2 * tx1));
            for a in 0..2.min(s.h - 2 * ty) {
                // SAFETY: these outputs are the caller's alone (the function's contract).
                let dst = unsafe { out.slice((b * s.cout + co) * plane + (2 * ty + a) * w + x0, x1 - x0) };
                // A lane group of tiles at a time (the buffer holds whole groups), so that the
                // interleaving is a fixed-size vector shuffle, not a scalar loop.
                for (g, dst) in dst.chunks_mut(2 * LANES).enumerate() {
                    let c0 = <&[f32; LANES]>::try_from(&cols[a][0][g * LANES..(g + 1) * LANES]).expect("whole groups");
                    let c1 = <&[f32; LANES]>::try_from(&cols[a][1][g * LANES..(g + 1) * LANES]).expect("whole groups");
                    let mut line = [0.0f32; 2 * LANES];
                    for l in 0..LANES {
                        line[2 * l] = c0[l] + bv;
                        line[2 * l + 1] = c1[l] + bv;
                    }
                    match dst.len() {
                        n if n == 2 * LANES => dst.copy_from_slice(&line),
                        n if n == LANES => dst.copy_from_slice(&line[..LANES]),
                        n => dst.copy_from_slice(&line[..n]),
                    }
                }
            }
        }
    }
}

multiversion! {
    /// [`input_tiles_impl`] for the CPU's vector unit.
    ///
    /// # Safety
    /// Nobody else may access rows `channels` of `v` meanwhile.
    pub(super) unsafe fn input_tiles(s: Shape, x_img: &[f32], block: (usize, usize), channels: std::ops::Range<usize>, rows: &mut [f32], v: OutPtr) => input_tiles_impl
}

multiversion! {
    /// [`output_tiles_impl`] for the CPU's vector unit.
    ///
    /// # Safety
    /// Nobody else may access these tiles' outputs in `out` meanwhile.
    pub(super) unsafe fn output_tiles(s: Shape, b: usize, block: (usize, usize), m: &[f32], bias: Option<&[f32]>, rows: &mut [f32], out: OutPtr) => output_tiles_impl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + seed) * 2654435761) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Shapes with one partial lane group (`tiles_x` 3 and 8), a whole and a partial one (19),
    /// odd and even planes; blocks from the first tile and from inside a tile row.
    const SHAPES: [(usize, usize, usize, usize); 4] = [(3, 2, 9, 37), (2, 3, 6, 5), (1, 2, 17, 16), (2, 1, 4, 66)];

    fn blocks(s: Shape) -> [(usize, usize); 2] {
        let t0 = 5.min(s.tiles() - 1);
        [(0, s.tiles()), (t0, s.tiles() - t0)]
    }

    /// `Bᵀ d B` of tile `(ty, tx)` of channel `ci` one tile at a time, in the textbook order:
    /// the window (zeros outside the plane), the pass over the rows, then over the columns.
    fn reference_input_tile(s: Shape, x: &[f32], ci: usize, ty: usize, tx: usize) -> [f32; 16] {
        let mut d = [[0.0f32; 4]; 4];
        for (r, row) in d.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                let (iy, ix) = ((2 * ty + r) as isize - 1, (2 * tx + c) as isize - 1);
                if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w {
                    *v = x[(ci * s.h + iy as usize) * s.w + ix as usize];
                }
            }
        }
        let bt = |v: [f32; 4]| [v[0] - v[2], v[1] + v[2], v[2] - v[1], v[1] - v[3]];
        let mut rows = [[0.0f32; 4]; 4];
        for c in 0..4 {
            let t = bt([d[0][c], d[1][c], d[2][c], d[3][c]]);
            for a in 0..4 {
                rows[a][c] = t[a];
            }
        }
        let mut out = [0.0f32; 16];
        for a in 0..4 {
            out[a * 4..a * 4 + 4].copy_from_slice(&bt(rows[a]));
        }
        out
    }

    /// The input transform gives every tile the bits of the one-tile-at-a-time reference, at the
    /// CPU's vector level and in the baseline build.
    #[test]
    fn input_tiles_give_the_per_tile_bits() {
        for (cin, cout, h, w) in SHAPES {
            let s = Shape { batch: 1, cin, cout, h, w };
            let x = values(cin * h * w, 3);
            for (t0, nt) in blocks(s) {
                let stride = tile_stride(nt);
                let mut rows = vec![0.0; row_buffer_len(s)];
                let (mut fast, mut plain) = (vec![f32::NAN; 16 * cin * stride], vec![f32::NAN; 16 * cin * stride]);
                // SAFETY: the buffers are this test's own.
                unsafe {
                    input_tiles(s, &x, (t0, nt), 0..cin, &mut rows, OutPtr::new(&mut fast));
                    input_tiles_impl(s, &x, (t0, nt), 0..cin, &mut rows, OutPtr::new(&mut plain));
                }
                for ci in 0..cin {
                    for t in t0..t0 + nt {
                        let want = reference_input_tile(s, &x, ci, t / s.tiles_x(), t % s.tiles_x());
                        for (xi, want) in want.iter().enumerate() {
                            let at = (xi * cin + ci) * stride + t - t0;
                            assert_eq!(fast[at].to_bits(), want.to_bits(), "{s:?}: tile {t} channel {ci} value {xi}");
                            assert_eq!(plain[at].to_bits(), want.to_bits(), "baseline build, {s:?}: tile {t}");
                        }
                    }
                }
            }
        }
    }

    /// The output transform writes `Aᵀ M A + bias` of every tile of the block with the bits of
    /// the textbook order (rows, then columns, then the bias), cropped to the plane, and nothing
    /// else, at the CPU's vector level and in the baseline build.
    #[test]
    fn output_tiles_give_the_per_tile_bits() {
        for (cin, cout, h, w) in SHAPES {
            let s = Shape { batch: 2, cin, cout, h, w };
            let bias = values(cout, 9);
            for (t0, nt) in blocks(s) {
                let stride = tile_stride(nt);
                let m = values(16 * cout * stride, 5);
                let mut rows = vec![0.0; output_row_buffer_len(s)];
                let planes = s.batch * cout * h * w;
                let (mut fast, mut plain) = (vec![f32::NAN; planes], vec![f32::NAN; planes]);
                // SAFETY: the buffers are this test's own.
                unsafe {
                    output_tiles(s, 1, (t0, nt), &m, Some(&bias), &mut rows, OutPtr::new(&mut fast));
                    output_tiles_impl(s, 1, (t0, nt), &m, Some(&bias), &mut rows, OutPtr::new(&mut plain));
                }
                let mut want = vec![f32::NAN; planes];
                for co in 0..cout {
                    for t in t0..t0 + nt {
                        let mv = |r: usize, c: usize| m[((4 * r + c) * cout + co) * stride + t - t0];
                        let at = |v: [f32; 4]| [v[0] + v[1] + v[2], v[1] - v[2] - v[3]];
                        let mut rows = [[0.0f32; 4]; 2];
                        for c in 0..4 {
                            let r = at([mv(0, c), mv(1, c), mv(2, c), mv(3, c)]);
                            rows[0][c] = r[0];
                            rows[1][c] = r[1];
                        }
                        let (ty, tx) = (t / s.tiles_x(), t % s.tiles_x());
                        for (a, row) in rows.iter().enumerate() {
                            for (b, y) in at(*row).iter().enumerate() {
                                let (i, j) = (2 * ty + a, 2 * tx + b);
                                if i < h && j < w {
                                    want[((cout + co) * h + i) * w + j] = y + bias[co];
                                }
                            }
                        }
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&want), "{s:?}, block {t0} + {nt}");
                assert_eq!(bits(&plain), bits(&want), "baseline build, {s:?}, block {t0} + {nt}");
            }
        }
    }
}
