# NixOS VM test of the baf module: boots the module's default kernel (the
# newest of linuxPackages_7_3, linuxPackages_7_2 and linuxPackages_latest that
# is 7.2 or 7.3, the kernels the test suite runs on) with fanout.ko, declares
# three topics (one lossless), and checks permissions, one-to-many delivery
# and that the lossless settings reach the kernel. Two more machines, a and
# b, run baf-bridge: a record published on one is read on the other.
#
#   nix build .#checks.x86_64-linux.vm-test
{ pkgs }:

pkgs.testers.runNixOSTest {
  name = "baf";

  nodes.machine =
    { ... }:
    {
      imports = [ ./module.nix ];

      # boot.kernelPackages is left to the module: it defaults to a
      # supported kernel (checked below). If nixpkgs builds that kernel
      # without Rust, enableKernelRust (on by default) turns Rust on, and
      # the test then builds the kernel instead of fetching it.

      baf.services.baf-setup = {
        enable = true;
        topics = {
          topic1 = { };
          topic2 = { };
          jobs = {
            lossless = true;
            stallTimeoutMs = 2000;
          };
        };
      };

      users.users.alice = {
        isNormalUser = true;
        extraGroups = [ "baf" ];
      };
      users.users.mallory.isNormalUser = true;
    };

  # Two hosts bridged over Zenoh: each exports every topic and imports the
  # other's under its name ("a/..." on b, "b/..." on a).
  nodes.a =
    { ... }:
    {
      imports = [ ./module.nix ];
      baf.services.baf-setup = {
        enable = true;
        topics = [ "sensors" ];
      };
      baf.services.bridges.lab = {
        export = [ "#" ];
        import = [ "baf/**" ];
        into = "b/";
        listen = [ "tcp/0.0.0.0:7447" ];
        openFirewall = true;
        # Only b may connect. (A test's secrets may be in the store; a
        # real one's are not.)
        auth.usersFile = "/etc/baf/bridge/users";
      };
      environment.etc."baf/bridge/users".text = "b:test password\n";
    };
  nodes.b =
    { ... }:
    {
      imports = [ ./module.nix ];
      baf.services.baf-setup = {
        enable = true;
        topics = [ "sensors" ];
      };
      baf.services.bridges.lab = {
        export = [ "#" ];
        import = [ "baf/**" ];
        into = "a/";
        connect = [ "tcp/a:7447" ];
        listen = [ "tcp/0.0.0.0:7447" ];
        auth = {
          user = "b";
          passwordFile = "/etc/baf/bridge/b.password";
        };
      };
      environment.etc."baf/bridge/b.password".text = "test password\n";
    };

  testScript = ''
    import json
    import time

    bin = "/run/current-system/sw/bin"

    machine.wait_for_unit("baf-setup.service")

    with subtest("the module's default kernel is 7.2 or 7.3"):
        release = machine.succeed("uname -r").strip()
        assert release.split(".")[:2] in (["7", "2"], ["7", "3"]), f"uname -r is {release!r}, want 7.2 or 7.3"

    with subtest("fanout.ko is loaded and the control device belongs to group baf"):
        machine.succeed("grep -q '^fanout ' /proc/modules")
        machine.succeed("test -c /dev/baf-control")
        out = machine.succeed("stat -c '%a %G' /dev/baf-control").strip()
        assert out == "660 baf", f"/dev/baf-control is {out!r}, want '660 baf'"
        # devices=0: no static /dev/fanoutN topics
        machine.fail("test -e /dev/fanout0")

    with subtest("declared topics exist with mode 0660 and group baf"):
        machine.succeed("grep -q '^topic1 ' /etc/baf/topics")
        for t in ["topic1", "topic2", "jobs", "baf-test"]:
            machine.succeed(f"test -c /dev/baf/{t}")
        out = machine.succeed("stat -c '%a %G' /dev/baf/topic1").strip()
        assert out == "660 baf", f"/dev/baf/topic1 is {out!r}, want '660 baf'"

    with subtest("one publisher reaches two subscribers"):
        for r in ["a", "b"]:
            machine.succeed(
                f"systemd-run --unit=sub-{r} --uid=alice"
                f" -p StandardOutput=file:/tmp/sub-{r}.out {bin}/submsg topic1"
            )
        # A reader sees only what is written after it opened the topic.
        for r in ["a", "b"]:
            machine.wait_until_succeeds(
                f"ls -l /proc/$(systemctl show -p MainPID --value sub-{r})/fd"
                " | grep -q /dev/baf/topic1"
            )
        machine.succeed(f"su alice -c 'echo hi | {bin}/pubmsg topic1'")
        for r in ["a", "b"]:
            machine.wait_until_succeeds(f"grep -qx hi /tmp/sub-{r}.out")

    with subtest("a user outside group baf is refused"):
        machine.fail("su mallory -c 'echo x > /dev/baf/topic1'")
        machine.fail("su mallory -c 'exec 3< /dev/baf/topic1'")
        machine.fail("su mallory -c 'exec 3<> /dev/baf-control'")
        machine.succeed("su alice -c 'echo y > /dev/baf/topic1'")

    with subtest("baf-setup status lists every topic"):
        status = machine.succeed("baf-setup status")
        for t in ["topic1", "topic2", "jobs", "baf-test"]:
            assert t in status, f"{t} missing from baf-setup status:\n{status}"

    with subtest("the lossless topic is lossless in the kernel, the others are not"):
        machine.succeed("grep -q '^jobs .* lossless stall_timeout=2000ms$' /etc/baf/topics")
        out = machine.succeed("cat /sys/class/baf/jobs/lossless /sys/class/baf/jobs/stall_ms").split()
        assert out == ["1", "2000"], f"jobs: lossless, stall_ms are {out}, want ['1', '2000']"
        out = machine.succeed("cat /sys/class/baf/topic1/lossless").strip()
        assert out == "0", f"topic1: lossless is {out!r}, want '0'"
        topics = {t["name"]: t for t in json.loads(machine.succeed("baf-setup status --json"))}
        jobs = topics["jobs"]
        assert jobs["lossless"] is True and jobs["stall_ms"] == 2000, f"baf-setup status --json: {jobs}"
        for key in ["lossless_readers", "writer_waits", "demoted"]:
            assert jobs[key] == 0, f"baf-setup status --json: {key} of an idle topic is {jobs[key]}"
        assert topics["topic1"]["lossless"] is False, f"baf-setup status --json: {topics['topic1']}"

    with subtest("applying again is idempotent"):
        machine.succeed("systemctl restart baf-setup.service")
        for t in ["topic1", "topic2", "jobs", "baf-test"]:
            machine.succeed(f"test -c /dev/baf/{t}")
        out = machine.succeed("cat /sys/class/baf/jobs/lossless").strip()
        assert out == "1", f"jobs after a restart: lossless is {out!r}, want '1'"

    with subtest("two hosts: a record published on a is read on b through the bridges, and back"):
        for m in [a, b]:
            m.wait_for_unit("baf-bridge-lab.service")
        b.succeed(f"systemd-run --unit=from-a -p StandardOutput=file:/tmp/from-a.out {bin}/submsg --follow a/sensors")
        a.succeed(f"systemd-run --unit=from-b -p StandardOutput=file:/tmp/from-b.out {bin}/submsg --follow b/sensors")

        # Zenoh delivers what is published once the other side's
        # subscription has reached this one: publish until it arrives.
        def crosses(src, dst, line, out):
            for _ in range(120):
                src.succeed(f"echo {line} | {bin}/pubmsg sensors")
                if dst.execute(f"grep -qx {line} {out}")[0] == 0:
                    return
                time.sleep(1)
            raise Exception(f"{line} never reached {dst.name}")

        crosses(a, b, "hello-from-a", "/tmp/from-a.out")
        crosses(b, a, "hello-from-b", "/tmp/from-b.out")
        # Nothing echoes: neither bridge sends back what it imported.
        a.fail("test -e /dev/baf/b/a")
        b.fail("test -e /dev/baf/a/b")
        a.succeed("journalctl -u baf-bridge-lab | grep -q 'exporting topic sensors as baf/sensors'")
        a.succeed("journalctl -u baf-bridge-lab | grep -q 'no scouting, accepting the users of /run/credentials/'")
        b.succeed("journalctl -u baf-bridge-lab | grep -q 'authenticating as b'")
        b.succeed("journalctl -u baf-bridge-lab | grep -q 'importing key baf/sensors into topic a/sensors'")

    with subtest("the bridge runs hardened, as a dynamic user in group baf, and stops cleanly"):
        out = a.succeed("systemctl show -p DynamicUser -p DevicePolicy -p ProtectSystem --value baf-bridge-lab").split()
        assert out == ["yes", "closed", "strict"], f"baf-bridge-lab: {out}"
        gid = a.succeed("getent group baf | cut -d: -f3").strip()
        groups = a.succeed("grep '^Groups:' /proc/$(systemctl show -p MainPID --value baf-bridge-lab)/status").split()[1:]
        assert gid in groups, f"baf-bridge-lab runs in groups {groups}, not baf ({gid})"
        a.succeed("systemctl stop baf-bridge-lab")
        out = a.succeed("systemctl show -p Result --value baf-bridge-lab").strip()
        assert out == "success", f"baf-bridge-lab stopped with {out}"
  '';
}
