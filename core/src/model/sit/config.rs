//! SiT hyper-parameters (the official `SiT(...)` constructor arguments, spec 9.2 and 9.8), the
//! built-in configurations and the parameter layout they give.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::model::params::ParamSpec;
use crate::model::ConfigError;

/// Width of the sinusoidal timestep features fed to `t_embedder.mlp.0` (official default).
pub const FREQUENCY_EMBEDDING_SIZE: usize = 256;

/// Everything needed to build a [`super::Sit`]. The patch size is always 1 (the "/2" of the
/// official names is misleading, spec 9.2): the latent is `[B, in_channels, tokens, 1]`, one
/// token per row.
#[derive(Clone, Debug, PartialEq)]
pub struct SitConfig {
    /// `sit-xl-gs`, `sit-s-gs`, `sit-cpu`, or where it came from (a golden folder).
    pub name: String,
    /// Tokens per sample `N` (`input_size[0]`; 128 for GPSToken-M128).
    pub tokens: usize,
    /// Latent channels `C` (21 for the texture model, 5 for the layout model).
    pub in_channels: usize,
    /// Width `D` of the transformer.
    pub hidden: usize,
    /// Number of SiT blocks.
    pub depth: usize,
    /// Attention heads; `hidden` must be a multiple.
    pub heads: usize,
    /// MLP width ratio; the MLP has `int(hidden * mlp_ratio)` channels, as the official code.
    pub mlp_ratio: f64,
    /// Number of classes; with `class_dropout_prob > 0` the label table has one more row, the
    /// null label of classifier-free guidance (index `classes`).
    pub classes: usize,
    /// Probability that a training label is replaced by the null label.
    pub class_dropout_prob: f32,
    /// The network outputs `2C` channels and the first `C` are kept (official `learn_sigma`).
    pub learn_sigma: bool,
    /// `Some(c)`: the layout condition `[B, N, c]` enters through `cond_embedder` instead of
    /// `pos_embed` (the texture model, c = 5); `None`: the learnable `pos_embed` (layout model).
    pub cond_channels: Option<usize>,
}

impl SitConfig {
    /// SiT-XL/2-gs, the texture generator of GPSToken-M128 (spec 9.2): 676,334,634 parameters.
    pub fn sit_xl_gs() -> Self {
        SitConfig {
            name: "sit-xl-gs".to_string(),
            tokens: 128,
            in_channels: 21,
            hidden: 1152,
            depth: 28,
            heads: 16,
            mlp_ratio: 4.0,
            classes: 1000,
            class_dropout_prob: 0.1,
            learn_sigma: true,
            cond_channels: Some(5),
        }
    }

    /// SiT-S/2-gs, the layout generator (spec 9.8): 32,901,514 parameters.
    pub fn sit_s_gs() -> Self {
        SitConfig {
            name: "sit-s-gs".to_string(),
            tokens: 128,
            in_channels: 5,
            hidden: 384,
            depth: 12,
            heads: 6,
            mlp_ratio: 4.0,
            classes: 1000,
            class_dropout_prob: 0.1,
            learn_sigma: true,
            cond_channels: None,
        }
    }

    /// A texture generator small enough to train on a CPU: the XL structure for 32 tokens of
    /// GPSToken-tiny64 (5 + 16 channels) at width 128, 4 blocks, 10 classes.
    pub fn sit_cpu() -> Self {
        SitConfig {
            name: "sit-cpu".to_string(),
            tokens: 32,
            hidden: 128,
            depth: 4,
            heads: 4,
            classes: 10,
            ..Self::sit_xl_gs()
        }
    }

    /// The names [`SitConfig::builtin`] knows.
    pub const BUILTIN: [&'static str; 3] = ["sit-xl-gs", "sit-s-gs", "sit-cpu"];

    /// A built-in configuration by name.
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "sit-xl-gs" => Some(Self::sit_xl_gs()),
            "sit-s-gs" => Some(Self::sit_s_gs()),
            "sit-cpu" => Some(Self::sit_cpu()),
            _ => None,
        }
    }

    /// Channels of the MLP, `int(hidden * mlp_ratio)`.
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden as f64 * self.mlp_ratio) as usize
    }

    /// Channels of the final linear layer: `2C` with `learn_sigma`, else `C`.
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            2 * self.in_channels
        } else {
            self.in_channels
        }
    }

    /// Rows of the label table: the classes plus the null label when labels can be dropped.
    pub fn label_rows(&self) -> usize {
        self.classes + usize::from(self.has_null_label())
    }

    /// Whether the label table has the null label (`class_dropout_prob > 0`), which
    /// classifier-free guidance needs.
    pub fn has_null_label(&self) -> bool {
        self.class_dropout_prob > 0.0
    }

    /// The null label of classifier-free guidance (`classes`), if the table has it.
    pub fn null_label(&self) -> Option<u32> {
        self.has_null_label().then_some(self.classes as u32)
    }

    /// Checks what the port relies on; the message names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |msg: &str| Err(ConfigError(msg.to_string()));
        if self.tokens == 0 || self.in_channels == 0 || self.hidden == 0 || self.classes == 0 {
            return err("sit: tokens, in_channels, hidden and classes must be at least 1");
        }
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            return err("sit: hidden must be a positive multiple of heads");
        }
        if self.mlp_hidden() == 0 || !self.mlp_ratio.is_finite() {
            return err("sit: mlp_ratio must give at least one MLP channel");
        }
        if !(0.0..1.0).contains(&self.class_dropout_prob) {
            return err("sit: class_dropout_prob must be in [0, 1)");
        }
        if self.cond_channels == Some(0) {
            return err("sit: cond_channels must be at least 1 when given");
        }
        if self.classes > u32::MAX as usize - 1 {
            return err("sit: too many classes");
        }
        Ok(())
    }

    /// Every parameter (official name, shape, init) in state-dict order, without a backend.
    pub fn param_specs(&self) -> Result<Vec<ParamSpec>, ConfigError> {
        Ok(super::network::layout(self)?.1.into_specs())
    }

    /// Number of parameter values (the texture model's unused `pos_embed` included, as in the
    /// official count), without a backend.
    pub fn parameter_count(&self) -> Result<usize, ConfigError> {
        Ok(super::network::layout(self)?.1.count())
    }
}
