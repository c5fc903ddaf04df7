//! A private network namespace for tests that run vpnfix's kernel adapter in-process: set up with
//! `ip -n NAME …`, entered by a thread of its own (a netlink socket belongs to the namespace of
//! the thread that opens it) that builds its own current-thread runtime, deleted on drop even
//! when the test panics. The machine's own namespace is never touched.

use super::{require_root, NEXT};
use std::process::Command;
use std::sync::atomic::Ordering;
use vpnfix::kernel::Kernel;

/// Runs `ip -n NAME ARGS…` (ARGS split on whitespace) and returns its stdout; panics on failure.
#[derive(Clone)]
pub struct Ip(pub String);

impl Ip {
    pub fn run(&self, args: &str) -> String {
        let out = Command::new("ip").args(["-n", &self.0]).args(args.split_whitespace()).output().expect("ip runs");
        assert!(out.status.success(), "ip -n {} {args}: {}", self.0, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &str) -> serde_json::Value {
        serde_json::from_str(&self.run(&format!("-j {args}"))).expect("ip -j prints JSON")
    }
}

/// A private network namespace `vfk-<pid>-<n>`, deleted on drop.
pub struct KernelNs {
    /// `ip -n` in it.
    pub ip: Ip,
}

impl KernelNs {
    /// A fresh namespace with `lo` up (root only: see [`require_root`]).
    pub fn new(test: &str) -> KernelNs {
        require_root(test);
        let name = format!("vfk-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let out = Command::new("ip").args(["netns", "add", &name]).output().expect("ip runs");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        let ns = KernelNs { ip: Ip(name) };
        ns.ip.run("link set lo up");
        ns
    }

    /// The seed scenario: bridge (with a veth port, so it has carrier) and a tun device. Returns
    /// once the kernel has settled (carrier on the bridge, its fe80::/64 route in place), so that
    /// before/after comparisons of the main table see no late arrivals.
    pub fn scenario(&self) {
        // No DAD in this namespace: addresses are usable at once (the sysctl is per namespace).
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ip.0, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])
            .output()
            .expect("sysctl runs");
        assert!(out.status.success(), "sysctl: {}", String::from_utf8_lossy(&out.stderr));
        for cmd in [
            "link add br-test type bridge",
            "link add vfk-veth0 type veth peer name vfk-veth1",
            "link set vfk-veth0 master br-test",
            "link set vfk-veth0 up",
            "link set vfk-veth1 up",
            "addr add 172.20.0.1/16 dev br-test",
            "addr add fd42:20::1/64 dev br-test nodad",
            "link set br-test up",
            "tuntap add dev tun0 mode tun",
            "link set tun0 up",
            "addr add 10.0.1.65 peer 10.0.1.66 dev tun0",
            "addr add fd00:8::2/64 dev tun0 nodad",
        ] {
            self.ip.run(cmd);
        }
        let settled = || {
            let carrier = self.ip.run("link show br-test").contains("LOWER_UP");
            carrier && self.ip.run("-6 route show table main").contains("fe80::/64 dev br-test")
        };
        let start = std::time::Instant::now();
        while !settled() {
            assert!(start.elapsed().as_secs() < 10, "br-test did not come up in {}", self.ip.0);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Runs `f` with a [`Kernel`] opened inside the namespace, on a thread of its own.
    pub fn with_kernel<F>(&self, f: F)
    where
        F: FnOnce(Kernel, Ip) + Send + 'static,
    {
        let ip = self.ip.clone();
        let thread = std::thread::spawn(move || {
            enter(&ip.0);
            f(Kernel::connect().expect("netlink connects"), ip)
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Moves this thread into the network namespace `/run/netns/NAME`. `nix::sched::setns` would do,
/// but needs nix's `sched` feature, which vpnfix does not enable; setns(2) is in the libc that every
/// Rust binary on Linux links anyway.
fn enter(name: &str) {
    use std::os::raw::c_int;
    use std::os::unix::io::AsRawFd;
    extern "C" {
        fn setns(fd: c_int, nstype: c_int) -> c_int;
    }
    const CLONE_NEWNET: c_int = 0x4000_0000;
    let ns = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file opens");
    // SAFETY: an open descriptor and a namespace type; setns(2) changes only the calling thread.
    let rc = unsafe { setns(ns.as_raw_fd(), CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {name}: {}", std::io::Error::last_os_error());
}

impl Drop for KernelNs {
    fn drop(&mut self) {
        match Command::new("ip").args(["netns", "del", &self.ip.0]).output() {
            Ok(out) if out.status.success() => {}
            other => eprintln!("could not delete netns {}: {other:?}", self.ip.0),
        }
    }
}
