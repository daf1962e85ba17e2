//! The samplers against the stored trajectories.

use std::path::Path;

use gpstoken_core::Backend;

use super::Report;

pub fn check_sde<B: Backend>(_be: &B, _dir: &Path) -> Report {
    Report::default()
}
pub fn check_ode_euler<B: Backend>(_be: &B, _dir: &Path) -> Report {
    Report::default()
}
pub fn check_ode_dopri5<B: Backend>(_be: &B, _dir: &Path) -> Report {
    Report::default()
}
