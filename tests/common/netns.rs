//! Network namespaces for the tests that need hosts of their own (`ip netns`, veth pairs):
//! a ministry's MTA on its own network (`tests/ministry_mail.rs`), two gatekeeper hosts and
//! a database host (`tests/hosts.rs`). Only addresses of the namespaces and links a test
//! makes are used (10.231.0.0/16, 10.232.0.0/16); everything is removed on drop, also when
//! the test fails.

use std::process::Command;

/// Run `ip ARGS`; the error says what failed and `ip`'s own message.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace, deleted on drop (which destroys every veth end inside it, and so
/// the pair).
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    /// `ip netns add NAME`, with its loopback up.
    pub fn create(name: &str) -> Result<Namespace, String> {
        ip(&["netns", "add", name])?;
        let ns = Namespace { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name.as_str()]).arg(program);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", self.name.as_str()])
            .stderr(std::process::Stdio::null())
            .output();
    }
}

/// One end of a veth pair: in a namespace (`None`: the test's own), its interface name, and
/// its address with prefix (`10.231.7.1/30`).
pub struct End<'a> {
    pub ns: Option<&'a Namespace>,
    pub name: &'a str,
    pub addr: &'a str,
}

/// A veth pair between two ends, both addressed and up. Created in one `ip link add` with
/// each end already in its namespace, so a failure leaves nothing half-made; at least one
/// end must be in a namespace, whose drop removes the pair.
pub fn veth(a: &End<'_>, b: &End<'_>) -> Result<(), String> {
    let mut args = vec!["link", "add", a.name];
    if let Some(ns) = a.ns {
        args.extend(["netns", ns.name.as_str()]);
    }
    args.extend(["type", "veth", "peer", "name", b.name]);
    if let Some(ns) = b.ns {
        args.extend(["netns", ns.name.as_str()]);
    }
    ip(&args)?;
    for end in [a, b] {
        let run = |args: &[&str]| match end.ns {
            Some(ns) => ns.ip(args),
            None => ip(args),
        };
        run(&["addr", "add", end.addr, "dev", end.name])?;
        run(&["link", "set", end.name, "up"])?;
    }
    Ok(())
}
