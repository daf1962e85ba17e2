//! NCCL for data-parallel training: with world size 1 the all-reduced gradients equal the local
//! ones bit for bit; with two or more GPUs, every rank gets the mean. Without a GPU (or without
//! libnccl.so) each test prints one SKIPPED line; `GPSTOKEN_REQUIRE_CUDA=1` makes a missing GPU
//! or NCCL a failure.

use gpstoken_backend_cuda::{list_devices, nccl_available, CudaBackend, NcclComm, NcclId};
use gpstoken_core::backend::{Buffers, TensorOps};

fn required() -> bool {
    std::env::var("GPSTOKEN_REQUIRE_CUDA").is_ok_and(|v| v == "1")
}

/// The backend and NCCL, or why this test cannot run (printed by the caller).
fn backend_with_nccl() -> Result<CudaBackend, String> {
    let be = CudaBackend::for_tests().map_err(|e| e.to_string())?;
    if !nccl_available() {
        let why = "libnccl.so not found";
        assert!(!required(), "GPSTOKEN_REQUIRE_CUDA=1 but {why}");
        return Err(why.into());
    }
    Ok(be)
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    // Values with every mantissa bit in use, so that any rescaling would show.
    (0..n).map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / 3.7e9 - 0.55).collect()
}

/// The backend and a communicator of one rank, or `None` after printing why not.
fn one_rank(test: &str) -> Option<(CudaBackend, NcclComm)> {
    let be = match backend_with_nccl() {
        Ok(be) => be,
        Err(why) => {
            println!("SKIPPED: {why} ({test})");
            return None;
        }
    };
    let id = NcclId::new().expect("NCCL id");
    let comm = NcclComm::new(&be, 0, 1, &id).expect("communicator of one rank");
    Some((be, comm))
}

/// `rank_work(backend, communicator, rank, world)` on every GPU (up to 4), one thread each, and
/// what each returned in rank order; `None` after printing why not (fewer than two GPUs).
fn on_every_gpu(
    test: &str,
    rank_work: impl Fn(&CudaBackend, &mut NcclComm, usize, usize) -> Vec<f32> + Sync,
) -> Option<(usize, Vec<Vec<f32>>)> {
    let world = match (backend_with_nccl(), list_devices()) {
        (Ok(_), Ok(d)) if d.len() >= 2 => d.len().min(4),
        (Err(why), _) => {
            println!("SKIPPED: {why} ({test})");
            return None;
        }
        _ => {
            println!("SKIPPED: fewer than two GPUs ({test})");
            return None;
        }
    };
    let id = NcclId::new().expect("NCCL id");
    let rank_work = &rank_work;
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                s.spawn(move || {
                    let be = CudaBackend::new(rank).expect("device");
                    let mut comm = NcclComm::new(&be, rank, world, &id).expect("communicator");
                    rank_work(&be, &mut comm, rank, world)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("rank")).collect()
    });
    Some((world, results))
}

fn download(be: &CudaBackend, buffer: &gpstoken_backend_cuda::CudaBuffer) -> Vec<f32> {
    let mut back = vec![0f32; be.len(buffer)];
    be.download(buffer, &mut back).expect("download");
    back
}

#[test]
fn with_one_rank_the_all_reduced_gradients_are_the_local_ones() {
    let Some((be, mut comm)) = one_rank("nccl world size 1") else { return };
    let host: Vec<Vec<f32>> = [1000, 1, 0, 70001].iter().enumerate().map(|(i, &n)| values(n, i as u32)).collect();
    let mut bufs: Vec<_> = host.iter().map(|h| be.upload(h).expect("upload")).collect();
    let mut refs: Vec<_> = bufs.iter_mut().collect();
    comm.all_reduce_mean(&mut refs).expect("all-reduce");
    for (h, b) in host.iter().zip(&bufs) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&download(&be, b)), bits(h));
    }
}

#[test]
fn with_two_gpus_every_rank_gets_the_mean() {
    let n = 4099;
    let Some((world, results)) = on_every_gpu("nccl two ranks", |be, comm, rank, _| {
        let mut buf = be.upload(&values(n, rank as u32)).expect("upload");
        comm.all_reduce_mean(&mut [&mut buf]).expect("all-reduce");
        download(be, &buf)
    }) else {
        return;
    };
    for i in 0..n {
        let want = (0..world).map(|r| f64::from(values(n, r as u32)[i])).sum::<f64>() / world as f64;
        for r in &results {
            assert!((f64::from(r[i]) - want).abs() <= 1e-6, "value {i}: {} vs {want}", r[i]);
        }
    }
}

/// Rank `rank`: two buckets reduced while the stream goes on working, as training reduces its
/// gradients during the backward pass. Each bucket's buffer is written by a kernel just before
/// its reduction starts (the reduction must see that value, not the upload), and read by a
/// kernel after `wait` (which must see the mean). Returns what that kernel computed.
fn two_buckets(be: &CudaBackend, comm: &mut NcclComm, rank: usize) -> Vec<f32> {
    let (n, r) = (50_001, (rank + 1) as f32);
    let mut a = be.upload(&values(n, 0)).expect("upload");
    be.fill(&mut a, r).expect("fill");
    comm.start_all_reduce_mean(&mut [&mut a]).expect("first bucket");
    let mut b = be.upload(&values(n, 1)).expect("upload");
    be.fill(&mut b, 10.0 * r).expect("fill");
    comm.start_all_reduce_mean(&mut [&mut b]).expect("second bucket");
    comm.wait().expect("wait");
    let mut sum = be.zeros(n).expect("zeros");
    be.add_assign(&mut sum, &a).expect("add");
    be.add_assign(&mut sum, &b).expect("add");
    download(be, &sum)
}

#[test]
fn buckets_reduced_during_other_work_see_the_values_queued_before_them() {
    let Some((be, mut comm)) = one_rank("nccl buckets, world size 1") else { return };
    let got = two_buckets(&be, &mut comm, 0);
    assert!(got.iter().all(|&v| v == 11.0), "world size 1: {:?}", &got[..4]);
}

#[test]
fn with_two_gpus_overlapped_buckets_give_every_rank_the_mean() {
    let Some((world, results)) =
        on_every_gpu("nccl buckets, two ranks", |be, comm, rank, _| two_buckets(be, comm, rank))
    else {
        return;
    };
    // mean(r) + mean(10 r) over r = 1..=world.
    let want = 11.0 * (world + 1) as f64 / 2.0;
    for r in &results {
        assert!(r.iter().all(|&v| (f64::from(v) - want).abs() <= 1e-5), "{:?} vs {want}", &r[..4]);
    }
}
