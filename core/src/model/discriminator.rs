//! The PatchGAN discriminator of the adversarial stage (spec 8): taming's
//! `NLayerDiscriminator(input_nc, ndf, n_layers, BatchNorm2d)`, generic over the backend, with
//! BatchNorm in **training mode** (batch statistics), as the official training runs it.
//!
//! The official `nn.Sequential` (`main.*` in the state dict), for `n_layers = 3`:
//!
//! ```text
//! main.0  Conv(in→ndf, k4 s2 p1)            main.1  LeakyReLU(0.2)
//! main.2  Conv(ndf→2ndf, k4 s2 p1, no bias)  main.3  BatchNorm2d  main.4  LeakyReLU
//! main.5  Conv(2ndf→4ndf, k4 s2 p1, no bias) main.6  BatchNorm2d  main.7  LeakyReLU
//! main.8  Conv(4ndf→8ndf, k4 s1 p1, no bias) main.9  BatchNorm2d  main.10 LeakyReLU
//! main.11 Conv(8ndf→1, k4 s1 p1)
//! ```
//!
//! The widths are `ndf·min(2^n, 8)`. The model is cut into blocks (conv, optional BatchNorm,
//! optional LeakyReLU); each block's activations live in [`DiscActs`], allocated once per batch
//! and image size. Init (taming's `weights_init`): conv weights N(0, 0.02), BatchNorm weights
//! N(1, 0.02) and biases 0; the two conv biases keep PyTorch's default U(±1/√fan_in).
//! The BatchNorm running statistics and `num_batches_tracked` are state, not parameters: they are
//! updated by every forward (as in PyTorch's training mode) and saved with the weights, but the
//! training-mode output never reads them.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::init::init_params;
use super::layers::{zeros, Res};
use super::params::{Init, ParamId, ParamRegistry, ParamSpec, ParamStore};
use crate::backend::{Activation, Backend, BatchNormDesc, Buffers, Conv2dDesc};
use crate::shape::{ensure, ShapeError};

/// Kernel size and padding of every discriminator conv (taming's `kw = 4`, `padw = 1`).
const KERNEL: usize = 4;
const PADDING: usize = 1;

/// The shape of an `NLayerDiscriminator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscriminatorConfig {
    /// Image channels (`disc_in_channels`, 3).
    pub in_channels: usize,
    /// Width of the first conv (`ndf`, 64).
    pub ndf: usize,
    /// Strided/normalised conv layers after the first (`n_layers`, 3).
    pub n_layers: usize,
}

impl DiscriminatorConfig {
    /// The official discriminator: 3 input channels, ndf 64, 3 layers.
    pub const OFFICIAL: DiscriminatorConfig = DiscriminatorConfig { in_channels: 3, ndf: 64, n_layers: 3 };

    fn validate(&self) -> Result<(), ShapeError> {
        ensure(self.in_channels >= 1, "the discriminator needs at least one input channel")?;
        ensure(self.ndf >= 1, "the discriminator's ndf must be at least 1")?;
        ensure(self.n_layers >= 1, "the discriminator's n_layers must be at least 1")
    }

    /// `(cin, cout, stride, batch norm)` of every conv, in order.
    fn convs(&self) -> Vec<(usize, usize, usize, bool)> {
        let width = |n: usize| self.ndf * (1usize << n.min(3));
        let mut convs = alloc::vec![(self.in_channels, self.ndf, 2, false)];
        for n in 1..self.n_layers {
            convs.push((width(n - 1), width(n), 2, true));
        }
        convs.push((width(self.n_layers - 1), width(self.n_layers), 1, true));
        convs.push((width(self.n_layers), 1, 1, false));
        convs
    }

    /// Every parameter (official name, shape, init) in state-dict order.
    pub fn param_specs(&self) -> Result<Vec<ParamSpec>, ShapeError> {
        Ok(layout(self)?.1.into_specs())
    }

    /// Number of parameter values (the BatchNorm running statistics are buffers, not counted).
    pub fn parameter_count(&self) -> Result<usize, ShapeError> {
        Ok(layout(self)?.1.count())
    }

    /// The logit map `(height, width)` for `height x width` inputs, `None` when an input that
    /// small cannot pass every conv.
    pub fn logits_size(&self, height: usize, width: usize) -> Option<(usize, usize)> {
        let (mut h, mut w) = (height, width);
        for (_, _, stride, _) in self.convs() {
            if h + 2 * PADDING < KERNEL || w + 2 * PADDING < KERNEL {
                return None;
            }
            h = (h + 2 * PADDING - KERNEL) / stride + 1;
            w = (w + 2 * PADDING - KERNEL) / stride + 1;
        }
        Some((h, w))
    }
}

/// One conv with what follows it.
#[derive(Clone, Debug)]
struct Block {
    weight: ParamId,
    bias: Option<ParamId>,
    cin: usize,
    cout: usize,
    stride: usize,
    /// `(gamma, beta, state-dict prefix)` of the BatchNorm after the conv.
    norm: Option<(ParamId, ParamId, String)>,
    /// Every block but the last ends with LeakyReLU(0.2).
    leaky: bool,
}

/// Registers the parameters in the official order and names the Sequential indices.
fn layout(cfg: &DiscriminatorConfig) -> Result<(Vec<Block>, ParamRegistry), ShapeError> {
    cfg.validate()?;
    let mut reg = ParamRegistry::new();
    let convs = cfg.convs();
    let last = convs.len() - 1;
    let mut blocks = Vec::with_capacity(convs.len());
    // Index of the next module of the official `nn.Sequential`.
    let mut index = 0;
    for (i, &(cin, cout, stride, norm)) in convs.iter().enumerate() {
        let fan_in = cin * KERNEL * KERNEL;
        let weight = reg.add(
            format!("main.{index}.weight"),
            &[cout, cin, KERNEL, KERNEL],
            Init::NormalScaled { mean: 0.0, std: 0.02 },
        );
        let bias = (!norm).then(|| reg.add(format!("main.{index}.bias"), &[cout], Init::BiasUniform { fan_in }));
        index += 1;
        let norm = norm.then(|| {
            let prefix = format!("main.{index}");
            let gamma = reg.add(format!("{prefix}.weight"), &[cout], Init::NormalScaled { mean: 1.0, std: 0.02 });
            let beta = reg.add(format!("{prefix}.bias"), &[cout], Init::Zeros);
            index += 1;
            (gamma, beta, prefix)
        });
        let leaky = i != last;
        if leaky {
            index += 1;
        }
        blocks.push(Block { weight, bias, cin, cout, stride, norm, leaky });
    }
    Ok((blocks, reg))
}

/// A BatchNorm's state outside the parameters (PyTorch buffers).
pub struct BatchNormState<B: Buffers> {
    /// `main.K` of the official state dict.
    pub prefix: String,
    /// `[C]`, starts at 0.
    pub running_mean: B::Buffer,
    /// `[C]`, starts at 1.
    pub running_var: B::Buffer,
    /// Forward passes in training mode so far (an int64 in PyTorch).
    pub num_batches_tracked: u64,
}

/// The discriminator on a backend: parameters (official names), BatchNorm state.
pub struct Discriminator<B: Backend> {
    config: DiscriminatorConfig,
    blocks: Vec<Block>,
    /// Parameter values and gradients, `main.*` names, state-dict order.
    pub params: ParamStore<B>,
    /// One per BatchNorm, in order.
    norms: Vec<BatchNormState<B>>,
}

/// The buffers of one block for one batch.
struct BlockActs<B: Buffers> {
    conv: Conv2dDesc,
    norm: Option<BatchNormDesc>,
    /// Conv output.
    conv_y: B::Buffer,
    /// BatchNorm output and saved statistics (blocks with a norm).
    norm_y: Option<B::Buffer>,
    stats: Option<B::Buffer>,
    /// LeakyReLU output: the block's output (every block but the last).
    out: Option<B::Buffer>,
    /// dL/d(LeakyReLU input) (blocks with an activation).
    d_act_in: Option<B::Buffer>,
    /// dL/d(conv output) after the BatchNorm (blocks with a norm).
    d_conv_y: Option<B::Buffer>,
    /// dL/d(block input).
    dx: B::Buffer,
}

/// Every activation of one discriminator forward/backward, for a fixed batch and image size.
pub struct DiscActs<B: Buffers> {
    batch: usize,
    blocks: Vec<BlockActs<B>>,
}

impl<B: Buffers> DiscActs<B> {
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// The logits `[B, 1, h, w]` of the last forward.
    pub fn logits(&self) -> &B::Buffer {
        &self.blocks.last().expect("at least two blocks").conv_y
    }
    /// dL/d(input image) of the last backward that asked for it.
    pub fn d_input(&self) -> &B::Buffer {
        &self.blocks[0].dx
    }
}

/// What a backward pass computes besides the gradients it needs internally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscGradients {
    /// Overwrite every parameter gradient (the discriminator's own step).
    pub params: bool,
    /// Write dL/d(input) (the generator's adversarial term).
    pub input: bool,
}

impl<B: Backend> Discriminator<B> {
    /// A discriminator with every parameter zero and fresh BatchNorm state (running mean 0,
    /// running variance 1); call [`Discriminator::init`] or load weights next.
    pub fn new(be: &B, config: DiscriminatorConfig) -> Result<Self, B::Error> {
        let (blocks, reg) = layout(&config)?;
        let params = ParamStore::zeros(be, reg.into_specs())?;
        let mut norms = Vec::new();
        for b in &blocks {
            if let Some((_, _, prefix)) = &b.norm {
                norms.push(BatchNormState {
                    prefix: prefix.clone(),
                    running_mean: be.zeros(b.cout)?,
                    running_var: be.upload(&alloc::vec![1.0; b.cout])?,
                    num_batches_tracked: 0,
                });
            }
        }
        Ok(Discriminator { config, blocks, params, norms })
    }

    pub fn config(&self) -> &DiscriminatorConfig {
        &self.config
    }

    /// taming's `weights_init` from `seed` (each parameter from its own stream, as the tokenizer's
    /// [`init_params`]); zeroes the gradients.
    pub fn init(&mut self, be: &B, seed: u64) -> Result<(), B::Error> {
        init_params(be, &mut self.params, seed)
    }

    /// The BatchNorm states, in order.
    pub fn norm_states(&self) -> &[BatchNormState<B>] {
        &self.norms
    }

    pub fn norm_states_mut(&mut self) -> &mut [BatchNormState<B>] {
        &mut self.norms
    }

    /// Buffers for `batch` images of `height x width`.
    pub fn activations(&self, be: &B, batch: usize, height: usize, width: usize) -> Result<DiscActs<B>, B::Error> {
        ensure(
            self.config.logits_size(height, width).is_some(),
            "the image is too small for the discriminator (each conv needs at least 2 pixels)",
        )?;
        let (mut h, mut w) = (height, width);
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let conv = Conv2dDesc {
                batch,
                in_channels: b.cin,
                out_channels: b.cout,
                height: h,
                width: w,
                kernel: KERNEL,
                stride: b.stride,
                padding: PADDING,
            };
            let (ho, wo) = (conv.out_height(), conv.out_width());
            let n = conv.output_len();
            let norm = b.norm.as_ref().map(|_| BatchNormDesc::new(batch, b.cout, ho * wo));
            if norm.is_some() {
                ensure(batch * ho * wo >= 2, "batch norm needs more than one value per channel (batch x logits)")?;
            }
            let opt = |on: bool, len: usize| -> Result<Option<B::Buffer>, B::Error> {
                if on {
                    Ok(Some(zeros(be, len)?))
                } else {
                    Ok(None)
                }
            };
            blocks.push(BlockActs {
                conv,
                norm,
                conv_y: zeros(be, n)?,
                norm_y: opt(norm.is_some(), n)?,
                stats: opt(norm.is_some(), 2 * b.cout)?,
                out: opt(b.leaky, n)?,
                d_act_in: opt(b.leaky, n)?,
                d_conv_y: opt(norm.is_some(), n)?,
                dx: zeros(be, conv.input_len())?,
            });
            (h, w) = (ho, wo);
        }
        Ok(DiscActs { batch, blocks })
    }

    /// `x [B, in, H, W]` to `a.logits()`. Training mode: batch statistics, and every BatchNorm's
    /// running statistics and `num_batches_tracked` are updated.
    pub fn forward(&mut self, be: &B, x: &B::Buffer, a: &mut DiscActs<B>) -> Res<B> {
        let mut norm_index = 0;
        for i in 0..self.blocks.len() {
            let (done, rest) = a.blocks.split_at_mut(i);
            let input = if i == 0 { x } else { done[i - 1].out.as_ref().expect("inner blocks have outputs") };
            let (b, ba) = (&self.blocks[i], &mut rest[0]);
            let bias = b.bias.map(|id| self.params.value(id));
            be.conv2d_forward(&ba.conv, input, self.params.value(b.weight), bias, &mut ba.conv_y)?;
            let mut pre = &ba.conv_y;
            if let (Some((gamma, beta, _)), Some(desc), Some(y), Some(stats)) =
                (&b.norm, &ba.norm, &mut ba.norm_y, &mut ba.stats)
            {
                let st = &mut self.norms[norm_index];
                norm_index += 1;
                let running = Some((&mut st.running_mean, &mut st.running_var));
                let (g, bt) = (self.params.value(*gamma), self.params.value(*beta));
                be.batch_norm_train_forward(desc, &ba.conv_y, g, bt, y, stats, running)?;
                st.num_batches_tracked += 1;
                pre = &*y;
            }
            if let Some(out) = &mut ba.out {
                be.activation_forward(Activation::LeakyRelu02, pre, out)?;
            }
        }
        Ok(())
    }

    /// From `d_logits` (dL/d logits, `[B, 1, h, w]`) back through the last forward of `a` on
    /// `x`. With `want.params` every parameter gradient is overwritten (else they are left
    /// untouched); with `want.input`, `a.d_input()` is written.
    pub fn backward(
        &mut self,
        be: &B,
        x: &B::Buffer,
        d_logits: &B::Buffer,
        a: &mut DiscActs<B>,
        want: DiscGradients,
    ) -> Res<B> {
        for i in (0..self.blocks.len()).rev() {
            let (done, rest) = a.blocks.split_at_mut(i);
            let (ba, later) = rest.split_first_mut().expect("block exists");
            let input = if i == 0 { x } else { done[i - 1].out.as_ref().expect("inner blocks have outputs") };
            let dout = later.first().map_or(d_logits, |next| &next.dx);
            let b = &self.blocks[i];
            // Through the LeakyReLU (its input is the norm output, or the conv output).
            let mut d = dout;
            if let Some(d_act_in) = &mut ba.d_act_in {
                let pre = ba.norm_y.as_ref().unwrap_or(&ba.conv_y);
                be.activation_backward(Activation::LeakyRelu02, pre, dout, d_act_in)?;
                d = &*d_act_in;
            }
            // Through the BatchNorm.
            if let (Some((gamma, beta, _)), Some(desc), Some(stats), Some(d_conv_y)) =
                (&b.norm, &ba.norm, &ba.stats, &mut ba.d_conv_y)
            {
                if want.params {
                    let (g, dg, db) = self.params.wgrads(*gamma, *beta);
                    be.batch_norm_train_backward(desc, &ba.conv_y, g, stats, d, d_conv_y, Some((dg, db)))?;
                } else {
                    let g = self.params.value(*gamma);
                    be.batch_norm_train_backward(desc, &ba.conv_y, g, stats, d, d_conv_y, None)?;
                }
                d = &*d_conv_y;
            }
            // The conv; the first block's input gradient only when asked for.
            let dx = (i > 0 || want.input).then_some(&mut ba.dx);
            match (want.params, b.bias) {
                (true, Some(bias)) => {
                    let (w, dw, db) = self.params.wgrads(b.weight, bias);
                    be.conv2d_backward(&ba.conv, input, w, d, dx, Some(dw), Some(db))?;
                }
                (true, None) => {
                    let (w, dw) = self.params.value_and_grad(b.weight);
                    be.conv2d_backward(&ba.conv, input, w, d, dx, Some(dw), None)?;
                }
                (false, _) => {
                    if dx.is_some() {
                        be.conv2d_backward(&ba.conv, input, self.params.value(b.weight), d, dx, None, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}
