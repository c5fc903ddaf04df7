//! The laptop's Docker in an OpenVPN world: compose-labelled networks and containers, and a
//! dockerd that dies as a crash would.

use super::World;
use crate::common::run_with_timeout;
use std::time::Duration;

impl World {
    /// `docker network create` with compose's labels; returns the bridge's name.
    pub fn network(&self, project: &str, name: &str, args: &[&str]) -> String {
        let mut a = vec!["network", "create"];
        a.extend_from_slice(args);
        let label = format!("com.docker.compose.project={project}");
        a.extend_from_slice(&["--label", &label, "--label", "com.docker.compose.network=default", name]);
        self.docker.docker(&a);
        self.docker.bridge_of(name)
    }

    /// Starts `sleep 3600` as a container of `project` on `network`; returns its IPv4 address.
    pub fn container(&self, project: &str, network: &str, name: &str, extra: &[&str]) -> String {
        let label = format!("com.docker.compose.project={project}");
        let mut a = vec!["run", "-d", "--network", network, "--name", name, "--label", &label];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["local/busybox", "sleep", "3600"]);
        self.docker.docker(&a);
        self.docker.container_ip(name, network)
    }

    /// A container's IPv6 address on a network.
    pub fn container6(&self, name: &str, network: &str) -> String {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").GlobalIPv6Address}}}}");
        self.docker.docker(&["inspect", "-f", &f, name])
    }

    /// Kills dockerd with SIGKILL, as a crash would: its containers keep running (their pids are
    /// kept and killed on drop); waits until the socket refuses.
    pub fn kill_dockerd(&mut self) {
        let ids = self.docker.docker(&["ps", "-q"]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        let mut a = vec!["inspect", "-f", "{{.State.Pid}}"];
        a.extend_from_slice(&ids);
        self.orphans = self.docker.docker(&a).split_whitespace().map(str::to_string).collect();
        let child = self.docker.child.as_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        for _ in 0..100 {
            if !run_with_timeout(self.docker.cli().arg("version"), 5).is_some_and(|o| o.status.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dockerd still answers after SIGKILL");
    }
}
