//! The instance, the physical and logical device, the compute queue, and the limits kernels are
//! sized from.

use crate::error::{VkContext, VulkanError};
use ash::vk;
use std::ffi::CStr;

/// The Vulkan version the shaders are compiled for (`glslc --target-env=vulkan1.2`).
const REQUIRED_API: u32 = vk::API_VERSION_1_2;

/// What kind of device a [`DeviceInfo`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceType {
    Cpu,
    Integrated,
    Discrete,
    Virtual,
    Other,
}

impl DeviceType {
    fn from_vk(t: vk::PhysicalDeviceType) -> Self {
        match t {
            vk::PhysicalDeviceType::CPU => DeviceType::Cpu,
            vk::PhysicalDeviceType::INTEGRATED_GPU => DeviceType::Integrated,
            vk::PhysicalDeviceType::DISCRETE_GPU => DeviceType::Discrete,
            vk::PhysicalDeviceType::VIRTUAL_GPU => DeviceType::Virtual,
            _ => DeviceType::Other,
        }
    }

    /// `cpu`, `integrated`, `discrete`, `virtual` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Cpu => "cpu",
            DeviceType::Integrated => "integrated",
            DeviceType::Discrete => "discrete",
            DeviceType::Virtual => "virtual",
            DeviceType::Other => "other",
        }
    }
}

/// One Vulkan device as the loader reports it (what `gpstoken info` shows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its index for [`crate::VulkanBackend::new`].
    pub index: usize,
    pub name: String,
    pub device_type: DeviceType,
    pub driver_name: String,
    pub driver_info: String,
    /// `major.minor.patch` of the Vulkan API the device supports.
    pub api_version: String,
    /// Sum of the device-local memory heaps.
    pub device_local_bytes: u64,
    /// Whether this backend can run on it (Vulkan 1.2 and a compute queue).
    pub usable: bool,
}

/// The limits kernels are sized from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_workgroup_invocations: u32,
    pub max_workgroup_size_x: u32,
    pub max_workgroup_count_x: u32,
    pub max_shared_memory_bytes: u32,
    pub min_storage_offset_alignment: u64,
    pub max_storage_buffer_range: u64,
}

fn c_string(s: Result<&CStr, std::ffi::FromBytesUntilNulError>) -> String {
    s.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn version_string(v: u32) -> String {
    format!("{}.{}.{}", vk::api_version_major(v), vk::api_version_minor(v), vk::api_version_patch(v))
}

/// Opens the loader: the one place a missing `libvulkan.so.1` is detected.
fn load_entry() -> Result<ash::Entry, VulkanError> {
    // SAFETY: loading the system loader library runs its initialisers; nothing else is touched.
    unsafe { ash::Entry::load() }.map_err(|e| VulkanError::NoLoader(e.to_string()))
}

fn create_instance(entry: &ash::Entry) -> Result<ash::Instance, VulkanError> {
    // SAFETY: a plain query on a loaded entry.
    let loader_version = unsafe { entry.try_enumerate_instance_version() }
        .during("vkEnumerateInstanceVersion")?
        .unwrap_or(vk::API_VERSION_1_0);
    if loader_version < REQUIRED_API {
        return Err(VulkanError::Unsupported(format!(
            "the Vulkan loader supports {}, this backend needs 1.2",
            version_string(loader_version)
        )));
    }
    let app = vk::ApplicationInfo::default()
        .application_name(c"gpstoken")
        .engine_name(c"gpstoken-backend-vulkan")
        .api_version(REQUIRED_API);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: `info` and what it points to live until the call returns.
    match unsafe { entry.create_instance(&info, None) } {
        // What the loader answers when it finds no driver manifest at all.
        Err(vk::Result::ERROR_INCOMPATIBLE_DRIVER) => Err(VulkanError::NoDriver),
        created => created.during("vkCreateInstance"),
    }
}

/// The first queue family with compute support.
fn compute_queue_family(instance: &ash::Instance, pd: vk::PhysicalDevice) -> Option<u32> {
    // SAFETY: `pd` was enumerated from `instance`.
    let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
    families.iter().position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE)).map(|i| i as u32)
}

fn describe(instance: &ash::Instance, index: usize, pd: vk::PhysicalDevice) -> DeviceInfo {
    let mut driver = vk::PhysicalDeviceDriverProperties::default();
    let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut driver);
    // SAFETY: `pd` belongs to `instance` (1.2 instance: properties2 is core).
    unsafe { instance.get_physical_device_properties2(pd, &mut props2) };
    let props = props2.properties;
    // SAFETY: as above.
    let memory = unsafe { instance.get_physical_device_memory_properties(pd) };
    let device_local_bytes = memory
        .memory_heaps_as_slice()
        .iter()
        .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
        .map(|h| h.size)
        .sum();
    DeviceInfo {
        index,
        name: c_string(props.device_name_as_c_str()),
        device_type: DeviceType::from_vk(props.device_type),
        driver_name: c_string(driver.driver_name_as_c_str()),
        driver_info: c_string(driver.driver_info_as_c_str()),
        api_version: version_string(props.api_version),
        device_local_bytes,
        usable: props.api_version >= REQUIRED_API && compute_queue_family(instance, pd).is_some(),
    }
}

/// Every Vulkan device the loader finds, in the order [`crate::VulkanBackend::new`] indexes them
/// (none when no driver is installed; an error when there is no loader).
pub fn list_devices() -> Result<Vec<DeviceInfo>, VulkanError> {
    let entry = load_entry()?;
    let instance = match create_instance(&entry) {
        Err(VulkanError::NoDriver) => return Ok(Vec::new()),
        created => created?,
    };
    // SAFETY: `instance` is live; destroyed below, after its last use.
    let devices = unsafe { instance.enumerate_physical_devices() }.during("vkEnumeratePhysicalDevices");
    let infos = devices.map(|d| d.iter().enumerate().map(|(i, &pd)| describe(&instance, i, pd)).collect());
    // SAFETY: no object created from `instance` is alive.
    unsafe { instance.destroy_instance(None) };
    infos
}

/// The live device: everything the rest of the crate records and allocates on. Dropped last
/// (every other owner of Vulkan objects holds an `Arc` to it).
pub(crate) struct Context {
    // Kept so the loader library stays open while the instance lives.
    _entry: ash::Entry,
    pub instance: ash::Instance,
    pub device: ash::Device,
    pub queue: vk::Queue,
    pub queue_family: u32,
    pub limits: Limits,
    pub memory: vk::PhysicalDeviceMemoryProperties,
    pub info: DeviceInfo,
}

impl Context {
    pub fn new(device_index: usize) -> Result<Context, VulkanError> {
        let entry = load_entry()?;
        let instance = create_instance(&entry)?;
        match Self::open_device(&instance, device_index) {
            Ok((physical, device, queue_family, info)) => {
                let (limits, memory) = Self::query_limits(&instance, physical);
                // SAFETY: the family was created with one queue.
                let queue = unsafe { device.get_device_queue(queue_family, 0) };
                Ok(Context { _entry: entry, instance, device, queue, queue_family, limits, memory, info })
            }
            Err(e) => {
                // SAFETY: nothing created from the instance is alive.
                unsafe { instance.destroy_instance(None) };
                Err(e)
            }
        }
    }

    fn open_device(
        instance: &ash::Instance,
        device_index: usize,
    ) -> Result<(vk::PhysicalDevice, ash::Device, u32, DeviceInfo), VulkanError> {
        // SAFETY: `instance` is live.
        let physicals = unsafe { instance.enumerate_physical_devices() }.during("vkEnumeratePhysicalDevices")?;
        let &physical =
            physicals.get(device_index).ok_or(VulkanError::NoDevice { index: device_index, found: physicals.len() })?;
        let info = describe(instance, device_index, physical);
        if !info.usable {
            return Err(VulkanError::Unsupported(format!(
                "device {device_index} ({}) has Vulkan {} or no compute queue; this backend needs 1.2",
                info.name, info.api_version
            )));
        }
        let queue_family = compute_queue_family(instance, physical).unwrap_or(0);
        let priorities = [1.0f32];
        let queues =
            [vk::DeviceQueueCreateInfo::default().queue_family_index(queue_family).queue_priorities(&priorities)];
        let create = vk::DeviceCreateInfo::default().queue_create_infos(&queues);
        // SAFETY: `create` and its arrays live until the call returns; `physical` is from `instance`.
        let device = unsafe { instance.create_device(physical, &create, None) }.during("vkCreateDevice")?;
        Ok((physical, device, queue_family, info))
    }

    fn query_limits(instance: &ash::Instance, pd: vk::PhysicalDevice) -> (Limits, vk::PhysicalDeviceMemoryProperties) {
        // SAFETY: `pd` belongs to `instance`.
        let l = unsafe { instance.get_physical_device_properties(pd) }.limits;
        let limits = Limits {
            max_workgroup_invocations: l.max_compute_work_group_invocations,
            max_workgroup_size_x: l.max_compute_work_group_size[0],
            max_workgroup_count_x: l.max_compute_work_group_count[0],
            max_shared_memory_bytes: l.max_compute_shared_memory_size,
            min_storage_offset_alignment: l.min_storage_buffer_offset_alignment.max(4),
            max_storage_buffer_range: u64::from(l.max_storage_buffer_range),
        };
        // SAFETY: as above.
        let memory = unsafe { instance.get_physical_device_memory_properties(pd) };
        (limits, memory)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every object created from the device holds an `Arc<Context>` and is gone by
        // now; waiting first makes sure no submitted work still runs.
        unsafe {
            let _ = self.device.device_wait_idle();
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}
