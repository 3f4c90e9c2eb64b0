//! Wall-clock steps against the real binary (README "Clocks"): `gatekeeper serve` runs under
//! `libfaketime` (Debian `faketime`, `.ci/packages`) with `FAKETIME_TIMESTAMP_FILE`, whose
//! content (an offset in seconds from the real time) the test rewrites to step the daemon's
//! wall clock by hours while it runs. `FAKETIME_DONT_FAKE_MONOTONIC=1` leaves the monotonic
//! clock alone, as NTP does.
//!
//! - a step forward by 2 h expires a pending challenge (a reply gets `550 token.expired`, the
//!   API shows `expired`) and moves the hourly rate-limit window on;
//! - stepping back again does not revive a challenge that was answered `token.expired`, ends a
//!   challenge created "in the future" of the new time, and leaves the others pending: they
//!   confirm;
//! - with the daemon's clock 2 h behind, a genuine reply dated by the real time is refused
//!   `date.stale` (more than 1 h ahead), one dated by the daemon's clock confirms;
//! - SMTP idle timeouts fire on time across steps either way (monotonic).
//!
//! Run: `cargo test --locked --test clock -- --nocapture`.

// Test code: a failed expectation is a test failure, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use common::daemon::{Daemon, free_port};
use common::e2e::{Api, Events, Layout, Settings, Smtp, reason_of, send_mail};
use common::mail::Mail;
use common::{Vars, World};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const HOUR: i64 = 3600;

/// One daemon under a steppable wall clock.
struct Stepped {
    _tmp: tempfile::TempDir,
    _world: World,
    layout: Layout,
    offset_file: PathBuf,
    offset: i64,
    daemon: Daemon,
    api: Api,
    events: Events,
    smtp: SocketAddr,
    n: u32,
}

impl Stepped {
    async fn start(tweak: impl FnOnce(&mut Settings), offset: i64) -> Stepped {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} missing: apt-get install faketime (.ci/packages)"
        );
        let world = World::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let mut settings = Settings {
            smtp_port: free_port(),
            api_port: free_port(),
            ..Settings::default()
        };
        tweak(&mut settings);
        layout.write_config(world.dns.addr, &settings);
        let offset_file = tmp.path().join("faketime");
        write_offset(&offset_file, offset);
        let smtp: SocketAddr = format!("127.0.0.1:{}", settings.smtp_port).parse().unwrap();
        let api_addr: SocketAddr = format!("127.0.0.1:{}", settings.api_port).parse().unwrap();
        let env = [
            ("LD_PRELOAD", LIBFAKETIME.to_string()),
            ("FAKETIME_TIMESTAMP_FILE", offset_file.display().to_string()),
            // Read the file at every call, so a step takes effect at once.
            ("FAKETIME_NO_CACHE", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ];
        let daemon = Daemon::start(
            Path::new(env!("CARGO_BIN_EXE_gatekeeper")),
            &layout.config,
            &tmp.path().join("daemon.log"),
            &env,
            api_addr,
            smtp,
        )
        .await;
        Stepped {
            api: Api::new(api_addr, &layout.token_file),
            events: Events::new(&layout.events),
            _tmp: tmp,
            _world: world,
            layout,
            offset_file,
            offset,
            daemon,
            smtp,
            n: 0,
        }
    }

    /// Step the daemon's wall clock to `offset` seconds from the real time.
    fn step_to(&mut self, offset: i64) {
        write_offset(&self.offset_file, offset);
        self.offset = offset;
    }

    /// The daemon's wall clock now.
    fn daemon_now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.offset)
    }

    /// Claim alice's address: the status and the challenge (id, signed reply dated `date`
    /// is built later by [`Stepped::reply`]).
    async fn claim(&mut self) -> (u16, Option<Claimed>) {
        let (status, body) = self.api.claim("alice@interieur.gouv.fr").await;
        if status != 201 {
            return (status, None);
        }
        self.n += 1;
        let id = body["id"].as_str().unwrap().to_string();
        let mail = self.layout.challenge_mail(&id);
        let claimed = Claimed {
            id,
            token: mail.token,
            message_id: mail.message_id,
            session_code: body["session_code"].as_str().unwrap().to_string(),
            n: self.n,
        };
        (status, Some(claimed))
    }

    /// Deliver alice's genuine reply to `c`, its Date (and DKIM `t=`) at `date`: the final
    /// reply's code and the reason of the session's refusal event, if any.
    async fn reply(&self, c: &Claimed, date: DateTime<Utc>) -> (u16, Option<String>) {
        let mut vars = Vars::new(date, c.n);
        vars.token = c.token.clone();
        vars.challenge_msgid = c.message_id.clone();
        vars.session_code = c.session_code.clone();
        let alice = Mail::alice();
        let message = alice.build(&vars);
        let ip: IpAddr = alice.client_ip.parse().unwrap();
        let mut smtp = Smtp::connect(ip, self.smtp).await.unwrap();
        let rcpt = format!("confirm+{}@verify.example.gouv.fr", c.token);
        let reply = send_mail(&mut smtp, &alice.helo, &alice.mail_from, &rcpt, &message)
            .await
            .expect("a reply");
        smtp.quit().await;
        let reason = if reply.is_refusal() {
            let evs = self
                .events
                .wait_client(ip, smtp.local.port(), Duration::from_secs(5), |e| {
                    e.iter().any(common::e2e::is_refusal)
                })
                .await;
            evs.iter()
                .find(|e| common::e2e::is_refusal(e))
                .map(reason_of)
        } else {
            None
        };
        (reply.code, reason)
    }

    async fn status_of(&self, c: &Claimed) -> String {
        let v: Value = self.api.show(&c.id).await;
        v["status"].as_str().unwrap_or_default().to_string()
    }
}

struct Claimed {
    id: String,
    token: String,
    message_id: String,
    session_code: String,
    n: u32,
}

fn write_offset(path: &Path, offset: i64) {
    // libfaketime's relative form: "+7200" / "-7200" seconds from the real time.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{offset:+}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_steps_move_expiry_and_rate_limits_as_documented() {
    let mut d = Stepped::start(
        |s| {
            s.challenge_ttl = "1h".into();
            s.max_per_hour = 3;
        },
        0,
    )
    .await;

    // The hour's limit: three claims, the fourth refused.
    let (_, a) = d.claim().await;
    let (_, b) = d.claim().await;
    let (_, c) = d.claim().await;
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        d.claim().await.0,
        429,
        "the hourly limit holds before any step"
    );

    // Forward 2 h: the 1 h challenges are over; the hour window has moved on.
    d.step_to(2 * HOUR);
    assert_eq!(d.status_of(&a).await, "expired");
    let (code, reason) = d.reply(&a, d.daemon_now()).await;
    assert_eq!(
        (code, reason.as_deref()),
        (550, Some("token.expired")),
        "a reply after the forward step"
    );
    let (status, e) = d.claim().await;
    assert_eq!(
        status, 201,
        "the rate-limit window moved with the wall clock"
    );
    let e = e.unwrap();

    // Back 2 h (to the real time): `a` was answered "expired" and stays so; `e`, created
    // 2 h "in the future", ends instead of living 3 h; `b` and `c`, never answered, are
    // pending again (documented: at most the step longer than the TTL) and `b` confirms.
    d.step_to(0);
    assert_eq!(
        d.status_of(&a).await,
        "expired",
        "a challenge answered token.expired does not come back"
    );
    let (code, reason) = d.reply(&a, d.daemon_now()).await;
    assert_eq!((code, reason.as_deref()), (550, Some("token.expired")));
    assert_eq!(
        d.status_of(&e).await,
        "expired",
        "a challenge born after the new wall time does not outlive its TTL"
    );
    let (code, reason) = d
        .reply(&e, d.daemon_now() + chrono::Duration::hours(2))
        .await;
    assert_eq!((code, reason.as_deref()), (550, Some("token.expired")));
    assert_eq!(d.status_of(&c).await, "pending");
    let (code, reason) = d.reply(&b, d.daemon_now()).await;
    assert_eq!(
        (code, reason),
        (250, None),
        "a pending challenge still confirms"
    );
    assert_eq!(d.status_of(&b).await, "confirmed");
    // `e` was created "in the future": it still counts for the hour (stricter, never looser).
    assert_eq!(d.claim().await.0, 429);
    println!(
        "clock: forward 2 h then back 2 h: expiry, pin, future-born and rate window as documented"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_stale_follows_the_wall_clock_and_timeouts_the_monotonic_one() {
    let mut d = Stepped::start(|s| s.command_timeout = "3s".into(), -2 * HOUR).await;

    // The daemon's clock is 2 h behind the real time: a reply dated by the real time is more
    // than an hour "ahead" and refused; dated by the daemon's clock it confirms.
    let (_, x) = d.claim().await;
    let (_, y) = d.claim().await;
    let (x, y) = (x.unwrap(), y.unwrap());
    let (code, reason) = d.reply(&x, Utc::now()).await;
    assert_eq!((code, reason.as_deref()), (550, Some("date.stale")));
    let (code, reason) = d.reply(&y, d.daemon_now()).await;
    assert_eq!((code, reason), (250, None));

    // Idle timeouts: an idle session is closed `command_timeout` (3 s) after its last
    // command whatever the wall clock does meanwhile: neither at once after a step forward
    // nor hours late after a step back.
    for (step, label) in [(2 * HOUR, "forward 4 h"), (-2 * HOUR, "back 4 h")] {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut smtp = Smtp::connect(ip, d.smtp).await.unwrap();
        assert_eq!(smtp.read_reply().await.map(|r| r.code), Some(220));
        assert_eq!(
            smtp.cmd("EHLO stepper.example").await.map(|r| r.code),
            Some(250)
        );
        let idle_from = Instant::now();
        d.step_to(step);
        let closed_by = smtp.read_reply_within(Duration::from_secs(20)).await;
        let waited = idle_from.elapsed();
        smtp.wait_closed(Duration::from_secs(5)).await;
        println!("clock: {label}: idle session answered {closed_by:?} after {waited:?}");
        assert!(
            waited >= Duration::from_millis(2800) && waited <= Duration::from_secs(8),
            "{label}: idle timeout fired after {waited:?}, not ~3 s"
        );
        assert_eq!(closed_by.map(|r| r.code), Some(421), "{label}");
        assert!(smtp.closed, "{label}: the session is closed");
    }
    d.daemon.signal("TERM");
    assert!(d.daemon.wait_exit(Duration::from_secs(10)));
}
