//! Model hyper-parameters, as the official yaml files name them (`model.gpsconfig`,
//! `model.decoderconfig`, spec 7.1), the built-in configurations and their validation.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// The official `gpsconfig` block (spec 5.1, 7.1).
#[derive(Clone, Debug, PartialEq)]
pub struct GpsConfig {
    /// RoIAlign output side `R` (8): `R²` samples per token feed each block's `roimlp`.
    pub rois: usize,
    /// Number of encoder transformer blocks (30).
    pub gpsenc_n: usize,
    /// Encoder width `E` (512); must be a multiple of the 8 attention heads.
    pub gpsenc_c: usize,
    /// Token feature channels `C` (16 or 32) = the decoder's `z_channels`.
    pub gps_c: usize,
    /// Tokens per 256² patch `N` (64, 128, 256). Has no parameters.
    pub gps_num: usize,
    /// Support factor kappa of the splat (3 in every config, spec 2.3).
    pub gps_dmax: f32,
    /// Algorithm 1's complexity weight lambda (2.5); not used by the network itself.
    pub gps_adaptive_w: f64,
    /// Render size `(height, width)` of one patch (64x64).
    pub gps_rs: (usize, usize),
}

/// The official `decoderconfig` block (`DecoderNP`, spec 6.1).
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    /// Input channels of `conv_in`; equals `gps_c`.
    pub z_channels: usize,
    /// Nominal output resolution (256); only `attn_resolutions` would use it.
    pub resolution: usize,
    /// Image channels (3); unused by the decoder, kept because the yaml has it.
    pub in_channels: usize,
    /// Output channels of `conv_out` (3).
    pub out_ch: usize,
    /// Base width (128).
    pub ch: usize,
    /// Width multipliers per level ([1, 2, 4]); level `i` has `ch * ch_mult[i]` channels.
    pub ch_mult: Vec<usize>,
    /// ResnetBlocks per level, minus one (2: every up level has 3).
    pub num_res_blocks: usize,
    /// Levels with attention after each block: empty in every config (only empty is supported).
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability: 0 in every config (only 0 is supported).
    pub dropout: f32,
}

/// Everything needed to build a [`crate::model::GpsToken`].
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// `s64`, `m128`, `l256`, `golden`, `tiny64`, `cpu-tiny`, or the file it came from.
    pub name: String,
    pub gps: GpsConfig,
    pub decoder: DecoderConfig,
    /// `(height, width)` of one encoder patch in pixels (256x256 officially; the official model
    /// takes any `h x w` input whose sides are `gps_rs` times the decoder's upsampling): the
    /// encoder input is `[B*np², 3, h, w]` and the decoder output `[B, 3, h·np, w·np]`.
    pub image_hw: (usize, usize),
}

/// A configuration the model cannot be built from; the message names the offending key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid model config: {}", self.0)
    }
}

impl core::error::Error for ConfigError {}

/// Every multi-channel norm in the model has 32 groups (spec 6.2).
pub const NORM_GROUPS: usize = 32;
/// Attention heads of the encoder blocks' `nn.MultiheadAttention` (spec 5.3).
pub const ENCODER_HEADS: usize = 8;
/// Channels of `preprocess_img` (hard-coded 128 in the official encoder, spec 5.1).
pub const PREPROCESS_CHANNELS: usize = 128;
/// Input width of the unused `temb_proj` of the encoder's ResnetBlocks (taming's default 512).
pub const TEMB_CHANNELS: usize = 512;

impl GpsConfig {
    fn official(gps_num: usize, gps_c: usize) -> Self {
        GpsConfig {
            rois: 8,
            gpsenc_n: 30,
            gpsenc_c: 512,
            gps_c,
            gps_num,
            gps_dmax: 3.0,
            gps_adaptive_w: 2.5,
            gps_rs: (64, 64),
        }
    }
}

impl DecoderConfig {
    fn official(z_channels: usize) -> Self {
        DecoderConfig {
            z_channels,
            resolution: 256,
            in_channels: 3,
            out_ch: 3,
            ch: 128,
            ch_mult: vec![1, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: Vec::new(),
            dropout: 0.0,
        }
    }

    /// Channels of level `i` (`ch * ch_mult[i]`).
    pub fn level_channels(&self, i: usize) -> usize {
        self.ch * self.ch_mult[i]
    }

    /// Channels after `conv_in` and in the mid blocks (`ch * ch_mult[last]`).
    pub fn mid_channels(&self) -> usize {
        self.level_channels(self.ch_mult.len() - 1)
    }

    /// Spatial upsampling factor of the decoder, `2^(levels-1)` (saturating: a config with 64
    /// or more levels is refused by [`ModelConfig::validate`], not an overflow).
    pub fn upsampling(&self) -> usize {
        1usize.checked_shl(self.ch_mult.len().saturating_sub(1) as u32).unwrap_or(usize::MAX)
    }
}

impl ModelConfig {
    /// Names accepted by [`ModelConfig::builtin`].
    pub const BUILTIN: [&'static str; 6] = ["s64", "m128", "l256", "golden", "tiny64", "cpu-tiny"];

    /// The official S64 tokenizer (`configs/gpstoken_s64.yaml`, spec 7.1).
    pub fn s64() -> Self {
        ModelConfig {
            name: "s64".to_string(),
            gps: GpsConfig::official(64, 16),
            decoder: DecoderConfig::official(16),
            image_hw: (256, 256),
        }
    }

    /// The official M128 tokenizer (spec 7.1).
    pub fn m128() -> Self {
        ModelConfig {
            name: "m128".to_string(),
            gps: GpsConfig::official(128, 16),
            decoder: DecoderConfig::official(16),
            image_hw: (256, 256),
        }
    }

    /// The official L256 tokenizer (spec 7.1).
    pub fn l256() -> Self {
        ModelConfig {
            name: "l256".to_string(),
            gps: GpsConfig::official(256, 32),
            decoder: DecoderConfig::official(32),
            image_hw: (256, 256),
        }
    }

    /// The tiny model of the golden files (`shared/golden/model/model.json`): 64² images,
    /// 16 tokens, 2 blocks of width 64, render 32², decoder ch 32, ch_mult [1, 2].
    pub fn golden() -> Self {
        ModelConfig {
            name: "golden".to_string(),
            gps: GpsConfig {
                rois: 8,
                gpsenc_n: 2,
                gpsenc_c: 64,
                gps_c: 8,
                gps_num: 16,
                gps_dmax: 3.0,
                gps_adaptive_w: 2.5,
                gps_rs: (32, 32),
            },
            decoder: DecoderConfig {
                z_channels: 8,
                resolution: 64,
                in_channels: 3,
                out_ch: 3,
                ch: 32,
                ch_mult: vec![1, 2],
                num_res_blocks: 1,
                attn_resolutions: Vec::new(),
                dropout: 0.0,
            },
            image_hw: (64, 64),
        }
    }

    /// A CPU-trainable model of the official structure: 64² patches, 32 tokens, 4 blocks of
    /// width 128, 8 feature channels, render 32², decoder ch 32, ch_mult [1, 2].
    /// It is the golden model's structure with a wider, deeper encoder and 32 tokens.
    pub fn tiny64() -> Self {
        let golden = Self::golden();
        ModelConfig {
            name: "tiny64".to_string(),
            gps: GpsConfig { gpsenc_n: 4, gpsenc_c: 128, gps_num: 32, ..golden.gps },
            ..golden
        }
    }

    /// The CPU speed benchmark's model (issue 12's training-step row): the official structure
    /// (three decoder levels, as S64/M128) shrunk to 64² images: 64 tokens, 4 blocks of width
    /// 128, 16 feature channels, render 16², decoder ch 32, ch_mult [1, 2, 4], 2 ResnetBlocks
    /// per up level; 3,251,356 parameters. `docs/MODEL.md` gives it as an official yaml.
    pub fn cpu_tiny() -> Self {
        ModelConfig {
            name: "cpu-tiny".to_string(),
            gps: GpsConfig {
                rois: 8,
                gpsenc_n: 4,
                gpsenc_c: 128,
                gps_c: 16,
                gps_num: 64,
                gps_dmax: 3.0,
                gps_adaptive_w: 2.5,
                gps_rs: (16, 16),
            },
            decoder: DecoderConfig {
                z_channels: 16,
                resolution: 64,
                in_channels: 3,
                out_ch: 3,
                ch: 32,
                ch_mult: vec![1, 2, 4],
                num_res_blocks: 1,
                attn_resolutions: Vec::new(),
                dropout: 0.0,
            },
            image_hw: (64, 64),
        }
    }

    /// A built-in configuration by name ([`ModelConfig::BUILTIN`]).
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "s64" => Some(Self::s64()),
            "m128" => Some(Self::m128()),
            "l256" => Some(Self::l256()),
            "golden" => Some(Self::golden()),
            "tiny64" => Some(Self::tiny64()),
            "cpu-tiny" => Some(Self::cpu_tiny()),
            _ => None,
        }
    }

    /// The side of a square patch, or an error naming the config when the patch is not square
    /// (for the parts that take square patches only: training and the generator).
    pub fn square_patch(&self) -> Result<usize, ConfigError> {
        match self.image_hw {
            (h, w) if h == w => Ok(h),
            (h, w) => Err(ConfigError(alloc::format!(
                "config '{}' has {w}x{h} (width x height) patches; only square patches are supported here",
                self.name
            ))),
        }
    }

    /// Checks what the port relies on; the message names the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.gps;
        let d = &self.decoder;
        let err = |msg: String| Err(ConfigError(msg));
        if g.rois == 0 {
            return err("gpsconfig.rois must be at least 1".into());
        }
        if g.gps_num == 0 {
            return err("gpsconfig.gps_num must be at least 1".into());
        }
        if g.gps_c == 0 {
            return err("gpsconfig.gps_c must be at least 1".into());
        }
        if g.gpsenc_c == 0 || !g.gpsenc_c.is_multiple_of(ENCODER_HEADS) {
            return err(alloc::format!(
                "gpsconfig.gpsenc_c = {} must be a positive multiple of the {ENCODER_HEADS} attention heads",
                g.gpsenc_c
            ));
        }
        if !(g.gps_dmax.is_finite() && g.gps_dmax > 0.0) {
            return err(alloc::format!("gpsconfig.gps_dmax = {} must be positive", g.gps_dmax));
        }
        if g.gps_rs.0 < 2 || g.gps_rs.1 < 2 {
            return err(alloc::format!("gpsconfig.gps_rs = {:?} must be at least 2x2", g.gps_rs));
        }
        if d.z_channels != g.gps_c {
            return err(alloc::format!(
                "decoderconfig.z_channels = {} must equal gpsconfig.gps_c = {}",
                d.z_channels,
                g.gps_c
            ));
        }
        if d.ch_mult.is_empty() || d.ch_mult.contains(&0) {
            return err("decoderconfig.ch_mult must be a non-empty list of positive integers".into());
        }
        for i in 0..d.ch_mult.len() {
            if !d.level_channels(i).is_multiple_of(NORM_GROUPS) {
                return err(alloc::format!(
                    "decoderconfig.ch * ch_mult[{i}] = {} must be a multiple of the {NORM_GROUPS} norm groups",
                    d.level_channels(i)
                ));
            }
        }
        if !d.attn_resolutions.is_empty() {
            return err("decoderconfig.attn_resolutions must be empty (every official config has []; attention \
                        at the up levels is not implemented)"
                .into());
        }
        if d.dropout != 0.0 {
            return err(alloc::format!("decoderconfig.dropout = {} must be 0 (dropout is not implemented)", d.dropout));
        }
        if d.out_ch == 0 {
            return err("decoderconfig.out_ch must be at least 1".into());
        }
        let up = d.upsampling();
        let (h, w) = self.image_hw;
        if g.gps_rs.0.checked_mul(up) != Some(h) || g.gps_rs.1.checked_mul(up) != Some(w) {
            return err(alloc::format!(
                "gpsconfig.gps_rs = [{}, {}] times the decoder's upsampling {up} (2^(len(ch_mult)-1)) must equal the \
                 patch size [{h}, {w}] (height, width)",
                g.gps_rs.0,
                g.gps_rs.1,
            ));
        }
        if h < 2 || w < 2 {
            return err(alloc::format!("the patch size [{h}, {w}] (height, width) must be at least 2x2"));
        }
        Ok(())
    }
}
