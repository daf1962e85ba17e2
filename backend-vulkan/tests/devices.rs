//! Device enumeration and the errors of a bad device index or bad shapes: one clear line, no panic.

mod common;

use common::{vulkan, vulkan_with};
use gpstoken_backend_vulkan::{list_devices, VulkanBackend, VulkanError, VulkanOptions};
use gpstoken_core::backend::{Buffers, TensorOps};

#[test]
fn devices_are_listed_with_their_properties() {
    let Some(backend) = vulkan() else { return };
    let devices = list_devices().expect("list_devices works where a backend could be created");
    assert!(!devices.is_empty());
    for d in &devices {
        println!(
            "device {}: {} ({}), driver {} {}, Vulkan {}, {} MiB device-local, usable: {}",
            d.index,
            d.name,
            d.device_type.as_str(),
            d.driver_name,
            d.driver_info,
            d.api_version,
            d.device_local_bytes >> 20,
            d.usable
        );
        assert!(!d.name.is_empty() && !d.api_version.is_empty());
    }
    let info = backend.device_info();
    assert!(devices.iter().any(|d| d.name == info.name && d.usable));
}

#[test]
fn a_missing_device_is_a_clean_error() {
    let Some(_backend) = vulkan() else { return };
    let found = list_devices().expect("list_devices").len();
    let err = VulkanBackend::new(found + 3).err().expect("an index past the last device is an error");
    assert_eq!(err, VulkanError::NoDevice { index: found + 3, found });
    assert_eq!(err.to_string(), format!("no Vulkan device {} (found {found})", found + 3));
}

#[test]
fn errors_are_one_line_and_convert_from_shape_errors() {
    let Some(backend) = vulkan() else { return };
    let (a, mut b) = (backend.upload(&[1.0, 2.0]).unwrap(), backend.zeros(3).unwrap());
    let err = backend.copy(&a, &mut b).expect_err("mismatched copy");
    assert!(matches!(err, VulkanError::Shape(_)));
    assert_eq!(err.to_string(), "copy destination holds 3 values, expected 2");
    let mut host = [0.0f32; 2];
    assert!(backend.download(&b, &mut host).is_err(), "download into a host slice of another length");
    assert!(backend.write(&mut b, &host).is_err(), "write from a host slice of another length");
    let std_error: &dyn std::error::Error = &err;
    assert!(!std_error.to_string().contains('\n'));
}

#[test]
fn empty_buffers_work() {
    let Some(backend) = vulkan() else { return };
    let (a, mut b) = (backend.upload(&[]).unwrap(), backend.zeros(0).unwrap());
    backend.copy(&a, &mut b).unwrap();
    backend.download(&b, &mut []).unwrap();
    assert_eq!(backend.len(&b), 0);
}

#[test]
fn buffers_round_trip_in_both_memories() {
    for options in [VulkanOptions::default(), VulkanOptions { force_staging: true }] {
        let Some(backend) = vulkan_with(options) else { return };
        let host: Vec<f32> = (0..70_001).map(|i| i as f32 * 0.5 - 3.0).collect();
        let mut zeros = backend.zeros(host.len()).unwrap();
        let mut got = vec![f32::NAN; host.len()];
        backend.download(&zeros, &mut got).unwrap();
        assert!(got.iter().all(|&v| v.to_bits() == 0), "zeros ({options:?})");
        backend.write(&mut zeros, &host).unwrap();
        let mut copy = backend.zeros(host.len()).unwrap();
        backend.copy(&zeros, &mut copy).unwrap();
        // A write after recorded work that reads the buffer must not overtake it.
        backend.write(&mut zeros, &vec![1.0; host.len()]).unwrap();
        backend.download(&copy, &mut got).unwrap();
        assert_eq!(got, host, "write, copy, download ({options:?})");
        backend.download(&zeros, &mut got).unwrap();
        assert!(got.iter().all(|&v| v == 1.0), "second write ({options:?})");
        let uploaded = backend.upload(&host).unwrap();
        backend.download(&uploaded, &mut got).unwrap();
        assert_eq!(got, host, "upload ({options:?})");
    }
}

#[test]
fn large_buffers_get_their_own_block_and_too_large_ones_are_errors() {
    let Some(backend) = vulkan() else { return };
    // 72 MiB: more than a 64 MiB block, less than lavapipe's 128 MiB binding limit.
    let n = 18 << 20;
    for round in 0..2 {
        let mut big = backend.zeros(n).unwrap();
        backend.fill(&mut big, round as f32 + 0.5).unwrap();
        let mut host = vec![0.0f32; n];
        backend.download(&big, &mut host).unwrap();
        assert!(host.iter().all(|&v| v == round as f32 + 0.5), "round {round}");
    }
    // 16 GiB: above any device's maxStorageBufferRange (a u32), refused before allocating.
    let err = backend.zeros(1 << 32).expect_err("a buffer above maxStorageBufferRange");
    assert!(matches!(err, VulkanError::BufferTooLarge { .. }), "{err}");
    println!("{err}");
}

#[test]
fn memory_is_reused_after_buffers_are_dropped() {
    let Some(backend) = vulkan() else { return };
    // 40 MiB at a time, 60 times: 2.4 GiB in all, more than lavapipe's 2 GiB heap, so freed
    // ranges and blocks must be reused or given back.
    for round in 0..60 {
        let big = backend.zeros(10 << 20).unwrap();
        let mut small = backend.upload(&[round as f32; 1000]).unwrap();
        backend.add_assign(&mut small, &backend.zeros(1000).unwrap()).unwrap();
        let mut host = vec![0.0f32; 1000];
        backend.download(&small, &mut host).unwrap();
        assert!(host.iter().all(|&v| v == round as f32));
        drop(big);
    }
}

#[test]
fn one_backend_serves_several_threads() {
    let Some(backend) = vulkan() else { return };
    let results: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|t| {
                let backend = &backend;
                scope.spawn(move || {
                    let host: Vec<f32> = (0..5000).map(|i| (i + t) as f32).collect();
                    let mut acc = backend.zeros(host.len()).unwrap();
                    let x = backend.upload(&host).unwrap();
                    for _ in 0..300 {
                        backend.add_assign(&mut acc, &x).unwrap();
                    }
                    let mut out = vec![0.0f32; host.len()];
                    backend.download(&acc, &mut out).unwrap();
                    out
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).collect()
    });
    for (t, out) in results.iter().enumerate() {
        assert!(out.iter().enumerate().all(|(i, &v)| v == 300.0 * (i + t) as f32), "thread {t}");
    }
}
