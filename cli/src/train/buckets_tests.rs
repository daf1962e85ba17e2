use super::*;
use crate::train::parallel::{RankInfo, SingleRank};
use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::Buffers;
use gpstoken_core::model::{Init, ParamSpec};

/// Records what it is handed: per started reduction, the lengths of its buffers; and the waits.
#[derive(Default)]
struct Recorder {
    started: Vec<Vec<usize>>,
    waits: usize,
    fail_at: Option<usize>,
}

impl GradientSync<CpuBackend> for Recorder {
    fn info(&self) -> RankInfo {
        RankInfo { rank: 0, world: 2 }
    }

    fn start_all_reduce_mean(&mut self, be: &CpuBackend, buffers: &mut [&mut Vec<f32>]) -> Result<()> {
        if self.fail_at == Some(self.started.len()) {
            bail!("the other rank failed");
        }
        self.started.push(buffers.iter().map(|b| be.len(b)).collect());
        Ok(())
    }

    fn wait(&mut self, _: &CpuBackend) -> Result<()> {
        self.waits += 1;
        Ok(())
    }
}

/// Parameters of `sizes` values each; a size of 0 stands for an unused parameter (no gradient).
fn store(be: &CpuBackend, sizes: &[usize]) -> ParamStore<CpuBackend> {
    let specs = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| ParamSpec { name: format!("p{i}"), shape: vec![n.max(1)], init: Init::Zeros, used: n > 0 })
        .collect();
    ParamStore::zeros(be, specs).unwrap()
}

const MIB: usize = (1 << 20) / 4;

#[test]
fn the_first_bucket_closes_at_1_mib_the_others_at_25_mib() {
    let be = CpuBackend::new();
    // Announced in backward order (last layer first), as the model does.
    let mut params = store(&be, &[7, 3 * MIB, 0, 20 * MIB, 10 * MIB, MIB / 2, MIB / 2]);
    let mut sync = Recorder::default();
    let mut loss = be.zeros(1).unwrap();
    let mut buckets = GradientBuckets::new(&mut sync, DEFAULT_BUCKET_MIB);
    buckets.ready(&be, &mut params, 5..7);
    buckets.ready(&be, &mut params, 4..5);
    buckets.ready(&be, &mut params, 3..4);
    buckets.ready(&be, &mut params, 1..3);
    buckets.ready(&be, &mut params, 0..1);
    assert_eq!(buckets.finish(&be, &mut params, &mut [&mut loss]).unwrap(), 3);
    assert_eq!(
        sync.started,
        vec![
            vec![MIB / 2, MIB / 2],
            // 10 + 20 MiB: past 25 MiB; the unused parameter 2 has no gradient to send.
            vec![20 * MIB, 10 * MIB],
            // After the pass: the rest, in state-dict order, and the loss.
            vec![7, 3 * MIB, 1],
        ]
    );
    assert_eq!(sync.waits, 1);
}

#[test]
fn one_rank_hands_nothing_over() {
    let be = CpuBackend::new();
    let mut params = store(&be, &[2 * MIB, 5]);
    let mut sync = SingleRank;
    let mut buckets = GradientBuckets::new(&mut sync, DEFAULT_BUCKET_MIB);
    buckets.ready(&be, &mut params, 0..2);
    let mut loss = be.zeros(1).unwrap();
    assert_eq!(buckets.finish(&be, &mut params, &mut [&mut loss]).unwrap(), 0);
}

#[test]
fn a_failed_bucket_stops_the_handing_over_and_is_reported_after_the_pass() {
    let be = CpuBackend::new();
    let mut params = store(&be, &[2 * MIB, 30 * MIB, 5]);
    let mut sync = Recorder { fail_at: Some(1), ..Recorder::default() };
    let mut buckets = GradientBuckets::new(&mut sync, DEFAULT_BUCKET_MIB);
    buckets.ready(&be, &mut params, 0..1);
    buckets.ready(&be, &mut params, 1..2);
    buckets.ready(&be, &mut params, 2..3);
    let e = buckets.finish(&be, &mut params, &mut []).unwrap_err();
    assert_eq!(e.to_string(), "the other rank failed");
    assert_eq!(sync.started, vec![vec![2 * MIB]]);
    assert_eq!(sync.waits, 0);
}

#[test]
fn smaller_buckets_cut_every_layer_and_bad_sizes_are_refused() {
    let be = CpuBackend::new();
    let mut params = store(&be, &[300, 200, 100]);
    let mut sync = Recorder::default();
    // 1/4096 MiB = 64 values: every announcement closes a bucket.
    let mut buckets = GradientBuckets::new(&mut sync, 1.0 / 4096.0);
    for id in (0..3).rev() {
        buckets.ready(&be, &mut params, id..id + 1);
    }
    let mut loss = be.zeros(1).unwrap();
    assert_eq!(buckets.finish(&be, &mut params, &mut [&mut loss]).unwrap(), 4);
    assert_eq!(sync.started, vec![vec![100], vec![200], vec![300], vec![1]]);
    assert!(check_bucket_size(0.5).is_ok());
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = check_bucket_size(bad).unwrap_err().to_string();
        assert!(e.starts_with("--bucket-mb"), "{e}");
    }
}
