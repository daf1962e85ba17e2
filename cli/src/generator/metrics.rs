//! Distribution distances between two sets of feature vectors (rows of `[n, d]`, f32), computed
//! in f64: the Fréchet distance of the Gaussians fitted to them (FID's formula, here on the
//! features of our own classifier, [`super::classifier`]) and the kernel distance (KID's unbiased
//! MMD² with the cubic polynomial kernel `k(x, y) = (x·y / d + 1)³`).

use anyhow::{bail, Result};

/// Mean `[d]` and unbiased covariance `[d, d]` of `n` rows.
pub fn mean_cov(rows: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() / d;
    let mut mean = vec![0.0; d];
    for r in rows.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0; d * d];
    for r in rows.chunks_exact(d) {
        for i in 0..d {
            let a = r[i] as f64 - mean[i];
            for j in i..d {
                cov[i * d + j] += a * (r[j] as f64 - mean[j]);
            }
        }
    }
    let denom = (n.max(2) - 1) as f64;
    for i in 0..d {
        for j in i..d {
            let v = cov[i * d + j] / denom;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }
    (mean, cov)
}

/// Eigenvalues and eigenvectors (columns of `[d, d]`, row-major) of a symmetric matrix, by
/// cyclic Jacobi rotations (exact to rounding for the small `d` used here).
pub fn symmetric_eigen(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut v = vec![0.0; d * d];
    (0..d).for_each(|i| v[i * d + i] = 1.0);
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        let scale: f64 = (0..d).map(|i| a[i * d + i].powi(2)).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// The symmetric positive semi-definite square root (negative rounding eigenvalues set to 0).
fn sqrt_psd(m: &[f64], d: usize) -> Vec<f64> {
    let (w, v) = symmetric_eigen(m, d);
    let mut out = vec![0.0; d * d];
    for k in 0..d {
        let s = w[k].max(0.0).sqrt();
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] += v[i * d + k] * s * v[j * d + k];
            }
        }
    }
    out
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let x = a[i * d + k];
            for j in 0..d {
                out[i * d + j] += x * b[k * d + j];
            }
        }
    }
    out
}

/// `|μa − μb|² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½`: the Fréchet distance of the two sets'
/// Gaussians (`tr (Σa Σb)^½` computed through the symmetric form, so it stays real).
pub fn frechet_distance(a: &[f32], b: &[f32], d: usize) -> Result<f64> {
    check(a, b, d, 2)?;
    let ((ma, ca), (mb, cb)) = (mean_cov(a, d), mean_cov(b, d));
    let diff: f64 = ma.iter().zip(&mb).map(|(x, y)| (x - y).powi(2)).sum();
    let root = sqrt_psd(&ca, d);
    let inner = matmul(&matmul(&root, &cb, d), &root, d);
    let sym: Vec<f64> = (0..d * d).map(|k| 0.5 * (inner[k] + inner[(k % d) * d + k / d])).collect();
    let (w, _) = symmetric_eigen(&sym, d);
    let tr_sqrt: f64 = w.iter().map(|x| x.max(0.0).sqrt()).sum();
    let tr = |c: &[f64]| (0..d).map(|i| c[i * d + i]).sum::<f64>();
    Ok(diff + tr(&ca) + tr(&cb) - 2.0 * tr_sqrt)
}

/// Unbiased MMD² with `k(x, y) = (x·y / d + 1)³` (KID's kernel), over the whole sets.
pub fn kernel_distance(a: &[f32], b: &[f32], d: usize) -> Result<f64> {
    check(a, b, d, 2)?;
    let k = |x: &[f32], y: &[f32]| {
        (x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>() / d as f64 + 1.0).powi(3)
    };
    let within = |s: &[f32]| {
        let rows: Vec<&[f32]> = s.chunks_exact(d).collect();
        let n = rows.len();
        let mut sum = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    sum += k(rows[i], rows[j]);
                }
            }
        }
        sum / (n * (n - 1)) as f64
    };
    let (ra, rb): (Vec<&[f32]>, Vec<&[f32]>) = (a.chunks_exact(d).collect(), b.chunks_exact(d).collect());
    let cross: f64 =
        ra.iter().flat_map(|x| rb.iter().map(move |y| k(x, y))).sum::<f64>() / (ra.len() * rb.len()) as f64;
    Ok(within(a) + within(b) - 2.0 * cross)
}

fn check(a: &[f32], b: &[f32], d: usize, min: usize) -> Result<()> {
    if d == 0 || !a.len().is_multiple_of(d) || !b.len().is_multiple_of(d) {
        bail!("feature sets must be whole rows of {d} values");
    }
    if a.len() / d < min || b.len() / d < min {
        bail!("each feature set needs at least {min} rows (got {} and {})", a.len() / d, b.len() / d);
    }
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        bail!("a feature value is not finite");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random value in [-1, 1).
    fn noise(k: usize) -> f32 {
        let mut r = gpstoken_core::rng::SplitMix64::new(k as u64);
        (r.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    #[test]
    fn kernel_distance_matches_a_hand_computed_case() {
        // k(x, y) = (x y + 1)^3 in one dimension; a = {0, 1}, b = {1, 2}:
        // within a = k(0,1) = 1, within b = k(1,2) = 27, cross = (1 + 1 + 8 + 27) / 4 = 9.25.
        let got = kernel_distance(&[0.0, 1.0], &[1.0, 2.0], 1).unwrap();
        assert!((got - (1.0 + 27.0 - 2.0 * 9.25)).abs() < 1e-12, "{got}");
    }

    #[test]
    fn frechet_distance_of_independent_axes_is_the_closed_form() {
        // Axes independent by construction (a permuted copy per axis would still correlate by
        // chance, so use a grid: axis j of row (i0, i1) depends only on i_j), so the covariance is
        // diagonal and FD = |mu_a - mu_b|^2 + sum (sd_a - sd_b)^2.
        let grid = |scale: [f32; 2], shift: [f32; 2]| -> Vec<f32> {
            let v: Vec<f32> = (0..12).map(|k| noise(k) * 2.0).collect();
            let mut rows = Vec::new();
            for i0 in 0..12 {
                for i1 in 0..12 {
                    rows.extend([v[i0] * scale[0] + shift[0], v[i1] * scale[1] + shift[1]]);
                }
            }
            rows
        };
        let (a, b) = (grid([1.0, 2.0], [0.0, 1.0]), grid([3.0, 0.5], [2.0, -1.0]));
        let mean_sd = |rows: &[f32], j: usize| {
            let x: Vec<f64> = rows.chunks(2).map(|r| r[j] as f64).collect();
            let m = x.iter().sum::<f64>() / x.len() as f64;
            (m, ((x.iter().map(|v| (v - m).powi(2)).sum::<f64>()) / (x.len() - 1) as f64).sqrt())
        };
        let expected: f64 = (0..2)
            .map(|j| {
                let ((ma, sa), (mb, sb)) = (mean_sd(&a, j), mean_sd(&b, j));
                (ma - mb).powi(2) + (sa - sb).powi(2)
            })
            .sum();
        let got = frechet_distance(&a, &b, 2).unwrap();
        assert!((got - expected).abs() < 1e-9 * expected, "{got} vs {expected}");
        assert!(frechet_distance(&a, &a, 2).unwrap().abs() < 1e-9);
    }

    #[test]
    fn eigen_decomposition_rebuilds_the_matrix() {
        let d = 6;
        let rows: Vec<f32> = (0..40 * d).map(noise).collect();
        let (_, cov) = mean_cov(&rows, d);
        let (w, v) = symmetric_eigen(&cov, d);
        for i in 0..d {
            for j in 0..d {
                let back: f64 = (0..d).map(|k| v[i * d + k] * w[k] * v[j * d + k]).sum();
                assert!((back - cov[i * d + j]).abs() < 1e-12, "({i},{j}) {back} vs {}", cov[i * d + j]);
            }
        }
    }

    #[test]
    fn bad_feature_sets_are_errors() {
        assert!(frechet_distance(&[1.0, 2.0, 3.0], &[1.0, 2.0], 2).is_err());
        assert!(kernel_distance(&[1.0], &[1.0, 2.0], 1).is_err());
        assert!(frechet_distance(&[f32::NAN, 1.0], &[1.0, 2.0], 1).is_err());
    }
}
