//! Choosing a backend at run time by name.

use burn::tensor::Device;

/// The backends compiled into this build.
pub fn available_backends() -> Vec<&'static str> {
    let mut v = vec!["flex"];
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

/// A device by backend name (`flex`, `ndarray`, `wgpu`, `cuda`), with autodiff.
///
/// # Errors
/// A message listing the compiled backends when `name` is not one of them.
pub fn device_from_name(name: &str) -> Result<Device, String> {
    let d = match name {
        "flex" | "cpu" => Device::flex(),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        other => {
            return Err(format!(
                "backend `{other}` is not compiled in; available: {} (enable the cargo feature of \
                 the same name)",
                available_backends().join(", ")
            ));
        }
    };
    Ok(d.autodiff())
}
