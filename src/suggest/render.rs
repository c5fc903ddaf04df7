//! What `suggest` prints: the compose `networks:` blocks, the steps, the caveats, and the text
//! a person reads. Pure; every line is built from the suggestion's own values.

use super::{ComposeFix, NetworkFix, Owner, Suggestion};
use crate::net::{DockerNetwork, Engine, Facts};
use ipnet::IpNet;
use std::fmt::{self, Write};

/// How messages name a network: `docker network milvus_default`, `podman network pdtnet`,
/// `bridge virbr0`.
pub fn owner_name(f: &NetworkFix) -> String {
    let engine = f.engine.unwrap_or_default();
    match (&f.name, f.owner) {
        (_, Owner::DefaultBridge) if engine == Engine::Podman => format!("Podman's default network on {}", f.bridge),
        (_, Owner::DefaultBridge) => format!("Docker's default bridge {}", f.bridge),
        (Some(n), _) => format!("{engine} network {n}"),
        (None, _) => format!("bridge {}", f.bridge),
    }
}

impl fmt::Display for NetworkFix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&owner_name(self))?;
        if let Some(p) = &self.compose_project {
            write!(f, " (compose project {p})")?;
        }
        write!(f, " {} on {} collides with VPN route", self.current, self.bridge)?;
        for (i, r) in self.collides_with.iter().enumerate() {
            write!(f, "{}{r}", if i == 0 { " " } else { ", " })?;
        }
        match self.proposed {
            Some(p) => write!(f, ": move it to {p}"),
            None => write!(f, ": no free /{} (see notes)", self.current.prefix_len()),
        }
    }
}

/// A Docker network's IPAM subnets once moved: each (subnet, ip_range), the proposed one in
/// place of each subnet that moves, the others as they are (an explicit compose `ipam.config`
/// replaces the whole list, so the unchanged ones must be repeated).
fn layout(n: &DockerNetwork, networks: &[NetworkFix]) -> Vec<(IpNet, Option<IpNet>)> {
    n.ipam
        .iter()
        .map(|p| {
            let fix = networks.iter().find(|f| f.bridge == n.bridge && f.current == p.subnet);
            match fix.and_then(|f| f.proposed.map(|new| (new, f.ip_range))) {
                Some(moved) => moved,
                None => (p.subnet, p.ip_range),
            }
        })
        .collect()
}

/// One `networks:` block per compose project with a network that moves, projects sorted.
pub fn compose_blocks(facts: &Facts, networks: &[NetworkFix], notes: &mut Vec<String>) -> Vec<ComposeFix> {
    let mut projects: Vec<&str> = networks
        .iter()
        .filter(|f| f.owner == Owner::Compose && f.proposed.is_some())
        .filter_map(|f| f.compose_project.as_deref())
        .collect();
    projects.sort_unstable();
    projects.dedup();
    let mut out = Vec::new();
    for project in projects {
        let mut yaml = format!("# docker-compose.yml of project \"{project}\"\nnetworks:\n");
        let mut moving: Vec<&NetworkFix> =
            networks.iter().filter(|f| f.compose_project.as_deref() == Some(project) && f.proposed.is_some()).collect();
        moving.sort_by(|a, b| a.name.cmp(&b.name));
        moving.dedup_by(|a, b| a.name == b.name);
        for fix in moving {
            let (Some(name), Some(key)) = (fix.name.as_deref(), fix.compose_network.as_deref()) else { continue };
            let Some(n) = facts.docker.iter().flatten().find(|n| n.name == name) else { continue };
            // Without compose's network label the key is read from the name, which a compose
            // file's `name:` can change.
            if n.compose_network.is_none() && !name.starts_with(&format!("{project}_")) {
                notes.push(format!(
                    "compose project \"{project}\": docker network {name} is not named <project>_<key>, so its key in docker-compose.yml may not be \"{key}\" (the file may give it `name: {name}`); put the ipam block under that key"
                ));
            }
            network_yaml(&mut yaml, key, name, &layout(n, networks));
        }
        out.push(ComposeFix { project: project.to_string(), yaml });
    }
    out
}

fn network_yaml(yaml: &mut String, key: &str, name: &str, subnets: &[(IpNet, Option<IpNet>)]) {
    let _ = writeln!(yaml, "{:<20}# Docker network {name}", format!("  {key}:"));
    if subnets.iter().any(|(s, _)| s.addr().is_ipv6()) {
        yaml.push_str("    enable_ipv6: true\n");
    }
    yaml.push_str("    ipam:\n      config:\n");
    for (subnet, range) in subnets {
        let _ = writeln!(yaml, "        - subnet: {subnet}");
        if let Some(r) = range {
            let _ = writeln!(yaml, "          ip_range: {r}");
        }
    }
}

/// What to do, in order: daemon.json and the restart first (networks created afterwards get
/// clear subnets), then each network, then the check.
pub fn steps(facts: &Facts, networks: &[NetworkFix], compose: &[ComposeFix], daemon_changed: bool) -> Vec<String> {
    let mut steps = Vec::new();
    if daemon_changed {
        let docker0: Vec<String> = networks
            .iter()
            .filter(|f| f.owner == Owner::DefaultBridge)
            .filter_map(|f| f.proposed.map(|p| format!(" (this also moves {} to {p})", f.bridge)))
            .collect();
        steps.push(format!(
            "save the daemon.json above as /etc/docker/daemon.json (`vpnfix suggest --write-daemon-json /etc/docker/daemon.json` writes it and keeps a backup), then `systemctl restart docker` to load it{}",
            docker0.concat()
        ));
    }
    for c in compose {
        let podman = networks
            .iter()
            .any(|f| f.compose_project.as_deref() == Some(&c.project) && f.engine == Some(Engine::Podman));
        let tool = if podman { "podman-compose" } else { "docker compose" };
        steps.push(format!(
            "compose project \"{}\": merge its `networks:` block above into the project's docker-compose.yml, then in the project's directory `{tool} down && {tool} up -d` (down removes the network, up creates it on the new subnet)",
            c.project
        ));
    }
    for f in networks.iter().filter(|f| f.proposed.is_some()) {
        match f.owner {
            Owner::Network => steps.push(recreate_step(facts, networks, f)),
            Owner::Bridge => steps.push(format!(
                "{}: move {} to {} where the bridge is configured (libvirt: `virsh net-edit`; LXD: `lxc network set`); if Docker owns it, run `vpnfix suggest` where Docker answers",
                owner_name(f),
                f.current,
                f.proposed.expect("filtered")
            )),
            Owner::Compose | Owner::DefaultBridge => {}
        }
    }
    if networks.iter().any(|f| f.proposed.is_some()) {
        steps.push("`vpnfix plan` (or the next VPN connect) then has nothing to add for the moved networks".into());
    }
    steps
}

/// `docker network rm` and `create` (or Podman's) for an engine network compose does not manage.
fn recreate_step(facts: &Facts, networks: &[NetworkFix], f: &NetworkFix) -> String {
    let name = f.name.as_deref().unwrap_or_default();
    let engine = f.engine.unwrap_or_default();
    let docker = facts.docker.iter().flatten().find(|n| n.name == name && n.engine == engine);
    let subnets =
        docker.map(|n| layout(n, networks)).unwrap_or_else(|| vec![(f.proposed.expect("proposed"), f.ip_range)]);
    let mut create = format!("{engine} network create");
    if subnets.iter().any(|(s, _)| s.addr().is_ipv6()) {
        create.push_str(" --ipv6");
    }
    for (s, r) in &subnets {
        let _ = write!(create, " --subnet {s}");
        if let Some(r) = r {
            let _ = write!(create, " --ip-range {r}");
        }
    }
    let containers = match f.containers.len() {
        0 => String::new(),
        _ => format!("disconnect its containers ({}) first and reconnect them after; ", f.containers.join(", ")),
    };
    format!("{engine} network {name}: {containers}`{engine} network rm {name} && {create} {name}`, adding any other option it was created with")
}

/// The caveats that apply to this suggestion.
pub fn caveats(facts: &Facts, networks: &[NetworkFix], daemon_changed: bool, bip: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if facts.docker.is_none() && !networks.is_empty() {
        notes.push("no container engine could be asked: bridges are named by device only, and Docker's pools come from the kernel's routes and the VPN's pushes".into());
    }
    if daemon_changed {
        notes.push("default-address-pools apply only to networks created after the restart; existing networks keep their subnets until removed and recreated".into());
        notes.push("`systemctl restart docker` stops running containers (unless daemon.json has \"live-restore\": true) and starts again only those with a restart policy; `systemctl reload docker` does not load default-address-pools".into());
    }
    if networks.iter().any(|f| f.owner == Owner::Compose && f.proposed.is_some()) {
        notes.push("an explicit compose subnet bypasses the pools: the `networks:` block moves a compose network, daemon.json alone never does; `docker compose up -d` or `restart` without `down` keeps the old network".into());
    }
    if networks.iter().any(|f| f.owner != Owner::Bridge && f.proposed.is_some()) {
        notes.push("containers get new addresses: a service with a fixed ipv4_address/ipv6_address, or anything that names the old subnet (firewall rules, extra_hosts, allow-lists), needs the new one".into());
    }
    if bip {
        notes.push("a dockerd started with --bip or --bridge (see its systemd unit) refuses a daemon.json that sets bip too: change the flag there instead".into());
    }
    notes
}

/// The suggestion as a person reads it: each network and where it moves, the compose blocks,
/// the daemon.json, the steps, the notes.
pub fn render_text(s: &Suggestion) -> String {
    let mut out = String::new();
    if s.networks.is_empty() {
        out.push_str("no local network collides with a VPN route: nothing to move\n");
    }
    for f in &s.networks {
        let _ = writeln!(out, "{f}");
    }
    for c in &s.compose {
        let _ = write!(out, "\n{}", c.yaml);
    }
    let docker = s.engines.is_empty() || s.engines.contains(&Engine::Docker);
    if s.daemon_json_changed {
        let json = super::pools::daemon_json_text(&s.daemon_json);
        let _ = write!(out, "\n# /etc/docker/daemon.json (address pools clear of every VPN route)\n{json}");
    } else if docker {
        out.push_str("\ndaemon.json: Docker's address pools already stay clear of every VPN route; no change\n");
    }
    match &s.containers_conf {
        Some(block) => {
            let _ = write!(out, "\n{block}");
        }
        None if s.engines.contains(&Engine::Podman) => {
            out.push_str(
                "\ncontainers.conf: Podman's address pools already stay clear of every VPN route; no change\n",
            );
        }
        None => {}
    }
    if !s.steps.is_empty() {
        out.push_str("\nsteps:\n");
    }
    for (i, step) in s.steps.iter().enumerate() {
        let _ = writeln!(out, "  {}. {step}", i + 1);
    }
    for n in &s.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
