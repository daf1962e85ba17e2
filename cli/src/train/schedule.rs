//! The schedules of a run: which steps train the discriminator, how many optimiser steps each
//! optimiser has taken, and the EMA decay of `ema_pytorch`.

/// The adversarial stage's settings and its schedule (spec 8). `t` is the 1-based step of the
/// log; the official code counts `s = t - 1` from 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GanSettings {
    pub disc_start: u64,
    pub disc_weight: f32,
}

impl GanSettings {
    /// `optimizer_idx = s % 2 if s > disc_start else 0`: whether step `t` trains the discriminator.
    pub fn is_disc_step(&self, t: u64) -> bool {
        let s = t - 1;
        s > self.disc_start && s % 2 == 1
    }

    /// `disc_factor = 1 if s >= disc_start else 0`.
    pub fn disc_factor(&self, t: u64) -> f32 {
        // s = t - 1 >= disc_start.
        if t > self.disc_start {
            1.0
        } else {
            0.0
        }
    }

    /// Discriminator steps among steps `1..=t`: the odd `s` in `disc_start + 1 ..= t - 1`.
    pub fn disc_steps_through(&self, t: u64) -> u64 {
        let (first, last) = (self.disc_start + 1, t - 1);
        if last < first {
            return 0;
        }
        // Odd numbers <= n: ceil(n / 2).
        last.div_ceil(2) - first / 2
    }
}

/// Autoencoder optimiser steps among steps `1..=t` (all of them without a discriminator).
pub fn ae_steps_through(gan: Option<&GanSettings>, t: u64) -> u64 {
    t - gan.map_or(0, |g| g.disc_steps_through(t))
}

/// EMA of `ema_pytorch` 0.6 with the official settings (spec 8): beta 0.9999,
/// update_after_step 100, update_every 10, inv_gamma 1, power 2/3. `k_old` is the number of
/// optimiser steps before this one. Returns `None` (no update), `Some(0.0)` (copy the weights)
/// or `Some(decay)`.
pub fn ema_decay(k_old: u64) -> Option<f32> {
    if !k_old.is_multiple_of(10) {
        return None;
    }
    if k_old <= 100 {
        return Some(0.0);
    }
    let k_new = k_old + 1;
    let epoch = (k_new - 101) as f64;
    let decay = 1.0 - (1.0 + epoch).powf(-2.0 / 3.0);
    Some(decay.clamp(0.0, 0.9999) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gan_schedule_follows_the_official_step_rule() {
        for disc_start in [0, 1, 2, 7] {
            let g = GanSettings { disc_start, disc_weight: 0.3 };
            let mut disc_steps = 0;
            for t in 1..40u64 {
                let s = t - 1;
                let official_idx = if s > disc_start { s % 2 } else { 0 };
                assert_eq!(g.is_disc_step(t), official_idx == 1, "disc_start {disc_start} step {s}");
                assert_eq!(g.disc_factor(t), if s >= disc_start { 1.0 } else { 0.0 });
                disc_steps += u64::from(official_idx == 1);
                assert_eq!(g.disc_steps_through(t), disc_steps, "disc_start {disc_start} t {t}");
                assert_eq!(ae_steps_through(Some(&g), t), t - disc_steps);
            }
        }
        assert_eq!(ae_steps_through(None, 17), 17);
    }

    #[test]
    fn ema_schedule_follows_ema_pytorch() {
        assert_eq!(ema_decay(0), Some(0.0));
        assert_eq!(ema_decay(5), None);
        assert_eq!(ema_decay(100), Some(0.0));
        // k_old = 110: k_new = 111, epoch 10: 1 - 11^(-2/3)
        let d = ema_decay(110).unwrap();
        assert!((f64::from(d) - (1.0 - 11f64.powf(-2.0 / 3.0))).abs() < 1e-7);
        assert_eq!(ema_decay(100_000_000), Some(0.9999));
    }
}
