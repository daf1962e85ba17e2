//! Whole photos at any size and shape: where the model's patches go ([`Grid`]), how a
//! patch that hangs over the border is filled ([`cut`]), and how the decoded patches become one
//! image again ([`Blend`]).
//!
//! The size rule, per axis (the patch is `pw x ph`, square or not): a side that is not a
//! multiple of the patch's side along it is padded by **edge replication** to the next multiple
//! (the last row/column repeated), the patches are laid side by side from the top-left corner,
//! and the output is cropped back to the photo's size. With an overlap `o`, patches start every
//! `pw - o` (`ph - o`) pixels, the last one flush with the far edge (a side shorter than the
//! patch is padded to it), and overlapping outputs are blended with weights that ramp linearly
//! over `o` pixels from each patch border, so no seam remains where patches meet.

use anyhow::{bail, Result};

/// Largest photo accepted, in pixels (8192 x 8192): the blended output alone holds 16 bytes per
/// pixel, so this caps it at 1 GiB.
pub const MAX_PIXELS: usize = 8192 * 8192;

/// Where the patches of a `width x height` photo go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    pub width: usize,
    pub height: usize,
    /// The model's patch width and height.
    pub patch_width: usize,
    pub patch_height: usize,
    /// Pixels shared by neighbouring patches (0: side by side).
    pub overlap: usize,
    /// Left edges of the patch columns.
    pub xs: Vec<usize>,
    /// Top edges of the patch rows.
    pub ys: Vec<usize>,
}

/// Patch starts along one side of `len` pixels.
fn starts(len: usize, patch: usize, overlap: usize) -> Vec<usize> {
    if overlap == 0 {
        return (0..len.div_ceil(patch)).map(|i| i * patch).collect();
    }
    let stride = patch - overlap;
    let span = len.max(patch);
    let n = (span - patch).div_ceil(stride) + 1;
    (0..n).map(|i| (i * stride).min(span - patch)).collect()
}

impl Grid {
    /// The grid of a photo in square `patch x patch` patches (see [`Grid::with_patch`]).
    pub fn new(width: usize, height: usize, patch: usize, overlap: usize) -> Result<Grid> {
        Self::with_patch(width, height, (patch, patch), overlap)
    }

    /// The grid of a photo in `patch_width x patch_height` patches; fails (one line) for an
    /// empty or oversized photo or an overlap of more than half a patch side.
    pub fn with_patch(
        width: usize,
        height: usize,
        (patch_width, patch_height): (usize, usize),
        overlap: usize,
    ) -> Result<Grid> {
        if width == 0 || height == 0 || patch_width == 0 || patch_height == 0 {
            bail!("cannot tile a {width}x{height} image into {patch_width}x{patch_height} patches");
        }
        match width.checked_mul(height) {
            Some(p) if p <= MAX_PIXELS => {}
            _ => bail!("the image is {width}x{height} pixels; at most {MAX_PIXELS} pixels (8192x8192) are supported"),
        }
        let short = patch_width.min(patch_height);
        if overlap > short / 2 {
            let patch = match patch_width == patch_height {
                true => format!("{short}-pixel patch"),
                false => format!("{patch_width}x{patch_height} patch's {short}-pixel side"),
            };
            bail!("--overlap {overlap} is more than half the model's {patch}");
        }
        Ok(Grid {
            width,
            height,
            patch_width,
            patch_height,
            overlap,
            xs: starts(width, patch_width, overlap),
            ys: starts(height, patch_height, overlap),
        })
    }

    /// Number of patches.
    pub fn len(&self) -> usize {
        self.xs.len() * self.ys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Top-left pixel of patch `k` (row-major).
    pub fn origin(&self, k: usize) -> (usize, usize) {
        (self.xs[k % self.xs.len()], self.ys[k / self.xs.len()])
    }

    /// `(patch_width, patch_height)`.
    pub fn patch(&self) -> (usize, usize) {
        (self.patch_width, self.patch_height)
    }
}

/// The `block_width x block_height` block at `(x0, y0)` of an interleaved `width x height`
/// image with `channels` values per pixel; pixels beyond the image repeat its last row/column.
pub fn cut<T: Copy>(
    img: &[T],
    (width, height, channels): (usize, usize, usize),
    (x0, y0): (usize, usize),
    (block_width, block_height): (usize, usize),
) -> Vec<T> {
    let mut out = Vec::with_capacity(block_width * block_height * channels);
    for y in y0..y0 + block_height {
        let row = y.min(height - 1) * width;
        for x in x0..x0 + block_width {
            let at = (row + x.min(width - 1)) * channels;
            out.extend_from_slice(&img[at..at + channels]);
        }
    }
    out
}

/// Decoded patches `[3, ph, pw]` accumulated into one `[3, H, W]` image of the grid's photo.
pub struct Blend {
    width: usize,
    height: usize,
    patch_width: usize,
    patch_height: usize,
    /// Weight of a patch column (`ramp_x`) and row (`ramp_y`) by its distance to the patch border.
    ramp_x: Vec<f32>,
    ramp_y: Vec<f32>,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Blend {
    pub fn new(grid: &Grid) -> Blend {
        let o = grid.overlap;
        // Without overlap every pixel has one patch and weight 1: the output is that patch's
        // value bit for bit. With overlap the weight rises from 1/(o+1) at the border to 1 at o.
        let ramp = |s: usize| -> Vec<f32> {
            (0..s)
                .map(|i| if o == 0 { 1.0 } else { ((i.min(s - 1 - i) + 1) as f32 / (o + 1) as f32).min(1.0) })
                .collect()
        };
        let pixels = grid.width * grid.height;
        Blend {
            width: grid.width,
            height: grid.height,
            patch_width: grid.patch_width,
            patch_height: grid.patch_height,
            ramp_x: ramp(grid.patch_width),
            ramp_y: ramp(grid.patch_height),
            sum: vec![0.0; 3 * pixels],
            weight: vec![0.0; pixels],
        }
    }

    /// Adds the decoded patch `[3, ph, pw]` whose top-left pixel is `(x0, y0)`; its part beyond
    /// the photo (the edge padding) is dropped.
    pub fn add(&mut self, (x0, y0): (usize, usize), decoded: &[f32]) {
        let (pw, ph, w, h) = (self.patch_width, self.patch_height, self.width, self.height);
        let pixels = w * h;
        for y in 0..ph.min(h.saturating_sub(y0)) {
            for x in 0..pw.min(w.saturating_sub(x0)) {
                let k = self.ramp_y[y] * self.ramp_x[x];
                let at = (y0 + y) * w + x0 + x;
                self.weight[at] += k;
                for c in 0..3 {
                    self.sum[c * pixels + at] += k * decoded[(c * ph + y) * pw + x];
                }
            }
        }
    }

    /// The blended `[3, H, W]` image.
    pub fn finish(mut self) -> Vec<f32> {
        let pixels = self.width * self.height;
        for c in 0..3 {
            for (v, &k) in self.sum[c * pixels..(c + 1) * pixels].iter_mut().zip(&self.weight) {
                *v /= k;
            }
        }
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_pads_to_the_next_multiple_without_overlap() {
        let g = Grid::new(600, 400, 256, 0).unwrap();
        assert_eq!((g.xs.clone(), g.ys.clone()), (vec![0, 256, 512], vec![0, 256]));
        assert_eq!(g.len(), 6);
        assert_eq!(g.origin(4), (256, 256));
    }

    #[test]
    fn non_square_patches_tile_each_axis_by_its_own_side() {
        let g = Grid::with_patch(600, 400, (48, 32), 0).unwrap();
        assert_eq!((g.xs.len(), g.ys.len()), (13, 13));
        assert_eq!((g.xs[12], g.ys[12]), (576, 384));
        let o = Grid::with_patch(100, 40, (48, 32), 8).unwrap();
        assert_eq!(o.xs, vec![0, 40, 52]);
        assert_eq!(o.ys, vec![0, 8]);
        assert!(Grid::with_patch(100, 100, (48, 32), 17).is_err(), "more than half the shorter side");
    }

    #[test]
    fn overlapping_grid_covers_the_image_with_the_last_patch_flush() {
        let g = Grid::new(200, 50, 64, 16).unwrap();
        assert_eq!(g.xs, vec![0, 48, 96, 136]);
        assert_eq!(g.ys, vec![0], "a side shorter than the patch is one padded patch");
        assert!(Grid::new(100, 100, 64, 33).is_err());
        assert!(Grid::new(9000, 9000, 64, 0).is_err());
        assert!(Grid::new(0, 10, 64, 0).is_err());
    }

    #[test]
    fn cut_repeats_the_last_row_and_column() {
        // 2x2 single-channel image [1 2; 3 4], a 3x3 block at the origin.
        let img = [1u8, 2, 3, 4];
        assert_eq!(cut(&img, (2, 2, 1), (0, 0), (3, 3)), vec![1, 2, 2, 3, 4, 4, 3, 4, 4]);
        assert_eq!(cut(&img, (2, 2, 1), (1, 1), (2, 2)), vec![4, 4, 4, 4]);
        assert_eq!(cut(&img, (2, 2, 1), (0, 1), (3, 1)), vec![3, 4, 4], "a 3x1 block");
    }

    /// A patch decoded as the exact crop of a smooth image comes back unchanged, with and
    /// without overlap, and the padding is cropped away.
    #[test]
    fn blend_puts_exact_patches_back_exactly() {
        let (w, h) = (50usize, 37usize);
        let value = |c: usize, y: usize, x: usize| (c * 1000 + y.min(h - 1) * 50 + x.min(w - 1)) as f32;
        for ((pw, ph), overlap) in [((16, 16), 0), ((16, 16), 4), ((16, 16), 8), ((24, 16), 0), ((12, 20), 6)] {
            let g = Grid::with_patch(w, h, (pw, ph), overlap).unwrap();
            let mut b = Blend::new(&g);
            for k in 0..g.len() {
                let (x0, y0) = g.origin(k);
                let mut p = vec![0.0; 3 * pw * ph];
                for c in 0..3 {
                    for y in 0..ph {
                        for x in 0..pw {
                            p[(c * ph + y) * pw + x] = value(c, y0 + y, x0 + x);
                        }
                    }
                }
                b.add((x0, y0), &p);
            }
            let out = b.finish();
            assert_eq!(out.len(), 3 * w * h);
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        let got = out[(c * h + y) * w + x];
                        assert!(
                            (got - value(c, y, x)).abs() <= 1e-3 * value(c, y, x).max(1.0),
                            "{overlap} {c} {y} {x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn blend_without_overlap_keeps_every_value_bit_for_bit() {
        let g = Grid::new(20, 10, 8, 0).unwrap();
        let mut b = Blend::new(&g);
        let patches: Vec<Vec<f32>> =
            (0..g.len()).map(|k| (0..3 * 64).map(|i| (i as f32 + 0.1) / (k as f32 + 3.7)).collect()).collect();
        for (k, p) in patches.iter().enumerate() {
            b.add(g.origin(k), p);
        }
        let out = b.finish();
        // Pixel (x=9, y=3) is patch 1's (1, 3).
        assert_eq!(out[3 * 20 + 9].to_bits(), patches[1][3 * 8 + 1].to_bits());
    }
}
