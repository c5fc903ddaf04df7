//! Benchmark helper for scripts/bench/run.sh (part 6): a route-up as OpenVPN's plugin sees it —
//! the time `openvpn_plugin_func_v3(ROUTE_UP)` takes, the helper doing the whole reconcile —
//! side by side with script mode's whole hook run (the same binary started as OpenVPN starts a
//! `route-up` script, waited for). Run inside the benchmark's namespace with the hook's
//! environment as its own (`env -i KEY=value … plugin_bench HELPER RESET ROUNDS RUNS`); each
//! measured run starts from the table `sh RESET` leaves. Prints one line per round: the median
//! plugin time and the median script time, in seconds; the order of the two sides alternates.
//!
//! The plugin's entry points are called in this process exactly as OpenVPN calls them (the
//! library linked in rather than `dlopen`ed: the same code).

use std::ffi::{c_char, c_int, CString};
use std::process::{Command, Stdio};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};
use vpnfix::plugin::ffi::{self, FuncIn, OpenIn, OpenReturn};
use vpnfix::plugin::wire::Hook;

/// NULL-terminated `char *` arrays, kept alive with their strings.
struct CArray {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CArray {
    fn new(items: &[String]) -> CArray {
        let strings: Vec<CString> = items.iter().map(|s| CString::new(s.as_str()).expect("no NUL")).collect();
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(null());
        CArray { _strings: strings, ptrs }
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    let n = v.len();
    let mid = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2 };
    mid.as_secs_f64()
}

fn reset(script: &str) {
    let ok = Command::new("sh").arg(script).status().is_ok_and(|s| s.success());
    assert!(ok, "{script} failed");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [helper, reset_script, rounds, runs] = args.as_slice() else {
        eprintln!(
            "usage: plugin_bench HELPER RESET ROUNDS RUNS (inside the namespace, the hook's environment its own)"
        );
        std::process::exit(2);
    };
    let (rounds, runs): (usize, usize) = (rounds.parse().expect("ROUNDS"), runs.parse().expect("RUNS"));
    let hook_env: Vec<(String, String)> = std::env::vars().collect();
    // OpenVPN deletes script_type before it calls a plugin.
    let plugin_env: Vec<String> =
        hook_env.iter().filter(|(k, _)| k != "script_type").map(|(k, v)| format!("{k}={v}")).collect();
    let envp = CArray::new(&plugin_env);
    let open_argv = CArray::new(&["vpnfix.so".to_string(), helper.clone()]);
    let open_in = OpenIn {
        type_mask: 0xffff,
        argv: open_argv.ptrs.as_ptr(),
        envp: envp.ptrs.as_ptr(),
        callbacks: null_mut(),
        ssl_api: 1,
        ovpn_version: null(),
        ovpn_version_major: 2,
        ovpn_version_minor: 6,
        ovpn_version_patch: null(),
    };
    let mut open_ret = OpenReturn { type_mask: 0, handle: null_mut(), return_list: null_mut() };
    // SAFETY: the arguments are laid out as OpenVPN lays them out and outlive the calls.
    let rc = unsafe { ffi::openvpn_plugin_open_v3(5, &open_in, &mut open_ret) };
    assert_eq!(rc, ffi::FUNC_SUCCESS, "the plugin did not open");
    let func_argv = CArray::new(&["vpnfix.so".to_string()]);
    let func_in = FuncIn {
        event: Hook::RouteUp.number() as c_int,
        argv: func_argv.ptrs.as_ptr(),
        envp: envp.ptrs.as_ptr(),
        handle: open_ret.handle,
        per_client_context: null_mut(),
        current_cert_depth: 0,
        current_cert: null_mut(),
    };
    let plugin = || {
        reset(reset_script);
        let t = Instant::now();
        // SAFETY: as above; the handle is open's.
        let rc = unsafe { ffi::openvpn_plugin_func_v3(5, &func_in, null_mut()) };
        let d = t.elapsed();
        assert_eq!(rc, ffi::FUNC_SUCCESS, "route-up failed in the plugin");
        d
    };
    let script = || {
        reset(reset_script);
        let t = Instant::now();
        let st = Command::new(helper).env_clear().envs(hook_env.iter().cloned()).stderr(Stdio::null()).status();
        let d = t.elapsed();
        assert!(st.is_ok_and(|s| s.success()), "the route-up script failed");
        d
    };
    // One warm-up each, as hyperfine's -w 1; the plugin's must have made the seed case's routes
    // (checked now: closing the plugin at the end removes them).
    plugin();
    let table = Command::new("ip").args(["route", "show", "table", "main", "proto", "86"]).output().expect("ip");
    let on_tun = String::from_utf8_lossy(&table.stdout).lines().filter(|l| l.contains(" dev tun0")).count();
    assert_eq!(on_tun, 8, "the plugin's route-up made {on_tun} routes on tun0, not the seed case's 8");
    script();
    for round in 0..rounds {
        let (mut p, mut s) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            if round % 2 == 0 {
                p.push(plugin());
                s.push(script());
            } else {
                s.push(script());
                p.push(plugin());
            }
        }
        println!("{:.9} {:.9}", median(p), median(s));
    }
    // SAFETY: the handle open returned, closed once.
    unsafe { ffi::openvpn_plugin_close_v1(open_ret.handle) };
}
