//! The whole tokenizer's backward pass on a backend: the layer-by-layer announcements
//! ([`GradientsReady`]) that data-parallel training starts its gradient all-reduce on, while
//! the rest of the pass still runs. An announcement made before a gradient is final would
//! average a stale or partial gradient over the ranks, so each is checked against the end of
//! the pass, bit for bit.

use super::common::download;
use crate::TestRng;
use gpstoken_core::backend::Backend;
use gpstoken_core::model::{GpsToken, GradientsReady, ModelConfig, ParamId, ParamStore};
use gpstoken_core::partition::{region_box, region_gaussian, Region};
use std::ops::Range;

/// What the listener saw: how often each parameter was announced, and its gradient then.
struct Snapshots {
    announced: Vec<usize>,
    gradients: Vec<Option<Vec<f32>>>,
}

impl<B: Backend> GradientsReady<B> for Snapshots {
    fn ready(&mut self, be: &B, params: &mut ParamStore<B>, ids: Range<ParamId>) {
        for id in ids {
            self.announced[id] += 1;
            self.gradients[id] = params.grad(id).map(|g| download(be, g));
        }
    }
}

/// A `rows x cols` grid of regions over a `w x h` patch.
fn grid(rows: usize, cols: usize, w: usize, h: usize) -> Vec<Region> {
    let cut = |i: usize, n: usize, size: usize| (i * size / n) as u16;
    (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .map(|(r, c)| Region {
            y0: cut(r, rows, h),
            y1: cut(r + 1, rows, h),
            x0: cut(c, cols, w),
            x1: cut(c + 1, cols, w),
            score: 0.0,
        })
        .collect()
}

/// The tiny64 model (4 encoder blocks, 2 decoder levels) at batch 2: every parameter is
/// announced exactly once per pass, and the gradient it had then is its final one. The
/// gradients start as NaN, so an announcement before the layer wrote its gradient fails too.
pub fn backward_announces_each_gradient_once_final<B: Backend>(be: &B) {
    let cfg = ModelConfig::tiny64();
    let ((h, w), tokens, batch) = (cfg.image_hw, cfg.gps.gps_num, 2);
    let mut model = GpsToken::new(be, cfg).expect("model");
    model.init(be, 11).expect("init");
    let mut rng = TestRng::new(5);
    let image: Vec<f32> = (0..batch * 3 * h * w).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let regions = grid(4, tokens / 4, w, h);
    let g_init: Vec<f32> = (0..batch).flat_map(|_| regions.iter().flat_map(|r| region_gaussian(r, w, h))).collect();
    let boxes: Vec<f32> = (0..batch).flat_map(|_| regions.iter().flat_map(|r| region_box(r, w, h))).collect();
    let mut acts = model.activations(be, batch, 1).expect("activations");
    model.forward(be, &mut acts, &image, &g_init, &boxes).expect("forward");
    model.mse_loss_grad(be, &mut acts).expect("loss");

    let n = model.params.len();
    for id in 0..n {
        if let Some(g) = model.params.gradient_mut(id) {
            be.fill(g, f32::NAN).expect("fill");
        }
    }
    let mut seen = Snapshots { announced: vec![0; n], gradients: vec![None; n] };
    model.backward_announcing(be, &mut acts, &mut seen).expect("backward");

    for id in 0..n {
        let name = &model.params.spec(id).name;
        assert_eq!(seen.announced[id], 1, "{name}: announced {} times", seen.announced[id]);
        let Some(final_grad) = model.params.grad(id).map(|g| download(be, g)) else { continue };
        assert!(final_grad.iter().all(|v| v.is_finite()), "{name}: the pass left a non-finite gradient");
        let then = seen.gradients[id].as_ref().expect("announced with a gradient");
        let same = then.iter().zip(&final_grad).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name}: its gradient changed after it was announced");
    }
}
