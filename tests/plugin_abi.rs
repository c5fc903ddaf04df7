//! The plugin's FFI boundary checked against OpenVPN's own header, as Debian's `openvpn` package
//! installs it (`/usr/include/openvpn/openvpn-plugin.h`): a C program compiled with that header
//! prints every structure's size and alignment, every field's offset and the constants vpnfix
//! uses; the same is computed from vpnfix's `#[repr(C)]` copies and compared line by line.
//! And the built library exports exactly the entry points OpenVPN looks for.

mod common;

use std::mem::{align_of, offset_of, size_of};
use std::process::Command;
use vpnfix::plugin::ffi::{self, Callbacks, FuncIn, FuncReturn, OpenIn, OpenReturn, StringList};
use vpnfix::plugin::wire::Hook;

const HEADER: &str = "/usr/include/openvpn/openvpn-plugin.h";

/// What the C compiler says of the header's types, one line each.
const PROBE: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <openvpn/openvpn-plugin.h>
#define S(t) printf("size %s %zu %zu\n", #t, sizeof(struct t), _Alignof(struct t));
#define F(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(struct t, f));
#define C(c) printf("const %s %d\n", #c, (int)(c));
int main(void) {
    S(openvpn_plugin_string_list) F(openvpn_plugin_string_list, next) F(openvpn_plugin_string_list, name)
    F(openvpn_plugin_string_list, value)
    S(openvpn_plugin_callbacks) F(openvpn_plugin_callbacks, plugin_log) F(openvpn_plugin_callbacks, plugin_vlog)
    F(openvpn_plugin_callbacks, plugin_secure_memzero) F(openvpn_plugin_callbacks, plugin_base64_encode)
    F(openvpn_plugin_callbacks, plugin_base64_decode)
    S(openvpn_plugin_args_open_in) F(openvpn_plugin_args_open_in, type_mask) F(openvpn_plugin_args_open_in, argv)
    F(openvpn_plugin_args_open_in, envp) F(openvpn_plugin_args_open_in, callbacks)
    F(openvpn_plugin_args_open_in, ssl_api) F(openvpn_plugin_args_open_in, ovpn_version)
    F(openvpn_plugin_args_open_in, ovpn_version_major) F(openvpn_plugin_args_open_in, ovpn_version_minor)
    F(openvpn_plugin_args_open_in, ovpn_version_patch)
    S(openvpn_plugin_args_open_return) F(openvpn_plugin_args_open_return, type_mask)
    F(openvpn_plugin_args_open_return, handle) F(openvpn_plugin_args_open_return, return_list)
    S(openvpn_plugin_args_func_in) F(openvpn_plugin_args_func_in, type) F(openvpn_plugin_args_func_in, argv)
    F(openvpn_plugin_args_func_in, envp) F(openvpn_plugin_args_func_in, handle)
    F(openvpn_plugin_args_func_in, per_client_context) F(openvpn_plugin_args_func_in, current_cert_depth)
    F(openvpn_plugin_args_func_in, current_cert)
    S(openvpn_plugin_args_func_return) F(openvpn_plugin_args_func_return, return_list)
    printf("size ovpnSSLAPI %zu %zu\n", sizeof(ovpnSSLAPI), _Alignof(ovpnSSLAPI));
    printf("size openvpn_plugin_log_flags_t %zu %zu\n", sizeof(openvpn_plugin_log_flags_t), _Alignof(openvpn_plugin_log_flags_t));
    C(OPENVPN_PLUGIN_VERSION) C(OPENVPN_PLUGIN_UP) C(OPENVPN_PLUGIN_DOWN) C(OPENVPN_PLUGIN_ROUTE_UP)
    C(OPENVPN_PLUGIN_ROUTE_PREDOWN) C(OPENVPN_PLUGIN_FUNC_SUCCESS) C(OPENVPN_PLUGIN_FUNC_ERROR)
    C(PLOG_ERR) C(PLOG_WARN) C(PLOG_NOTE)
    return 0;
}
"#;

/// The same lines from vpnfix's definitions.
fn ours() -> Vec<String> {
    macro_rules! s {
        ($c:literal, $t:ty) => {
            format!("size {} {} {}", $c, size_of::<$t>(), align_of::<$t>())
        };
    }
    macro_rules! f {
        ($c:literal, $t:ty, $cf:literal, $f:ident) => {
            format!("offset {}.{} {}", $c, $cf, offset_of!($t, $f))
        };
    }
    let c = |name: &str, v: i32| format!("const {name} {v}");
    vec![
        s!("openvpn_plugin_string_list", StringList),
        f!("openvpn_plugin_string_list", StringList, "next", next),
        f!("openvpn_plugin_string_list", StringList, "name", name),
        f!("openvpn_plugin_string_list", StringList, "value", value),
        s!("openvpn_plugin_callbacks", Callbacks),
        f!("openvpn_plugin_callbacks", Callbacks, "plugin_log", plugin_log),
        f!("openvpn_plugin_callbacks", Callbacks, "plugin_vlog", plugin_vlog),
        f!("openvpn_plugin_callbacks", Callbacks, "plugin_secure_memzero", plugin_secure_memzero),
        f!("openvpn_plugin_callbacks", Callbacks, "plugin_base64_encode", plugin_base64_encode),
        f!("openvpn_plugin_callbacks", Callbacks, "plugin_base64_decode", plugin_base64_decode),
        s!("openvpn_plugin_args_open_in", OpenIn),
        f!("openvpn_plugin_args_open_in", OpenIn, "type_mask", type_mask),
        f!("openvpn_plugin_args_open_in", OpenIn, "argv", argv),
        f!("openvpn_plugin_args_open_in", OpenIn, "envp", envp),
        f!("openvpn_plugin_args_open_in", OpenIn, "callbacks", callbacks),
        f!("openvpn_plugin_args_open_in", OpenIn, "ssl_api", ssl_api),
        f!("openvpn_plugin_args_open_in", OpenIn, "ovpn_version", ovpn_version),
        f!("openvpn_plugin_args_open_in", OpenIn, "ovpn_version_major", ovpn_version_major),
        f!("openvpn_plugin_args_open_in", OpenIn, "ovpn_version_minor", ovpn_version_minor),
        f!("openvpn_plugin_args_open_in", OpenIn, "ovpn_version_patch", ovpn_version_patch),
        s!("openvpn_plugin_args_open_return", OpenReturn),
        f!("openvpn_plugin_args_open_return", OpenReturn, "type_mask", type_mask),
        f!("openvpn_plugin_args_open_return", OpenReturn, "handle", handle),
        f!("openvpn_plugin_args_open_return", OpenReturn, "return_list", return_list),
        s!("openvpn_plugin_args_func_in", FuncIn),
        f!("openvpn_plugin_args_func_in", FuncIn, "type", event),
        f!("openvpn_plugin_args_func_in", FuncIn, "argv", argv),
        f!("openvpn_plugin_args_func_in", FuncIn, "envp", envp),
        f!("openvpn_plugin_args_func_in", FuncIn, "handle", handle),
        f!("openvpn_plugin_args_func_in", FuncIn, "per_client_context", per_client_context),
        f!("openvpn_plugin_args_func_in", FuncIn, "current_cert_depth", current_cert_depth),
        f!("openvpn_plugin_args_func_in", FuncIn, "current_cert", current_cert),
        s!("openvpn_plugin_args_func_return", FuncReturn),
        f!("openvpn_plugin_args_func_return", FuncReturn, "return_list", return_list),
        // Enums are passed as C `int`: what the Rust side declares them as.
        s!("ovpnSSLAPI", std::ffi::c_int),
        s!("openvpn_plugin_log_flags_t", std::ffi::c_int),
        c("OPENVPN_PLUGIN_VERSION", ffi::PLUGIN_VERSION),
        c("OPENVPN_PLUGIN_UP", Hook::Up.number()),
        c("OPENVPN_PLUGIN_DOWN", Hook::Down.number()),
        c("OPENVPN_PLUGIN_ROUTE_UP", Hook::RouteUp.number()),
        c("OPENVPN_PLUGIN_ROUTE_PREDOWN", Hook::RoutePreDown.number()),
        c("OPENVPN_PLUGIN_FUNC_SUCCESS", ffi::FUNC_SUCCESS),
        c("OPENVPN_PLUGIN_FUNC_ERROR", ffi::FUNC_ERROR),
        c("PLOG_ERR", ffi::PLOG_ERR),
        c("PLOG_WARN", ffi::PLOG_WARN),
        c("PLOG_NOTE", ffi::PLOG_NOTE),
    ]
}

#[test]
fn structures_and_constants_match_openvpns_header() {
    assert!(
        std::path::Path::new(HEADER).is_file(),
        "{HEADER} is missing: install Debian's `openvpn` package (.ci/run does), which ships it"
    );
    let dir = common::TempDir::new("abi");
    let src = dir.path().join("probe.c");
    let exe = dir.path().join("probe");
    std::fs::write(&src, PROBE).unwrap();
    let cc = Command::new("cc").args(["-std=c11", "-Wall", "-Werror", "-o"]).arg(&exe).arg(&src).output();
    let cc = cc.expect("a C compiler (`cc`), which Rust's linker needs anyway");
    assert!(cc.status.success(), "the probe does not compile:\n{}", String::from_utf8_lossy(&cc.stderr));
    let out = Command::new(&exe).output().unwrap();
    let theirs: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(theirs.len(), ours().len(), "the probe and vpnfix list different items");
    for (c, r) in theirs.iter().zip(ours()) {
        assert_eq!(&r, c, "vpnfix's definition differs from {HEADER}");
    }
}

/// The library exports OpenVPN's entry points (open_v3, func_v3, close_v1 — the loader requires
/// these — and min_version_required_v1) and no other `openvpn_plugin_*` symbol, which the loader
/// would also pick up.
#[test]
fn the_library_exports_the_v3_entry_points() {
    let so = common::plugin_so();
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(&so).output().expect("nm (binutils)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut syms: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("openvpn_plugin_"))
        .map(str::to_string)
        .collect();
    syms.sort();
    assert_eq!(
        syms,
        [
            "openvpn_plugin_close_v1",
            "openvpn_plugin_func_v3",
            "openvpn_plugin_min_version_required_v1",
            "openvpn_plugin_open_v3"
        ]
    );
}
