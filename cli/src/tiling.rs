//! Whole photos at any size and shape: where the model's square patches go ([`Grid`]), how a
//! patch that hangs over the border is filled ([`cut`]), and how the decoded patches become one
//! image again ([`Blend`]).
//!
//! The size rule: a side that is not a multiple of the patch size S is padded by **edge
//! replication** to the next multiple (the last row/column repeated), the patches are laid side
//! by side from the top-left corner, and the output is cropped back to the photo's size. With an
//! overlap `o`, patches start every `S - o` pixels, the last one flush with the far edge (a side
//! shorter than S is padded to S), and overlapping outputs are blended with weights that ramp
//! linearly over `o` pixels from each patch border, so no seam remains where patches meet.

use anyhow::{bail, Result};

/// Largest photo accepted, in pixels (8192 x 8192): the blended output alone holds 16 bytes per
/// pixel, so this caps it at 1 GiB.
pub const MAX_PIXELS: usize = 8192 * 8192;

/// Where the patches of a `width x height` photo go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    pub width: usize,
    pub height: usize,
    /// The model's patch side S.
    pub patch: usize,
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
    /// The grid of a photo; fails (one line) for an empty or oversized photo or an overlap of
    /// more than half a patch.
    pub fn new(width: usize, height: usize, patch: usize, overlap: usize) -> Result<Grid> {
        if width == 0 || height == 0 || patch == 0 {
            bail!("cannot tile a {width}x{height} image into {patch}x{patch} patches");
        }
        match width.checked_mul(height) {
            Some(p) if p <= MAX_PIXELS => {}
            _ => bail!("the image is {width}x{height} pixels; at most {MAX_PIXELS} pixels (8192x8192) are supported"),
        }
        if overlap > patch / 2 {
            bail!("--overlap {overlap} is more than half the model's {patch}-pixel patch");
        }
        Ok(Grid {
            width,
            height,
            patch,
            overlap,
            xs: starts(width, patch, overlap),
            ys: starts(height, patch, overlap),
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
}

/// The `side x side` block at `(x0, y0)` of an interleaved `width x height` image with
/// `channels` values per pixel; pixels beyond the image repeat its last row/column.
pub fn cut<T: Copy>(
    img: &[T],
    (width, height, channels): (usize, usize, usize),
    (x0, y0): (usize, usize),
    side: usize,
) -> Vec<T> {
    let mut out = Vec::with_capacity(side * side * channels);
    for y in y0..y0 + side {
        let row = y.min(height - 1) * width;
        for x in x0..x0 + side {
            let at = (row + x.min(width - 1)) * channels;
            out.extend_from_slice(&img[at..at + channels]);
        }
    }
    out
}

/// Decoded patches `[3, S, S]` accumulated into one `[3, H, W]` image of the grid's photo.
pub struct Blend {
    width: usize,
    height: usize,
    patch: usize,
    /// Weight of a patch row/column by its distance to the patch border.
    ramp: Vec<f32>,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Blend {
    pub fn new(grid: &Grid) -> Blend {
        let (s, o) = (grid.patch, grid.overlap);
        // Without overlap every pixel has one patch and weight 1: the output is that patch's
        // value bit for bit. With overlap the weight rises from 1/(o+1) at the border to 1 at o.
        let ramp = (0..s).map(|i| if o == 0 { 1.0 } else { ((i.min(s - 1 - i) + 1) as f32 / (o + 1) as f32).min(1.0) });
        let pixels = grid.width * grid.height;
        Blend {
            width: grid.width,
            height: grid.height,
            patch: s,
            ramp: ramp.collect(),
            sum: vec![0.0; 3 * pixels],
            weight: vec![0.0; pixels],
        }
    }

    /// Adds the decoded patch `[3, S, S]` whose top-left pixel is `(x0, y0)`; its part beyond
    /// the photo (the edge padding) is dropped.
    pub fn add(&mut self, (x0, y0): (usize, usize), decoded: &[f32]) {
        let (s, w, h) = (self.patch, self.width, self.height);
        let pixels = w * h;
        for y in 0..s.min(h.saturating_sub(y0)) {
            for x in 0..s.min(w.saturating_sub(x0)) {
                let k = self.ramp[y] * self.ramp[x];
                let at = (y0 + y) * w + x0 + x;
                self.weight[at] += k;
                for c in 0..3 {
                    self.sum[c * pixels + at] += k * decoded[(c * s + y) * s + x];
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
        assert_eq!(cut(&img, (2, 2, 1), (0, 0), 3), vec![1, 2, 2, 3, 4, 4, 3, 4, 4]);
        assert_eq!(cut(&img, (2, 2, 1), (1, 1), 2), vec![4, 4, 4, 4]);
    }

    /// A patch decoded as the exact crop of a smooth image comes back unchanged, with and
    /// without overlap, and the padding is cropped away.
    #[test]
    fn blend_puts_exact_patches_back_exactly() {
        let (w, h, s) = (50usize, 37usize, 16usize);
        let value = |c: usize, y: usize, x: usize| (c * 1000 + y.min(h - 1) * 50 + x.min(w - 1)) as f32;
        for overlap in [0, 4, 8] {
            let g = Grid::new(w, h, s, overlap).unwrap();
            let mut b = Blend::new(&g);
            for k in 0..g.len() {
                let (x0, y0) = g.origin(k);
                let mut p = vec![0.0; 3 * s * s];
                for c in 0..3 {
                    for y in 0..s {
                        for x in 0..s {
                            p[(c * s + y) * s + x] = value(c, y0 + y, x0 + x);
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
