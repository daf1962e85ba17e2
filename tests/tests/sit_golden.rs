//! Parity of the generator with the official code (`shared/golden/sit/`) on the CPU backend;
//! the checks themselves are in `gpstoken_tests::sit`, generic over the backend.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_tests::shared_dir;
use gpstoken_tests::sit::{check_guidance, check_model, check_ode_dopri5, check_ode_euler, check_sde};

fn golden() -> Option<std::path::PathBuf> {
    shared_dir("sit_golden").map(|s| s.join("golden/sit"))
}

#[test]
fn texture_model_forward_loss_and_gradients() {
    let Some(dir) = golden() else { return };
    check_model(&CpuBackend::new(), &dir, "texture").assert_ok();
}

#[test]
fn layout_model_forward_loss_and_gradients() {
    let Some(dir) = golden() else { return };
    check_model(&CpuBackend::new(), &dir, "layout").assert_ok();
}

#[test]
fn guidance_inside_and_outside_the_interval() {
    let Some(dir) = golden() else { return };
    for which in ["texture", "layout"] {
        check_guidance(&CpuBackend::new(), &dir, which).assert_ok();
    }
}

#[test]
fn sde_euler_sbdm_trajectory_with_the_stored_noise() {
    let Some(dir) = golden() else { return };
    check_sde(&CpuBackend::new(), &dir).assert_ok();
}

#[test]
fn ode_fixed_grid_euler() {
    let Some(dir) = golden() else { return };
    check_ode_euler(&CpuBackend::new(), &dir).assert_ok();
}

#[test]
fn ode_dopri5_within_its_tolerance() {
    let Some(dir) = golden() else { return };
    check_ode_dopri5(&CpuBackend::new(), &dir).assert_ok();
}
