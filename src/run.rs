//! The one place that ties the pieces together: hook input, bundles, configuration, the planner
//! and the reports. Each command is a function from its arguments to what it prints.

use crate::bundle::{self, BundleError};
use crate::cli::{PlanArgs, Selection};
use crate::config::Config;
use crate::hook::{self, openvpn::HookError};
use crate::net::{Facts, Push, TunnelKind};
use crate::{plan, report};

/// A command that could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle could not be read.
    #[error("cannot read the bundle")]
    Bundle(#[from] BundleError),
    /// The hook environment does not name a tunnel.
    #[error("cannot tell the tunnel (give --dev DEV, or an environment with dev=)")]
    Hook(#[from] HookError),
    /// Live planning is not available in this build.
    #[error("planning this host live is not built yet; give --from DIR")]
    NotLive,
    /// The output could not be serialized.
    #[error("cannot render JSON")]
    Json(#[from] serde_json::Error),
}

/// `vpnfix plan`: the plan for a bundle, as text or JSON.
pub fn plan(args: &PlanArgs) -> Result<String, Error> {
    let dir = args.from.as_deref().ok_or(Error::NotLive)?;
    let b = bundle::read(dir)?;
    let (facts, config) = facts_from(b, &args.select)?;
    let plan = plan::plan(&facts, &config);
    Ok(if args.json {
        serde_json::to_string_pretty(&plan)? + "\n"
    } else {
        report::plan_text(&facts, &plan)
    })
}

/// Facts and configuration from a bundle, with the command line's overrides.
fn facts_from(b: bundle::Bundle, sel: &Selection) -> Result<(Facts, Config), Error> {
    let mut env = b.env.clone();
    if let Some(dev) = &sel.dev {
        env.retain(|(k, _)| k != "dev");
        env.push(("dev".into(), dev.clone()));
    }
    let input = hook::openvpn::parse(env, &[], None)?;
    let (config, config_skipped) = Config::from_layers([b.env.as_slice(), sel.config_layer().as_slice()]);
    let mut tunnel = input.tunnel;
    if b.links.iter().any(|l| l.name == tunnel.dev && l.tap) {
        tunnel.kind = TunnelKind::Tap;
    }
    let pushes = if sel.routes.is_empty() {
        input.pushes
    } else {
        flag_pushes(&sel.routes)
    };
    let mut skipped = config_skipped;
    skipped.extend(input.skipped);
    skipped.extend(b.skipped);
    let facts = Facts {
        tunnel,
        pushes,
        routes: b.routes,
        links: b.links,
        addrs: b.addrs,
        neighbours: b.neighbours,
        docker: b.docker,
        skipped,
    };
    Ok((facts, config))
}

fn flag_pushes(routes: &[ipnet::IpNet]) -> Vec<Push> {
    routes
        .iter()
        .map(|r| Push {
            dst: r.trunc(),
            gateway: None,
            metric: None,
            origin: "--route".into(),
        })
        .collect()
}
