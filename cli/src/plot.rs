//! A minimal line plot for training curves (no fonts needed: tick labels use a built-in 3x5
//! digit font), used by `gpstoken plot` to draw `log.jsonl` files side by side.

use crate::imageio::Rgb8;

/// One curve: points `(x, y)` and a colour; `dots` draws markers instead of a line.
pub struct Series {
    pub points: Vec<(f64, f64)>,
    pub colour: [u8; 3],
    pub dots: bool,
}

/// Line colours for successive runs.
pub const COLOURS: [[u8; 3]; 4] = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];

const DIGITS: [[u8; 5]; 11] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
    [0b000, 0b000, 0b000, 0b000, 0b010],
];

struct Img {
    w: usize,
    h: usize,
    data: Vec<u8>,
}

impl Img {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for k in 0..=n {
            let t = k as f64 / n as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            self.set(x.round() as i64, y.round() as i64, c);
            self.set(x.round() as i64, y.round() as i64 + 1, c);
        }
    }
    /// Digits and '.' at 2x scale, top-left at (x, y).
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let g = match ch {
                '0'..='9' => DIGITS[ch as usize - '0' as usize],
                '.' => DIGITS[10],
                _ => continue,
            };
            for (r, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(x + k as i64 * 8 + col * 2 + dx, y + r as i64 * 2 + dy, c);
                        }
                    }
                }
            }
        }
    }
}

/// "Nice" tick step for a range.
fn tick(range: f64) -> f64 {
    let raw = range / 6.0;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|&s| s >= raw).unwrap_or(10.0 * p)
}

/// Plots every series on shared axes (grey grid lines at the labelled ticks).
pub fn plot(series: &[Series], width: usize, height: usize) -> Rgb8 {
    let mut img = Img { w: width, h: height, data: vec![255; width * height * 3] };
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Rgb8 { width, height, data: img.data };
    }
    let (ty, tx) = (tick((y1 - y0).max(1e-9)), tick((x1 - x0).max(1e-9)));
    let (y0, y1) = ((y0 / ty).floor() * ty, (y1 / ty).ceil() * ty);
    let x0 = (x0 / tx).floor() * tx;
    let (left, right, top, bottom) = (60.0, width as f64 - 20.0, 20.0, height as f64 - 40.0);
    let px = |x: f64| left + (x - x0) / (x1 - x0).max(1e-9) * (right - left);
    let py = |y: f64| bottom - (y - y0) / (y1 - y0).max(1e-9) * (bottom - top);
    let grey = [220, 220, 220];
    let black = [0, 0, 0];
    let mut v = y0;
    while v <= y1 + 1e-9 {
        img.line((left, py(v)), (right, py(v)), grey);
        // as many decimals as the tick step needs (0.05 -> 2), so labels never repeat
        let decimals = (-ty.log10().floor()).max(0.0) as usize;
        let label = format!("{v:.decimals$}");
        img.text(4, py(v) as i64 - 5, &label, black);
        v += ty;
    }
    let mut v = x0;
    while v <= x1 + 1e-9 {
        img.line((px(v), top), (px(v), bottom), grey);
        img.text(px(v) as i64 - 10, bottom as i64 + 8, &format!("{v:.0}"), black);
        v += tx;
    }
    img.line((left, bottom), (right, bottom), black);
    img.line((left, top), (left, bottom), black);
    for s in series {
        if s.dots {
            for &(x, y) in &s.points {
                for d in -3..=3 {
                    img.line((px(x) + d as f64, py(y) - 3.0), (px(x) + d as f64, py(y) + 3.0), s.colour);
                }
            }
        } else {
            for w in s.points.windows(2) {
                img.line((px(w[0].0), py(w[0].1)), (px(w[1].0), py(w[1].1)), s.colour);
            }
        }
    }
    Rgb8 { width, height, data: img.data }
}

/// Running mean over the last `window` values.
pub fn running_mean(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= points[i - window].1;
        }
        out.push((x, sum / (i + 1).min(window) as f64));
    }
    out
}
