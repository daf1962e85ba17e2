//! Opening the backend: on a machine without a driver every entry point is a one-line error,
//! never a panic; on a GPU machine, the device list and buffer round trips.

use gpstoken_backend_cuda::{list_devices, CudaBackend, CudaError, CudaOptions};
use gpstoken_core::backend::Buffers;

/// Whether this machine has a CUDA driver (else the tests check the clean errors).
fn driver_present() -> bool {
    !matches!(list_devices(), Err(CudaError::NoDriver(_)))
}

#[test]
fn without_a_driver_the_constructor_and_the_device_list_are_one_line_errors() {
    if driver_present() {
        println!("SKIPPED: a CUDA driver is present (without_a_driver_...)");
        return;
    }
    let e = CudaBackend::new(0).expect_err("no driver, no backend");
    let line = e.to_string();
    assert!(line.starts_with("no CUDA driver found (libcuda.so.1"), "{line}");
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(matches!(e, CudaError::NoDriver(_)));
    assert!(matches!(CudaBackend::with_options(3, CudaOptions { tf32: true }), Err(CudaError::NoDriver(_))));
    assert!(matches!(list_devices(), Err(CudaError::NoDriver(_))));
    // Twice: no state is left half-initialised by the first failure.
    assert_eq!(CudaBackend::new(0).expect_err("still no driver"), e);
}

#[test]
fn require_cuda_turns_a_missing_driver_into_a_failure() {
    if driver_present() || std::env::var("GPSTOKEN_REQUIRE_CUDA").is_ok() {
        println!("SKIPPED: a CUDA driver is present or GPSTOKEN_REQUIRE_CUDA is set (require_cuda_...)");
        return;
    }
    // for_tests returns the error (tests skip) unless GPSTOKEN_REQUIRE_CUDA=1.
    assert!(matches!(CudaBackend::for_tests(), Err(CudaError::NoDriver(_))));
}

#[test]
fn devices_and_buffers_on_a_gpu() {
    let Some(b) = gpstoken_tests::conformance::available("devices_and_buffers_on_a_gpu", CudaBackend::for_tests())
    else {
        return;
    };
    let devices = list_devices().expect("a driver is present");
    assert!(!devices.is_empty());
    println!("{}", b.device_info());
    assert_eq!(b.name(), "cuda");
    let mut buf = b.upload(&[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(b.len(&buf), 3);
    b.write(&mut buf, &[4.0, 5.0, 6.0]).unwrap();
    let mut host = [0.0; 3];
    b.download(&buf, &mut host).unwrap();
    assert_eq!(host, [4.0, 5.0, 6.0]);
    assert!(matches!(b.write(&mut buf, &[1.0]), Err(CudaError::LengthMismatch { buffer: 3, host: 1 })));
    assert!(b.download(&buf, &mut [0.0; 4]).is_err());
    let zeros = b.zeros(5).unwrap();
    let mut host = [1.0; 5];
    b.download(&zeros, &mut host).unwrap();
    assert_eq!(host, [0.0; 5]);
    let empty = b.upload(&[]).unwrap();
    b.download(&empty, &mut []).unwrap();
    assert!(matches!(CudaBackend::new(devices.len()), Err(CudaError::NoDevice { .. })));
}

#[test]
fn the_backend_and_its_buffers_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CudaBackend>();
    send_sync::<gpstoken_backend_cuda::CudaBuffer>();
}
