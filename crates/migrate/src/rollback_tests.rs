//! The paper's Table 1 (container failures) and Table 2's VM counterpart, over scripted
//! agents: a failure at each step must leave the function at the source, by exactly the
//! calls that undo what was done.
use crate::agents::AgentCalls;
use crate::{run, Method, Migration, Operation};
use agent_api::api::{ContainerInfo, Inspect, OpStats};
use anyhow::{bail, Result};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

type Log = Rc<RefCell<Vec<String>>>;

/// An agent that logs every call as `<side>.<call>` and fails the one it is told to.
struct Scripted {
    side: &'static str,
    log: Log,
    fail: Option<String>,
    /// What `inspect` says the function is (after a dump whose answer was lost).
    state: &'static str,
}

impl Scripted {
    fn call(&self, what: &str) -> Result<OpStats> {
        let call = format!("{}.{what}", self.side);
        self.log.borrow_mut().push(call.clone());
        if self.fail.as_deref() == Some(&call) {
            bail!("{call} failed (scripted)");
        }
        Ok(OpStats::default())
    }
}

impl AgentCalls for Scripted {
    fn addr(&self) -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }
    fn reconnect(&self) -> Result<Box<dyn AgentCalls>> {
        self.call("reconnect")?;
        Ok(Box::new(Scripted {
            side: self.side,
            log: self.log.clone(),
            fail: self.fail.clone(),
            state: self.state,
        }))
    }
    fn inspect(&mut self, _: &str) -> Result<Inspect> {
        self.call("inspect")?;
        let mut i = inspect();
        i.info.state = self.state.into();
        Ok(i)
    }
    fn checkpoint(
        &mut self,
        _: &str,
        round: &str,
        leave_running: bool,
        _: Option<&str>,
        _: bool,
        lazy: Option<u16>,
    ) -> Result<OpStats> {
        let how = match (leave_running, lazy) {
            (true, _) => "leave-running",
            (false, Some(_)) => "lazy",
            (false, None) => "final",
        };
        self.call(&format!("checkpoint({round},{how})"))
    }
    fn push(&mut self, _: &str, round: &str, _: SocketAddr, _: Option<&str>) -> Result<OpStats> {
        self.call(&format!("push({round})"))
    }
    fn plug(&mut self, _: &str) -> Result<OpStats> {
        self.call("plug")
    }
    fn unplug(&mut self, _: &str) -> Result<OpStats> {
        self.call("unplug")
    }
    fn restore(&mut self, _: &str, round: &str, _: Option<SocketAddr>, _: bool) -> Result<OpStats> {
        self.call(&format!("restore({round})"))
    }
    fn remove(&mut self, _: &str) -> Result<()> {
        self.call("remove").map(|_| ())
    }
    fn end_migration(&mut self, _: &str) -> Result<()> {
        self.call("end_migration").map(|_| ())
    }
    fn await_pages(&mut self, _: &str) -> Result<OpStats> {
        self.call("await_pages")
    }
    fn resume_lazy(&mut self, _: &str) -> Result<()> {
        self.call("resume_lazy").map(|_| ())
    }
    fn vm_check(&mut self, _: &str, _: &vm::HostCaps) -> Result<()> {
        self.call("vm_check").map(|_| ())
    }
    fn vm_migrate(&mut self, _: &str, _: &str, _: &str) -> Result<vm::MigrationStats> {
        self.call("vm_migrate")?;
        Ok(vm::MigrationStats::default())
    }
    fn vm_await(&mut self, _: &str) -> Result<OpStats> {
        self.call("vm_await")
    }
    fn vm_resume(&mut self, _: &str) -> Result<()> {
        self.call("vm_resume").map(|_| ())
    }
}

fn inspect() -> Inspect {
    let spec = runtime::ContainerSpec::new(
        "fn",
        "/bin/true".into(),
        vec![],
        "10.0.0.1".parse().unwrap(),
        24,
        "small",
    )
    .unwrap();
    Inspect {
        info: ContainerInfo {
            name: "fn".into(),
            host: "a".into(),
            service_ip: spec.service_ip,
            flavor: "small".into(),
            state: "running".into(),
            pid: Some(1),
            runtime: spec.runtime,
        },
        spec,
        rootfs_digest: String::new(),
        cannot_carry: vec![],
    }
}

/// A migration of "fn" from "a" to "b" by `method` over scripted agents whose source
/// has it `src_state`, `fail` failing; and the log of their calls.
fn scripted(method: Method, fail: Option<&str>, src_state: &'static str) -> (Migration, Log) {
    let log: Log = Rc::default();
    let agent = |side| {
        Box::new(Scripted {
            side,
            log: log.clone(),
            fail: fail.map(str::to_string),
            state: src_state,
        })
    };
    let mut i = inspect();
    i.info.state = src_state.into();
    let m = Migration::with_agents(
        agent("src"),
        agent("dst"),
        "127.0.0.1:2".parse().unwrap(),
        "fn",
        "a",
        "b",
        Operation::Migration(method),
        i,
    );
    (m, log)
}

/// Runs `method` with `fail` failing (e.g. `src.push(final)`); returns the calls made after
/// the failing one (the rollback) and whether the migration failed.
fn migrate_failing(
    method: Method,
    fail: Option<&str>,
    src_state: &'static str,
) -> (Vec<String>, bool) {
    let (mut m, log) = scripted(method, fail, src_state);
    if method == Method::VmPreCopy {
        m.set_vm_incoming(agent_api::api::VmIncoming {
            caps: vm::HostCaps::default(),
            uri: "tcp:127.0.0.1:3".into(),
        });
    }
    let failed = run(m, method).is_err();
    let calls = log.borrow().clone();
    let after = match fail {
        Some(f) => calls
            .iter()
            .position(|c| c == f)
            .map(|i| calls[i + 1..].to_vec())
            .unwrap_or_default(),
        None => calls,
    };
    (after, failed)
}

#[test]
fn a_migration_that_succeeds_makes_the_paper_s_calls_in_order() {
    let (calls, failed) = migrate_failing(Method::StopAndCopy, None, "running");
    assert!(!failed);
    assert_eq!(
        calls,
        [
            "src.unplug",
            "dst.plug",
            "src.checkpoint(final,final)",
            "src.push(final)",
            "dst.restore(final)",
            "src.remove"
        ]
    );
}

#[test]
fn table_1_rollbacks() {
    use Method::*;
    let cases: &[(Method, &str, &str, &[&str])] = &[
        // The destination cannot take the MAC: the source's link comes up again.
        (
            StopAndCopy,
            "dst.plug",
            "running",
            &["dst.remove", "src.plug"],
        ),
        // The dump failed with an answer, or its answer was lost: ask the source afresh.
        (
            StopAndCopy,
            "src.checkpoint(final,final)",
            "running",
            &["dst.remove", "src.reconnect", "src.inspect", "src.plug"],
        ),
        (
            StopAndCopy,
            "src.checkpoint(final,final)",
            "checkpointed",
            &[
                "dst.remove",
                "src.reconnect",
                "src.inspect",
                "src.restore(final)",
            ],
        ),
        // Images lost on the way, or the destination cannot restore: back from the image.
        (
            StopAndCopy,
            "src.push(final)",
            "running",
            &["dst.remove", "src.restore(final)"],
        ),
        (
            StopAndCopy,
            "dst.restore(final)",
            "running",
            &["dst.remove", "src.restore(final)"],
        ),
        // PreCopy's first round fails while the function still serves: nothing to undo
        // at the source.
        (
            PreCopy,
            "src.checkpoint(pre,leave-running)",
            "running",
            &["dst.remove"],
        ),
        (PreCopy, "src.push(pre)", "running", &["dst.remove"]),
        (
            PreCopy,
            "dst.restore(final)",
            "running",
            &["dst.remove", "src.restore(final)"],
        ),
        // A lazy dump's memory is still in the source's frozen tasks: CRIU lets them go.
        (
            PostCopy,
            "src.push(final)",
            "running",
            &["dst.remove", "src.resume_lazy"],
        ),
        (
            PostCopy,
            "dst.restore(final)",
            "running",
            &["dst.remove", "src.resume_lazy"],
        ),
        // QEMU's copy failed before the source stopped; or after, the source VM resumes.
        (VmPreCopy, "src.vm_migrate", "running", &["dst.remove"]),
        (
            VmPreCopy,
            "dst.vm_await",
            "running",
            &["dst.remove", "src.vm_resume"],
        ),
    ];
    for (method, fail, state, want) in cases {
        let (calls, failed) = migrate_failing(*method, Some(fail), state);
        assert!(failed, "{method:?} {fail}: the migration must fail");
        // A settled migration leaves no journal for `--resume`.
        let want = [*want, &["src.end_migration"]].concat();
        assert_eq!(calls, want, "{method:?}, failing {fail}");
    }
}

/// A migration whose controller died, taken over: the source's state and whether the
/// destination runs the function decide, and the calls are those that settle it.
#[test]
fn interrupted_migrations_settle_from_what_the_agents_hold() {
    use crate::resume::{settle, Resumed};
    use Method::*;
    let cases: &[(Method, &str, bool, &[&str], &str)] = &[
        // Killed before the dump, or while the function still served (pre-copy rounds).
        (
            StopAndCopy,
            "running",
            false,
            &["dst.remove", "src.plug"],
            "a",
        ),
        (PreCopy, "running", false, &["dst.remove", "src.plug"], "a"),
        // Killed after the dump: back from the source's own image.
        (
            StopAndCopy,
            "checkpointed",
            false,
            &["dst.remove", "src.restore(final)"],
            "a",
        ),
        // Killed once the destination restored it: finished there.
        (PreCopy, "checkpointed", true, &["src.remove"], "b"),
        (StopAndCopy, "checkpointed", true, &["src.remove"], "b"),
        (
            PostCopy,
            "running",
            true,
            &["dst.await_pages", "src.remove"],
            "b",
        ),
        // A lazy dump's frozen tasks are let go.
        (
            PostCopy,
            "running",
            false,
            &["src.resume_lazy", "dst.remove"],
            "a",
        ),
        (VmPreCopy, "running", false, &["dst.remove"], "a"),
        (
            VmPreCopy,
            "postmigrate",
            false,
            &["dst.remove", "src.vm_resume"],
            "a",
        ),
    ];
    for (method, src_state, at_dst, want, on) in cases {
        let (m, log) = scripted(*method, None, src_state);
        let r = settle(m, *at_dst).unwrap();
        let mut want = want.to_vec();
        let expect = if *on == "a" {
            want.push("src.end_migration");
            Resumed::RolledBack { on: "a".into() }
        } else {
            Resumed::Finished { on: "b".into() }
        };
        assert_eq!(
            *log.borrow(),
            want,
            "{method:?}, source {src_state}, at destination: {at_dst}"
        );
        assert_eq!(r, expect);
    }
}
