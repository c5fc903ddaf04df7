//! Writes the synthetic host of `scripts/bench/synth.rs` as a bundle for `vpnfix plan --from`:
//! `cargo run --release --example synth_bundle -- DIR [full|small] [SEED]` (default `full`: 200
//! bridge networks, 10,000 pushes, a 100,000-route table; seed 1, the benchmark's).
//! `scripts/bench/run.sh` measures the peak memory of planning it.

#[path = "../scripts/bench/synth.rs"]
mod synth;

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), scale) = (args.first().map(PathBuf::from), args.get(1).map(String::as_str)) else {
        eprintln!("usage: synth_bundle DIR [full|small] [SEED]");
        std::process::exit(2);
    };
    let scale = match scale {
        None | Some("full") => synth::FULL,
        Some("small") => synth::SMALL,
        Some(other) => {
            eprintln!("synth_bundle: unknown scale {other:?} (full or small)");
            std::process::exit(2);
        }
    };
    let Ok(seed) = args.get(2).map_or(Ok(1), |s| s.parse::<u64>()) else {
        eprintln!("synth_bundle: the seed is a number");
        std::process::exit(2);
    };
    let s = synth::synth(scale, seed);
    let f = &s.facts;
    let snap = vpnfix::bundle::Snapshot {
        routes: &f.routes,
        links: &f.links,
        addrs: &f.addrs,
        neighbours: &f.neighbours,
        docker: Some(&s.inspects),
        env: &s.env,
    };
    if let Err(e) = vpnfix::bundle::write(&dir, &snap) {
        eprintln!("synth_bundle: {}", vpnfix::run::chain(&e));
        std::process::exit(1);
    }
    // The bundle must read back to the very facts the benchmark plans.
    let back = vpnfix::bundle::read(&dir).expect("the bundle just written reads back");
    assert_eq!(
        (back.host.routes.len(), back.host.links.len(), back.host.skipped.len()),
        (f.routes.len(), f.links.len(), 0)
    );
    println!(
        "wrote {}: {} routes, {} links, {} Docker networks, {} pushes",
        dir.display(),
        f.routes.len(),
        f.links.len(),
        s.inspects.len(),
        f.pushes.len()
    );
}
