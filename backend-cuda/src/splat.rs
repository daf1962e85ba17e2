//! `SplatOps` on CUDA: the splatting renderer (spec 2), forward and backward.
//!
//! Forward, one launch chain for the whole batch, as gsplat bins:
//! 1. `footprints`: per (image, Gaussian), its footprint (exactly the pixels passing the
//!    official box test, found by bisection on the host-computed pixel grid) and its f32
//!    kernel constants (render.rs `SplatKernel`).
//! 2. `tile_counts`: per tile, how many of its image's Gaussians touch it.
//! 3. `tile_offsets`: the exclusive prefix sum of the counts.
//! 4. `tile_lists`: per tile, the touching Gaussians in ascending index order (an ordered
//!    compaction, so no sort), at its offset.
//! 5. `forward`: one block per tile; batches of the tile's list in shared memory, each
//!    thread sums its pixel's `v * colour` over the list in index order, as the CPU does.
//!
//! Backward: `footprints`, then one block per (image, Gaussian) that walks the footprint
//! (thread `l` takes pixels `l, l + WG, ...`, Kahan-compensated) and reduces the `5 + C`
//! gradient sums with a fixed shared-memory tree. Per-pixel terms are f32 (the CPU's are f64).
//! The same algorithm in the Vulkan backend (its shaders are these kernels' origin) is within
//! 1.1e-6 of the golden f64 gradients and 7.5e-7 of the forward on lavapipe; the CUDA port has
//! not run on a GPU yet (docs/CUDA.md).
//!
//! Integer counts aside, no atomics: two runs give the same bits.

use crate::launch::{params, Kernel};
use crate::launch::{read, write};
use crate::{dims, CudaBackend, CudaBuffer, CudaError};
use gpstoken_core::backend::kernels::SplatKernels;
use gpstoken_core::backend::Buffers;
use gpstoken_core::render::{pixel_coord, SplatDesc};

params! {
    /// `kernels/splat.cu` `footprints`.
    struct FootprintParams { total: u32, stride: u32, width: u32, height: u32, kappa: f32 }
}
params! {
    /// `kernels/splat.cu` `splat_tile_{counts,offsets,lists}`.
    struct TileParams { tiles: u32, tiles_x: u32, tiles_per_image: u32, gaussians: u32 }
}
params! {
    /// `kernels/splat.cu` `forward`.
    struct ForwardParams {
        tiles: u32,
        tiles_x: u32,
        tiles_per_image: u32,
        gaussians: u32,
        channels: u32,
        stride: u32,
        width: u32,
        height: u32,
    }
}
params! {
    /// `kernels/splat.cu` `backward`.
    struct BackwardParams { total: u32, gaussians: u32, channels: u32, stride: u32, width: u32, height: u32 }
}

/// Tile side of the forward and the binning (gsplat's 16; `TILE` in `kernels/splat.cu`).
const TILE_SIDE: u32 = 16;
/// Most colour accumulators per thread (registers); more channels take several passes.
const MAX_CHANNEL_GROUP: u32 = 32;
/// Threads per backward block: most footprints hold tens to a few thousand pixels.
const BACKWARD_WORKGROUP: u32 = 64;
/// u32 values stored per footprint (row start, row end, column start, column end).
const FOOTPRINT_WORDS: usize = 4;
/// f32 values stored per forward kernel (7 constants, padded).
const KERNEL_FLOATS: usize = 8;

/// The per-call scratch the binning passes produce.
struct Footprints {
    grid: CudaBuffer,
    boxes: CudaBuffer,
    kernels: CudaBuffer,
}

/// Tile layout of the forward.
struct Tiles {
    side: u32,
    x: u32,
    per_image: u32,
    total: u32,
}

/// Channels per pass: the channel count rounded up to a power of two, at most
/// [`MAX_CHANNEL_GROUP`] (at least 1).
fn channel_group(channels: usize) -> u32 {
    let c = u32::try_from(channels).unwrap_or(u32::MAX).clamp(1, MAX_CHANNEL_GROUP);
    c.next_power_of_two()
}

/// The forward instantiated for `group` colours per pass (a [`channel_group`] value).
fn forward_kernel(group: u32) -> Kernel {
    match group {
        1 => Kernel::SplatForwardG1,
        2 => Kernel::SplatForwardG2,
        4 => Kernel::SplatForwardG4,
        8 => Kernel::SplatForwardG8,
        16 => Kernel::SplatForwardG16,
        _ => Kernel::SplatForwardG32,
    }
}

/// The backward instantiated for `group` colours per pass (a [`channel_group`] value).
fn backward_kernel(group: u32) -> Kernel {
    match group {
        1 => Kernel::SplatBackwardG1,
        2 => Kernel::SplatBackwardG2,
        4 => Kernel::SplatBackwardG4,
        8 => Kernel::SplatBackwardG8,
        16 => Kernel::SplatBackwardG16,
        _ => Kernel::SplatBackwardG32,
    }
}

impl CudaBackend {
    /// Uploads the pixel grid and records the footprint pass for every (image, Gaussian).
    fn splat_footprints(&self, desc: &SplatDesc, tokens: &CudaBuffer) -> Result<Footprints, CudaError> {
        let count = desc.batch * desc.gaussians;
        let [total, stride, width, height] = dims([count, desc.token_stride(), desc.width, desc.height])?;
        // render.rs `pixel_coord` is evaluated in f64 and rounded once: computed here, exactly,
        // so the device needs no f64 support.
        let grid: Vec<f32> = (0..desc.width)
            .map(|j| pixel_coord(j, desc.width))
            .chain((0..desc.height).map(|i| pixel_coord(i, desc.height)))
            .collect();
        let grid = self.upload(&grid)?;
        let boxes = self.allocate(count * FOOTPRINT_WORDS)?;
        let kernels = self.allocate(count * KERNEL_FLOATS)?;
        let params = FootprintParams { total, stride, width, height, kappa: desc.kappa };
        self.run(
            Kernel::SplatFootprints,
            &[read(tokens), read(&grid), write(&boxes), write(&kernels)],
            &params,
            total,
        )?;
        Ok(Footprints { grid, boxes, kernels })
    }

    /// The tile lists: offsets `[tiles + 1]` and the lists, built by the count, prefix-sum and
    /// fill passes.
    fn splat_bin(
        &self,
        desc: &SplatDesc,
        tiles: &Tiles,
        fp: &Footprints,
    ) -> Result<(CudaBuffer, CudaBuffer), CudaError> {
        let [gaussians] = dims([desc.gaussians])?;
        let params = TileParams { tiles: tiles.total, tiles_x: tiles.x, tiles_per_image: tiles.per_image, gaussians };
        let workgroup = tiles.side * tiles.side;
        let groups = tiles.total.min(self.max_groups());
        let counts = self.allocate(tiles.total as usize)?;
        let spec = [workgroup, tiles.side];
        self.run_groups(Kernel::SplatTileCounts, &spec, &[read(&fp.boxes), write(&counts)], &params, groups)?;
        let offsets = self.allocate(tiles.total as usize + 1)?;
        self.run_groups(Kernel::SplatTileOffsets, &[crate::BLOCK], &[read(&counts), write(&offsets)], &params, 1)?;
        // The total is on the device; the host sizes the lists for the worst case (every
        // Gaussian on every tile of its image) rather than wait for it.
        let bound = desc.batch * desc.gaussians * tiles.per_image as usize;
        let lists = self.allocate(bound)?;
        let bindings = [read(&fp.boxes), read(&offsets), write(&lists)];
        self.run_groups(Kernel::SplatTileLists, &spec, &bindings, &params, groups)?;
        Ok((offsets, lists))
    }

    /// The forward on checked, non-empty buffers with tiles of `side x side` pixels (any side
    /// gives the same bits: every pixel sums the same terms in the same order).
    fn splat_forward_tiles(&self, desc: &SplatDesc, tokens: &CudaBuffer, out: &CudaBuffer) -> Result<(), CudaError> {
        let side = TILE_SIDE;
        dims([desc.tokens_len(), desc.image_len()])?;
        let [tiles_x, tiles_y, batch] =
            dims([desc.width.div_ceil(side as usize), desc.height.div_ceil(side as usize), desc.batch])?;
        let too_many = || CudaError::Unsupported(format!("{batch} images of {tiles_x} x {tiles_y} tiles"));
        let per_image = tiles_x.checked_mul(tiles_y).ok_or_else(too_many)?;
        let total = per_image.checked_mul(batch).ok_or_else(too_many)?;
        let tiles = Tiles { side, x: tiles_x, per_image, total };
        let fp = self.splat_footprints(desc, tokens)?;
        let (offsets, lists) = self.splat_bin(desc, &tiles, &fp)?;

        let [gaussians, channels, stride, width, height] =
            dims([desc.gaussians, desc.channels, desc.token_stride(), desc.width, desc.height])?;
        let workgroup = side * side;
        let group = channel_group(desc.channels);
        let spec = [workgroup];
        let params = ForwardParams {
            tiles: total,
            tiles_x,
            tiles_per_image: per_image,
            gaussians,
            channels,
            stride,
            width,
            height,
        };
        let bindings = [
            read(&fp.kernels),
            read(&fp.boxes),
            read(tokens),
            read(&fp.grid),
            read(&offsets),
            read(&lists),
            write(out),
        ];
        self.run_groups(forward_kernel(group), &spec, &bindings, &params, total.min(self.max_groups()))
    }
}

impl SplatKernels for CudaBackend {
    fn splat_forward(&self, desc: &SplatDesc, tokens: &CudaBuffer, out: &mut CudaBuffer) -> Result<(), CudaError> {
        if out.len == 0 {
            return Ok(()); // no image or no channel: nothing to write
        }
        if desc.gaussians == 0 {
            return self.fill_buffer(out, 0.0);
        }
        self.splat_forward_tiles(desc, tokens, out)
    }

    fn splat_backward(
        &self,
        desc: &SplatDesc,
        tokens: &CudaBuffer,
        grad_out: &CudaBuffer,
        grad_tokens: &mut CudaBuffer,
    ) -> Result<(), CudaError> {
        if grad_tokens.len == 0 {
            return Ok(());
        }
        dims([desc.tokens_len(), desc.image_len()])?;
        let fp = self.splat_footprints(desc, tokens)?;
        let [total, gaussians, channels, stride, width, height] = dims([
            desc.batch * desc.gaussians,
            desc.gaussians,
            desc.channels,
            desc.token_stride(),
            desc.width,
            desc.height,
        ])?;
        let workgroup = BACKWARD_WORKGROUP;
        let spec = [workgroup];
        let params = BackwardParams { total, gaussians, channels, stride, width, height };
        let bindings = [read(tokens), read(&fp.grid), read(&fp.boxes), read(grad_out), write(grad_tokens)];
        self.run_groups(
            backward_kernel(channel_group(desc.channels)),
            &spec,
            &bindings,
            &params,
            total.min(self.max_groups()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::channel_group;
    use crate::CudaBackend;
    use gpstoken_core::backend::Buffers;
    use gpstoken_core::render::{self, SplatDesc};
    use gpstoken_core::rng::SplitMix64;

    /// Batched images with lists longer than one shared-memory batch render close to the core
    /// reference, and the same bits twice. Skipped without a device unless
    /// `GPSTOKEN_REQUIRE_CUDA=1`.
    #[test]
    fn forward_matches_the_reference_and_repeats_its_bits() {
        let backend = match CudaBackend::for_tests() {
            Ok(b) => b,
            Err(e) => return println!("SKIPPED: {e} (forward_matches_the_reference_and_repeats_its_bits)"),
        };
        let desc = SplatDesc { batch: 2, gaussians: 300, channels: 5, height: 23, width: 37, kappa: 3.0 };
        let mut rng = SplitMix64::new(17);
        let mut uniform = |lo: f32, hi: f32| lo + (hi - lo) * rng.unit_f32();
        let tokens: Vec<f32> = (0..desc.batch * desc.gaussians)
            .flat_map(|_| {
                let geometry = [uniform(0.02, 0.3), uniform(0.02, 0.3), uniform(-0.9, 0.9)];
                let mean = [uniform(-1.1, 1.1), uniform(-1.1, 1.1)];
                let colors: Vec<f32> = (0..desc.channels).map(|_| uniform(-1.0, 1.0)).collect();
                geometry.into_iter().chain(mean).chain(colors).collect::<Vec<_>>()
            })
            .collect();
        let input = backend.upload(&tokens).unwrap();
        let (tok, img) = (desc.gaussians * desc.token_stride(), desc.channels * desc.height * desc.width);
        let mut first: Option<Vec<f32>> = None;
        for run in 0..2 {
            let out = backend.upload(&vec![f32::NAN; desc.image_len()]).unwrap();
            backend.splat_forward_tiles(&desc, &input, &out).unwrap();
            let mut got = vec![0.0f32; desc.image_len()];
            backend.download(&out, &mut got).unwrap();
            for b in 0..desc.batch {
                let mut want = vec![0.0f32; img];
                render::splat_forward(&desc, &tokens[b * tok..(b + 1) * tok], &mut want).unwrap();
                // NaN-aware: the output starts as NaN, so a pixel left unwritten must fail.
                let scale = gpstoken_tests::nan_max(want.iter().map(|v| f64::from(v.abs())));
                let err = gpstoken_tests::max_abs_diff(&got[b * img..(b + 1) * img], &want);
                assert!(err <= 1e-5 * scale, "run {run} image {b}: error {err:e} of {scale:e}");
            }
            let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            match &first {
                None => first = Some(got),
                Some(f) => assert!(f.iter().map(|v| v.to_bits()).eq(bits), "the second run differs"),
            }
        }
    }

    #[test]
    fn channel_groups_are_powers_of_two_up_to_the_cap() {
        assert_eq!(channel_group(0), 1);
        assert_eq!(channel_group(1), 1);
        assert_eq!(channel_group(3), 4);
        assert_eq!(channel_group(32), 32);
        assert_eq!(channel_group(70), 32);
    }
}
