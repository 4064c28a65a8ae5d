//! `baf-bridge`: carry chosen baf topics to and from other hosts over Zenoh
//! (command line; the work is in the library, `lib.rs`).

use baf_bridge::config::{Congestion, Envelope, Flags, Mode, Settings};
use baf_cli::Generate;
use clap::Parser;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Examples:
  # host a: export every topic, receive b's as b/<topic>, listen for b,
  # and let only user b (its password in /etc/baf/bridge/users) connect
  baf-bridge --export '#' --import 'baf/**' --into b/ --listen tcp/0.0.0.0:7447 \
    --auth-users-file /etc/baf/bridge/users
  # host b: receive a's topics as a/<topic>, and send b's sensors/# to a
  baf-bridge --connect tcp/host-a:7447 --import 'baf/**' --into a/ --export 'sensors/#' \
    --auth-user b --auth-password-file /etc/baf/bridge/b.password
  # only some topics, through a Zenoh router, with a JSON envelope
  baf-bridge --mode client --connect tcp/router:7447 --import 'baf/robot/*/state' --envelope json
  baf-bridge --config /etc/baf/bridge.toml

Safe by default: nothing is exported unless --export names it, peers are
only the endpoints given (no multicast scouting, no gossip unless
--multicast-scouting, --gossip), and nothing listens unless --listen says
where. Authentication (Zenoh's user/password): a bridge that listens with
--auth-users-file FILE (USER:PASSWORD lines) takes only connections from
those users; one that connects gives --auth-user and --auth-password-file.
The password never crosses the network (a challenge and an HMAC), but the
records do, unencrypted: use a VPN or a trusted network for privacy.

Names: topic T is exported under the Zenoh key baf/T (--key-prefix); baf
patterns use '+' for one level and '#' for the rest, Zenoh key expressions
'*' and '**'. An imported key loses the key prefix and gains --into:
baf/robot/arm becomes <into>robot/arm, created on demand (--no-create: not).
The topics under --into are not exported again.

The records of a topic travel in batches, one Zenoh sample per read (wire
version 2, docs/bridge.md), each record with its provenance (seq, time,
writer pid and uid; the host name, topic and records lost before it once a
batch); --envelope json puts it into imported records as one JSON object a
line. A sample with no attachment (from any other Zenoh program) is one
record. Records this bridge wrote itself are never exported, so two
hosts that export and import '#' to each other do not echo.

Loss: records overwritten before export, dropped by Zenoh on the way, or
that cannot be written here are reported on stderr, at most once a second,
with counts. Topics created --lossless are read losslessly and sent with
Zenoh's blocking congestion control (--congestion), so nothing is lost.

SIGTERM (or SIGINT) stops the bridge cleanly (exit 0).

Exit codes: 0 stopped by a signal, 1 other error (such as a Zenoh session
that cannot be opened), 2 usage (a bad pattern, key expression, endpoint,
configuration, password or users file: one line that names the file and
the line or key; nothing is started), 6 the baf module is not loaded (modprobe fanout) or is
too old.";

/// Carry chosen baf topics to and from other hosts over Zenoh.
///
/// Publishes the records of the exported topics as Zenoh samples, and
/// writes the Zenoh samples it imports into local topics, so that
/// `service | pubmsg t` on one host reaches `submsg t` on another.
#[derive(Parser, Debug)]
#[command(name = "baf-bridge", version, about, long_about, after_help = AFTER_HELP)]
struct Args {
    /// Export the topics matching PATTERN (baf pattern: robot/+/state,
    /// sensors/#, '#' for all), now and as they are created. Repeatable,
    /// or a comma list. Nothing is exported without it.
    #[arg(long, value_name = "PATTERN")]
    export: Vec<String>,
    /// Do not export the topics matching PATTERN (-e as in submsg).
    /// Repeatable.
    #[arg(short = 'e', short_alias = 'x', long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Import the Zenoh samples matching KEYEXPR (baf/**, baf/robot/*)
    /// into local topics. Repeatable, or a comma list.
    #[arg(short, long, value_name = "KEYEXPR")]
    import: Vec<String>,
    /// Local prefix of imported topics (remote/: baf/t becomes remote/t);
    /// the topics under it are not exported.
    #[arg(long, value_name = "PREFIX")]
    into: Option<String>,
    /// Zenoh key prefix: topic T is exported as PREFIX/T, and taken off
    /// imported keys [default: baf].
    #[arg(long, value_name = "PREFIX")]
    key_prefix: Option<String>,
    /// What an imported record holds: the payload (none), or a JSON object
    /// with the provenance and the payload (json) [default: none].
    #[arg(long, value_name = "KIND")]
    envelope: Option<Envelope>,
    /// Zenoh congestion control of exported samples: block for topics
    /// read losslessly and drop for the others (auto), or always one
    /// [default: auto].
    #[arg(long, value_name = "KIND")]
    congestion: Option<Congestion>,
    /// Do not create missing topics for imported keys.
    #[arg(long)]
    no_create: bool,
    /// Host name sent with exported records [default: this host's].
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
    /// Zenoh mode [default: peer].
    #[arg(long, value_name = "MODE")]
    mode: Option<Mode>,
    /// Zenoh endpoint to connect to (tcp/HOST:PORT, unixsock-stream/PATH).
    /// Repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    connect: Vec<String>,
    /// Zenoh endpoint to listen on (tcp/0.0.0.0:7447). Repeatable.
    /// Without it the bridge listens nowhere (it only connects).
    #[arg(long, value_name = "ENDPOINT")]
    listen: Vec<String>,
    /// Also look for Zenoh peers by UDP multicast on the local network
    /// (224.0.0.224:7446) [default: off, only the endpoints given].
    #[arg(long, overrides_with = "no_multicast_scouting")]
    multicast_scouting: bool,
    /// No multicast scouting (the default; kept for old command lines).
    #[arg(long, hide = true, overrides_with = "multicast_scouting")]
    no_multicast_scouting: bool,
    /// Also connect to the peers that connected peers tell of (Zenoh's
    /// gossip scouting) [default: off].
    #[arg(long)]
    gossip: bool,
    /// Authenticate as USER to the bridges (and Zenoh routers) this one
    /// connects to (Zenoh user/password authentication; needs
    /// --auth-password-file).
    #[arg(long, value_name = "USER")]
    auth_user: Option<String>,
    /// The file holding --auth-user's password (one line). A relative
    /// name is in $CREDENTIALS_DIRECTORY when that is set (systemd).
    #[arg(long, value_name = "FILE")]
    auth_password_file: Option<PathBuf>,
    /// Take connections only from the users in FILE (USER:PASSWORD
    /// lines). A relative name is in $CREDENTIALS_DIRECTORY when set.
    #[arg(long, value_name = "FILE")]
    auth_users_file: Option<PathBuf>,
    /// A Zenoh configuration file (JSON5), applied before the other
    /// settings: scouting stays off unless --multicast-scouting or
    /// --gossip (only --zenoh-set comes after these).
    #[arg(long, value_name = "FILE")]
    zenoh_config: Option<PathBuf>,
    /// Any Zenoh setting, by its path, with a JSON5 value
    /// (transport/link/tx/lease=5000). Repeatable.
    #[arg(long, value_name = "PATH=VALUE")]
    zenoh_set: Vec<String>,
    /// The bridge's configuration file (TOML, or JSON): the same settings;
    /// the command line adds to its lists and replaces its other values.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log level (error, warn, info, debug) or a filter such as
    /// info,zenoh=debug [default: info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Print a man page or shell completions to stdout and exit.
    #[arg(long, value_name = "KIND", hide = true, exclusive = true)]
    generate: Option<Generate>,
}

impl Args {
    fn flags(self) -> Flags {
        Flags {
            config: self.config,
            export: self.export,
            exclude: self.exclude,
            import: self.import,
            into: self.into,
            key_prefix: self.key_prefix,
            envelope: self.envelope,
            congestion: self.congestion,
            create: self.no_create.then_some(false),
            host_name: self.host_name,
            log_level: self.log_level,
            mode: self.mode,
            connect: self.connect,
            listen: self.listen,
            zenoh_config: self.zenoh_config,
            multicast_scouting: if self.multicast_scouting {
                Some(true)
            } else {
                self.no_multicast_scouting.then_some(false)
            },
            gossip: self.gossip.then_some(true),
            zenoh_set: self.zenoh_set,
            auth_user: self.auth_user,
            auth_password_file: self.auth_password_file,
            auth_users_file: self.auth_users_file,
        }
    }
}

fn main() {
    baf_cli::main(
        "baf-bridge",
        |a: &Args| a.generate,
        |a| baf_bridge::run(Settings::resolve(a.flags())?),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Args::try_parse_from([&["baf-bridge"], args].concat())
            .unwrap()
            .flags()
    }

    #[test]
    fn dash_e_is_exclude_as_in_submsg() {
        let f = flags(&["-e", "a", "-x", "b", "--exclude", "c", "--export", "d"]);
        assert_eq!(f.exclude, ["a", "b", "c"]);
        assert_eq!(f.export, ["d"]);
        assert!(Args::try_parse_from(["baf-bridge", "-E", "d"]).is_err());
    }

    #[test]
    fn scouting_is_off_unless_asked() {
        let f = flags(&[]);
        assert_eq!((f.multicast_scouting, f.gossip), (None, None));
        let f = flags(&["--multicast-scouting", "--gossip"]);
        assert_eq!((f.multicast_scouting, f.gossip), (Some(true), Some(true)));
        assert_eq!(
            flags(&["--no-multicast-scouting"]).multicast_scouting,
            Some(false)
        );
        assert_eq!(
            flags(&["--no-multicast-scouting", "--multicast-scouting"]).multicast_scouting,
            Some(true)
        );
    }
}
