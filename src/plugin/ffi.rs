//! The FFI boundary with OpenVPN: `#[repr(C)]` copies of the plugin API v3 structures
//! (`openvpn-plugin.h`, OpenVPN 2.4 … 2.7; their layout is checked against the header Debian's
//! `openvpn` package installs, tests/plugin_abi.rs) and the exported entry points. All of
//! vpnfix's unsafe code for the plugin is here: reading OpenVPN's NUL-terminated string arrays,
//! the handle's box, and the variadic `plugin_log` call. Each entry point turns its arguments
//! into owned Rust values at once, hands them to [`super::client`], and catches any panic: a
//! panic must never unwind into OpenVPN's C frames.

use super::client::{Outcome, Plugin, Say};
use super::wire::{Hook, Level};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `OPENVPN_PLUGIN_FUNC_SUCCESS`.
pub const FUNC_SUCCESS: c_int = 0;
/// `OPENVPN_PLUGIN_FUNC_ERROR`.
pub const FUNC_ERROR: c_int = 1;
/// `OPENVPN_PLUGIN_VERSION`: the API version whose entry points vpnfix exports.
pub const PLUGIN_VERSION: c_int = 3;
/// The oldest `OPENVPN_PLUGINv3_STRUCTVER` whose structures have every field vpnfix reads
/// (`callbacks->plugin_log` since 1; vpnfix reads nothing added later). 2.4.0 passes 3, 2.5 and
/// later 5.
pub const MIN_STRUCTVER: c_int = 1;
/// `PLOG_ERR`, `PLOG_WARN`, `PLOG_NOTE`.
pub const PLOG_ERR: c_int = 1;
/// See [`PLOG_ERR`].
pub const PLOG_WARN: c_int = 2;
/// See [`PLOG_ERR`].
pub const PLOG_NOTE: c_int = 4;

/// `struct openvpn_plugin_string_list` (vpnfix returns none; here for the layout check).
#[repr(C)]
pub struct StringList {
    /// `next`.
    pub next: *mut StringList,
    /// `name`.
    pub name: *mut c_char,
    /// `value`.
    pub value: *mut c_char,
}

/// `plugin_log_t`: `void (*)(openvpn_plugin_log_flags_t, const char *name, const char *fmt, ...)`.
pub type PluginLog = unsafe extern "C" fn(flags: c_int, name: *const c_char, format: *const c_char, ...);

/// `struct openvpn_plugin_callbacks`. Only `plugin_log` is used; the others are opaque pointers
/// of the same size.
#[repr(C)]
pub struct Callbacks {
    /// `plugin_log`.
    pub plugin_log: Option<PluginLog>,
    /// `plugin_vlog` (takes a `va_list`: never called).
    pub plugin_vlog: *const c_void,
    /// `plugin_secure_memzero` (STRUCTVER 4).
    pub plugin_secure_memzero: *const c_void,
    /// `plugin_base64_encode` (STRUCTVER 5).
    pub plugin_base64_encode: *const c_void,
    /// `plugin_base64_decode` (STRUCTVER 5).
    pub plugin_base64_decode: *const c_void,
}

/// `struct openvpn_plugin_args_open_in`.
#[repr(C)]
pub struct OpenIn {
    /// `type_mask`: the events OpenVPN supports.
    pub type_mask: c_int,
    /// `argv`: the `plugin` line, the library's path first; NULL-terminated.
    pub argv: *const *const c_char,
    /// `envp`: `KEY=value` strings; NULL-terminated.
    pub envp: *const *const c_char,
    /// `callbacks`.
    pub callbacks: *mut Callbacks,
    /// `ssl_api` (an enum: `int`).
    pub ssl_api: c_int,
    /// `ovpn_version`.
    pub ovpn_version: *const c_char,
    /// `ovpn_version_major`.
    pub ovpn_version_major: c_uint,
    /// `ovpn_version_minor`.
    pub ovpn_version_minor: c_uint,
    /// `ovpn_version_patch`.
    pub ovpn_version_patch: *const c_char,
}

/// `struct openvpn_plugin_args_open_return`.
#[repr(C)]
pub struct OpenReturn {
    /// `type_mask`: the events the plugin wants.
    pub type_mask: c_int,
    /// `handle`: passed back to every call; NULL is fatal to OpenVPN.
    pub handle: *mut c_void,
    /// `return_list`.
    pub return_list: *mut *mut StringList,
}

/// `struct openvpn_plugin_args_func_in`.
#[repr(C)]
pub struct FuncIn {
    /// `type`: the event.
    pub event: c_int,
    /// `argv`: the library's path, then the hook's arguments; NULL-terminated.
    pub argv: *const *const c_char,
    /// `envp`: `KEY=value` strings; NULL-terminated.
    pub envp: *const *const c_char,
    /// `handle`: what open returned.
    pub handle: *mut c_void,
    /// `per_client_context` (server side only).
    pub per_client_context: *mut c_void,
    /// `current_cert_depth`.
    pub current_cert_depth: c_int,
    /// `current_cert` (`X509 *` or `mbedtls_x509_crt *`).
    pub current_cert: *mut c_void,
}

/// `struct openvpn_plugin_args_func_return`.
#[repr(C)]
pub struct FuncReturn {
    /// `return_list`.
    pub return_list: *mut *mut StringList,
}

/// The events vpnfix registers: up, route-up, route-pre-down and down.
pub const TYPE_MASK: c_int =
    1 << Hook::Up.number() | 1 << Hook::RouteUp.number() | 1 << Hook::RoutePreDown.number() | 1 << Hook::Down.number();

/// Reads a NULL-terminated array of C strings (lossily: OpenVPN's values are not promised to
/// be UTF-8), at most 100,000 of them.
///
/// # Safety
/// `p` is NULL or points to a NULL-terminated array of pointers to NUL-terminated strings, all
/// valid for the call's duration (what OpenVPN passes as `argv` and `envp`).
unsafe fn strings(p: *const *const c_char) -> Vec<String> {
    let mut out = Vec::new();
    if p.is_null() {
        return out;
    }
    for i in 0..100_000 {
        let s = *p.add(i);
        if s.is_null() {
            break;
        }
        out.push(CStr::from_ptr(s).to_string_lossy().into_owned());
    }
    out
}

/// Where the plugin's own lines go: OpenVPN's `plugin_log`, which writes them into OpenVPN's
/// log (`--log`, syslog or stdout, whichever OpenVPN uses), tagged `PLUGIN vpnfix`.
struct OpenvpnLog(Option<PluginLog>);

impl Say for OpenvpnLog {
    fn say(&self, level: Level, line: &str) {
        let flags = match level {
            Level::Error => PLOG_ERR,
            Level::Warn => PLOG_WARN,
            Level::Note => PLOG_NOTE,
        };
        // A NUL inside a line would cut it short: shown as a space instead.
        let text = CString::new(line.replace('\0', " ")).expect("no NUL left");
        match self.0 {
            // SAFETY: OpenVPN's callback, valid while the plugin is loaded; "%s" takes exactly
            // the one C string passed.
            Some(log) => unsafe { log(flags, c"vpnfix".as_ptr(), c"%s".as_ptr(), text.as_ptr()) },
            None => eprintln!("vpnfix: {line}"),
        }
    }
}

/// The plugin's state behind OpenVPN's handle.
struct Handle {
    plugin: Plugin,
    log: OpenvpnLog,
}

/// OpenVPN loads the plugin (`plugin vpnfix.so [HELPER] [VPNFIX_KEY=value …]`), as root, before
/// it drops privileges: vpnfix starts its helper, which keeps CAP_NET_ADMIN for the life of
/// the tunnel. A helper that cannot start fails the open with one line in OpenVPN's log.
///
/// # Safety
/// Called by OpenVPN's plugin loader with valid `args` and `ret` (plugin API v3).
#[no_mangle]
pub unsafe extern "C" fn openvpn_plugin_open_v3(version: c_int, args: *const OpenIn, ret: *mut OpenReturn) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        if args.is_null() || ret.is_null() || version < MIN_STRUCTVER {
            eprintln!("vpnfix: OpenVPN's plugin interface (structure version {version}) is too old; not loaded");
            return FUNC_ERROR;
        }
        let args = &*args;
        let callbacks = args.callbacks.as_ref().and_then(|c| c.plugin_log);
        let log = OpenvpnLog(callbacks);
        let argv = strings(args.argv);
        let env = strings(args.envp);
        match Plugin::open(argv.get(1..).unwrap_or_default(), &env, &log) {
            Some(plugin) => {
                (*ret).type_mask = TYPE_MASK & args.type_mask;
                (*ret).handle = Box::into_raw(Box::new(Handle { plugin, log })).cast();
                FUNC_SUCCESS
            }
            None => FUNC_ERROR,
        }
    }))
    .unwrap_or(FUNC_ERROR)
}

/// One of the registered events: handed to the helper, whose answer decides the return code by
/// the scripts' rule (only a strict route-up may fail; up, route-pre-down and down never do, as
/// OpenVPN would stop).
///
/// # Safety
/// Called by OpenVPN with valid `args`, whose `handle` is one open returned and close has not
/// freed.
#[no_mangle]
pub unsafe extern "C" fn openvpn_plugin_func_v3(version: c_int, args: *const FuncIn, _ret: *mut FuncReturn) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        if args.is_null() || version < MIN_STRUCTVER {
            return FUNC_SUCCESS;
        }
        let args = &*args;
        let Some(h) = args.handle.cast::<Handle>().as_mut() else { return FUNC_SUCCESS };
        let Some(hook) = Hook::from_number(args.event) else { return FUNC_SUCCESS };
        let argv = strings(args.argv);
        let env = strings(args.envp);
        match h.plugin.event(hook, argv.get(1..).unwrap_or_default(), &env, &h.log) {
            Outcome::Done => FUNC_SUCCESS,
            Outcome::Failed => FUNC_ERROR,
        }
    }))
    .unwrap_or(FUNC_SUCCESS)
}

/// OpenVPN unloads the plugin (at exit, or on SIGHUP): the helper is told to end, and does,
/// after removing whatever a disconnect did not. (No `openvpn_plugin_abort_v1`: on a fatal
/// error OpenVPN exits, the socket closes with it, and the helper does the same.)
///
/// # Safety
/// `handle` is one open returned, not yet closed.
#[no_mangle]
pub unsafe extern "C" fn openvpn_plugin_close_v1(handle: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !handle.is_null() {
            let h = Box::from_raw(handle.cast::<Handle>());
            h.plugin.close(&h.log);
        }
    }));
}

/// The plugin API version vpnfix needs (open_v3/func_v3).
#[no_mangle]
pub extern "C" fn openvpn_plugin_min_version_required_v1() -> c_int {
    PLUGIN_VERSION
}
