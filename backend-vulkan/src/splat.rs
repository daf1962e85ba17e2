//! `SplatOps` on Vulkan: the splatting renderer (spec 2), forward and backward.
//!
//! Forward, one dispatch chain for the whole batch, as gsplat bins:
//! 1. `footprints`: per (image, Gaussian), its footprint (exactly the pixels passing the
//!    official box test, found by bisection on the host-computed pixel grid) and its f32
//!    kernel constants (render.rs `SplatKernel`).
//! 2. `tile_counts`: per tile, how many of its image's Gaussians touch it.
//! 3. `tile_offsets`: the exclusive prefix sum of the counts.
//! 4. `tile_lists`: per tile, the touching Gaussians in ascending index order (an ordered
//!    compaction, so no sort), at its offset.
//! 5. `forward`: one workgroup per tile; batches of the tile's list in shared memory, each
//!    invocation sums its pixel's `v * colour` over the list in index order, as the CPU does.
//!
//! Backward: `footprints`, then one workgroup per (image, Gaussian) that walks the footprint
//! (invocation `l` takes pixels `l, l + WG, ...`, Kahan-compensated) and reduces the `5 + C`
//! gradient sums with a fixed shared-memory tree. Per-pixel terms are f32 (the CPU's are f64):
//! on the golden vectors the gradients are within 1.1e-6 of the f64 references (max over the
//! tensor's largest value), the forward within 7.5e-7.
//!
//! Integer counts aside, no atomics: two runs give the same bits.

use crate::pipeline::{push_constants, Shader};
use crate::recorder::{read, write};
use crate::{dims, PoolKind, VulkanBackend, VulkanBuffer, VulkanError};
use gpstoken_core::backend::kernels::SplatKernels;
use gpstoken_core::backend::Buffers;
use gpstoken_core::render::{pixel_coord, SplatDesc};

push_constants! {
    /// `shaders/splat/footprints.comp`.
    struct FootprintParams { total: u32, stride: u32, width: u32, height: u32, kappa: f32 }
}
push_constants! {
    /// `shaders/splat/tile_{counts,offsets,lists}.comp`.
    struct TileParams { tiles: u32, tiles_x: u32, tiles_per_image: u32, gaussians: u32 }
}
push_constants! {
    /// `shaders/splat/forward.comp`.
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
push_constants! {
    /// `shaders/splat/backward.comp`.
    struct BackwardParams { total: u32, gaussians: u32, channels: u32, stride: u32, width: u32, height: u32 }
}

/// Tile sides the forward tries, largest first (gsplat's 16 where the device allows 256
/// invocations per workgroup).
const TILE_SIDES: [u32; 3] = [16, 8, 4];
/// Most colour accumulators per invocation (registers); more channels take several passes.
const MAX_CHANNEL_GROUP: u32 = 32;
/// Invocations per backward workgroup: most footprints hold tens to a few thousand pixels.
const BACKWARD_WORKGROUP: u32 = 64;
/// u32 values stored per footprint (row start, row end, column start, column end).
const FOOTPRINT_WORDS: usize = 4;
/// f32 values stored per forward kernel (7 constants, padded).
const KERNEL_FLOATS: usize = 8;
/// f32-sized values per Gaussian in the forward's shared memory, besides its colours.
const SHARED_PER_GAUSSIAN: u32 = 7 + 4;

/// The per-call scratch the binning passes produce.
struct Footprints {
    grid: VulkanBuffer,
    boxes: VulkanBuffer,
    kernels: VulkanBuffer,
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

impl VulkanBackend {
    /// The forward's tile side: the largest whose `side²` invocations the device allows.
    fn splat_tile_side(&self) -> u32 {
        let l = &self.ctx.limits;
        TILE_SIDES
            .into_iter()
            .find(|&t| t * t <= l.max_workgroup_invocations && t * t <= l.max_workgroup_size_x)
            .unwrap_or(1)
    }

    /// Gaussians per shared-memory batch of the forward: the largest power of two up to the
    /// workgroup size whose kernels, footprints and `group` colours fit in shared memory.
    fn splat_batch(&self, workgroup: u32, group: u32) -> u32 {
        let bytes_per_gaussian = 4 * (SHARED_PER_GAUSSIAN + group);
        let fit = (self.ctx.limits.max_shared_memory_bytes / bytes_per_gaussian).clamp(1, workgroup);
        1 << (31 - fit.leading_zeros())
    }

    /// Uploads the pixel grid and records the footprint pass for every (image, Gaussian).
    fn splat_footprints(&self, desc: &SplatDesc, tokens: &VulkanBuffer) -> Result<Footprints, VulkanError> {
        let count = desc.batch * desc.gaussians;
        let [total, stride, width, height] = dims([count, desc.token_stride(), desc.width, desc.height])?;
        // render.rs `pixel_coord` is evaluated in f64 and rounded once: computed here, exactly,
        // so the device needs no f64 support.
        let grid: Vec<f32> = (0..desc.width)
            .map(|j| pixel_coord(j, desc.width))
            .chain((0..desc.height).map(|i| pixel_coord(i, desc.height)))
            .collect();
        let grid = self.upload(&grid)?;
        let boxes = self.allocate(PoolKind::Device, count * FOOTPRINT_WORDS)?;
        let kernels = self.allocate(PoolKind::Device, count * KERNEL_FLOATS)?;
        let params = FootprintParams { total, stride, width, height, kappa: desc.kappa };
        self.run(
            Shader::SplatFootprints,
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
    ) -> Result<(VulkanBuffer, VulkanBuffer), VulkanError> {
        let [gaussians] = dims([desc.gaussians])?;
        let params = TileParams { tiles: tiles.total, tiles_x: tiles.x, tiles_per_image: tiles.per_image, gaussians };
        let workgroup = tiles.side * tiles.side;
        let groups = tiles.total.min(self.max_groups());
        let counts = self.allocate(PoolKind::Device, tiles.total as usize)?;
        let spec = [workgroup, tiles.side];
        self.run_groups(Shader::SplatTileCounts, &spec, &[read(&fp.boxes), write(&counts)], &params, groups)?;
        let offsets = self.allocate(PoolKind::Device, tiles.total as usize + 1)?;
        self.run_groups(
            Shader::SplatTileOffsets,
            &[self.workgroup_size],
            &[read(&counts), write(&offsets)],
            &params,
            1,
        )?;
        // The total is on the device; the host sizes the lists for the worst case (every
        // Gaussian on every tile of its image) rather than wait for it.
        let bound = desc.batch * desc.gaussians * tiles.per_image as usize;
        let lists = self.allocate(PoolKind::Device, bound)?;
        let bindings = [read(&fp.boxes), read(&offsets), write(&lists)];
        self.run_groups(Shader::SplatTileLists, &spec, &bindings, &params, groups)?;
        Ok((offsets, lists))
    }

    /// The forward on checked, non-empty buffers with tiles of `side x side` pixels (any side
    /// gives the same bits: every pixel sums the same terms in the same order).
    fn splat_forward_tiles(
        &self,
        desc: &SplatDesc,
        tokens: &VulkanBuffer,
        out: &VulkanBuffer,
        side: u32,
    ) -> Result<(), VulkanError> {
        dims([desc.tokens_len(), desc.image_len()])?;
        let [tiles_x, tiles_y, batch] =
            dims([desc.width.div_ceil(side as usize), desc.height.div_ceil(side as usize), desc.batch])?;
        let too_many = || VulkanError::Unsupported(format!("{batch} images of {tiles_x} x {tiles_y} tiles"));
        let per_image = tiles_x.checked_mul(tiles_y).ok_or_else(too_many)?;
        let total = per_image.checked_mul(batch).ok_or_else(too_many)?;
        let tiles = Tiles { side, x: tiles_x, per_image, total };
        let fp = self.splat_footprints(desc, tokens)?;
        let (offsets, lists) = self.splat_bin(desc, &tiles, &fp)?;

        let [gaussians, channels, stride, width, height] =
            dims([desc.gaussians, desc.channels, desc.token_stride(), desc.width, desc.height])?;
        let workgroup = side * side;
        let group = channel_group(desc.channels);
        let spec = [workgroup, side, self.splat_batch(workgroup, group), group];
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
        self.run_groups(Shader::SplatForward, &spec, &bindings, &params, total.min(self.max_groups()))
    }
}

impl SplatKernels for VulkanBackend {
    fn splat_forward(
        &self,
        desc: &SplatDesc,
        tokens: &VulkanBuffer,
        out: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        if desc.image_len() == 0 {
            return Ok(()); // no image or no channel: nothing to write
        }
        if desc.gaussians == 0 {
            return self.fill_buffer(out, 0.0);
        }
        self.splat_forward_tiles(desc, tokens, out, self.splat_tile_side())
    }

    fn splat_backward(
        &self,
        desc: &SplatDesc,
        tokens: &VulkanBuffer,
        grad_out: &VulkanBuffer,
        grad_tokens: &mut VulkanBuffer,
    ) -> Result<(), VulkanError> {
        if desc.tokens_len() == 0 {
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
        let workgroup = BACKWARD_WORKGROUP.min(self.workgroup_size);
        let spec = [workgroup, channel_group(desc.channels)];
        let params = BackwardParams { total, gaussians, channels, stride, width, height };
        let bindings = [read(tokens), read(&fp.grid), read(&fp.boxes), read(grad_out), write(grad_tokens)];
        self.run_groups(Shader::SplatBackward, &spec, &bindings, &params, total.min(self.max_groups()))
    }
}

#[cfg(test)]
mod tests {
    use super::channel_group;
    use crate::VulkanBackend;
    use gpstoken_core::backend::Buffers;
    use gpstoken_core::render::{self, SplatDesc};
    use gpstoken_core::rng::SplitMix64;

    /// Every tile side a device may get (16, 8, 4: 256, 64, 16 invocations; the smaller ones
    /// also shrink the shared-memory batches, so lists take many batches) renders the same
    /// bits, close to the core reference. Skipped without a device unless
    /// `GPSTOKEN_REQUIRE_VULKAN=1`.
    #[test]
    fn forward_gives_the_same_bits_for_every_tile_side() {
        let device = std::env::var("GPSTOKEN_VULKAN_DEVICE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let backend = match VulkanBackend::new(device) {
            Ok(b) => b,
            Err(e) if std::env::var("GPSTOKEN_REQUIRE_VULKAN").is_ok_and(|v| v == "1") => panic!("{e}"),
            Err(e) => return println!("SKIPPED: {e}"),
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
        for side in [16, 8, 4] {
            let out = backend.upload(&vec![f32::NAN; desc.image_len()]).unwrap();
            backend.splat_forward_tiles(&desc, &input, &out, side).unwrap();
            let mut got = vec![0.0f32; desc.image_len()];
            backend.download(&out, &mut got).unwrap();
            for b in 0..desc.batch {
                let mut want = vec![0.0f32; img];
                render::splat_forward(&desc, &tokens[b * tok..(b + 1) * tok], &mut want).unwrap();
                // NaN-aware: the output starts as NaN, so a pixel left unwritten must fail.
                let scale = gpstoken_tests::nan_max(want.iter().map(|v| f64::from(v.abs())));
                let err = gpstoken_tests::max_abs_diff(&got[b * img..(b + 1) * img], &want);
                assert!(err <= 1e-5 * scale, "tile side {side} image {b}: error {err:e} of {scale:e}");
            }
            let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            match &first {
                None => first = Some(got),
                Some(f) => assert!(f.iter().map(|v| v.to_bits()).eq(bits), "tile side {side} differs from 16"),
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
