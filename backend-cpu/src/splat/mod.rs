//! `SplatOps` on the CPU (spec 2).
//!
//! * Forward: tasks are (image, band of rows). Each channel plane of the CHW output is cut into
//!   the same row bands, so a task owns one slice per channel and writes in place. Inside a band
//!   every pixel sums the Gaussians in index order (see [`tiles::splat_forward_planes`], the
//!   cache-tiled band renderer, bit-identical to the core's reference `render::splat_forward`).
//! * Backward: one task per (image, Gaussian), writing that Gaussian's `5 + C` gradient values;
//!   its sums run over its own footprint in a fixed order. Tasks are visited in spatial order
//!   (for cache locality) and the results put back in token order.

use crate::{CpuBackend, CpuError};
use gpstoken_core::backend::kernels::SplatKernels;
use gpstoken_core::render::{footprint, pixel_coord, Footprint, SplatDesc, SplatKernel};
use rayon::prelude::*;

mod backward;
mod backward_wide;
mod tiles;

// The shared SIMD pieces, under the names the splat kernels use.
pub(crate) use crate::simd::{expf, multiversion};

/// `LANES` ones, then `LANES` zeros: every lane mask is a window of it.
const MASK_TABLE: [u32; 2 * expf::LANES] = {
    let mut t = [0u32; 2 * expf::LANES];
    let mut l = 0;
    while l < expf::LANES {
        t[l] = u32::MAX;
        l += 1;
    }
    t
};

/// `N` lane masks, all ones in the first `valid` lanes (at most `LANES`), zeros after. A table
/// window, not `array::from_fn`: that was not inlined into the kernels (2% of a call).
#[inline(always)]
fn prefix_mask<const N: usize>(valid: usize) -> [u32; N] {
    *<&[u32; N]>::try_from(&MASK_TABLE[expf::LANES - valid.min(N)..][..N]).expect("N lanes")
}

/// Row bands per thread and image: more tasks than threads so that work stealing can balance
/// bands of unequal cost (Gaussians are not spread evenly over the canvas).
const TASKS_PER_THREAD: usize = 4;

/// Rows per stripe when the backward orders Gaussians by position.
const STRIPE_ROWS: usize = 32;

/// Below this many (pixel, Gaussian, channel) visits a call runs on the calling thread: handing
/// work to the pool and back costs about 0.1 ms, more than such a call takes. Which thread runs
/// a task never changes its result.
const INLINE_WORK: usize = 1 << 20;

/// `pixel_coord` of every column, then of every row (computed once per call, not per Gaussian).
fn grid(desc: &SplatDesc, out: &mut [f32]) {
    let (xs, ys) = out.split_at_mut(desc.width);
    xs.iter_mut().enumerate().for_each(|(j, v)| *v = pixel_coord(j, desc.width));
    ys.iter_mut().enumerate().for_each(|(i, v)| *v = pixel_coord(i, desc.height));
}

/// The work of a splat call in (pixel, Gaussian, channel) visits, from its footprints.
fn work(fps: &[Footprint], channels: usize) -> usize {
    fps.iter().map(|fp| fp.pixel_count()).sum::<usize>() * channels.max(1)
}

/// The footprint of every (image, Gaussian), in token order, computed in parallel into `fps`
/// (`batch * gaussians` entries, from the backend's scratch pool).
fn all_footprints(desc: &SplatDesc, tokens: &[f32], fps: &mut [Footprint]) {
    let stride = desc.token_stride();
    let one = |(fp, token): (&mut Footprint, &[f32])| {
        *fp = footprint(&SplatKernel::new(token, desc.kappa), desc.height, desc.width);
    };
    // A footprint costs a few box tests: a pool hand-off pays only for many thousands.
    if fps.len() < 1 << 14 {
        fps.iter_mut().zip(tokens.chunks(stride)).for_each(one);
    } else {
        fps.par_iter_mut().zip(tokens.par_chunks(stride)).for_each(one);
    }
}

/// One forward task: image `image`, rows `rows`, and that band of every channel plane.
struct BandTask<'a> {
    image: usize,
    rows: std::ops::Range<usize>,
    planes: Vec<&'a mut [f32]>,
}

impl SplatKernels for CpuBackend {
    fn splat_forward(&self, desc: &SplatDesc, tokens: &Vec<f32>, out: &mut Vec<f32>) -> Result<(), CpuError> {
        let (n, stride) = (desc.gaussians, desc.token_stride());
        let (height, width, channels) = (desc.height, desc.width, desc.channels);
        if out.is_empty() {
            return Ok(()); // no image, or no channel: nothing to write
        }
        let threads = self.threads();
        // Footprints once per (image, Gaussian); every band of that image reuses them. (Scratch
        // that is written whole before it is read is taken without zeroing.)
        let mut fps = self.footprints.take_for_overwrite(desc.batch * n);
        all_footprints(desc, tokens, &mut fps);
        let inline = threads == 1 || work(&fps, channels) < INLINE_WORK;
        let mut coords = self.scratch.take_for_overwrite(width + height);
        grid(desc, &mut coords);
        let mut run = || {
            // Enough bands for every thread, whatever the batch size.
            let bands = if inline { 1 } else { (threads * TASKS_PER_THREAD).div_ceil(desc.batch).clamp(1, height) };
            let band_rows = height.div_ceil(bands);
            let mut tasks: Vec<BandTask> = Vec::new();
            for (image, image_out) in out.chunks_mut(channels * height * width).enumerate() {
                let first = tasks.len();
                for (k, start) in (0..height).step_by(band_rows).enumerate() {
                    let rows = start..(start + band_rows).min(height);
                    tasks.push(BandTask { image, rows, planes: Vec::with_capacity(channels) });
                    debug_assert_eq!(tasks.len(), first + k + 1);
                }
                for plane in image_out.chunks_mut(height * width) {
                    for (k, band) in plane.chunks_mut(band_rows * width).enumerate() {
                        tasks[first + k].planes.push(band);
                    }
                }
            }
            let render = |mut task: BandTask| {
                let t = &tokens[task.image * n * stride..(task.image + 1) * n * stride];
                let fp = &fps[task.image * n..(task.image + 1) * n];
                let mut tile = self.scratch.take_for_overwrite(tiles::tile_buffer_len(desc, task.rows.len()));
                tiles::splat_forward_planes(desc, &coords, t, fp, task.rows, &mut task.planes, &mut tile)
            };
            if inline {
                tasks.into_iter().for_each(render);
            } else {
                tasks.into_par_iter().for_each(render);
            }
        };
        if inline {
            run();
        } else {
            self.install(run);
        }
        Ok(())
    }

    fn splat_backward(
        &self,
        desc: &SplatDesc,
        tokens: &Vec<f32>,
        grad_out: &Vec<f32>,
        grad_tokens: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let (n, stride) = (desc.gaussians, desc.token_stride());
        if n == 0 || desc.batch == 0 {
            return Ok(());
        }
        let image_len = desc.channels * desc.height * desc.width;
        let mut fps = self.footprints.take_for_overwrite(desc.batch * n);
        all_footprints(desc, tokens, &mut fps);
        let inline = self.threads() == 1 || work(&fps, desc.channels) < INLINE_WORK;
        let mut coords = self.scratch.take_for_overwrite(desc.width + desc.height);
        grid(desc, &mut coords);
        let mut run = || {
            // Gaussians come in spatially random order; visiting them sorted by position (row
            // stripes, then columns) keeps the `grad_out` rows they read in cache. Each
            // Gaussian's gradient does not depend on the visiting order.
            let mut order = self.indices.take_for_overwrite(desc.batch * n);
            for (i, o) in order.iter_mut().enumerate() {
                *o = i;
            }
            // Per image (indices of one image are one run), the key packed into integers: a
            // tuple key with `index / n` in every comparison was 2% of a call.
            for image in order.chunks_mut(n) {
                image.sort_unstable_by_key(|&index| {
                    let fp = &fps[index];
                    ((((fp.row_start / STRIPE_ROWS) as u64) << 32) | fp.col_start as u64, index)
                });
            }
            let fast = desc.channels <= backward::MAX_CHANNELS;
            let one = |(grad, &index): (&mut [f32], &usize)| {
                let image = index / n;
                let token = &tokens[index * stride..(index + 1) * stride];
                if fast {
                    let g = &grad_out[image * image_len..(image + 1) * image_len];
                    let strides = backward::Strides { channel: desc.height * desc.width, row: desc.width };
                    backward::backward_gaussian(desc, &coords, token, &fps[index], g, strides, grad)
                } else {
                    let g = &grad_out[image * image_len..(image + 1) * image_len];
                    backward_wide::backward_gaussian(desc, &coords, token, &fps[index], g, grad)
                }
            };
            if inline {
                // One thread: each Gaussian's values go straight to their place.
                for index in order.iter() {
                    one((&mut grad_tokens[index * stride..(index + 1) * stride], index));
                }
            } else {
                // Tasks own disjoint chunks in visiting order; the values are put back after.
                let mut sorted = self.scratch.take_for_overwrite(grad_tokens.len());
                sorted.par_chunks_mut(stride).zip(order.par_iter()).for_each(one);
                for (grad, &index) in sorted.chunks_exact(stride).zip(order.iter()) {
                    grad_tokens[index * stride..(index + 1) * stride].copy_from_slice(grad);
                }
            }
        };
        if inline {
            run();
        } else {
            self.install(run);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpstoken_core::backend::Buffers;
    use gpstoken_core::render;

    #[test]
    fn forward_matches_core_per_image_and_handles_empty_shapes() {
        let desc = SplatDesc { batch: 2, gaussians: 2, channels: 2, height: 5, width: 4, kappa: 3.0 };
        let tokens = vec![
            0.3, 0.4, 0.2, 0.0, 0.1, 1.0, -1.0, 0.2, 0.2, -0.5, 0.5, 0.5, 2.0, 0.5, //
            0.5, 0.3, 0.0, -0.3, 0.0, 0.7, 0.1, 0.1, 0.9, 0.0, 1.0, 1.0, 0.3, 0.3,
        ];
        for backend in [CpuBackend::new(), CpuBackend::with_threads(3).unwrap()] {
            let mut out = backend.zeros(desc.image_len()).unwrap();
            backend.splat_forward(&desc, &tokens, &mut out).unwrap();
            for image in 0..2 {
                let mut want = vec![0.0; 40];
                render::splat_forward(&desc, &tokens[image * 14..(image + 1) * 14], &mut want).unwrap();
                assert_eq!(&out[image * 40..(image + 1) * 40], &want[..]);
            }
            // No Gaussians: zeros. No channels or no images: nothing to do.
            let none = SplatDesc { gaussians: 0, ..desc };
            let mut out = vec![1.0; 80];
            backend.splat_forward(&none, &vec![], &mut out).unwrap();
            assert!(out.iter().all(|&v| v == 0.0));
            let mut grads = vec![];
            backend.splat_backward(&none, &vec![], &out, &mut grads).unwrap();
            let no_channels = SplatDesc { channels: 0, ..desc };
            backend.splat_forward(&no_channels, &vec![0.1; 20], &mut vec![]).unwrap();
            let no_images = SplatDesc { batch: 0, ..desc };
            backend.splat_forward(&no_images, &vec![], &mut vec![]).unwrap();
            backend.splat_backward(&no_images, &vec![], &vec![], &mut vec![]).unwrap();
        }
    }
}
