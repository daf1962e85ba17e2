//! `gpstoken train`: the flags are [`TrainOptions`]; the run is [`gpstoken_cli::train`].

use anyhow::Result;
use gpstoken_cli::backends::BackendSelection;
use gpstoken_cli::train::{self, TrainOptions};

pub const EXAMPLES: &str = "\
Examples:
  gpstoken train --config tiny64 --data ../shared/data/train --eval ../shared/data/eval --steps 2000 --out runs/a
  gpstoken train --data photos --steps 4000 --out runs/a --resume      # continue (settings come from the checkpoint)
  gpstoken train --config tiny64 --data photos --init grid --out runs/grid
  gpstoken --backend cuda train --config m128 --data photos --batch 16 --devices 0,1,2,3 --out runs/m128
  WORLD_SIZE=2 RANK=0 MASTER_ADDR=node0 gpstoken --backend cuda train ...   # torchrun-style, one process per GPU

Data: photos are read recursively (PNG/JPEG; unreadable ones are skipped with a warning and counted).
Each sample: a random square crop of random side between the image size and the photo's shorter side,
resized to the image size (scale jitter), a horizontal flip with p = 0.5, then Algorithm 1.
Batches depend only on --seed and the step, so --resume continues bit-exactly.
Data parallel (--devices, or WORLD_SIZE/RANK/LOCAL_RANK/MASTER_ADDR/MASTER_PORT): --batch is split over the
ranks and gradients are averaged (NCCL on cuda); see docs/TRAINING.md.

Adversarial stage (optional): --disc-start S adds taming's PatchGAN discriminator from the 0-based step S
(log step S+1): hinge loss, its own Adam, odd steps after S train the discriminator, the others the
tokenizer with mse + d_weight * (-mean D(x)), d_weight adaptive (see docs/TRAINING.md). The perceptual
losses (LPIPS, Inception) are not implemented.";

pub fn run(opts: TrainOptions, backend: &BackendSelection) -> Result<()> {
    let s = train::train(&opts, backend)?;
    outln!(
        "trained steps {}..{} in {:.1} s ({:.2} images/s), last loss {:.5}; run folder {}",
        s.last_step - s.steps_run + 1,
        s.last_step,
        s.seconds,
        s.images_per_second,
        s.last_loss,
        opts.out.display()
    );
    Ok(())
}
