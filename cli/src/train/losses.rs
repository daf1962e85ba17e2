//! The losses of one training step on the device. Each loss op writes its own one-value buffer
//! (`LossOps::*_into`: no wait for the device); after the step they are packed into one buffer
//! and read with a single download, so a GPU backend synchronises once per logged step instead
//! of once per loss.

use crate::backends::device_error;
use anyhow::Result;
use gpstoken_core::backend::Backend;

/// The slots, in the order they are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// The reconstruction MSE (every step).
    Mse = 0,
    /// `mean(D(x̂))` (adversarial autoencoder and discriminator steps).
    LogitsFake = 1,
    /// `mean(relu(1 - D(x)))` (discriminator steps).
    HingeReal = 2,
    /// `mean(relu(1 + D(x̂)))` (discriminator steps).
    HingeFake = 3,
    /// `mean(D(x))` (discriminator steps).
    LogitsReal = 4,
}

const SLOTS: usize = 5;

pub(super) struct StepLosses<B: Backend> {
    /// One one-value buffer per slot.
    values: Vec<B::Buffer>,
    /// `packed[i]` holds slots `0..=i+1` (made by appending one slot to `packed[i-1]`).
    packed: Vec<B::Buffer>,
    host: [f32; SLOTS],
}

impl<B: Backend> StepLosses<B> {
    pub fn new(be: &B) -> Result<StepLosses<B>> {
        let err = device_error(be);
        let values = (0..SLOTS).map(|_| be.zeros(1).map_err(err)).collect::<Result<Vec<_>>>()?;
        let packed = (2..=SLOTS).map(|n| be.zeros(n).map_err(err)).collect::<Result<Vec<_>>>()?;
        Ok(StepLosses { values, packed, host: [f32::NAN; SLOTS] })
    }

    /// The buffer a loss op writes slot `s` into.
    pub fn slot(&mut self, s: Slot) -> &mut B::Buffer {
        &mut self.values[s as usize]
    }

    /// Reads slots `0..count` with one download (after packing them on the device); values of
    /// the slots past `count` are NaN.
    pub fn read(&mut self, be: &B, count: usize) -> Result<()> {
        let err = device_error(be);
        self.host = [f32::NAN; SLOTS];
        if count <= 1 {
            return be.download(&self.values[0], &mut self.host[..count]).map_err(err);
        }
        for n in 2..=count {
            let (done, rest) = self.packed.split_at_mut(n - 2);
            let head = if n == 2 { &self.values[0] } else { &done[n - 3] };
            be.concat_cols(1, n - 1, 1, head, &self.values[n - 1], &mut rest[0]).map_err(err)?;
        }
        be.download(&self.packed[count - 2], &mut self.host[..count]).map_err(err)
    }

    /// The value of slot `s` from the last [`StepLosses::read`].
    pub fn get(&self, s: Slot) -> f64 {
        f64::from(self.host[s as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpstoken_backend_cpu::CpuBackend;
    use gpstoken_core::backend::TensorOps;

    #[test]
    fn one_read_returns_each_slot_and_nan_past_the_count() {
        let be = CpuBackend::new();
        let mut losses = StepLosses::new(&be).unwrap();
        let slots = [Slot::Mse, Slot::LogitsFake, Slot::HingeReal, Slot::HingeFake, Slot::LogitsReal];
        for (i, s) in slots.into_iter().enumerate() {
            be.fill(losses.slot(s), 0.5 + i as f32).unwrap();
        }
        losses.read(&be, SLOTS).unwrap();
        for (i, s) in slots.into_iter().enumerate() {
            assert_eq!(losses.get(s), 0.5 + i as f64, "{s:?}");
        }
        losses.read(&be, 2).unwrap();
        assert_eq!((losses.get(Slot::Mse), losses.get(Slot::LogitsFake)), (0.5, 1.5));
        assert!(losses.get(Slot::HingeReal).is_nan());
        losses.read(&be, 1).unwrap();
        assert_eq!(losses.get(Slot::Mse), 0.5);
        assert!(losses.get(Slot::LogitsFake).is_nan());
    }
}
