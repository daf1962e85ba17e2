//! What `gpstoken info` reports: every backend, whether it is built in and usable, and the
//! devices it can see, one [`DeviceRow`] each (the index is what `--device` takes).

use crate::backends::{self, BackendKind, BackendSelection};

/// One device a backend can run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    pub backend: BackendKind,
    /// The `--device` index.
    pub index: usize,
    /// Model name (CPU model, GPU name).
    pub name: String,
    /// `cpu`, `discrete-gpu`, `integrated-gpu`, ...
    pub device_type: String,
    /// Driver (or, for the CPU, how the work is run).
    pub driver: String,
    /// Memory the device can use, when known.
    pub memory_bytes: Option<u64>,
    /// Whether this build can run on it (a GPU may be listed but lack what the backend needs).
    pub usable: bool,
}

/// A backend as this binary sees it.
#[derive(Clone, Debug)]
pub struct BackendReport {
    pub kind: BackendKind,
    pub compiled: bool,
    pub usable: bool,
    /// Why it is not usable (not built in, no device, driver error).
    pub note: Option<String>,
    pub devices: Vec<DeviceRow>,
}

/// Every backend of [`BackendKind::ALL`], in that order.
pub fn list() -> Vec<BackendReport> {
    BackendKind::ALL.iter().map(|&kind| report(kind)).collect()
}

fn report(kind: BackendKind) -> BackendReport {
    let devices: Result<Vec<DeviceRow>, String> = match kind {
        BackendKind::Cpu => {
            // Opening the backend proves it is usable (its thread pool starts).
            backends::cpu(&BackendSelection::default()).map(|_| vec![cpu_row()]).map_err(|e| format!("{e:#}"))
        }
        #[cfg(feature = "vulkan")]
        BackendKind::Vulkan => {
            // The Vulkan arm: `list_devices() -> Result<Vec<DeviceInfo>, VulkanError>`.
            gpstoken_backend_vulkan::list_devices()
                .map(|list| {
                    list.into_iter()
                        .map(|d| DeviceRow {
                            backend: kind,
                            index: d.index,
                            name: d.name,
                            device_type: d.device_type.as_str().to_string(),
                            driver: format!("{} {}, Vulkan {}", d.driver_name, d.driver_info, d.api_version),
                            memory_bytes: Some(d.device_local_bytes),
                            usable: d.usable,
                        })
                        .collect()
                })
                .map_err(|e| format!("{e}"))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => gpstoken_backend_cuda::list_devices()
            .map(|list| {
                list.into_iter()
                    .map(|d| DeviceRow {
                        backend: kind,
                        index: d.index,
                        name: d.name,
                        device_type: format!(
                            "gpu, compute capability {}.{}",
                            d.compute_capability.0, d.compute_capability.1
                        ),
                        driver: format!("CUDA driver {}.{}", d.driver_version.0, d.driver_version.1),
                        memory_bytes: Some(d.memory_bytes),
                        usable: true,
                    })
                    .collect()
            })
            .map_err(|e| format!("{e}")),
        #[allow(unreachable_patterns)]
        _ => Err("not built into this binary".to_string()),
    };
    let compiled = backends::compiled(kind);
    match devices {
        Ok(devices) if !devices.iter().any(|d| d.usable) => {
            let note = if devices.is_empty() { "no device found" } else { "no usable device" };
            BackendReport { kind, compiled, usable: false, note: Some(note.to_string()), devices }
        }
        Ok(devices) => BackendReport { kind, compiled, usable: true, note: None, devices },
        Err(note) => BackendReport { kind, compiled, usable: false, note: Some(note), devices: Vec::new() },
    }
}

/// The CPU as device 0: its model name, the worker threads of the default pool, the memory.
fn cpu_row() -> DeviceRow {
    let threads = rayon::current_num_threads();
    DeviceRow {
        backend: BackendKind::Cpu,
        index: 0,
        name: cpu_model_name().unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        device_type: "cpu".to_string(),
        driver: format!("rayon, {threads} threads"),
        memory_bytes: total_memory_bytes(),
        usable: true,
    }
}

/// `model name` of `/proc/cpuinfo` (Linux on x86 and most ARM systems); `None` elsewhere.
pub fn cpu_model_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        (matches!(key.trim(), "model name" | "Model" | "cpu model") && !value.is_empty()).then(|| value.to_string())
    })
}

/// `MemTotal` of `/proc/meminfo` (Linux); `None` elsewhere.
fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line["MemTotal:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_listed_usable_with_one_device_and_the_others_say_why_not() {
        let all = list();
        assert_eq!(all.iter().map(|r| r.kind).collect::<Vec<_>>(), BackendKind::ALL);
        let cpu = &all[0];
        assert!(cpu.compiled && cpu.usable && cpu.note.is_none());
        assert_eq!(cpu.devices.len(), 1);
        assert_eq!((cpu.devices[0].index, cpu.devices[0].device_type.as_str()), (0, "cpu"));
        assert!(!cpu.devices[0].name.is_empty());
        for report in &all[1..] {
            // Built in or not, a backend that cannot be used says why and lists no usable device.
            assert_eq!(report.compiled, backends::compiled(report.kind));
            if !report.usable {
                assert!(report.note.as_deref().is_some_and(|n| !n.is_empty()), "{:?}", report.kind);
                assert!(report.devices.iter().all(|d| !d.usable));
            }
            if !report.compiled {
                assert_eq!(report.note.as_deref(), Some("not built into this binary"));
            }
        }
    }
}
