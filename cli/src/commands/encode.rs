//! `gpstoken encode`: photos to learned tokens (`.gpst` with the config's feature channels).

use super::model::{inputs, CropArgs, EachPhoto, ModelArgs, Processed};
use anyhow::{bail, Result};
use gpstoken_cli::backends::{with_backend, BackendSelection};
use gpstoken_core::gpst::{DType, Header};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const EXAMPLES: &str =
    "Examples:\n  gpstoken encode photo.png -o photo.gpst --tokens 32\n  gpstoken encode photos/ -o tokens/";

#[derive(clap::Args)]
pub struct Args {
    /// Input photo, whole at its own size (or its centre crop, see --crop); or a folder: every
    /// PNG/JPEG under it, one at a time, each written under the -o folder.
    input: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    crop: CropArgs,
    /// Output token file; a folder for a folder of photos.
    #[arg(short = 'o', long = "output", value_name = "OUT.gpst")]
    output: PathBuf,
}

pub fn run(args: Args, backend: &BackendSelection) -> Result<()> {
    let Args { input, model, crop: CropArgs { crop, focus }, output } = args;
    let folder = input.is_dir();
    if !folder {
        // One photo: the output is checked before the work (a folder's outputs go into a folder
        // `inputs` prepared). Never the input itself, nor the focus mask.
        let ins: Vec<&Path> = [Some(input.as_path()), focus.as_deref()].into_iter().flatten().collect();
        gpstoken_cli::outputs::check(&ins, &[("-o", output.as_path())])?;
    }
    let opened = model.open()?;
    // Overlapping patches have no place in the .gpst grid: encode lays patches side by side.
    let layout = model.layout(&opened, crop, Some(0))?;
    if folder && focus.is_some() {
        bail!("--focus takes one photo, not a folder");
    }
    let pairs = inputs(&input, &output, "gpst")?;
    let photos: Vec<PathBuf> = pairs.iter().map(|(p, _)| p.clone()).collect();
    let out_of: HashMap<PathBuf, PathBuf> = pairs.into_iter().collect();
    let cfg = &opened.config;
    let (pw, ph) = layout.patch;
    let each = |path: &Path, done: &Processed| -> Result<()> {
        let (w, h) = (done.reference.width, done.reference.height);
        let header = Header {
            dtype: DType::F32,
            image_width: w as u32,
            image_height: h as u32,
            patch_width: pw as u32,
            patch_height: ph as u32,
            patches_x: w.div_ceil(pw) as u32,
            patches_y: h.div_ceil(ph) as u32,
            tokens_per_patch: layout.tokens as u32,
            channels: cfg.gps.gps_c as u32,
            kappa: cfg.gps.gps_dmax,
        };
        let target = &out_of[path];
        if folder {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create '{}': {e}", dir.display()))?;
            }
        }
        super::write_token_file(target, &header, &done.output.tokens)?;
        let patches = (header.patches_x * header.patches_y) as usize;
        eprintln!(
            "{}: {} tokens ({} patches of {pw}x{ph}, {} each) of {} from {}",
            target.display(),
            layout.tokens * patches,
            patches,
            layout.tokens,
            layout.describe((w, h), done.grid.as_ref()),
            opened.path.display()
        );
        Ok(())
    };
    let task = EachPhoto {
        args: &model,
        opened: &opened,
        layout: &layout,
        photos: &photos,
        focus: focus.as_deref(),
        skip_unreadable: folder,
        each,
    };
    let skipped = with_backend(backend, task)?;
    if skipped == photos.len() {
        bail!("none of the {skipped} photo(s) in '{}' could be read", input.display());
    }
    Ok(())
}
