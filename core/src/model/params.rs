//! Parameters: official state-dict names and shapes (spec Appendix A), how each is initialised,
//! and their value and gradient buffers on a backend.
//!
//! The model is built in two steps. [`ParamRegistry`] records one [`ParamSpec`] per tensor, in
//! the official state-dict order, while the layer structs keep only [`ParamId`]s; nothing is
//! allocated on a backend, so [`crate::model::ModelConfig::parameter_count`] can count the
//! 128M-parameter models for free. [`ParamStore`] then allocates one value buffer per spec and
//! one gradient buffer per parameter the forward pass uses.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::backend::{AdamTensor, Buffers};

/// Index of a parameter in its registry / store (state-dict order).
pub type ParamId = usize;

/// How a parameter is initialised for training from scratch (PyTorch defaults, spec 5.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `kaiming_uniform_(a=√5)` of `nn.Linear`/`nn.Conv2d`: U(±1/√fan_in).
    KaimingUniform { fan_in: usize },
    /// The default bias of `nn.Linear`/`nn.Conv2d`: U(±1/√fan_in).
    BiasUniform { fan_in: usize },
    /// `xavier_uniform_`: U(±√(6/(fan_in+fan_out))) (`MultiheadAttention.in_proj_weight`).
    XavierUniform { fan_in: usize, fan_out: usize },
    /// N(0, 1) (`nn.Embedding`).
    Normal,
    /// N(mean, std²): taming's `weights_init` of the discriminator (conv weights N(0, 0.02),
    /// BatchNorm weights N(1, 0.02)).
    NormalScaled { mean: f32, std: f32 },
    /// Constant 1 (norm weights).
    Ones,
    /// Constant 0 (norm biases, MHA biases, `to_gps.0`).
    Zeros,
}

/// One tensor of the state dict.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Official name, e.g. `decoder.up.1.block.0.nin_shortcut.weight`.
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    pub init: Init,
    /// False for the encoder ResnetBlocks' `temb_proj` (spec 5.1 quirk): in the state dict, never
    /// in the forward pass, so it has no gradient (PyTorch leaves its `.grad` as `None`).
    pub used: bool,
}

impl ParamSpec {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The list of parameter specs, filled by the layer constructors in state-dict order.
#[derive(Clone, Debug, Default)]
pub struct ParamRegistry {
    specs: Vec<ParamSpec>,
}

impl ParamRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a parameter the forward pass uses.
    pub fn add(&mut self, name: String, shape: &[usize], init: Init) -> ParamId {
        self.specs.push(ParamSpec { name, shape: shape.to_vec(), init, used: true });
        self.specs.len() - 1
    }

    /// Records a parameter that exists only in the state dict (`temb_proj`).
    pub fn add_unused(&mut self, name: String, shape: &[usize], init: Init) -> ParamId {
        self.specs.push(ParamSpec { name, shape: shape.to_vec(), init, used: false });
        self.specs.len() - 1
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    pub fn into_specs(self) -> Vec<ParamSpec> {
        self.specs
    }

    /// Total number of values.
    pub fn count(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// The ids `register` adds, with what it returns: a layer's parameters are registered
    /// together, so they are one range (what [`GradientsReady`] announces).
    pub fn registered<T>(&mut self, register: impl FnOnce(&mut Self) -> T) -> (T, Range<ParamId>) {
        let first = self.specs.len();
        let made = register(self);
        (made, first..self.specs.len())
    }
}

/// Told during a backward pass, layer by layer, which parameters' gradients are final: nothing
/// later in the pass writes them. Data-parallel training starts averaging them over the ranks
/// there, while the rest of the pass runs (as PyTorch DDP's bucket hooks do). A listener that
/// fails keeps its error for the caller to collect after the pass: the pass goes on.
pub trait GradientsReady<B: Buffers> {
    fn ready(&mut self, be: &B, params: &mut ParamStore<B>, ids: Range<ParamId>);
}

/// Listens to nothing (a plain backward pass).
pub struct NoListener;

impl<B: Buffers> GradientsReady<B> for NoListener {
    fn ready(&mut self, _: &B, _: &mut ParamStore<B>, _: Range<ParamId>) {}
}

/// Whether gradient buffers are allocated: [`Gradients::No`] (inference) gives every gradient
/// buffer zero length, so a backward pass over them fails with a length error instead of
/// needing memory the forward pass never uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gradients {
    Yes,
    No,
}

impl Gradients {
    /// A zero-filled gradient buffer of `n` values, or of none for [`Gradients::No`].
    pub fn zeros<B: Buffers>(self, be: &B, n: usize) -> Result<B::Buffer, B::Error> {
        be.zeros(if self == Gradients::Yes { n } else { 0 })
    }
}

/// Parameter values and gradients on a backend, in state-dict order.
pub struct ParamStore<B: Buffers> {
    specs: Vec<ParamSpec>,
    values: Vec<B::Buffer>,
    /// `None` for unused parameters.
    grads: Vec<Option<B::Buffer>>,
}

impl<B: Buffers> ParamStore<B> {
    /// Zero-filled values and gradients for `specs`.
    pub fn zeros(backend: &B, specs: Vec<ParamSpec>) -> Result<Self, B::Error> {
        Self::zeros_with(backend, specs, Gradients::Yes)
    }

    /// Zero-filled values for `specs`, with gradient buffers only for [`Gradients::Yes`]: an
    /// inference model does not pay for a second copy of its weights.
    pub fn zeros_with(backend: &B, specs: Vec<ParamSpec>, gradients: Gradients) -> Result<Self, B::Error> {
        let mut values = Vec::with_capacity(specs.len());
        let mut grads = Vec::with_capacity(specs.len());
        for s in &specs {
            values.push(backend.zeros(s.numel())?);
            grads.push(if s.used { Some(gradients.zeros(backend, s.numel())?) } else { None });
        }
        Ok(ParamStore { specs, values, grads })
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    pub fn spec(&self, id: ParamId) -> &ParamSpec {
        &self.specs[id]
    }

    /// Total number of values.
    pub fn count(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// The id of the parameter called `name`.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.specs.iter().position(|s| s.name == name)
    }

    pub fn value(&self, id: ParamId) -> &B::Buffer {
        &self.values[id]
    }

    pub fn value_mut(&mut self, id: ParamId) -> &mut B::Buffer {
        &mut self.values[id]
    }

    /// The gradient written by the last backward pass; `None` for unused parameters.
    pub fn grad(&self, id: ParamId) -> Option<&B::Buffer> {
        self.grads[id].as_ref()
    }

    /// The gradient, writable; `None` for unused parameters.
    pub fn gradient_mut(&mut self, id: ParamId) -> Option<&mut B::Buffer> {
        self.grads[id].as_mut()
    }

    /// Value and gradient together, e.g. for an optimiser step.
    pub fn value_and_grad_mut(&mut self, id: ParamId) -> (&mut B::Buffer, Option<&mut B::Buffer>) {
        (&mut self.values[id], self.grads[id].as_mut())
    }

    /// Every gradient buffer, in state-dict order (unused parameters have none): what
    /// data-parallel training averages over its ranks after each backward pass.
    pub fn gradients_mut(&mut self) -> Vec<&mut B::Buffer> {
        self.grads.iter_mut().flatten().collect()
    }

    /// The gradient buffers of `ids` (ascending), in state-dict order; unused parameters have
    /// none. What one bucket of data-parallel training averages over its ranks.
    pub fn gradients_of_mut(&mut self, ids: &[ParamId]) -> Vec<&mut B::Buffer> {
        debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids must ascend");
        let mut wanted = ids.iter().copied().peekable();
        self.grads.iter_mut().enumerate().filter_map(|(id, grad)| wanted.next_if_eq(&id).and(grad.as_mut())).collect()
    }

    /// Every value with its gradient (`None` for unused parameters), in state-dict order,
    /// borrowed together: what one optimiser op over the whole model takes.
    pub fn values_and_grads_mut(&mut self) -> impl Iterator<Item = (&mut B::Buffer, Option<&B::Buffer>)> {
        self.values.iter_mut().zip(self.grads.iter().map(Option::as_ref))
    }

    /// The tensors of one multi-tensor Adam step ([`crate::backend::OptimOps::adam_step_many`]):
    /// every parameter that has a gradient and, from `moments` (one entry per parameter id, in
    /// order), its first and second moments; parameters without either are left out.
    pub fn adam_tensors<'a>(
        &'a mut self,
        moments: impl IntoIterator<Item = Option<(&'a mut B::Buffer, &'a mut B::Buffer)>>,
    ) -> Vec<AdamTensor<'a, B::Buffer>> {
        self.values_and_grads_mut()
            .zip(moments)
            .filter_map(|((param, grad), moment)| {
                let (m, v) = moment?;
                Some(AdamTensor { param, grad: grad?, m, v })
            })
            .collect()
    }

    /// Visits every parameter in state-dict order: spec, value, gradient.
    pub fn for_each(&self, mut f: impl FnMut(ParamId, &ParamSpec, &B::Buffer, Option<&B::Buffer>)) {
        for (i, s) in self.specs.iter().enumerate() {
            f(i, s, &self.values[i], self.grads[i].as_ref());
        }
    }

    /// Visits every parameter mutably in state-dict order.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(ParamId, &ParamSpec, &mut B::Buffer, Option<&mut B::Buffer>)) {
        for (i, s) in self.specs.iter().enumerate() {
            f(i, s, &mut self.values[i], self.grads[i].as_mut());
        }
    }

    /// The value of `w` and the gradients of `w` and `b` (a layer's weight and bias), borrowed
    /// together for one backward op.
    ///
    /// # Panics
    /// If `w == b` or either is an unused parameter (a construction bug, not a data error).
    pub(crate) fn wgrads(&mut self, w: ParamId, b: ParamId) -> (&B::Buffer, &mut B::Buffer, &mut B::Buffer) {
        let (gw, gb) = two_mut(&mut self.grads, w, b);
        (&self.values[w], gw.as_mut().expect("used parameter"), gb.as_mut().expect("used parameter"))
    }

    /// The value and the gradient of one used parameter, borrowed together (a layer without bias).
    ///
    /// # Panics
    /// If `id` is an unused parameter (a construction bug, not a data error).
    pub(crate) fn value_and_grad(&mut self, id: ParamId) -> (&B::Buffer, &mut B::Buffer) {
        (&self.values[id], self.grads[id].as_mut().expect("used parameter"))
    }

    /// The gradient buffer of a used parameter.
    pub(crate) fn grad_mut(&mut self, id: ParamId) -> &mut B::Buffer {
        self.grads[id].as_mut().expect("used parameter")
    }
}

/// Two distinct elements of a slice, both mutably.
fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b, "two_mut needs distinct indices");
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}
