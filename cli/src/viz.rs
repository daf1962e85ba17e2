//! Pictures of tokens: partition regions and Gaussian ellipses drawn over the image, the way the
//! paper's figures show them.

use crate::imageio::Rgb8;
use gpstoken_core::partition::Region;
use gpstoken_core::Gaussian;

/// An RGB canvas for drawing, `scale` times the size of the image it was made from.
pub struct Canvas {
    pub img: Rgb8,
    scale: f32,
}

/// Colours used for the overlays.
pub const REGION_COLOUR: [u8; 3] = [255, 255, 255];
pub const ELLIPSE_COLOUR: [u8; 3] = [255, 40, 40];
pub const CENTRE_COLOUR: [u8; 3] = [255, 220, 0];

impl Canvas {
    /// `img` upscaled `scale`x with nearest neighbour, optionally darkened so overlays stand out.
    pub fn new(img: &Rgb8, scale: usize, dim: f32) -> Canvas {
        let (w, h) = (img.width * scale, img.height * scale);
        let mut data = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let src = ((y / scale) * img.width + x / scale) * 3;
                for c in 0..3 {
                    data[(y * w + x) * 3 + c] = (f32::from(img.data[src + c]) * dim) as u8;
                }
            }
        }
        Canvas { img: Rgb8 { width: w, height: h, data }, scale: scale as f32 }
    }

    fn blend(&mut self, x: i64, y: i64, colour: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= self.img.width as i64 || y >= self.img.height as i64 {
            return;
        }
        let i = (y as usize * self.img.width + x as usize) * 3;
        for (dst, &want) in self.img.data[i..i + 3].iter_mut().zip(&colour) {
            let old = f32::from(*dst);
            *dst = (old + (f32::from(want) - old) * alpha).round() as u8;
        }
    }

    /// A line between two canvas points (pixel units of the scaled canvas).
    pub fn line(&mut self, (x0, y0): (f32, f32), (x1, y1): (f32, f32), colour: [u8; 3], alpha: f32) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for k in 0..=steps {
            let t = k as f32 / steps as f32;
            let x = x0 + (x1 - x0) * t;
            let y = y0 + (y1 - y0) * t;
            self.blend(x.round() as i64, y.round() as i64, colour, alpha);
        }
    }

    /// Source-image pixel coordinates (pixel centres at integers) to canvas coordinates.
    fn to_canvas(&self, px: f32, py: f32) -> (f32, f32) {
        ((px + 0.5) * self.scale - 0.5, (py + 0.5) * self.scale - 0.5)
    }

    /// The outline of a region given as inclusive pixel ranges of the source image.
    pub fn region(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, colour: [u8; 3], alpha: f32) {
        // Draw the region's outer border: from the left edge of x0 to the right edge of x1.
        let s = self.scale;
        let (l, t) = (x0 as f32 * s, y0 as f32 * s);
        let (r, b) = ((x1 + 1) as f32 * s - 1.0, (y1 + 1) as f32 * s - 1.0);
        self.line((l, t), (r, t), colour, alpha);
        self.line((r, t), (r, b), colour, alpha);
        self.line((r, b), (l, b), colour, alpha);
        self.line((l, b), (l, t), colour, alpha);
    }

    /// The `k`-sigma ellipse of a Gaussian whose normalised coordinates refer to a `w`x`h` pixel
    /// area starting at pixel (`ox`, `oy`) of the source image (a patch), plus a dot at its mean.
    pub fn gaussian(&mut self, g: &Gaussian, k: f32, (ox, oy, w, h): (usize, usize, usize, usize), colour: [u8; 3]) {
        // Normalised units to pixels: X = 2j/(W-1) - 1, so one unit is (W-1)/2 pixels.
        let ux = (w as f32 - 1.0) / 2.0;
        let uy = (h as f32 - 1.0) / 2.0;
        let e = g.ellipse(k);
        let cx = ox as f32 + (e.cx + 1.0) * ux;
        let cy = oy as f32 + (e.cy + 1.0) * uy;
        let (sin, cos) = e.angle.sin_cos();
        let segments = 64;
        let mut prev = None;
        for i in 0..=segments {
            let t = i as f32 / segments as f32 * std::f32::consts::TAU;
            let (a, b) = (e.semi_major * t.cos(), e.semi_minor * t.sin());
            let px = cx + (a * cos - b * sin) * ux;
            let py = cy + (a * sin + b * cos) * uy;
            let p = self.to_canvas(px, py);
            if let Some(q) = prev {
                self.line(q, p, colour, 0.85);
            }
            prev = Some(p);
        }
        let (mx, my) = self.to_canvas(cx, cy);
        for dy in -1..=1 {
            for dx in -1..=1 {
                self.blend(mx.round() as i64 + dx, my.round() as i64 + dy, CENTRE_COLOUR, 1.0);
            }
        }
    }
}

/// The partition picture: regions outlined, Gaussians as 1-sigma ellipses, over the image.
/// `regions[i]` lies in patch `i / tokens_per_patch` (row-major grid of `patch`² tiles).
pub fn draw_partition(
    img: &Rgb8,
    patch: usize,
    tokens_per_patch: usize,
    regions: &[Region],
    gaussians: &[[f32; 5]],
) -> Rgb8 {
    let scale = if img.width.max(img.height) <= 512 { 2 } else { 1 };
    let mut canvas = Canvas::new(img, scale, 0.8);
    let patches_x = img.width / patch;
    for (i, (r, g)) in regions.iter().zip(gaussians).enumerate() {
        let k = i / tokens_per_patch;
        let (ox, oy) = ((k % patches_x) * patch, (k / patches_x) * patch);
        canvas.region(
            ox + r.x0 as usize,
            oy + r.y0 as usize,
            ox + r.x1 as usize,
            oy + r.y1 as usize,
            REGION_COLOUR,
            0.45,
        );
        canvas.gaussian(&Gaussian::from_token(g), 1.0, (ox, oy, patch, patch), ELLIPSE_COLOUR);
    }
    canvas.img
}

/// Ellipses of a token set (single patch covering the whole image), over a dimmed image.
pub fn draw_gaussians(img: &Rgb8, tokens: &[f32], stride: usize) -> Rgb8 {
    let scale = if img.width.max(img.height) <= 512 { 2 } else { 1 };
    let mut canvas = Canvas::new(img, scale, 0.6);
    for t in tokens.chunks_exact(stride) {
        canvas.gaussian(&Gaussian::from_token(t), 1.0, (0, 0, img.width, img.height), ELLIPSE_COLOUR);
    }
    canvas.img
}

/// Images side by side (all the same height), separated by a 4-pixel white gap.
pub fn side_by_side(images: &[&Rgb8]) -> Rgb8 {
    let gap = 4;
    let height = images.iter().map(|i| i.height).max().unwrap_or(0);
    let width = images.iter().map(|i| i.width).sum::<usize>() + gap * images.len().saturating_sub(1);
    let mut data = vec![255u8; width * height * 3];
    let mut x0 = 0;
    for img in images {
        for y in 0..img.height {
            let dst = (y * width + x0) * 3;
            let src = y * img.width * 3;
            data[dst..dst + img.width * 3].copy_from_slice(&img.data[src..src + img.width * 3]);
        }
        x0 += img.width + gap;
    }
    Rgb8 { width, height, data }
}

/// Nearest-neighbour upscale by an integer factor (to put a small image next to a scaled canvas).
pub fn upscale(img: &Rgb8, scale: usize) -> Rgb8 {
    Canvas::new(img, scale, 1.0).img
}
