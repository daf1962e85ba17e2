//! The evaluation during training: the raw and the EMA weights on the eval crops, and a picture
//! of both reconstructions next to the photos.

use super::state::OptimState;
use crate::data::SampleSpec;
use crate::imageio::{self, Rgb8};
use crate::model_io::{self, Output};
use crate::viz;
use anyhow::Result;
use gpstoken_core::backend::Backend;
use gpstoken_core::model::{Activations, GpsToken};

/// Stacks images of equal width vertically.
fn stack(rows: &[Rgb8]) -> Rgb8 {
    let width = rows.iter().map(|r| r.width).max().unwrap_or(1);
    let height = rows.iter().map(|r| r.height).sum::<usize>().max(1);
    let mut data = vec![0u8; width * height * 3];
    let mut y0 = 0;
    for r in rows {
        for y in 0..r.height {
            let dst = ((y0 + y) * width) * 3;
            data[dst..dst + r.width * 3].copy_from_slice(&r.data[y * r.width * 3..(y + 1) * r.width * 3]);
        }
        y0 += r.height;
    }
    Rgb8 { width, height, data }
}

/// One evaluation: mean PSNR/SSIM of the raw and the EMA weights, and a picture.
pub(super) struct EvalResult {
    pub psnr: f64,
    pub ssim: f64,
    pub ema_psnr: f64,
    pub ema_ssim: f64,
    pub picture: Rgb8,
}

pub(super) fn evaluate<B: Backend>(
    be: &B,
    model: &mut GpsToken<B>,
    acts: &mut Activations<B>,
    st: &mut OptimState<B>,
    spec: &SampleSpec,
    crops: &[&Rgb8],
) -> Result<EvalResult> {
    let samples: Vec<model_io::Sample> = crops.iter().map(|&c| (c, None)).collect();
    let run = |model: &GpsToken<B>, acts: &mut _| -> Result<(f64, f64, Vec<Output>)> {
        let e = model_io::score_all(model_io::infer(be, model, acts, spec, &samples)?, crops)?;
        Ok((e.psnr, e.ssim, e.outputs))
    };
    let (psnr, ssim, raw) = run(model, acts)?;
    st.swap_ema(model);
    let ema = run(model, acts);
    st.swap_ema(model);
    let (ema_psnr, ema_ssim, ema_outs) = ema?;
    let s = spec.width;
    let scale = if s < 128 { 2 } else { 1 };
    let rows: Vec<Rgb8> = crops
        .iter()
        .zip(raw.iter().zip(&ema_outs))
        .take(8)
        .map(|(c, (r, e))| {
            let a = viz::upscale(c, scale);
            let b = viz::upscale(&imageio::chw_unit_to_rgb8(&r.decoded, s, s), scale);
            let d = viz::upscale(&imageio::chw_unit_to_rgb8(&e.decoded, s, s), scale);
            viz::side_by_side(&[&a, &b, &d])
        })
        .collect();
    Ok(EvalResult { psnr, ssim, ema_psnr, ema_ssim, picture: stack(&rows) })
}
